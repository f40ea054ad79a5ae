//! The domain: agents, immutable versions, environments, pointers, history, tokens.
//!
//! Pure types and rules. Nothing here knows about HTTP, SQL or the clock beyond the
//! millisecond timestamps it is handed; the store and the admin API call into it.

pub mod diff;
pub mod identity;
pub mod moves;
pub mod names;
pub mod pipeline;
pub mod release;
pub mod secret;
pub mod token;
pub mod version;

pub use identity::{AdminTokenRecord, Identity, Role};
pub use moves::{Action, Move, MoveKind, MoveRequest, Pointer, UndoLink};
pub use names::{AgentName, EnvName, VersionRef};
pub use pipeline::{EnvSpec, Pipeline};
pub use release::{Affinity, AutoRollback, Canary, Policy, PolicyChange, PolicyPatch, RouteExtra};
pub use secret::{Inject, Sealed, SecretAudit, SecretInfo, SecretRecord};
pub use token::{TokenHash, TokenRecord};
pub use version::{HealthSpec, Version, VersionSpec, VersionState};

use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Formats a timestamp as RFC 3339 (`2026-11-23T20:23:10.123Z`).
pub fn format_time(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 timestamp (any offset) into [`Millis`].
pub fn parse_time(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}

/// An agent: a named service whose versions are deployed to environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub name: AgentName,
    pub description: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Millis,
}

pub(crate) fn ser_time<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*ms))
}

pub(crate) fn ser_opt_time<S: serde::Serializer>(
    ms: &Option<Millis>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_time(*ms)),
        None => s.serialize_none(),
    }
}

/// Every way a request can break a domain rule. The admin API maps each variant to a
/// status and a code in one exhaustive table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    InvalidVersion {
        field: &'static str,
        message: String,
    },
    #[error("agent {0} not found")]
    AgentNotFound(String),
    #[error("agent {0} already exists")]
    AgentExists(String),
    #[error("environment {0} is not in the pipeline")]
    EnvironmentNotFound(String),
    #[error("version {version} of agent {agent} not found")]
    VersionNotFound { agent: String, version: String },
    #[error("version {version} of agent {agent} is stopped; start it before moving it")]
    VersionStopped { agent: String, version: String },
    #[error("{version} is already live in {environment}")]
    AlreadyLive {
        environment: String,
        version: String,
    },
    #[error("{0} has no version deployed")]
    NotDeployed(String),
    #[error("{0} is the last stage of the pipeline; name a target with \"to\"")]
    NoNextStage(String),
    #[error("{0}")]
    NothingToRollBack(String),
    #[error("{environment} is protected: repeat the move with \"confirm\": true")]
    ConfirmationRequired { environment: String },
    #[error("expected revision {expected} but {environment} is at revision {current}")]
    RevisionConflict {
        environment: String,
        expected: u64,
        current: u64,
    },
    #[error("the version live in {0} changed while the candidate was checked; try again")]
    CandidateChanged(String),
    #[error("token {0} not found")]
    TokenNotFound(String),
    #[error("admin token {0} not found")]
    AdminTokenNotFound(String),
    #[error("token {0} is revoked: it cannot be suspended or resumed")]
    TokenRevoked(String),
    #[error("an admin token named {0} already exists; revoke it first")]
    AdminTokenExists(String),
    #[error("{environment} has a canary of {version} open: complete or abort it first")]
    CanaryOpen {
        environment: String,
        version: String,
    },
    #[error("{0} has no canary open")]
    NoCanary(String),
    #[error("{version} needs secrets not set for {environment}: {}", names.join(", "))]
    MissingSecret {
        environment: String,
        version: String,
        names: Vec<String>,
    },
    #[error(
        "{name} is needed by {users}; set another value instead, or move those versions first"
    )]
    SecretInUse { name: String, users: String },
    #[error("secret {0} not found")]
    SecretNotFound(String),
    #[error("{0}")]
    NoSecretKey(String),
}

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// A change to the state the data plane reads, produced by the store after a commit
/// and applied to the routing table (on this node now; on other nodes when they hear
/// of it).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The live version of (agent, environment) is now `version` (None: undeployed);
    /// also sent when that version is stopped or started.
    Route {
        agent: AgentName,
        environment: EnvName,
        revision: u64,
        version: Option<Version>,
        /// The canary, pins, policy and last forward move (None: none of them).
        extra: Option<Box<RouteExtra>>,
    },
    /// A token was created or revoked; the record carries its current state.
    Token(TokenRecord),
}
