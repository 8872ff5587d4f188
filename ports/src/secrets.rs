//! Secrets with the versions of a rotation: the current one, and a pending one that is minted
//! and tested before it is promoted (the four steps of AWS Secrets Manager rotation).

use async_trait::async_trait;

use crate::error::PortResult;

/// One version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub version_id: String,
    pub value: String,
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current version, if the secret exists.
    async fn current(&self, name: &str) -> PortResult<Option<SecretVersion>>;

    /// Store a pending version (replacing an earlier pending one); returns its version id.
    async fn put_pending(&self, name: &str, value: &str) -> PortResult<String>;

    /// The pending version, if any.
    async fn pending(&self, name: &str) -> PortResult<Option<SecretVersion>>;

    /// Make the pending version `version_id` current. Promoting the current version again is
    /// not an error.
    async fn promote(&self, name: &str, version_id: &str) -> PortResult<()>;
}
