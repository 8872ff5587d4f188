//! What the fuzz targets share: how an input becomes a downstream answer, the checks every
//! answer's classification must pass whatever its shape, and a JSON oracle read independently of
//! the clients' own types.
//!
//! A downstream answer is written as text, so that seeds can be written by hand or captured
//! from the simulators (`seeds/capture.sh`):
//!
//! ```text
//! 200 search          <- status, then an optional shape for targets that read several
//! 3                   <- the Retry-After header's value, or `-` for none
//! {"status":200,...}  <- the body, to the end
//! ```

use std::time::Duration;

use como_workers::clients::Outcome;
use como_workers::clients::codes;
use como_workers::clients::fuzzing::{RawAnswer, Read};
use serde_json::Value;

/// An answer as the input writes it.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    pub shape: &'a str,
    pub raw: RawAnswer<'a>,
}

/// Reads an input as an answer; `None` when it is not in the form above.
pub fn answer(data: &[u8]) -> Option<Answer<'_>> {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let first = std::str::from_utf8(parts.next()?).ok()?;
    let header = parts.next()?;
    let body = parts.next()?;
    let (status, shape) = first.split_once(' ').unwrap_or((first, ""));
    let status: u16 = status.parse().ok()?;
    Some(Answer {
        shape,
        raw: RawAnswer {
            status,
            retry_after: (header != b"-").then_some(header),
            body,
        },
    })
}

/// The `Retry-After` a client should read from these header bytes: whole seconds, nothing else.
pub fn expected_retry_after(header: Option<&[u8]>) -> Option<Duration> {
    let text = std::str::from_utf8(header?).ok()?;
    // HTTP header values are visible ASCII; anything else never reaches the client as text.
    if !text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether an HTTP stack could hand this answer over at all.
pub fn is_http(raw: &RawAnswer<'_>) -> bool {
    (100..=999).contains(&raw.status)
        && raw
            .retry_after
            .is_none_or(|h| h.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)))
}

/// The stable codes a business failure may carry.
pub const KNOWN_CODES: &[&str] = &[
    codes::INSUFFICIENT_POINTS,
    codes::MEMBER_EXPIRED,
    codes::MEMBER_TERMINATED,
    codes::MEMBER_NOT_FOUND,
    codes::DUPLICATE_RECEIPT,
    codes::SLOT_UNAVAILABLE,
    codes::HOLD_EXPIRED,
    codes::PAST_CANCELLATION_CUTOFF,
    codes::RESERVATION_NOT_FOUND,
    codes::RESERVATION_CANCELLED,
    codes::VENUE_NOT_FOUND,
    codes::INVALID_REQUEST,
    // What a SevenRooms refusal says of a cancel (a success for the cancel itself).
    "ALREADY_CANCELLED",
];

/// The checks every classification passes, whatever the operation. `success_off_2xx` says
/// whether this operation may take a non-2xx answer as success (a 404 on a compensation);
/// `refusal_on_2xx`, whether a 2xx may still be a refusal (a summary without a membership).
pub fn check_common<T: std::fmt::Debug>(
    raw: &RawAnswer<'_>,
    read: &Read<T>,
    success_off_2xx: impl Fn(u16) -> bool,
    refusal_on_2xx: bool,
) {
    if !is_http(raw) {
        assert!(matches!(read, Read::NotHttp), "{read:?}");
        return;
    }
    let status = raw.status;
    let ok = (200..300).contains(&status);
    match status {
        401 => assert!(
            matches!(
                read,
                Read::Transient {
                    retry: false,
                    maybe_applied: false,
                    ..
                }
            ),
            "a 401 with a fresh token settles nothing: {read:?}"
        ),
        429 => match read {
            Read::Transient {
                maybe_applied: false,
                retry: true,
                retry_after,
                ..
            } => assert_eq!(*retry_after, expected_retry_after(raw.retry_after)),
            other => panic!("a 429 is transient and was not processed: {other:?}"),
        },
        500..=599 => match read {
            Read::Transient {
                maybe_applied: true,
                retry_after,
                ..
            } => assert_eq!(*retry_after, expected_retry_after(raw.retry_after)),
            other => panic!("a 5xx may have been processed: {other:?}"),
        },
        _ => match read {
            Read::NotHttp => panic!("a valid answer: {raw:?}"),
            Read::Transient { maybe_applied, .. } => {
                // Only an unreadable success is left undecided.
                assert!(ok && *maybe_applied, "status {status}: {read:?}");
            }
            Read::Settled(Outcome::Success(_)) => {
                assert!(ok || success_off_2xx(status), "status {status}: {read:?}");
            }
            Read::Settled(Outcome::BusinessFailure { code, .. }) => {
                assert!(!ok || refusal_on_2xx, "a 2xx is not a refusal: {read:?}");
                assert!(KNOWN_CODES.contains(&code.as_str()), "{code}");
            }
            Read::Settled(other) => panic!("an attempt settles as success or refusal: {other:?}"),
        },
    }
}

/// The body as JSON, if the oracle can read it. serde_json checks the values a type reads but
/// skips the others unchecked, so a body the clients accept may hold, where they do not look,
/// invalid UTF-8 (replaced here first) or a number out of range (`None` here: the checks that
/// need the oracle are then skipped).
pub fn json(body: &[u8]) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(body)).ok()
}

/// A field of a struct as serde reads it: by name from an object, or by position from an array
/// (serde's derive accepts a struct written as a sequence of its fields).
pub fn field<'v>(value: &'v Value, name: &str, position: usize) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(name),
        Value::Array(items) => items.get(position),
        _ => None,
    }
}

/// A SevenRooms envelope's `data`.
pub fn envelope_data(body: &[u8]) -> Option<Value> {
    let v = json(body)?;
    field(&v, "data", 0).cloned()
}

/// The success value, if the attempt settled as one.
pub fn success<T>(read: &Read<T>) -> Option<&T> {
    match read {
        Read::Settled(Outcome::Success(t)) => Some(t),
        _ => None,
    }
}

/// Whether the status is a 2xx and the answer one an HTTP stack hands over.
pub fn is_2xx(raw: &RawAnswer<'_>) -> bool {
    is_http(raw) && (200..300).contains(&raw.status)
}
