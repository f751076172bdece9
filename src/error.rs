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
            _ => Status::new(code, err.to_string()),
        }
    }
}
