//! Every refusal the API gives: a status and `{"error": {"code", "message", "field"?}}`, where
//! `code` is stable for scripts and `message` says what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use como_orchestrator::operator::OperatorError;
use como_schemas::InvalidInput;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `refused`,
    /// `unavailable`, `sevenrooms_unavailable` (with `Retry-After`), `sevenrooms_refused`, `not_configured`
    /// or `internal`.
    pub code: String,
    pub message: String,
    /// The input field at fault, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A refusal, ready to be answered.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// `Retry-After`, in seconds, for a 503 that knows when to try again.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn invalid(field: &str, reason: &str) -> ApiError {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{field}: {reason}"),
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store or the queues did not answer: {cause}; try again"),
        )
    }

    /// SevenRooms cannot be read and nothing is cached: 503 `sevenrooms_unavailable`, with
    /// `Retry-After`.
    pub fn sevenrooms_unavailable(message: String, retry_after: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(whole_seconds(retry_after)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sevenrooms_unavailable",
                message,
            )
        }
    }

    /// SevenRooms answered a view's read with a refusal and nothing is cached: 502
    /// `sevenrooms_refused`, without `Retry-After` (the same read would be refused again).
    pub fn sevenrooms_refused(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "sevenrooms_refused", message)
    }

    /// This API cannot serve the route as configured (no `Retry-After`: waiting will not help).
    pub fn not_configured(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A store error while reading or writing: the store may be briefly unavailable.
    pub fn store(cause: como_ports::PortError) -> ApiError {
        ApiError::unavailable(cause)
    }
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> ApiError {
        let message = e.to_string();
        match e {
            OperatorError::EmptyReason => ApiError::invalid("reason", &message),
            OperatorError::EmptyActionId => ApiError::invalid("action_id", &message),
            OperatorError::NotFound(_) => ApiError::not_found(message),
            OperatorError::Refused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "refused", message)
            }
            OperatorError::Conflict { .. } => ApiError::conflict(message),
            OperatorError::Store { .. }
            | OperatorError::Unrecorded(_)
            | OperatorError::Redrive(_)
            | OperatorError::Forget(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            OperatorError::Runtime { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `d` in whole seconds, rounded up, at least 1: a `Retry-After` that is never too early.
pub fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// A JSON body, or 400 naming the field at fault.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    InvalidInput::parse_json(body).map_err(|e| ApiError::invalid(&e.field, &e.reason))
}
