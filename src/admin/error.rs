//! Admin API errors: every failure is an [`ApiError`] of one [`Code`], and one
//! exhaustive map gives each code its status and its wire name. Store details (SQL
//! errors, paths) go to the log only; the client sees a fixed message.

use crate::domain::DomainError;
use crate::store;
use http::StatusCode;

/// What went wrong, as the admin API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    Conflict,
    RevisionConflict,
    VersionStopped,
    NotDeployed,
    ConfirmationRequired,
    InvalidVersion,
    StoreUnavailable,
    Internal,
    CandidateUnhealthy,
    CanaryOpen,
    NoCanary,
    MissingSecret,
    SecretInUse,
}

impl Code {
    pub const ALL: [Code; 19] = [
        Self::BadRequest,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::BodyTooLarge,
        Self::Conflict,
        Self::RevisionConflict,
        Self::VersionStopped,
        Self::NotDeployed,
        Self::ConfirmationRequired,
        Self::InvalidVersion,
        Self::StoreUnavailable,
        Self::Internal,
        Self::CandidateUnhealthy,
        Self::CanaryOpen,
        Self::NoCanary,
        Self::MissingSecret,
        Self::SecretInUse,
    ];

    /// Status and wire name. No `_` arm: a new code must be placed here.
    pub fn parts(self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Conflict => (StatusCode::CONFLICT, "conflict"),
            Self::RevisionConflict => (StatusCode::CONFLICT, "revision_conflict"),
            Self::VersionStopped => (StatusCode::CONFLICT, "version_stopped"),
            Self::NotDeployed => (StatusCode::CONFLICT, "not_deployed"),
            Self::ConfirmationRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "confirmation_required")
            }
            Self::InvalidVersion => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_version"),
            Self::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::CandidateUnhealthy => (StatusCode::CONFLICT, "candidate_unhealthy"),
            Self::CanaryOpen => (StatusCode::CONFLICT, "canary_open"),
            Self::NoCanary => (StatusCode::CONFLICT, "no_canary"),
            Self::MissingSecret => (StatusCode::CONFLICT, "missing_secret"),
            Self::SecretInUse => (StatusCode::CONFLICT, "secret_in_use"),
        }
    }

    /// The variant's place in [`Self::ALL`] (no `_` arm; the table test checks it).
    pub const fn index(self) -> usize {
        match self {
            Self::BadRequest => 0,
            Self::Unauthenticated => 1,
            Self::Forbidden => 2,
            Self::NotFound => 3,
            Self::MethodNotAllowed => 4,
            Self::BodyTooLarge => 5,
            Self::Conflict => 6,
            Self::RevisionConflict => 7,
            Self::VersionStopped => 8,
            Self::NotDeployed => 9,
            Self::ConfirmationRequired => 10,
            Self::InvalidVersion => 11,
            Self::StoreUnavailable => 12,
            Self::Internal => 13,
            Self::CandidateUnhealthy => 14,
            Self::CanaryOpen => 15,
            Self::NoCanary => 16,
            Self::MissingSecret => 17,
            Self::SecretInUse => 18,
        }
    }
}

/// A failure the admin API answers with the error envelope.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// What the envelope carries beside the message (`error.details`), when any.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.code.parts().0
    }

    pub fn code_name(&self) -> &'static str {
        self.code.parts().1
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

/// The code of a domain error. No `_` arm: a new variant must be placed.
pub fn classify(e: &DomainError) -> Code {
    use DomainError as D;
    match e {
        D::Invalid { .. } => Code::BadRequest,
        D::InvalidVersion { .. } => Code::InvalidVersion,
        D::AgentNotFound(_) => Code::NotFound,
        D::EnvironmentNotFound(_) => Code::NotFound,
        D::VersionNotFound { .. } => Code::NotFound,
        D::TokenNotFound(_) => Code::NotFound,
        D::AdminTokenNotFound(_) => Code::NotFound,
        D::AgentExists(_) => Code::Conflict,
        D::AdminTokenExists(_) => Code::Conflict,
        D::VersionStopped { .. } => Code::VersionStopped,
        D::AlreadyLive { .. } => Code::Conflict,
        D::NotDeployed(_) => Code::NotDeployed,
        D::NoNextStage(_) => Code::Conflict,
        D::NothingToRollBack(_) => Code::Conflict,
        D::ConfirmationRequired { .. } => Code::ConfirmationRequired,
        D::RevisionConflict { .. } => Code::RevisionConflict,
        D::CandidateChanged(_) => Code::Conflict,
        D::TokenRevoked(_) => Code::Conflict,
        D::CanaryOpen { .. } => Code::CanaryOpen,
        D::NoCanary(_) => Code::NoCanary,
        D::MissingSecret { .. } => Code::MissingSecret,
        D::SecretInUse { .. } => Code::SecretInUse,
        D::SecretNotFound(_) => Code::NotFound,
        D::NoSecretKey(_) => Code::Conflict,
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let err = Self::new(classify(&e), e.to_string());
        match e {
            DomainError::MissingSecret { names, .. } => {
                err.with_details(serde_json::json!({ "missing": names }))
            }
            _ => err,
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Domain(d) => d.into(),
            store::Error::Unavailable(detail) => {
                tracing::error!(error.detail = %detail, "store unavailable");
                Self::new(
                    Code::StoreUnavailable,
                    "the store is unavailable; nothing was changed, retry later",
                )
            }
            store::Error::Unknown(detail) => {
                tracing::error!(error.detail = %detail, "store did not confirm a commit");
                Self::new(
                    Code::StoreUnavailable,
                    "the store did not confirm the write: it may have been applied; read the state before retrying",
                )
            }
            store::Error::Backend(detail) => {
                tracing::error!(error.detail = %detail, "store error");
                Self::internal("the store failed; nothing was changed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DomainError as D;

    #[test]
    fn every_code_has_its_status_and_name() {
        let expected = [
            (400, "bad_request"),
            (401, "unauthenticated"),
            (403, "forbidden"),
            (404, "not_found"),
            (405, "method_not_allowed"),
            (413, "body_too_large"),
            (409, "conflict"),
            (409, "revision_conflict"),
            (409, "version_stopped"),
            (409, "not_deployed"),
            (428, "confirmation_required"),
            (422, "invalid_version"),
            (503, "store_unavailable"),
            (500, "internal"),
            (409, "candidate_unhealthy"),
            (409, "canary_open"),
            (409, "no_canary"),
            (409, "missing_secret"),
            (409, "secret_in_use"),
        ];
        // the length is in the type: a code added to ALL must be added here
        let expected: [(u16, &str); Code::ALL.len()] = expected;
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?} is not at its place in ALL");
            let (s, name) = c.parts();
            assert_eq!((s.as_u16(), name), expected[i], "{c:?}");
        }
    }

    #[test]
    fn every_domain_error_has_its_code() {
        let s = String::new;
        let table = [
            (
                D::Invalid {
                    field: "f",
                    message: s(),
                },
                Code::BadRequest,
            ),
            (
                D::InvalidVersion {
                    field: "f",
                    message: s(),
                },
                Code::InvalidVersion,
            ),
            (D::AgentNotFound(s()), Code::NotFound),
            (D::AgentExists(s()), Code::Conflict),
            (D::EnvironmentNotFound(s()), Code::NotFound),
            (
                D::VersionNotFound {
                    agent: s(),
                    version: s(),
                },
                Code::NotFound,
            ),
            (
                D::VersionStopped {
                    agent: s(),
                    version: s(),
                },
                Code::VersionStopped,
            ),
            (
                D::AlreadyLive {
                    environment: s(),
                    version: s(),
                },
                Code::Conflict,
            ),
            (D::NotDeployed(s()), Code::NotDeployed),
            (D::NoNextStage(s()), Code::Conflict),
            (D::NothingToRollBack(s()), Code::Conflict),
            (
                D::ConfirmationRequired { environment: s() },
                Code::ConfirmationRequired,
            ),
            (
                D::RevisionConflict {
                    environment: s(),
                    expected: 1,
                    current: 2,
                },
                Code::RevisionConflict,
            ),
            (D::CandidateChanged(s()), Code::Conflict),
            (D::TokenNotFound(s()), Code::NotFound),
            (D::AdminTokenNotFound(s()), Code::NotFound),
            (D::TokenRevoked(s()), Code::Conflict),
            (D::AdminTokenExists(s()), Code::Conflict),
            (
                D::CanaryOpen {
                    environment: s(),
                    version: s(),
                },
                Code::CanaryOpen,
            ),
            (D::NoCanary(s()), Code::NoCanary),
            (
                D::MissingSecret {
                    environment: s(),
                    version: s(),
                    names: vec![s()],
                },
                Code::MissingSecret,
            ),
            (
                D::SecretInUse {
                    name: s(),
                    users: s(),
                },
                Code::SecretInUse,
            ),
            (D::SecretNotFound(s()), Code::NotFound),
            (D::NoSecretKey(s()), Code::Conflict),
        ];
        // every variant is in the table, each once, in declaration order: `place` has
        // no `_` arm, so a new variant needs a place (the next number) to compile
        let place = |e: &DomainError| match e {
            D::Invalid { .. } => 0,
            D::InvalidVersion { .. } => 1,
            D::AgentNotFound(_) => 2,
            D::AgentExists(_) => 3,
            D::EnvironmentNotFound(_) => 4,
            D::VersionNotFound { .. } => 5,
            D::VersionStopped { .. } => 6,
            D::AlreadyLive { .. } => 7,
            D::NotDeployed(_) => 8,
            D::NoNextStage(_) => 9,
            D::NothingToRollBack(_) => 10,
            D::ConfirmationRequired { .. } => 11,
            D::RevisionConflict { .. } => 12,
            D::CandidateChanged(_) => 13,
            D::TokenNotFound(_) => 14,
            D::AdminTokenNotFound(_) => 15,
            D::TokenRevoked(_) => 16,
            D::AdminTokenExists(_) => 17,
            D::CanaryOpen { .. } => 18,
            D::NoCanary(_) => 19,
            D::MissingSecret { .. } => 20,
            D::SecretInUse { .. } => 21,
            D::SecretNotFound(_) => 22,
            D::NoSecretKey(_) => 23,
        };
        let placed: Vec<usize> = table.iter().map(|(e, _)| place(e)).collect();
        assert_eq!(placed, (0..table.len()).collect::<Vec<_>>());
        for (e, code) in table {
            assert_eq!(classify(&e), code, "{e:?}");
        }
    }

    #[test]
    fn store_failures_hide_their_detail() {
        let e: ApiError = store::Error::Backend("SQLITE_CORRUPT at /secret/path".into()).into();
        assert_eq!(e.status(), 500);
        assert!(!e.message.contains("secret"));
        let e: ApiError = store::Error::Unavailable("conn refused".into()).into();
        assert_eq!(
            (e.status().as_u16(), e.code_name()),
            (503, "store_unavailable")
        );
        assert!(e.message.contains("nothing was changed"), "{}", e.message);
        let e: ApiError = store::Error::Unknown("no answer within 5 s".into()).into();
        assert_eq!(
            (e.status().as_u16(), e.code_name()),
            (503, "store_unavailable")
        );
        assert!(e.message.contains("may have been applied"), "{}", e.message);
        assert!(!e.message.contains("nothing was changed"), "{}", e.message);
    }
}
