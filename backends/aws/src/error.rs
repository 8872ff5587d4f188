//! How SDK errors become port errors: a throttled, unreachable or failing service is
//! `Unavailable` (the caller tries again); what the service refused as wrong is `Invalid`.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use como_ports::PortError;

/// The service's error code, when the service answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Any SDK error, as `Unavailable` with the operation's name and the error's chain of causes
/// on one line (each cause once; no Debug dump of the request or the response).
pub fn unavailable<E, R>(op: &str, e: SdkError<E, R>) -> PortError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    PortError::Unavailable(format!("{op}: {}", chain(&e)))
}

/// An error and its sources, joined by ": ", leaving out a cause whose text its parent's
/// already holds.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
