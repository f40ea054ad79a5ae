//! The promotion gate: before a deploy or a promote moves a pointer, each endpoint of
//! the version that would go live is probed (`GET` its health path when the version
//! has one, else a connection; within `[upstream] gate_timeout_ms`, all at once);
//! fewer passing than its `min_healthy` is a 409 `candidate_unhealthy` naming every
//! endpoint's result, and nothing changes.
//! `"force": true` skips it (the history says `forced`); a rollback never waits for it.
//!
//! The version that was checked travels with the move (`expect_version`): if another
//! one would go live by the time the move commits, it is refused instead.

use super::error::{ApiError, Code};
use super::Admin;
use crate::domain::{MoveKind, MoveRequest, Version, VersionRef};
use crate::routing::RoutingTable;
use serde_json::json;

/// The version a deploy or promote would make live, when it can be told before the
/// move (otherwise the move itself answers why it cannot be made).
pub(super) async fn candidate(
    admin: &Admin,
    req: &MoveRequest,
) -> Result<Option<Version>, ApiError> {
    let version = match &req.kind {
        MoveKind::Deploy { version } => version.clone(),
        MoveKind::Promote { .. } => {
            let Some(slot) = admin.table.find_slot(&req.agent, &req.environment) else {
                return Ok(None);
            };
            let route = slot.route();
            let Some(t) = route.target.as_ref() else {
                return Ok(None);
            };
            VersionRef {
                agent: None,
                number: t.version,
            }
        }
        MoveKind::Canary { version, .. } => {
            // a weight change of the open canary moves no version in: no probe
            let open = admin
                .table
                .find_slot(&req.agent, &req.environment)
                .and_then(|s| s.route().choice.as_ref()?.canary.map(|_| ()));
            if open.is_some() {
                return Ok(None);
            }
            version.clone()
        }
        MoveKind::Rollback { .. }
        | MoveKind::Undeploy
        | MoveKind::CanaryComplete
        | MoveKind::CanaryAbort
        | MoveKind::AutoRollback { .. } => return Ok(None),
    };
    match admin.store.version(req.agent.clone(), version).await {
        // a stopped version cannot move: the move says so
        Ok(v) if v.state == crate::domain::VersionState::Stopped => Ok(None),
        Ok(v) => Ok(Some(v)),
        // not found and the like: the move gives the same answer with its own words
        Err(crate::store::Error::Domain(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Each endpoint's probe result, how many passed and how many the version needs.
pub(super) struct Probed {
    pub passed: usize,
    pub needed: usize,
    pub endpoints: Vec<serde_json::Value>,
}

impl Probed {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"passed": self.passed, "needed": self.needed, "endpoints": self.endpoints})
    }
}

/// Probes every endpoint of `v` at once, each within `[upstream] gate_timeout_ms`.
pub(super) async fn probe_all(table: &RoutingTable, v: &Version) -> Probed {
    let timeout = table.policy().gate_timeout();
    let path = v.health.as_ref().map(|h| h.path.as_str());
    let results = futures_util::future::join_all(
        v.upstreams
            .iter()
            .map(|u| async move { table.probe(u, path, timeout).await.err() }),
    )
    .await;
    Probed {
        passed: results.iter().filter(|r| r.is_none()).count(),
        needed: v.min_healthy as usize,
        endpoints: v
            .upstreams
            .iter()
            .zip(&results)
            .map(|(url, r)| json!({"url": url, "passed": r.is_none(), "error": r}))
            .collect(),
    }
}

/// Probes every endpoint of `v` at once; a 409 `candidate_unhealthy` when fewer than
/// its `min_healthy` pass.
pub(super) async fn check(table: &RoutingTable, v: &Version) -> Result<(), ApiError> {
    refusal(v, probe_all(table, v).await)
}

/// The gate's verdict on probe results: a 409 `candidate_unhealthy` when too few passed.
pub(super) fn refusal(v: &Version, p: Probed) -> Result<(), ApiError> {
    let Probed {
        passed,
        needed,
        endpoints,
    } = p;
    if passed >= needed {
        return Ok(());
    }
    tracing::warn!(agent = %v.agent, version = %v.label(), passed, "move refused: the candidate is not healthy");
    Err(ApiError::new(
        Code::CandidateUnhealthy,
        format!(
            "{} is not healthy: {passed} of {} endpoints answered, {needed} needed; nothing changed (\"force\": true moves it anyway)",
            v.label(),
            v.upstreams.len()
        ),
    )
    .with_details(json!({ "endpoints": endpoints, "min_healthy": needed })))
}
