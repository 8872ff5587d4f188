//! The one error type of the ports.

/// What a port call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend cannot be reached or is overloaded; the caller may try again.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The call was wrong for this backend (an unknown queue, a receipt that is not one).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Stored data could not be read back (a corrupt row, a version this build cannot read).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

pub type PortResult<T> = Result<T, PortError>;
