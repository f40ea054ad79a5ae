//! Metrics and logging.
//!
//! Metrics: the `metrics` facade's Prometheus recorder, owned by the gateway (not
//! installed globally, so several gateways can share a process). Handles are resolved
//! when a route is built ([`RouteMetrics`]) or at start (auth failures, moves, gauges);
//! a request only bumps atomics, never looks a series up by its labels. What the
//! routing table knows (live versions, the revision) is rendered at scrape time, so a
//! pointer move makes the old `switchyard_deployment_info` series disappear at once.
//! Labels carry only bounded values: agent, environment, version, status class, and
//! fixed reason/kind/action names — never tokens, paths, request ids or addresses.
//!
//! Logging: `tracing` with a human or JSON formatter. Secrets never reach a log: token
//! ids are logged, token text and header values are not.

use crate::config::{LogConfig, LogFormat};
use crate::domain::Action;
use metrics::{Counter, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::fmt::Write as _;

mod shards;
pub use shards::{Counted, EventCounts, Load, RouteMetrics, RouteRegistry};
use tracing_subscriber::EnvFilter;

pub const REQUESTS: &str = "switchyard_requests_total";
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
pub const UPSTREAM_FIRST_BYTE: &str = "switchyard_upstream_first_byte_seconds";
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
pub const AUTH_FAILURES: &str = "switchyard_auth_failures_total";
pub const IN_FLIGHT: &str = "switchyard_requests_in_flight";
pub const STREAMS: &str = "switchyard_streams_in_flight";
pub const CONNECTIONS: &str = "switchyard_client_connections";
pub const OVERLOAD: &str = "switchyard_overload_rejections_total";
pub const MOVES: &str = "switchyard_pointer_moves_total";
pub const AUTO_ROLLBACKS: &str = "switchyard_auto_rollbacks_total";
pub const STREAMS_ENDED: &str = "switchyard_streams_ended_total";
pub const PINNED: &str = "switchyard_pinned_requests_total";
pub const APPLY_LAG: &str = "switchyard_store_apply_lag_seconds";
pub const DEPLOYMENT_INFO: &str = "switchyard_deployment_info";
pub const REVISION: &str = "switchyard_control_plane_revision";
pub const BUILD_INFO: &str = "switchyard_build_info";
pub const ENDPOINT_UP: &str = "switchyard_upstream_endpoint_up";
pub const EJECTIONS: &str = "switchyard_upstream_ejections_total";
pub const RETRIES: &str = "switchyard_upstream_retries_total";
pub const NO_HEALTHY: &str = "switchyard_upstream_no_healthy_total";

/// Why a request went to another endpoint, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be made or closed before the request went out.
    Unsent,
    /// A GET, HEAD or OPTIONS whose connection closed before any response byte.
    Closed,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsent => "unsent",
            Self::Closed => "closed",
        }
    }
}

/// Rare events of a version's endpoints, counted by agent and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEvent {
    Ejected,
    Retry(RetryReason),
    /// No endpoint was eligible: every one was tried.
    NoHealthy,
}

/// Latency buckets, seconds: 100 µs to 30 s.
pub const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// HTTP status classes, the `status_class` label.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why an upstream call failed, the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] =
        [Self::Connect, Self::Timeout, Self::Reset, Self::Protocol];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

/// Auth failure reasons, the `reason` label.
pub const AUTH_REASONS: [&str; 6] = [
    "missing",
    "unknown",
    "revoked",
    "expired",
    "wrong_environment",
    "suspended",
];

/// The gateway's metrics: the recorder and the handles that need no route.
pub struct Metrics {
    recorder: Option<PrometheusRecorder>,
    handle: Option<PrometheusHandle>,
    /// Refused requests by reason ([`AUTH_REASONS`]), counted per worker.
    pub auth_failures: EventCounts<6>,
    pub moves: [Counter; 9],
    /// Requests served by a pinned version, by kind ([`PIN_KINDS`]), per worker.
    pub pinned: EventCounts<2>,
    /// Requests and connections refused at a limit, by limit (see [`OVERLOAD_LIMITS`]),
    /// per worker.
    pub overload: EventCounts<2>,
    /// From a change's commit (on any node) to its apply on this one, through the feed.
    pub apply_lag: Histogram,
    /// What is open right now; counted whether metrics are on or not (the limits read
    /// it), rendered at scrape time.
    pub load: Load,
    /// The per-route series, counted per worker ([`shards`]); None when metrics are off.
    routes: Option<RouteRegistry>,
}

/// What pinned a request to its version: an evaluation pin or a session pin.
pub const PIN_KINDS: [&str; 2] = ["evaluation", "session"];

/// The limits whose refusals `switchyard_overload_rejections_total` counts.
pub const OVERLOAD_LIMITS: [&str; 2] = ["connections", "requests"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.recorder.is_some())
            .finish()
    }
}

const META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect()
}

impl Metrics {
    /// Metrics that record nothing (tests, benches): one worker's load counters.
    pub fn disabled() -> Self {
        Self::disabled_for(1)
    }

    /// Metrics that record nothing but the load of `workers` client workers (which
    /// the limits read), for `metrics.enabled = false`.
    pub fn disabled_for(workers: usize) -> Self {
        Self {
            routes: None,
            recorder: None,
            handle: None,
            auth_failures: EventCounts::new(workers, std::array::from_fn(|_| Counter::noop())),
            moves: std::array::from_fn(|_| Counter::noop()),
            pinned: EventCounts::new(workers, std::array::from_fn(|_| Counter::noop())),
            overload: EventCounts::new(workers, std::array::from_fn(|_| Counter::noop())),
            apply_lag: Histogram::noop(),
            load: Load::new(workers),
        }
    }

    /// Metrics for a gateway with `workers` client workers.
    pub fn enabled(workers: usize) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(APPLY_LAG.into()), &BUCKETS)
            .map(|b| b.build_recorder());
        let Ok(recorder) = recorder else {
            tracing::error!("metrics recorder could not be built; metrics are off");
            return Self::disabled_for(workers);
        };
        let describe = |kind: char, name: &'static str, unit: Option<Unit>, help: &'static str| {
            let key = KeyName::from_const_str(name);
            match kind {
                'c' => recorder.describe_counter(key, unit, help.into()),
                'g' => recorder.describe_gauge(key, unit, help.into()),
                _ => recorder.describe_histogram(key, unit, help.into()),
            }
        };
        describe(
            'c',
            AUTH_FAILURES,
            None,
            "Requests refused at authentication, by reason.",
        );
        describe(
            'c',
            OVERLOAD,
            None,
            "Client connections and requests refused with 503 at a configured limit, by limit.",
        );
        describe(
            'c',
            MOVES,
            None,
            "Pointer moves applied on this node, by action.",
        );
        describe(
            'h',
            APPLY_LAG,
            Some(Unit::Seconds),
            "Time from a change's commit on any node to its apply on this one through the change feed (node clocks).",
        );
        describe(
            'c',
            EJECTIONS,
            None,
            "Endpoints ejected after failures in a row, by agent and version.",
        );
        describe(
            'c',
            RETRIES,
            None,
            "Requests sent to another endpoint, by agent, version and reason (unsent, closed).",
        );
        describe(
            'c',
            NO_HEALTHY,
            None,
            "Requests that found no eligible endpoint and tried every one, by agent and version.",
        );
        describe(
            'c',
            AUTO_ROLLBACKS,
            None,
            "Rollbacks and canary aborts this node made by itself after a breach of the environment's policy.",
        );
        describe(
            'c',
            STREAMS_ENDED,
            None,
            "SSE and WebSocket streams the gateway ended with a reconnect hint, by reason (redeploy, shutdown).",
        );
        describe(
            'c',
            PINNED,
            None,
            "Requests served by the version a pin named, by kind (evaluation, session).",
        );
        let handle = recorder.handle();
        let counter = |name: &'static str, l: &[(&'static str, &str)]| {
            recorder.register_counter(&Key::from_parts(name, labels(l)), &META)
        };
        let auth_failure_series = AUTH_REASONS.map(|r| counter(AUTH_FAILURES, &[("reason", r)]));
        let moves = Action::ALL.map(|a| counter(MOVES, &[("action", a.as_str())]));
        let pinned_series = PIN_KINDS.map(|k| counter(PINNED, &[("kind", k)]));
        let overload_series = OVERLOAD_LIMITS.map(|l| counter(OVERLOAD, &[("limit", l)]));
        let apply_lag = recorder.register_histogram(&Key::from_static_name(APPLY_LAG), &META);
        Self {
            auth_failures: EventCounts::new(workers, auth_failure_series),
            moves,
            pinned: EventCounts::new(workers, pinned_series),
            overload: EventCounts::new(workers, overload_series),
            apply_lag,
            load: Load::new(workers),
            // one shard per worker and one for other threads
            routes: Some(RouteRegistry::new(workers.max(1) + 1)),
            handle: Some(handle),
            recorder: Some(recorder),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// Resolves the handles of one route. Called when a route is installed, never per
    /// request.
    pub fn route(&self, agent: &str, environment: &str, version: &str) -> RouteMetrics {
        match &self.routes {
            Some(r) => r.route(agent, environment, version),
            None => RouteMetrics::noop(),
        }
    }

    /// Counts a rare event of a version's endpoints (a series is looked up by its
    /// labels here: ejections, retries and no-eligible-endpoint requests only).
    pub fn upstream_event(&self, agent: &str, version: &str, e: UpstreamEvent) {
        let Some(r) = &self.recorder else { return };
        let mut l = labels(&[("agent", agent), ("version", version)]);
        let name = match e {
            UpstreamEvent::Ejected => EJECTIONS,
            UpstreamEvent::NoHealthy => NO_HEALTHY,
            UpstreamEvent::Retry(reason) => {
                l.push(Label::new("reason", reason.as_str()));
                RETRIES
            }
        };
        r.register_counter(&Key::from_parts(name, l), &META)
            .increment(1);
    }

    /// Counts a stream the gateway ended (`redeploy` or `shutdown`).
    pub fn stream_ended(&self, reason: &str) {
        let Some(r) = &self.recorder else { return };
        let l = labels(&[("reason", reason)]);
        r.register_counter(&Key::from_parts(STREAMS_ENDED, l), &META)
            .increment(1);
    }

    /// Counts an automatic rollback (or canary abort) this node committed.
    pub fn auto_rollback(&self, agent: &str, environment: &str) {
        let Some(r) = &self.recorder else { return };
        let l = labels(&[("agent", agent), ("environment", environment)]);
        r.register_counter(&Key::from_parts(AUTO_ROLLBACKS, l), &META)
            .increment(1);
    }

    /// Drains histogram samples into their buckets; run every few seconds so memory
    /// stays bounded between scrapes.
    pub fn upkeep(&self) {
        if let Some(h) = &self.handle {
            h.run_upkeep();
        }
    }

    /// The Prometheus text: the recorder's series, the per-route series summed over
    /// the workers, then `extra` (series rendered from the routing table at scrape
    /// time).
    pub fn render(&self, extra: &str) -> String {
        self.auth_failures.publish();
        self.pinned.publish();
        self.overload.publish();
        let mut out = self.handle.as_ref().map(|h| h.render()).unwrap_or_default();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if let Some(r) = &self.routes {
            out.push_str(&r.render());
        }
        out.push_str(extra);
        out
    }
}

/// Escapes a label value for the text format.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Series rendered at scrape time from the live state.
pub fn render_state(
    deployments: &[(String, String, String)],
    revision: u64,
    extra_gauges: &[(&str, &str, f64)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# HELP {DEPLOYMENT_INFO} The version live in each agent's environment (1 per live pointer).");
    let _ = writeln!(s, "# TYPE {DEPLOYMENT_INFO} gauge");
    for (agent, env, version) in deployments {
        let _ = writeln!(
            s,
            "{DEPLOYMENT_INFO}{{agent=\"{}\",environment=\"{}\",version=\"{}\"}} 1",
            escape_label(agent),
            escape_label(env),
            escape_label(version)
        );
    }
    let _ = writeln!(
        s,
        "# HELP {REVISION} The control-plane revision this node has applied."
    );
    let _ = writeln!(s, "# TYPE {REVISION} gauge");
    let _ = writeln!(s, "{REVISION} {revision}");
    for (name, help, v) in extra_gauges {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} gauge");
        let _ = writeln!(s, "{name} {v}");
    }
    let _ = writeln!(s, "# HELP {BUILD_INFO} The running build.");
    let _ = writeln!(s, "# TYPE {BUILD_INFO} gauge");
    let _ = writeln!(
        s,
        "{BUILD_INFO}{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    s
}

/// `switchyard_upstream_endpoint_up` for (agent, version, endpoint, up) rows.
pub fn render_endpoint_up(rows: &[(String, String, String, bool)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP {ENDPOINT_UP} Whether this node sends traffic to an endpoint of a live version (1) or has found it failing or ejected it (0)."
    );
    let _ = writeln!(s, "# TYPE {ENDPOINT_UP} gauge");
    for (agent, version, endpoint, up) in rows {
        let _ = writeln!(
            s,
            "{ENDPOINT_UP}{{agent=\"{}\",version=\"{}\",endpoint=\"{}\"}} {}",
            escape_label(agent),
            escape_label(version),
            escape_label(endpoint),
            u8::from(*up)
        );
    }
    s
}

/// Installs the global log subscriber (once per process; later calls do nothing).
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // colours only for a terminal: in a file or a log pipeline they are noise
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counts_of_every_worker_are_summed_when_rendered() {
        let m = std::sync::Arc::new(Metrics::enabled(2));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    crate::worker::set(w);
                    for _ in 0..3 {
                        m.auth_failures.increment(1);
                    }
                    m.overload.increment(1);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        // a thread that is no worker counts in the last row
        m.auth_failures.increment(1);
        m.pinned.increment(0);
        for _ in 0..2 {
            // rendered twice: the same totals, not added again
            let text = m.render("");
            assert!(
                text.contains(r#"switchyard_auth_failures_total{reason="unknown"} 7"#),
                "{text}"
            );
            assert!(
                text.contains(r#"switchyard_overload_rejections_total{limit="requests"} 2"#),
                "{text}"
            );
            assert!(
                text.contains(r#"switchyard_pinned_requests_total{kind="evaluation"} 1"#),
                "{text}"
            );
        }
    }

    #[test]
    fn route_handles_count_by_class_and_render() {
        let m = Metrics::enabled(1);
        let r = m.route("bot", "staging", "v1");
        r.count(http::StatusCode::OK);
        r.count(http::StatusCode::BAD_GATEWAY);
        r.count(http::StatusCode::BAD_GATEWAY);
        r.record_duration(std::time::Duration::from_millis(2));
        r.upstream_error(UpstreamErrorKind::Reset);
        m.auth_failures.increment(1);
        m.moves[Action::Rollback as usize].increment(1);
        let text = m.render(&render_state(
            &[("bot".into(), "staging".into(), "v1".into())],
            7,
            &[],
        ));
        assert!(text.contains(r#"switchyard_requests_total{agent="bot",environment="staging",version="v1",status_class="5xx"} 2"#), "{text}");
        assert!(text.contains(
            r#"switchyard_upstream_errors_total{agent="bot",environment="staging",kind="reset"} 1"#
        ));
        assert!(text.contains(r#"switchyard_auth_failures_total{reason="unknown"} 1"#));
        assert!(text.contains(r#"switchyard_pointer_moves_total{action="rollback"} 1"#));
        assert!(text.contains("switchyard_request_duration_seconds_bucket{agent=\"bot\",environment=\"staging\",version=\"v1\",le=\"0.0025\"} 1"));
        assert!(text.contains(
            r#"switchyard_deployment_info{agent="bot",environment="staging",version="v1"} 1"#
        ));
        assert!(text.contains("switchyard_control_plane_revision 7"));
        assert!(text.contains("# HELP switchyard_requests_total"));
    }

    #[test]
    fn disabled_metrics_still_render_the_state() {
        let m = Metrics::disabled();
        let r = m.route("a", "b", "c");
        r.count(http::StatusCode::OK);
        let text = m.render(&render_state(&[], 3, &[]));
        assert!(text.contains("switchyard_control_plane_revision 3"));
        assert!(!text.contains(REQUESTS));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
