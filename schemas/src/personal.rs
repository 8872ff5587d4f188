//! The guest's contact details as messages and stored sagas carry them: personal data.
//!
//! A client hands the contact over in the clear ([`Guest::Contact`], the request on the bus or
//! the API's body). From the edge on it is **sealed** ([`Guest::Sealed`]): encrypted with a
//! data key (AES-256-GCM, bound to the saga) by `como-privacy`, so that saga state, history,
//! queues, dead letters and the AWS items hold ciphertext only. Only the SevenRooms worker (to
//! book) and an API caller allowed to see personal data open it. Once kept long enough, or on
//! the member's request, it is **erased** ([`Guest::Erased`]): what is left says when and why,
//! and the booking's money facts (member, venue, credits, receipt, reservation) stay.
//!
//! Parsing keeps the edge's field-naming errors: a bad phone in a contact is refused as
//! `guest.phone`, as before sealing existed.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::request::GuestContact;
use crate::time::Timestamp;
use crate::values::{Email, PersonName, Phone};

/// The longest sealed value accepted: a contact's fields at their longest, sealed and encoded,
/// with room to spare.
pub const SEALED_MAX: usize = 2048;

/// The guest named on a reservation: in the clear only where a client hands it over, sealed
/// everywhere after, erased at the end of its retention.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Guest {
    /// In the clear: a request as a client sends it. Intake seals it before anything is kept.
    Contact(GuestContact),
    /// Encrypted with a data key: `{"sealed": "v1.<key id>.<base64url>"}`.
    Sealed { sealed: SealedGuest },
    /// Erased: `{"erased": {"at": ..., "reason": ...}}`.
    Erased { erased: Erasure },
}

impl Guest {
    /// The contact, when it is in the clear.
    pub fn contact(&self) -> Option<&GuestContact> {
        match self {
            Guest::Contact(c) => Some(c),
            _ => None,
        }
    }

    /// The sealed value, when it is sealed.
    pub fn sealed(&self) -> Option<&SealedGuest> {
        match self {
            Guest::Sealed { sealed } => Some(sealed),
            _ => None,
        }
    }

    /// When and why it was erased, when it was.
    pub fn erasure(&self) -> Option<&Erasure> {
        match self {
            Guest::Erased { erased } => Some(erased),
            _ => None,
        }
    }

    /// Whether personal data is still here (in the clear or sealed).
    pub fn is_personal(&self) -> bool {
        !matches!(self, Guest::Erased { .. })
    }
}

impl From<GuestContact> for Guest {
    fn from(contact: GuestContact) -> Self {
        Guest::Contact(contact)
    }
}

impl fmt::Debug for Guest {
    // Personal data stays out of logs, even through `{:?}` of a whole request; a sealed
    // value is named by its key only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Guest::Contact(_) => f.write_str("Guest::Contact { .. }"),
            Guest::Sealed { sealed } => write!(f, "Guest::Sealed {{ key: {} }}", sealed.key_id()),
            Guest::Erased { erased } => write!(f, "Guest::Erased {{ {erased:?} }}"),
        }
    }
}

/// What the three forms parse from: one object whose keys say which form it is. Each field is
/// read with its own type, so a bad value is refused by its path (`guest.phone`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestFields {
    first_name: Option<PersonName>,
    last_name: Option<PersonName>,
    phone: Option<Phone>,
    email: Option<Email>,
    sealed: Option<SealedGuest>,
    erased: Option<Erasure>,
}

impl<'de> Deserialize<'de> for Guest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let f = GuestFields::deserialize(d)?;
        let contact = f.first_name.is_some()
            || f.last_name.is_some()
            || f.phone.is_some()
            || f.email.is_some();
        match (contact, f.sealed, f.erased) {
            (false, Some(sealed), None) => Ok(Guest::Sealed { sealed }),
            (false, None, Some(erased)) => Ok(Guest::Erased { erased }),
            (false, None, None) | (true, None, None) => Ok(Guest::Contact(GuestContact {
                first_name: f
                    .first_name
                    .ok_or_else(|| D::Error::missing_field("first_name"))?,
                last_name: f
                    .last_name
                    .ok_or_else(|| D::Error::missing_field("last_name"))?,
                phone: f.phone.ok_or_else(|| D::Error::missing_field("phone"))?,
                email: f.email,
            })),
            _ => Err(D::Error::custom(
                "a guest is a contact (first_name, last_name, phone, email), or `sealed`, or \
                 `erased`: never two of them",
            )),
        }
    }
}

impl JsonSchema for Guest {
    fn schema_name() -> Cow<'static, str> {
        "Guest".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let contact = generator.subschema_for::<GuestContact>();
        json_schema!({
            "description": "The guest: the contact in the clear (what a client sends), or sealed \
                            by como-saga's own API with the deployment's data key",
            "oneOf": [
                contact,
                {
                    "type": "object",
                    "properties": { "sealed": {
                        "type": "string",
                        "maxLength": SEALED_MAX,
                        "pattern": SealedGuest::PATTERN,
                        "description": "the contact sealed with a data key (AES-256-GCM), bound to the saga",
                    } },
                    "required": ["sealed"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

/// A contact sealed with a data key: `v1.<key id>.<base64url of nonce, ciphertext and tag>`.
/// Only its shape is checked here; whether it opens is `como-privacy`'s to say.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SealedGuest(String);

impl SealedGuest {
    /// The shape, as a JSON Schema pattern.
    pub const PATTERN: &'static str = "^v1\\.[A-Za-z0-9_-]{1,32}\\.[A-Za-z0-9_-]+$";

    /// Parse a sealed value, saying what is wrong with its shape.
    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value: String = value.into();
        if value.len() > SEALED_MAX {
            return Err(format!("a sealed guest is at most {SEALED_MAX} characters"));
        }
        let mut parts = value.splitn(3, '.');
        let (Some("v1"), Some(key), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("a sealed guest is `v1.<key id>.<base64url>`".to_owned());
        };
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if key.len() > 32 || !token(key) || !token(payload) {
            return Err("a sealed guest is `v1.<key id>.<base64url>`".to_owned());
        }
        Ok(Self(value))
    }

    /// Seal's output, assembled: the key's id and the encoded payload.
    pub fn assemble(key_id: &str, payload_base64url: &str) -> Result<Self, String> {
        Self::parse(format!("v1.{key_id}.{payload_base64url}"))
    }

    /// The id of the data key it was sealed with.
    pub fn key_id(&self) -> &str {
        self.0.split('.').nth(1).unwrap_or_default()
    }

    /// The base64url payload: nonce, ciphertext and tag.
    pub fn payload(&self) -> &str {
        self.0.splitn(3, '.').nth(2).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SealedGuest {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(value)
    }
}

impl From<SealedGuest> for String {
    fn from(value: SealedGuest) -> String {
        value.0
    }
}

impl fmt::Debug for SealedGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedGuest({})", self.key_id())
    }
}

/// When and why a guest's contact was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    pub at: Timestamp,
    pub reason: ErasureReason,
}

/// Why personal data was erased.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErasureReason {
    /// The saga finished longer ago than the retention period.
    Retention,
    /// The member asked to be forgotten (`como-saga members forget`).
    MemberRequest,
}

impl ErasureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureReason::Retention => "retention",
            ErasureReason::MemberRequest => "member_request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_forms_read_back_as_written() {
        let contact: Guest = serde_json::from_value(json!({
            "first_name": "Mei", "last_name": "Tan", "phone": "+6591234567"
        }))
        .unwrap();
        assert!(contact.contact().is_some());
        let sealed: Guest = serde_json::from_value(json!({"sealed": "v1.k1.AAAA"})).unwrap();
        assert_eq!(sealed.sealed().unwrap().key_id(), "k1");
        let erased: Guest = serde_json::from_value(
            json!({"erased": {"at": "2026-01-01T00:00:00.000Z", "reason": "retention"}}),
        )
        .unwrap();
        assert!(!erased.is_personal());
        for g in [contact, sealed, erased] {
            let back: Guest = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
            assert_eq!(back, g);
        }
    }

    #[test]
    fn mixed_or_malformed_forms_are_refused() {
        for bad in [
            json!({"sealed": "v1.k1.AAAA", "phone": "+6591234567"}),
            json!({"sealed": "v2.k1.AAAA"}),
            json!({"sealed": "v1..AAAA"}),
            json!({"sealed": "v1.k1.AA AA"}),
            json!({"first_name": "Mei", "last_name": "Tan"}),
            json!({"other": 1}),
        ] {
            assert!(
                serde_json::from_value::<Guest>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_contact() {
        let g: Guest = serde_json::from_value(json!({
            "first_name": "Mei", "last_name": "Tan", "phone": "+6591234567"
        }))
        .unwrap();
        assert!(!format!("{g:?}").contains("Mei"));
    }
}
