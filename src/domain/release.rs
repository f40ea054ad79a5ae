//! Progressive delivery: canaries, the policy of an environment (session affinity,
//! stream drain, automatic rollback), and what a slot needs to know about them.
//!
//! Pure rules. Weights are kept in hundredths of a percent (`5.25 %` is 525), so the
//! assignment `h mod 10000 < weight × 100` is integer arithmetic everywhere.

use super::{AgentName, DomainError, EnvName, Millis, Result, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest weight: 100 %.
pub const WEIGHT_MAX: u32 = 10_000;

/// A canary beside an environment's version: which version, what share of sessions,
/// since when, and the revision of its start (part of every session's hash, so a new
/// canary draws afresh while a weight change keeps every session where it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub version: u32,
    /// Hundredths of a percent, 0..=10000.
    pub weight: u32,
    pub since: Millis,
    pub start_revision: u64,
    /// The last start or weight change (a forward move: it starts a bake).
    pub moved_at: Millis,
}

/// Parses a weight given in percent with at most two decimals into hundredths.
pub fn parse_weight(field: &'static str, w: f64) -> Result<u32> {
    let scaled = w * 100.0;
    let rounded = scaled.round();
    if !w.is_finite() || !(0.0..=100.0).contains(&w) || (scaled - rounded).abs() > 1e-6 {
        return Err(DomainError::Invalid {
            field,
            message: "a percentage from 0 to 100 with at most two decimals".into(),
        });
    }
    Ok(rounded as u32)
}

/// A weight in hundredths as the percentage the API shows.
pub fn weight_percent(w: u32) -> f64 {
    f64::from(w) / 100.0
}

/// The assignment hash of API.md: the first 8 bytes, big-endian, of SHA-256 over
/// `agent \0 environment \0 <start revision> \0 key`, modulo 10000.
pub fn canary_bucket(agent: &str, environment: &str, start_revision: u64, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(agent.as_bytes());
    h.update([0]);
    h.update(environment.as_bytes());
    h.update([0]);
    h.update(start_revision.to_string().as_bytes());
    h.update([0]);
    h.update(key);
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % u64::from(WEIGHT_MAX)) as u32
}

/// Whether a session with this bucket goes to a canary of `weight`.
pub fn in_canary(bucket: u32, weight: u32) -> bool {
    bucket < weight
}

/// How sessions choose a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// Every request follows the environment's pointer (and the canary split).
    #[default]
    Follow,
    /// A session keeps the version it started on, through a signed pin.
    Sticky,
}

/// When the gateway rolls an environment back by itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRollback {
    #[serde(default = "default_window")]
    pub window_s: u32,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default)]
    pub max_ttfb_p99_ms: Option<u32>,
    #[serde(default = "default_bake")]
    pub bake_s: u32,
}

fn default_window() -> u32 {
    30
}
fn default_min_requests() -> u32 {
    20
}
fn default_max_error_rate() -> f64 {
    0.05
}
fn default_bake() -> u32 {
    600
}

impl Default for AutoRollback {
    fn default() -> Self {
        Self {
            window_s: default_window(),
            min_requests: default_min_requests(),
            max_error_rate: default_max_error_rate(),
            max_ttfb_p99_ms: None,
            bake_s: default_bake(),
        }
    }
}

/// Longest window and bake the gateway keeps counts for.
pub const WINDOW_MAX_S: u32 = 3600;
pub const BAKE_MAX_S: u32 = 7 * 24 * 3600;
pub const SESSION_TTL_MAX_S: u32 = 30 * 24 * 3600;
pub const STREAM_DRAIN_MAX_S: u32 = 24 * 3600;

impl AutoRollback {
    fn check(&self) -> Result<()> {
        let bad = |field: &'static str, message: &str| {
            Err(DomainError::Invalid {
                field,
                message: message.into(),
            })
        };
        if !(1..=WINDOW_MAX_S).contains(&self.window_s) {
            return bad("auto_rollback.window_s", "from 1 to 3600 seconds");
        }
        if self.min_requests == 0 {
            return bad("auto_rollback.min_requests", "at least 1");
        }
        if !self.max_error_rate.is_finite() || !(0.0..=1.0).contains(&self.max_error_rate) {
            return bad("auto_rollback.max_error_rate", "a fraction from 0 to 1");
        }
        if self.max_ttfb_p99_ms == Some(0) {
            return bad("auto_rollback.max_ttfb_p99_ms", "at least 1, or null");
        }
        if !(1..=BAKE_MAX_S).contains(&self.bake_s) {
            return bad("auto_rollback.bake_s", "from 1 second to 7 days");
        }
        Ok(())
    }
}

/// The policy of one (agent, environment).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub session_affinity: Affinity,
    pub session_ttl_s: u32,
    pub stream_drain_s: u32,
    pub auto_rollback: Option<AutoRollback>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            session_affinity: Affinity::Follow,
            session_ttl_s: 1800,
            stream_drain_s: 60,
            auto_rollback: None,
        }
    }
}

/// A `PUT …/policy` body: the fields given replace those of the policy; the others
/// keep their values. `auto_rollback: null` turns automatic rollback off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(default)]
    pub session_affinity: Option<Affinity>,
    #[serde(default)]
    pub session_ttl_s: Option<u32>,
    #[serde(default)]
    pub stream_drain_s: Option<u32>,
    #[serde(default, deserialize_with = "some_or_null")]
    pub auto_rollback: Option<Option<AutoRollback>>,
}

/// Tells a field left out (None) from one set to null (Some(None)).
fn some_or_null<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl Policy {
    /// The policy with `patch` applied, checked.
    pub fn merge(mut self, patch: &PolicyPatch) -> Result<Policy> {
        if let Some(a) = patch.session_affinity {
            self.session_affinity = a;
        }
        if let Some(t) = patch.session_ttl_s {
            self.session_ttl_s = t;
        }
        if let Some(d) = patch.stream_drain_s {
            self.stream_drain_s = d;
        }
        if let Some(a) = patch.auto_rollback {
            self.auto_rollback = a;
        }
        self.check()?;
        Ok(self)
    }

    pub fn check(&self) -> Result<()> {
        if !(1..=SESSION_TTL_MAX_S).contains(&self.session_ttl_s) {
            return Err(DomainError::Invalid {
                field: "session_ttl_s",
                message: "from 1 second to 30 days".into(),
            });
        }
        if self.stream_drain_s > STREAM_DRAIN_MAX_S {
            return Err(DomainError::Invalid {
                field: "stream_drain_s",
                message: "at most 86400 seconds".into(),
            });
        }
        if let Some(a) = &self.auto_rollback {
            a.check()?;
        }
        Ok(())
    }
}

/// One policy change, as `GET …/policy/history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyChange {
    pub agent: AgentName,
    pub environment: EnvName,
    pub actor: String,
    #[serde(serialize_with = "super::ser_time")]
    pub at: Millis,
    pub revision: u64,
    pub before: Policy,
    pub after: Policy,
}

/// What a slot needs beyond its live version: the canary, the versions a pin may
/// name, the policy and the last forward move (which starts a bake).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteExtra {
    /// The revision of the pointer's last move (what `expected_revision` names).
    pub pointer_revision: u64,
    pub canary: Option<(Canary, Version)>,
    /// Running versions that served the environment, newest service first, each with
    /// the revision of its last release there (0: never released).
    pub pinnable: Vec<(Version, u64)>,
    pub policy: Policy,
    /// When the last forward move was made and which version it put under watch.
    pub forward: Option<(Millis, u32)>,
    /// The sealed values the route's versions inject, resolved for the environment.
    pub secrets: Vec<super::SecretRecord>,
}

/// How many versions that served an environment its slot keeps for pins.
pub const PINNABLE_MAX: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_have_two_decimals() {
        assert_eq!(parse_weight("w", 5.0).unwrap(), 500);
        assert_eq!(parse_weight("w", 0.25).unwrap(), 25);
        assert_eq!(parse_weight("w", 100.0).unwrap(), 10_000);
        assert_eq!(parse_weight("w", 33.33).unwrap(), 3333);
        assert!(parse_weight("w", 0.125).is_err());
        assert!(parse_weight("w", -1.0).is_err());
        assert!(parse_weight("w", 100.01).is_err());
        assert!(parse_weight("w", f64::NAN).is_err());
        assert_eq!(weight_percent(525), 5.25);
    }

    #[test]
    fn assignment_is_stable_and_monotone_in_the_weight() {
        let b = canary_bucket("bot", "production", 7, b"session-1");
        assert_eq!(b, canary_bucket("bot", "production", 7, b"session-1"));
        assert_ne!(
            (0..50)
                .map(|i| canary_bucket("bot", "production", 8, format!("s{i}").as_bytes()))
                .collect::<Vec<_>>(),
            (0..50)
                .map(|i| canary_bucket("bot", "production", 7, format!("s{i}").as_bytes()))
                .collect::<Vec<_>>(),
            "a new start revision draws afresh"
        );
        // a session in at 10 % is in at every larger weight
        for i in 0..2000 {
            let b = canary_bucket("bot", "production", 7, format!("k{i}").as_bytes());
            if in_canary(b, 1000) {
                assert!(in_canary(b, 5000));
            }
        }
        let n = (0..10_000)
            .filter(|i| {
                in_canary(
                    canary_bucket("bot", "production", 7, format!("k{i}").as_bytes()),
                    1000,
                )
            })
            .count();
        assert!((900..=1100).contains(&n), "{n} of 10000 at 10 %");
    }

    #[test]
    fn policy_merges_and_checks() {
        let p = Policy::default();
        let patch: PolicyPatch = serde_json::from_str(
            r#"{"session_affinity":"sticky","auto_rollback":{"window_s":10}}"#,
        )
        .unwrap();
        let q = p.merge(&patch).unwrap();
        assert_eq!(q.session_affinity, Affinity::Sticky);
        assert_eq!(q.session_ttl_s, 1800);
        assert_eq!(q.auto_rollback.unwrap().window_s, 10);
        assert_eq!(q.auto_rollback.unwrap().min_requests, 20);
        let off: PolicyPatch = serde_json::from_str(r#"{"auto_rollback":null}"#).unwrap();
        assert_eq!(q.merge(&off).unwrap().auto_rollback, None);
        let keep: PolicyPatch = serde_json::from_str(r#"{"session_ttl_s":60}"#).unwrap();
        assert!(q.merge(&keep).unwrap().auto_rollback.is_some());
        let bad: PolicyPatch = serde_json::from_str(r#"{"session_ttl_s":0}"#).unwrap();
        assert!(q.merge(&bad).is_err());
        let bad: PolicyPatch =
            serde_json::from_str(r#"{"auto_rollback":{"max_error_rate":2}}"#).unwrap();
        assert!(p.merge(&bad).is_err());
        assert!(serde_json::from_str::<PolicyPatch>(r#"{"nope":1}"#).is_err());
    }
}
