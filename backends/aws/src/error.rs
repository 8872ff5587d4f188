//! How SDK errors become port errors: a throttled, unreachable or failing service is
//! `Unavailable` (the caller tries again); what the service refused as wrong is `Invalid`.
//!
//! The text names the service, the operation and the resource ("DynamoDB PutItem on table
//! P-sagas"), then what went wrong in a few words: the service's error code, HTTP status and
//! message; no answer in time; a connection that failed; an answer that could not be read. It
//! is what an operator reads in the log, so it never holds a Debug dump of the request.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use como_ports::{PortError, PortResult};

/// The service's error code, when the service answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Any SDK error of the call `what` (service, operation, resource) as `Unavailable`, after
/// the SDK's retries.
pub fn unavailable<E>(what: &str, e: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    PortError::Unavailable(format!("{what}: {}", describe(&e)))
}

/// A copy of a port error, for each caller that shares it.
pub fn copy(e: &PortError) -> PortError {
    match e {
        PortError::Unavailable(m) => PortError::Unavailable(m.clone()),
        PortError::Invalid(m) => PortError::Invalid(m.clone()),
        PortError::Corrupt(m) => PortError::Corrupt(m.clone()),
    }
}

/// A port error's own words, without the kind's prefix ("backend unavailable: "), and
/// without a closing full stop: to be quoted inside another message.
pub fn words(e: &PortError) -> &str {
    match e {
        PortError::Unavailable(m) | PortError::Invalid(m) | PortError::Corrupt(m) => {
            m.trim_end_matches('.')
        }
    }
}

/// Tells the process's store health (`como_ports::health`: the warning once a period,
/// readiness) how a write went: it went through (a refused condition too: the store answered),
/// or the store refused it past the retries (DynamoDB, or SQS and EventBridge carrying out its
/// effects), in the error's own words.
pub fn reported<T>(result: PortResult<T>) -> PortResult<T> {
    match &result {
        Ok(_) => como_ports::health::write_succeeded(),
        Err(e @ PortError::Unavailable(_)) => como_ports::health::write_failed(words(e)),
        Err(_) => {}
    }
    result
}

/// What went wrong, on one line.
pub fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code} (HTTP {status}): {message}"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}: {}", chain(err)),
            }
        }
        SdkError::TimeoutError(_) => format!("no answer in time ({})", chain(e)),
        SdkError::DispatchFailure(_) => {
            format!("the request failed on its connection ({})", chain(e))
        }
        SdkError::ResponseError(r) => format!(
            "the answer (HTTP {}) could not be read ({})",
            r.raw().status().as_u16(),
            chain(e)
        ),
        _ => chain(e),
    }
}

/// An error and its sources, joined by ": ", leaving out a cause whose text its parent's
/// already holds.
pub fn chain(e: &dyn std::error::Error) -> String {
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
