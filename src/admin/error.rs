//! Admin API errors: one exhaustive map from every failure to a status and a code.

use crate::domain::DomainError;
use crate::store;
use http::StatusCode;

/// A failure the admin API answers with the error envelope.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The status and code of a domain error. No `_` arm: a new variant must be placed.
pub fn classify(e: &DomainError) -> (StatusCode, &'static str) {
    use DomainError as D;
    match e {
        D::Invalid { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        D::InvalidVersion { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_version"),
        D::AgentNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        D::EnvironmentNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        D::VersionNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        D::TokenNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        D::AgentExists(_) => (StatusCode::CONFLICT, "conflict"),
        D::VersionStopped { .. } => (StatusCode::CONFLICT, "version_stopped"),
        D::AlreadyLive { .. } => (StatusCode::CONFLICT, "conflict"),
        D::NotDeployed(_) => (StatusCode::CONFLICT, "not_deployed"),
        D::NoNextStage(_) => (StatusCode::CONFLICT, "conflict"),
        D::NothingToRollBack(_) => (StatusCode::CONFLICT, "conflict"),
        D::ConfirmationRequired { .. } => {
            (StatusCode::PRECONDITION_REQUIRED, "confirmation_required")
        }
        D::RevisionConflict { .. } => (StatusCode::CONFLICT, "revision_conflict"),
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let (status, code) = classify(&e);
        Self::new(status, code, e.to_string())
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Domain(d) => d.into(),
            store::Error::Unavailable(detail) => {
                tracing::error!(error.detail = %detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; nothing was changed, retry later",
                )
            }
            store::Error::Unknown(detail) => {
                tracing::error!(error.detail = %detail, "store did not confirm a commit");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store did not confirm the write: it may have been applied; read the state before retrying",
                )
            }
            store::Error::Backend(detail) => {
                tracing::error!(error.detail = %detail, "store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store failed; nothing was changed",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_error_has_its_status_and_code() {
        let s = String::new;
        let table = [
            (
                D::Invalid {
                    field: "f",
                    message: s(),
                },
                400,
                "bad_request",
            ),
            (
                D::InvalidVersion {
                    field: "f",
                    message: s(),
                },
                422,
                "invalid_version",
            ),
            (D::AgentNotFound(s()), 404, "not_found"),
            (D::EnvironmentNotFound(s()), 404, "not_found"),
            (
                D::VersionNotFound {
                    agent: s(),
                    version: s(),
                },
                404,
                "not_found",
            ),
            (D::TokenNotFound(s()), 404, "not_found"),
            (D::AgentExists(s()), 409, "conflict"),
            (
                D::VersionStopped {
                    agent: s(),
                    version: s(),
                },
                409,
                "version_stopped",
            ),
            (
                D::AlreadyLive {
                    environment: s(),
                    version: s(),
                },
                409,
                "conflict",
            ),
            (D::NotDeployed(s()), 409, "not_deployed"),
            (D::NoNextStage(s()), 409, "conflict"),
            (D::NothingToRollBack(s()), 409, "conflict"),
            (
                D::ConfirmationRequired { environment: s() },
                428,
                "confirmation_required",
            ),
            (
                D::RevisionConflict {
                    environment: s(),
                    expected: 1,
                    current: 2,
                },
                409,
                "revision_conflict",
            ),
        ];
        for (e, status, code) in table {
            let (st, c) = classify(&e);
            assert_eq!((st.as_u16(), c), (status, code), "{e:?}");
        }
    }

    use DomainError as D;

    #[test]
    fn store_failures_hide_their_detail() {
        let e: ApiError = store::Error::Backend("SQLITE_CORRUPT at /secret/path".into()).into();
        assert_eq!(e.status, 500);
        assert!(!e.message.contains("secret"));
        let e: ApiError = store::Error::Unavailable("conn refused".into()).into();
        assert_eq!((e.status.as_u16(), e.code), (503, "store_unavailable"));
        assert!(e.message.contains("nothing was changed"), "{}", e.message);
        let e: ApiError = store::Error::Unknown("no answer within 5 s".into()).into();
        assert_eq!((e.status.as_u16(), e.code), (503, "store_unavailable"));
        assert!(e.message.contains("may have been applied"), "{}", e.message);
        assert!(!e.message.contains("nothing was changed"), "{}", e.message);
    }
}
