//! Every way a client request can fail at the gateway, and the one map from each to a
//! status, a code and a fixed message (API.md's table). Details such as upstream
//! addresses go to the log, never to the client.

use crate::routing::AuthError;
use http::StatusCode;

/// A client-visible failure. Zero-sized data: the message is fixed per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    BadRequest,
    MissingToken,
    UnknownToken,
    TokenRevoked,
    TokenExpired,
    WrongEnvironment,
    TokenSuspended,
    BodyTooLarge,
    HeadersTooLarge,
    UpstreamUnavailable,
    NotDeployed,
    VersionStopped,
    UpstreamTimeout,
    RequestTimeout,
    Overloaded,
    NotImplemented,
    ClientAborted,
    PinNotAllowed,
    PinUnavailable,
    SecretUnavailable,
}

impl ProxyError {
    pub const ALL: [ProxyError; 20] = [
        Self::BadRequest,
        Self::MissingToken,
        Self::UnknownToken,
        Self::TokenRevoked,
        Self::TokenExpired,
        Self::WrongEnvironment,
        Self::TokenSuspended,
        Self::BodyTooLarge,
        Self::HeadersTooLarge,
        Self::UpstreamUnavailable,
        Self::NotDeployed,
        Self::VersionStopped,
        Self::UpstreamTimeout,
        Self::RequestTimeout,
        Self::Overloaded,
        Self::NotImplemented,
        Self::ClientAborted,
        Self::PinNotAllowed,
        Self::PinUnavailable,
        Self::SecretUnavailable,
    ];

    /// The variant's place in [`Self::ALL`]. No `_` arm: a new variant must be given
    /// a place, and the table test checks that `ALL` holds it there.
    pub const fn index(self) -> usize {
        match self {
            Self::BadRequest => 0,
            Self::MissingToken => 1,
            Self::UnknownToken => 2,
            Self::TokenRevoked => 3,
            Self::TokenExpired => 4,
            Self::WrongEnvironment => 5,
            Self::TokenSuspended => 6,
            Self::BodyTooLarge => 7,
            Self::HeadersTooLarge => 8,
            Self::UpstreamUnavailable => 9,
            Self::NotDeployed => 10,
            Self::VersionStopped => 11,
            Self::UpstreamTimeout => 12,
            Self::RequestTimeout => 13,
            Self::Overloaded => 14,
            Self::NotImplemented => 15,
            Self::ClientAborted => 16,
            Self::PinNotAllowed => 17,
            Self::PinUnavailable => 18,
            Self::SecretUnavailable => 19,
        }
    }

    /// Status, code and message. No `_` arm: a new variant must be placed here.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, "bad_request", "malformed request"),
            Self::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing deployment token: send Authorization: Bearer <token>",
            ),
            Self::UnknownToken => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown deployment token",
            ),
            Self::TokenRevoked => (
                StatusCode::FORBIDDEN,
                "token_revoked",
                "this deployment token has been revoked",
            ),
            Self::TokenExpired => (
                StatusCode::FORBIDDEN,
                "token_expired",
                "this deployment token has expired",
            ),
            Self::TokenSuspended => (
                StatusCode::FORBIDDEN,
                "token_suspended",
                "this deployment token is suspended",
            ),
            Self::WrongEnvironment => (
                StatusCode::FORBIDDEN,
                "wrong_environment",
                "the token is not valid for the environment named in x-switchyard-environment",
            ),
            Self::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than the gateway accepts",
            ),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than the gateway accepts",
            ),
            Self::UpstreamUnavailable => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the agent's upstream could not be reached or failed",
            ),
            Self::NotDeployed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_deployed",
                "no version of this agent is deployed in this environment",
            ),
            Self::VersionStopped => (
                StatusCode::SERVICE_UNAVAILABLE,
                "version_stopped",
                "the version deployed in this environment is stopped",
            ),
            Self::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the agent's upstream did not answer in time",
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ),
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the gateway is at its connection or request limit; retry shortly",
            ),
            Self::NotImplemented => (
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                "the request uses a transfer coding the gateway does not implement",
            ),
            // the client left before its body ended: nobody reads this answer, but the
            // access log (499, as nginx logs it) and the 4xx count say what happened
            Self::ClientAborted => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "client_aborted",
                "the client closed the connection before its request body was complete",
            ),
            Self::PinNotAllowed => (
                StatusCode::FORBIDDEN,
                "pin_not_allowed",
                "this deployment token may not pin a version: mint one with the pin scope",
            ),
            Self::PinUnavailable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "pin_unavailable",
                "the pinned version has not served this environment or is not running",
            ),
            Self::SecretUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "secret_unavailable",
                "a secret this version needs is not available on this gateway",
            ),
        }
    }

    /// A failure of the client's own request (its body), not of the upstream.
    pub fn is_client_side(self) -> bool {
        matches!(
            self,
            Self::BadRequest
                | Self::BodyTooLarge
                | Self::RequestTimeout
                | Self::NotImplemented
                | Self::ClientAborted
        )
    }

    /// The label used for auth-failure metrics, when this is an auth failure.
    pub fn auth_reason(self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("missing"),
            Self::UnknownToken => Some("unknown"),
            Self::TokenRevoked => Some("revoked"),
            Self::TokenExpired => Some("expired"),
            Self::WrongEnvironment => Some("wrong_environment"),
            Self::TokenSuspended => Some("suspended"),
            Self::BadRequest
            | Self::BodyTooLarge
            | Self::HeadersTooLarge
            | Self::UpstreamUnavailable
            | Self::NotDeployed
            | Self::VersionStopped
            | Self::UpstreamTimeout
            | Self::RequestTimeout
            | Self::Overloaded
            | Self::NotImplemented
            | Self::ClientAborted
            | Self::PinNotAllowed
            | Self::PinUnavailable
            | Self::SecretUnavailable => None,
        }
    }
}

impl From<AuthError> for ProxyError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unknown => Self::UnknownToken,
            AuthError::Revoked => Self::TokenRevoked,
            AuthError::Suspended => Self::TokenSuspended,
            AuthError::Expired => Self::TokenExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_table_of_api_md() {
        let expected = [
            (400, "bad_request"),
            (401, "unauthenticated"),
            (401, "unauthenticated"),
            (403, "token_revoked"),
            (403, "token_expired"),
            (403, "wrong_environment"),
            (403, "token_suspended"),
            (413, "body_too_large"),
            (431, "headers_too_large"),
            (502, "upstream_unavailable"),
            (503, "not_deployed"),
            (503, "version_stopped"),
            (504, "upstream_timeout"),
            (408, "request_timeout"),
            (503, "overloaded"),
            (501, "not_implemented"),
            (499, "client_aborted"),
            (403, "pin_not_allowed"),
            (422, "pin_unavailable"),
            (503, "secret_unavailable"),
        ];
        // `ALL`'s length is in its type and `expected` must match it: a new variant
        // that is not in both lists does not compile
        let expected: [(u16, &str); ProxyError::ALL.len()] = expected;
        for (i, e) in ProxyError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?} is not at its place in ALL");
        }
        for (e, (status, code)) in ProxyError::ALL.iter().zip(expected) {
            let (s, c, m) = e.parts();
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
            assert!(!m.is_empty());
        }
    }

    #[test]
    fn auth_reasons() {
        let reasons: Vec<_> = ProxyError::ALL
            .iter()
            .filter_map(|e| e.auth_reason())
            .collect();
        assert_eq!(
            reasons,
            [
                "missing",
                "unknown",
                "revoked",
                "expired",
                "wrong_environment",
                "suspended"
            ]
        );
        // every reason has its metric series, in the same order
        assert_eq!(reasons, crate::telemetry::AUTH_REASONS);
    }
}
