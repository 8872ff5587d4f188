//! The one error of the edge: which field of an incoming message is wrong, and why.

use std::fmt;

/// An incoming message was refused. `field` is the JSON path of the offending value
/// (`party_size`, `guest.phone`), or `.` when the document as a whole is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidInput {
    pub field: String,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Parse `json` into `T`, naming the field that failed, if any.
    ///
    /// Good input is parsed once, without tracking the path (which costs as much again as
    /// the parse, on every message of the hot path); only bad input is parsed a second time
    /// to name the field. Both parses are the same deserializer, so they accept the same input.
    pub fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, InvalidInput> {
        if let Ok(value) = serde_json::from_slice(json) {
            return Ok(value);
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            // serde_json appends " at line L column C"; the path already says where.
            let mut reason = inner.to_string();
            if let Some(idx) = reason.rfind(" at line ") {
                reason.truncate(idx);
            }
            // serde_path_to_error says "." for the root and "?" where it could not follow.
            let field = if path.is_empty() || path == "?" {
                ".".to_owned()
            } else {
                path
            };
            InvalidInput::new(field, reason)
        })
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." {
            write!(f, "invalid message: {}", self.reason)
        } else {
            write!(f, "invalid field `{}`: {}", self.field, self.reason)
        }
    }
}
