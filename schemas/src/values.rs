//! Domain values. Each is parsed once, at the edge, into a type that cannot hold an invalid
//! value: deserialising runs the same checks as the constructors, so a value read from a queue
//! or a store is as trustworthy as one built in code.

use std::borrow::Cow;
use std::fmt;

use chrono::{NaiveDate, NaiveTime, Timelike};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SCHEMA_VERSION;

/// Defines a string newtype whose every instance passed `$check`, with a JSON Schema that
/// states the same rule.
/// The newtypes that hold personal data: their refusals do not quote the value.
const PERSONAL: [&str; 3] = ["PersonName", "Phone", "Email"];

macro_rules! string_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, max = $max:expr, pattern = $pattern:expr, check = $check:expr, expected = $expected:expr
    ) => {
        // A string in the OpenAPI document (its pattern, where it has one, given with the
        // invocation as `#[schema(pattern = ...)]`).
        #[derive(utoipa::ToSchema)]
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parse a value, saying why it is refused.
            pub fn parse(value: impl Into<String>) -> Result<Self, String> {
                let value: String = value.into();
                if value.is_empty() {
                    return Err("must not be empty".to_owned());
                }
                if value.chars().count() > $max {
                    return Err(format!("must be at most {} characters", $max));
                }
                let check: fn(&str) -> bool = $check;
                if !check(&value) {
                    // A guest's name, phone or e-mail is personal data: the refusal, which
                    // reaches logs, dead letters and `BookingRejected`, never repeats it.
                    if PERSONAL.contains(&stringify!($name)) {
                        return Err(format!("the value given is not {}", $expected));
                    }
                    return Err(format!("{:?} is not {}", value, $expected));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let mut schema = json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "description": $expected,
                });
                let pattern: Option<&str> = $pattern;
                if let Some(p) = pattern {
                    schema.insert("pattern".to_owned(), p.into());
                }
                schema
            }
        }
    };
}

fn is_token(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control) && s.trim() == s
}

string_newtype!(
    /// The caller's id for one booking request; a repeated id is the same request.
    #[schema(pattern = "^[A-Za-z0-9._:-]+$")]
    RequestId, max = 128, pattern = Some("^[A-Za-z0-9._:-]+$"),
    check = |s| is_token(s, "._:-"), expected = "a request id of letters, digits, '.', '_', ':' or '-'"
);
string_newtype!(
    /// A Memberson member number (`MemberNo`).
    #[schema(pattern = "^[A-Za-z0-9-]+$")]
    MemberNo, max = 32, pattern = Some("^[A-Za-z0-9-]+$"),
    check = |s| is_token(s, "-"), expected = "a member number of letters, digits or '-'"
);
string_newtype!(
    /// A SevenRooms venue id.
    #[schema(pattern = "^[A-Za-z0-9_-]+$")]
    VenueId, max = 128, pattern = Some("^[A-Za-z0-9_-]+$"),
    check = |s| is_token(s, "_-"), expected = "a venue id of letters, digits, '_' or '-'"
);
string_newtype!(
    /// A guest's first or last name as SevenRooms stores it.
    PersonName, max = 64, pattern = None,
    check = is_printable, expected = "a name without control characters or surrounding spaces"
);
string_newtype!(
    /// A phone number in E.164 form, as SevenRooms requires: `+` then 8 to 15 digits.
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    Phone, max = 32, pattern = Some("^\\+[1-9][0-9]{7,14}$"),
    check = |s| {
        let digits = s.strip_prefix('+').unwrap_or("");
        (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
    },
    expected = "a phone number in E.164 form (+ and 8 to 15 digits, e.g. +6591234567)"
);
string_newtype!(
    /// An e-mail address (a light check: one `@` with text either side, no spaces).
    #[schema(pattern = "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$")]
    Email, max = 254, pattern = Some("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"),
    check = |s| {
        let mut parts = s.split('@');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(char::is_whitespace)
            }
            _ => false,
        }
    },
    expected = "an e-mail address"
);
string_newtype!(
    /// The name of a saga step, as a definition names it (`hold_slot`).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    StepName, max = 64, pattern = Some("^[a-z][a-z0-9_]*$"),
    check = |s| s.starts_with(|c: char| c.is_ascii_lowercase()) && is_token(s, "_") && !s.chars().any(|c| c.is_ascii_uppercase()),
    expected = "a step name in snake_case"
);
string_newtype!(
    /// A SevenRooms reservation hold id.
    HoldId, max = 256, pattern = None, check = is_printable, expected = "a hold id"
);
string_newtype!(
    /// A SevenRooms reservation id.
    ReservationId, max = 256, pattern = None, check = is_printable, expected = "a reservation id"
);
string_newtype!(
    /// A Memberson transaction id.
    TransactionId, max = 256, pattern = None, check = is_printable, expected = "a transaction id"
);
string_newtype!(
    /// The `ReceiptNo` of a Memberson redemption: derived from the saga, so that a replay of the
    /// redeem and the void that undoes it name the same redemption.
    #[schema(pattern = "^[A-Za-z0-9-]+$")]
    ReceiptNo, max = 64, pattern = Some("^[A-Za-z0-9-]+$"),
    check = |s| is_token(s, "-"), expected = "a receipt number of letters, digits or '-'"
);
string_newtype!(
    /// Who acted: an operator's name or the id of an automated caller.
    OperatorId, max = 64, pattern = None, check = is_printable, expected = "an operator id"
);

/// The schema version a message carries; this build accepts only [`SCHEMA_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SchemaVersion(u32);

impl SchemaVersion {
    pub const CURRENT: SchemaVersion = SchemaVersion(SCHEMA_VERSION);
}

impl Default for SchemaVersion {
    fn default() -> Self {
        Self::CURRENT
    }
}

impl TryFrom<u32> for SchemaVersion {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if v == SCHEMA_VERSION {
            Ok(Self(v))
        } else {
            Err(format!(
                "unsupported schema version {v}: this build reads version {SCHEMA_VERSION}"
            ))
        }
    }
}

impl From<SchemaVersion> for u32 {
    fn from(v: SchemaVersion) -> u32 {
        v.0
    }
}

impl JsonSchema for SchemaVersion {
    fn schema_name() -> Cow<'static, str> {
        "SchemaVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "const": SCHEMA_VERSION,
            "description": "The version of the message contract.",
        })
    }
}

/// A saga's id. Derived from the request id (UUID version 5), so that a repeated request maps
/// to the same saga without a lookup, and everything keyed by the saga (the Memberson
/// `ReceiptNo`, the SevenRooms `external_id`) is stable.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(description = "A saga id: UUID v5 of the request id.")]
pub struct SagaId(Uuid);

impl SagaId {
    /// The namespace of saga ids (a fixed, random UUID).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_35a2_9c1e_4c4b_a7c2_3f0e_8b51_d9a4);

    pub fn for_request(request: &RequestId) -> Self {
        Self(Uuid::new_v5(&Self::NAMESPACE, request.as_str().as_bytes()))
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| format!("{s:?} is not a saga id (a UUID)"))
    }

    /// 32 hex digits without hyphens, for downstream fields with tight formats.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for SagaId {
    fn schema_name() -> Cow<'static, str> {
        "SagaId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "uuid",
            "description": "A saga id: UUID v5 of the request id.",
        })
    }
}

/// An amount of Como Credits: a whole, non-negative number of points.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "i64", into = "u64")]
#[schema(description = "An amount of Como Credits (whole points).")]
pub struct Credits(u64);

impl Credits {
    /// More than any member could hold; a larger figure is a mistake, not a price.
    pub const MAX: u64 = 1_000_000_000;

    pub fn new(value: u64) -> Result<Self, String> {
        if value > Self::MAX {
            Err(format!("must be at most {}", Self::MAX))
        } else {
            Ok(Self(value))
        }
    }

    pub fn get(&self) -> u64 {
        self.0
    }
}

impl TryFrom<i64> for Credits {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        let v = u64::try_from(v).map_err(|_| format!("must not be negative, got {v}"))?;
        Self::new(v)
    }
}

impl From<Credits> for u64 {
    fn from(c: Credits) -> u64 {
        c.0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Credits {
    fn schema_name() -> Cow<'static, str> {
        "Credits".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": Credits::MAX,
            "description": "An amount of Como Credits (whole points).",
        })
    }
}

/// The number of guests: 1 to [`PartySize::MAX`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "i64", into = "u8")]
#[schema(description = "The number of guests.")]
pub struct PartySize(u8);

impl PartySize {
    pub const MAX: u8 = 50;

    pub fn new(v: u8) -> Result<Self, String> {
        Self::try_from(i64::from(v))
    }

    pub fn get(&self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for PartySize {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (1..=i64::from(Self::MAX)).contains(&v) {
            Ok(Self(v as u8))
        } else {
            Err(format!("must be between 1 and {}, got {v}", Self::MAX))
        }
    }
}

impl From<PartySize> for u8 {
    fn from(p: PartySize) -> u8 {
        p.0
    }
}

impl fmt::Display for PartySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for PartySize {
    fn schema_name() -> Cow<'static, str> {
        "PartySize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 1,
            "maximum": PartySize::MAX,
            "description": "The number of guests.",
        })
    }
}

/// A calendar date, `YYYY-MM-DD`.
pub type BookingDate = NaiveDate;

/// A slot's start time in the venue's local time, `HH:MM`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(
    value_type = String,
    pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$",
    description = "A time of day in the venue's local time, HH:MM."
)]
pub struct SlotTime(NaiveTime);

impl SlotTime {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day as HH:MM");
        if s.len() != 5 {
            return Err(bad());
        }
        NaiveTime::parse_from_str(s, "%H:%M")
            .map(Self)
            .map_err(|_| bad())
    }

    pub fn from_hm(hour: u32, minute: u32) -> Option<Self> {
        NaiveTime::from_hms_opt(hour, minute, 0).map(Self)
    }

    pub fn time(&self) -> NaiveTime {
        self.0
    }

    pub fn hour(&self) -> u32 {
        self.0.hour()
    }

    pub fn minute(&self) -> u32 {
        self.0.minute()
    }
}

impl TryFrom<String> for SlotTime {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SlotTime> for String {
    fn from(t: SlotTime) -> String {
        t.to_string()
    }
}

impl fmt::Display for SlotTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

impl JsonSchema for SlotTime {
    fn schema_name() -> Cow<'static, str> {
        "SlotTime".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
            "description": "A time of day in the venue's local time, HH:MM.",
        })
    }
}

/// A worker kind: who executes a command. Each downstream has exactly one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    /// Talks to the Memberson CRM (Como Credits).
    Crm,
    /// Talks to SevenRooms (reservations).
    Sevenrooms,
}

impl Worker {
    pub const ALL: [Worker; 2] = [Worker::Crm, Worker::Sevenrooms];

    /// The downstream's name as people say it.
    pub fn downstream(&self) -> &'static str {
        match self {
            Worker::Crm => "Memberson",
            Worker::Sevenrooms => "SevenRooms",
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Worker::Crm => "crm",
            Worker::Sevenrooms => "sevenrooms",
        }
    }
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a SevenRooms shift (its name or persistent id) is sold for credits at a venue that
/// sells `credit_shifts` (empty: every shift). The API's views and the hold step decide alike.
pub fn sold_for_credits(
    credit_shifts: &[String],
    name: Option<&str>,
    persistent_id: Option<&str>,
) -> bool {
    credit_shifts.is_empty()
        || credit_shifts
            .iter()
            .any(|s| Some(s.as_str()) == name || Some(s.as_str()) == persistent_id)
}
