//! How SDK errors become port errors: a throttled, unreachable or failing service is
//! `Unavailable` (the caller tries again); what the service refused as wrong is `Invalid`.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use como_ports::PortError;

/// The service's error code, when the service answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Any SDK error, as `Unavailable` with the operation's name and the whole error chain.
pub fn unavailable<E, R>(op: &str, e: SdkError<E, R>) -> PortError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    PortError::Unavailable(format!("{op}: {}", DisplayErrorContext(e)))
}
