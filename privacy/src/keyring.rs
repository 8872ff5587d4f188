//! A keyring: the data keys by id, and which one seals. Old keys stay to open what they
//! sealed; the primary seals everything new. As text (a key file, an environment variable, a
//! Secrets Manager secret) it is JSON:
//!
//! ```json
//! {"primary": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "<base64 of 32 bytes>"}}
//! ```
//!
//! Sealing is AES-256-GCM with a random 96-bit nonce per seal (aws-lc-rs draws it), and the
//! saga's id as associated data: a sealed contact opens only for the saga it was sealed for,
//! so it cannot be copied onto another booking.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use como_schemas::{GuestContact, SagaId, SealedGuest};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};

/// The length of a data key: AES-256.
pub const KEY_LEN: usize = 32;

/// What a keyring's text, or a key in it, got wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error(
        "not a keyring: {0} (expected {{\"primary\": \"k1\", \"keys\": {{\"k1\": \"<base64 of 32 bytes>\"}}}})"
    )]
    Malformed(String),
    #[error("key `{0}`: {1}")]
    BadKey(String, String),
    #[error("the primary key `{0}` is not among the keys")]
    NoPrimary(String),
}

/// Why a sealed contact did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with a key this keyring does not have (yet, or any more).
    #[error("sealed with data key `{0}`, which this process does not have")]
    UnknownKey(String),
    /// Altered, truncated, or sealed for another saga.
    #[error(
        "the sealed guest does not open with data key `{0}`: altered, or sealed for another saga"
    )]
    Unauthentic(String),
}

struct DataKey {
    bytes: SecretBox<[u8; KEY_LEN]>,
    aead: RandomizedNonceKey,
}

/// The data keys and which one seals.
pub struct Keyring {
    primary: String,
    keys: BTreeMap<String, DataKey>,
}

impl fmt::Debug for Keyring {
    // Never the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringText {
    primary: String,
    keys: BTreeMap<String, String>,
}

fn key_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl DataKey {
    fn new(id: &str, bytes: [u8; KEY_LEN]) -> Result<Self, KeyringError> {
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| KeyringError::BadKey(id.to_owned(), "not an AES-256 key".into()))?;
        Ok(Self {
            bytes: SecretBox::new(Box::new(bytes)),
            aead,
        })
    }

    fn generate(id: &str) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .unwrap_or_else(|_| panic!("the system's random source failed"));
        Self::new(id, bytes).unwrap_or_else(|_| unreachable!("32 bytes are an AES-256 key"))
    }
}

/// The associated data of a saga's sealed guest: what it is, and for which saga.
fn aad(saga: SagaId) -> Vec<u8> {
    let mut aad = b"como-saga/guest/v1/".to_vec();
    aad.extend_from_slice(saga.as_uuid().as_bytes());
    aad
}

impl Keyring {
    /// A keyring of one new key, `k1`.
    pub fn generate() -> Self {
        let id = "k1".to_owned();
        Self {
            keys: BTreeMap::from([(id.clone(), DataKey::generate(&id))]),
            primary: id,
        }
    }

    /// This keyring with one more key, new and primary: `k<n+1>` after the highest `k<n>`.
    pub fn rotated(&self) -> Self {
        let next = self
            .keys
            .keys()
            .filter_map(|id| id.strip_prefix('k')?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let id = format!("k{next}");
        let mut keys: BTreeMap<String, DataKey> = self
            .keys
            .iter()
            .map(|(id, k)| {
                let copy = DataKey::new(id, *k.bytes.expose_secret())
                    .unwrap_or_else(|_| unreachable!("a key that was read is a key"));
                (id.clone(), copy)
            })
            .collect();
        keys.insert(id.clone(), DataKey::generate(&id));
        Self { primary: id, keys }
    }

    /// Read a keyring's text.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let t: KeyringText = serde_json::from_str(text.trim())
            .map_err(|e| KeyringError::Malformed(e.to_string()))?;
        let mut keys = BTreeMap::new();
        for (id, encoded) in t.keys {
            if !key_id_ok(&id) {
                return Err(KeyringError::BadKey(
                    id,
                    "a key id is 1 to 32 letters, digits, '_' or '-'".into(),
                ));
            }
            let bytes = STANDARD
                .decode(encoded.trim())
                .map_err(|e| KeyringError::BadKey(id.clone(), format!("not base64: {e}")))?;
            let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                KeyringError::BadKey(id.clone(), format!("{} bytes, not {KEY_LEN}", b.len()))
            })?;
            let key = DataKey::new(&id, bytes)?;
            keys.insert(id, key);
        }
        if !keys.contains_key(&t.primary) {
            return Err(KeyringError::NoPrimary(t.primary));
        }
        Ok(Self {
            primary: t.primary,
            keys,
        })
    }

    /// The keyring as text, key material included: for its store only.
    pub fn to_text(&self) -> String {
        let t = KeyringText {
            primary: self.primary.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (id.clone(), STANDARD.encode(k.bytes.expose_secret())))
                .collect(),
        };
        serde_json::to_string_pretty(&t).unwrap_or_else(|_| unreachable!("strings serialise"))
    }

    /// The id of the key that seals.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The ids of every key, in order.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    pub fn has(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Whether key `id` is the same key in both keyrings.
    pub fn same_key(&self, other: &Keyring, id: &str) -> bool {
        match (self.keys.get(id), other.keys.get(id)) {
            (Some(a), Some(b)) => a.bytes.expose_secret() == b.bytes.expose_secret(),
            _ => false,
        }
    }

    /// Seal `contact` for `saga` with the primary key.
    pub fn seal(&self, saga: SagaId, contact: &GuestContact) -> SealedGuest {
        let key = &self.keys[&self.primary];
        let mut in_out =
            serde_json::to_vec(contact).unwrap_or_else(|_| unreachable!("a contact serialises"));
        let nonce = key
            .aead
            .seal_in_place_append_tag(Aad::from(aad(saga)), &mut in_out)
            .unwrap_or_else(|_| panic!("sealing failed: the system's random source failed"));
        let mut payload = Vec::with_capacity(NONCE_LEN + in_out.len());
        payload.extend_from_slice(nonce.as_ref());
        payload.extend_from_slice(&in_out);
        SealedGuest::assemble(&self.primary, &URL_SAFE_NO_PAD.encode(payload))
            .unwrap_or_else(|e| unreachable!("a sealed guest of a valid key id: {e}"))
    }

    /// Open what [`Keyring::seal`] sealed for `saga`.
    pub fn open(&self, saga: SagaId, sealed: &SealedGuest) -> Result<GuestContact, OpenError> {
        let id = sealed.key_id();
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let unauthentic = || OpenError::Unauthentic(id.to_owned());
        let payload = URL_SAFE_NO_PAD
            .decode(sealed.payload())
            .map_err(|_| unauthentic())?;
        if payload.len() < NONCE_LEN {
            return Err(unauthentic());
        }
        let (nonce, sealed_bytes) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unauthentic())?;
        let mut in_out = sealed_bytes.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(aad(saga)), &mut in_out)
            .map_err(|_| unauthentic())?;
        serde_json::from_slice(plain).map_err(|_| unauthentic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_schemas::examples;

    fn contact() -> GuestContact {
        let r =
            examples::booking_request("r-1", chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
        r.guest.contact().unwrap().clone()
    }

    fn saga(id: &str) -> SagaId {
        SagaId::for_request(&como_schemas::RequestId::parse(id).unwrap())
    }

    #[test]
    fn sealed_opens_for_its_saga_only_and_hides_the_contact() {
        let ring = Keyring::generate();
        let a = saga("a");
        let b = saga("b");
        let sealed = ring.seal(a, &contact());
        assert_eq!(sealed.key_id(), "k1");
        for word in ["Mei", "Tan", "6591234567", "example.com"] {
            assert!(!sealed.as_str().contains(word), "{sealed:?}");
        }
        assert_eq!(ring.open(a, &sealed).unwrap(), contact());
        assert_eq!(
            ring.open(b, &sealed),
            Err(OpenError::Unauthentic("k1".into()))
        );
        // Two seals of one contact differ (a nonce each).
        assert_ne!(ring.seal(a, &contact()), sealed);
        // One altered character and it no longer opens.
        let mut text = sealed.as_str().to_owned();
        let last = text.pop().unwrap();
        text.push(if last == 'A' { 'B' } else { 'A' });
        let altered = SealedGuest::parse(text).unwrap();
        assert_eq!(
            ring.open(a, &altered),
            Err(OpenError::Unauthentic("k1".into()))
        );
    }

    #[test]
    fn rotation_seals_with_the_new_key_and_still_opens_the_old() {
        let ring = Keyring::generate();
        let saga = saga("a");
        let old = ring.seal(saga, &contact());
        let rotated = Keyring::parse(&ring.rotated().to_text()).unwrap();
        assert_eq!(rotated.primary(), "k2");
        assert_eq!(rotated.key_ids(), ["k1", "k2"]);
        assert_eq!(rotated.seal(saga, &contact()).key_id(), "k2");
        assert_eq!(rotated.open(saga, &old).unwrap(), contact());
        let other = Keyring::generate();
        assert_eq!(
            other.open(saga, &rotated.seal(saga, &contact())),
            Err(OpenError::UnknownKey("k2".into()))
        );
        assert!(!format!("{rotated:?}").contains(&ring.to_text()[40..60]));
    }

    #[test]
    fn bad_keyrings_are_refused_by_name() {
        for (text, says) in [
            ("", "not a keyring"),
            (r#"{"primary":"k1","keys":{}}"#, "primary key `k1`"),
            (r#"{"primary":"k1","keys":{"k1":"AAAA"}}"#, "3 bytes"),
            (r#"{"primary":"k1","keys":{"k1":"%%"}}"#, "not base64"),
            (r#"{"primary":"k 1","keys":{"k 1":"AAAA"}}"#, "key id"),
        ] {
            let e = Keyring::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
