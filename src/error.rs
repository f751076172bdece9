//! Error enums of the layers above storage, and the one mapping to `tonic::Status`.
//!
//! `store::StoreError` says what went wrong with the database; [`Error`] is the
//! domain's answer, naming the field and the rule that a request broke. Internal
//! failures are logged here, once, before they become an opaque `INTERNAL`.

use tonic::{Code, Status};

use crate::store::StoreError;

/// What a request can fail with, in the vocabulary of the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field broke a validation rule.
    #[error("{field}: {rule}")]
    InvalidArgument { field: &'static str, rule: String },
    /// No usable credential: missing, malformed, unknown, expired, revoked or legacy key.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The state of the system forbids the change (plan limits, default workspace, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// One operation of a batch failed, so the whole batch did.
    #[error("operations[{index}]: {source}")]
    Operation { index: usize, source: Box<Error> },
}

/// The result type of the domain layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A validation failure of `field`.
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            rule: rule.into(),
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            Self::Store(StoreError::Conflict(_)) => Code::AlreadyExists,
            Self::Store(StoreError::Internal(_)) => Code::Internal,
            Self::Operation { source, .. } => source.code(),
        }
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(StoreError::from(err))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let err = match err {
            // Storage failures say nothing of the operation.
            Error::Operation { source, .. } if matches!(*source, Error::Store(_)) => *source,
            err => err,
        };
        let code = err.code();
        match &err {
            Error::Store(StoreError::Internal(detail)) => {
                tracing::error!(error = %detail, "internal storage error");
                Status::internal("internal error")
            }
            Error::Store(StoreError::Unavailable(detail)) => {
                tracing::warn!(error = %detail, "storage unavailable");
                Status::unavailable("storage is unavailable, retry later")
            }
            _ => Status::new(code, bounded(err.to_string())),
        }
    }
}

/// Longest status message sent, in bytes. Messages quote the values a request
/// broke a rule with; a huge value must not make the `grpc-message` header
/// (percent-encoded, so up to three times longer) exceed what clients accept.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// `message`, cut at a character boundary to at most [`MAX_MESSAGE_BYTES`]
/// (with `…` marking the cut).
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = Error::NotFound(format!("workspace `{}` not found", "🦀".repeat(2500)));
        let status = Status::from(long);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().starts_with("workspace `🦀"));
        assert!(status.message().ends_with('…'));
        let short = Status::from(Error::invalid("name", "must not be empty"));
        assert_eq!(short.message(), "name: must not be empty");
    }
}
