//! The guest's contact (personal data) sealed before it is kept, and opened only where it is
//! needed. `como-privacy` implements the port with the deployment's data keys; a backend on
//! its own has [`NoKeys`], which keeps nothing in the clear: it refuses to seal.

use async_trait::async_trait;
use como_schemas::{Guest, GuestContact, SagaId};

/// Why a guest could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("this process has no data keys to seal or open the guest's contact with")]
    NoKeys,
    /// Sealed with a key this process does not have (yet, or any more).
    #[error("sealed with data key `{0}`, which this process does not have")]
    UnknownKey(String),
    /// Altered, or sealed for another saga.
    #[error(
        "the sealed guest does not open with data key `{0}`: altered, or sealed for another saga"
    )]
    Unauthentic(String),
}

#[async_trait]
pub trait GuestVault: Send + Sync {
    /// `guest` as it may be kept: a contact sealed for `saga`, anything else as it is.
    fn seal(&self, saga: SagaId, guest: &Guest) -> Result<Guest, VaultError>;

    /// The contact: in the clear as it is, sealed opened, erased none.
    async fn open(&self, saga: SagaId, guest: &Guest) -> Result<Option<GuestContact>, VaultError>;

    /// The id of the key that seals now, if there is one.
    fn sealing_key(&self) -> Option<String>;
}

/// No data keys: a contact is never sealed (so never kept), a sealed one never opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeys;

#[async_trait]
impl GuestVault for NoKeys {
    fn seal(&self, _saga: SagaId, guest: &Guest) -> Result<Guest, VaultError> {
        match guest {
            Guest::Contact(_) => Err(VaultError::NoKeys),
            other => Ok(other.clone()),
        }
    }

    async fn open(&self, _saga: SagaId, guest: &Guest) -> Result<Option<GuestContact>, VaultError> {
        match guest {
            Guest::Contact(c) => Ok(Some(c.clone())),
            Guest::Sealed { .. } => Err(VaultError::NoKeys),
            Guest::Erased { .. } => Ok(None),
        }
    }

    fn sealing_key(&self) -> Option<String> {
        None
    }
}
