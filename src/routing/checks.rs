//! Active health checks: once per node, for the endpoints of every version that an
//! environment points at and that has a `health` rule.
//!
//! A supervisor looks at the live routes every [`SCAN`]; each endpoint to check gets a
//! task of its own that starts after a random part of its interval (so a fleet of
//! endpoints is not probed in step) and then probes every `interval_ms`. When no
//! environment points at the version any more, its tasks are stopped and the verdicts
//! forgotten; when one does again, they start over. Results go to the endpoint's
//! state, which every worker reads when it picks an endpoint.

use super::{EndpointState, RoutingTable};
use crate::domain::HealthSpec;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the supervisor compares the checks running with the live routes.
pub const SCAN: Duration = Duration::from_millis(250);

struct Running {
    spec: HealthSpec,
    state: Arc<EndpointState>,
    task: JoinHandle<()>,
}

/// The checks running; dropping it (the supervisor aborted) stops them all.
#[derive(Default)]
struct Checks(HashMap<String, Running>);

impl Drop for Checks {
    fn drop(&mut self) {
        for r in self.0.values() {
            r.task.abort();
        }
    }
}

/// Runs the checks of `table`'s live versions until dropped (abort the task).
pub async fn run(table: Arc<RoutingTable>) {
    let mut checks = Checks::default();
    let running = &mut checks.0;
    let mut tick = tokio::time::interval(SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted = table.checked_endpoints();
        running.retain(|key, r| {
            let keep = wanted.get(key).is_some_and(|(spec, _, _)| *spec == r.spec);
            if !keep {
                r.task.abort();
                r.state.unchecked();
            }
            keep
        });
        for (key, (spec, url, state)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(check(
                Arc::clone(&table),
                url,
                spec.clone(),
                Arc::clone(&state),
            ));
            running.insert(key, Running { spec, state, task });
        }
    }
}

/// Probes one endpoint every interval, forever.
async fn check(table: Arc<RoutingTable>, url: String, spec: HealthSpec, state: Arc<EndpointState>) {
    let interval = Duration::from_millis(spec.interval_ms);
    let timeout = Duration::from_millis(spec.timeout_ms);
    // staggered: a random part of the interval first
    let first = super::health::random() % spec.interval_ms.max(1);
    tokio::time::sleep(Duration::from_millis(first)).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = table.probe(&url, Some(&spec.path), timeout).await;
        if let Err(why) = &result {
            tracing::debug!(upstream = %url, reason = %why, "health check failed");
        }
        state.checked(result, (spec.healthy_threshold, spec.unhealthy_threshold));
    }
}

impl RoutingTable {
    /// The endpoints whose checks should run now: those of every live version with a
    /// health rule, by `agent/vN/url`, once each.
    fn checked_endpoints(&self) -> HashMap<String, (HealthSpec, String, Arc<EndpointState>)> {
        let mut out = HashMap::new();
        for slot in self.slots.iter() {
            let route = slot.route();
            let Some(t) = route.target.as_ref() else {
                continue;
            };
            let Some(spec) = &t.health else { continue };
            let label = t.label.to_str().unwrap_or("unknown");
            for ep in &t.endpoints {
                let key = format!("{}/{label}/{}", slot.agent, ep.state.url);
                out.entry(key)
                    .or_insert_with(|| (spec.clone(), ep.state.url.clone(), Arc::clone(&ep.state)));
            }
        }
        out
    }
}
