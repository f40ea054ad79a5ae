//! Automatic rollback: a background task of each node reads the bakes of its routes
//! (the outcome windows the requests fill, [`crate::routing::Bake`]) once a second and,
//! on a breach, rolls the environment back (or aborts the canary) through the store
//! like any move, naming the pointer's revision it saw as `expected_revision`. In a
//! fleet every node watches its own traffic; the first commit wins and the others are
//! refused with a revision conflict, so one rollback is recorded.
//!
//! Runs in its own task, never in a request's future: what follows the commit (the
//! routing table, the metric, the log) happens even if nobody is connected.

use super::Admin;
use crate::domain::{now_ms, MoveKind, MoveRequest};
use crate::store::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often the bakes are read.
pub const TICK: Duration = Duration::from_millis(500);

/// The gateway's own identity in history.
pub const ACTOR: &str = "switchyard";

/// Reads every active bake each [`TICK`] and acts on a breach. Runs until dropped.
pub async fn run(admin: Arc<Admin>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        for (slot, route) in admin.table.routes() {
            let Some(bake) = route.bake.clone() else {
                continue;
            };
            if !bake.active(now) {
                continue;
            }
            let Some(reason) = bake.breach(now) else {
                continue;
            };
            let req = MoveRequest {
                agent: slot.agent.clone(),
                environment: slot.environment.clone(),
                kind: MoveKind::AutoRollback {
                    watched: bake.version,
                },
                actor: ACTOR.into(),
                on_behalf_of: None,
                reason: Some(reason.clone()),
                // the policy is the operator's standing confirmation
                confirm: true,
                expected_revision: Some(route.pointer_revision),
                force: false,
                expect_version: None,
            };
            match admin.execute(Command::Move(req), ACTOR).await {
                Ok(_) => {
                    bake.done.store(true, Ordering::Relaxed);
                    admin
                        .table
                        .metrics()
                        .auto_rollback(slot.agent.as_str(), slot.environment.as_str());
                    tracing::warn!(agent = %slot.agent, environment = %slot.environment, version = bake.version, canary = bake.canary, reason = %reason, "rolled back automatically");
                }
                Err(e) if e.code == super::error::Code::StoreUnavailable => {
                    // the next tick tries again
                    tracing::warn!(agent = %slot.agent, environment = %slot.environment, error.detail = %e.message, "automatic rollback could not reach the store");
                }
                Err(e) => {
                    // another node (or an operator) moved first, or there is nothing
                    // to go back to: this watch is over
                    bake.done.store(true, Ordering::Relaxed);
                    tracing::info!(agent = %slot.agent, environment = %slot.environment, reason = %reason, outcome = %e.message, "automatic rollback not made");
                }
            }
        }
    }
}
