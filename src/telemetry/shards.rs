//! What every request counts, kept per worker and summed when scraped.
//!
//! A request bumps counters in its worker's own shard ([`crate::worker::shard`]): a
//! 128-byte-aligned block no other worker writes, so two workers never contend for a
//! cache line, whatever routes they serve. The Prometheus text for these series is
//! written here at scrape time; the rarer series (auth failures, moves, overload,
//! apply lag) stay with the `metrics` recorder.
//!
//! Series of a route are keyed by (agent, environment, version) and outlive the route:
//! a pointer that moves away and back continues the same counters, as Prometheus
//! expects of a counter.

use super::{
    escape_label, UpstreamErrorKind, BUCKETS, REQUESTS, REQUEST_DURATION, STATUS_CLASSES,
    UPSTREAM_ERRORS, UPSTREAM_FIRST_BYTE,
};
use metrics::Counter;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bucket bounds of [`BUCKETS`] in nanoseconds, compared without floats.
const BOUNDS_NS: [u64; BUCKETS.len()] = {
    let mut b = [0u64; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        b[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    b
};

/// A latency histogram's shard: a count per bucket (the last one over every bound)
/// and the sum in nanoseconds.
#[derive(Debug, Default)]
struct Hist {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Hist {
    fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// One worker's counts for one (agent, environment, version).
#[derive(Debug, Default)]
#[repr(align(128))]
struct RouteShard {
    by_class: [AtomicU64; 5],
    upstream_errors: [AtomicU64; 4],
    duration: Hist,
    first_byte: Hist,
}

/// The counters of one (agent, environment, version), one shard per worker.
#[derive(Debug)]
pub struct RouteStats {
    shards: Box<[RouteShard]>,
}

impl RouteStats {
    fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| RouteShard::default()).collect(),
        }
    }

    fn mine(&self) -> &RouteShard {
        &self.shards[crate::worker::shard(self.shards.len())]
    }

    fn sum(&self, f: impl Fn(&RouteShard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// The handles one route updates: its (agent, environment, version) counters, or
/// nothing when metrics are off. Built when the route is installed.
#[derive(Debug, Clone, Default)]
pub struct RouteMetrics(Option<Arc<RouteStats>>);

impl RouteMetrics {
    pub fn noop() -> Self {
        Self(None)
    }

    /// Counts one answered request by its status class.
    pub fn count(&self, status: http::StatusCode) {
        if let Some(s) = &self.0 {
            let i = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
            s.mine().by_class[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        if let Some(s) = &self.0 {
            s.mine().upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// From request head to the end of the response body.
    pub fn record_duration(&self, d: Duration) {
        if let Some(s) = &self.0 {
            s.mine().duration.record(d);
        }
    }

    /// From request head to the upstream's response head.
    pub fn record_first_byte(&self, d: Duration) {
        if let Some(s) = &self.0 {
            s.mine().first_byte.record(d);
        }
    }
}

type LabelSet = (String, String, String);

/// Every (agent, environment, version) that has had a route, with its counters.
#[derive(Debug)]
pub struct RouteRegistry {
    shards: usize,
    routes: Mutex<BTreeMap<LabelSet, Arc<RouteStats>>>,
}

impl RouteRegistry {
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The handles of (agent, environment, version), made on first use. Called when
    /// a route is installed, never per request.
    pub fn route(&self, agent: &str, environment: &str, version: &str) -> RouteMetrics {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let key = (agent.to_owned(), environment.to_owned(), version.to_owned());
        let stats = routes
            .entry(key)
            .or_insert_with(|| Arc::new(RouteStats::new(self.shards)));
        RouteMetrics(Some(Arc::clone(stats)))
    }

    /// The Prometheus text of the per-route series, shards summed.
    pub fn render(&self) -> String {
        let routes: Vec<(LabelSet, Arc<RouteStats>)> = {
            let r = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            r.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
        };
        let mut s = String::new();
        let labels = |(a, e, v): &LabelSet| {
            format!(
                "agent=\"{}\",environment=\"{}\",version=\"{}\"",
                escape_label(a),
                escape_label(e),
                escape_label(v)
            )
        };
        family(
            &mut s,
            REQUESTS,
            "counter",
            "Client requests answered, by agent, environment, version and status class.",
        );
        for (k, st) in &routes {
            let l = labels(k);
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let n = st.sum(|sh| &sh.by_class[i]);
                let _ = writeln!(s, "{REQUESTS}{{{l},status_class=\"{class}\"}} {n}");
            }
        }
        for (name, help, pick) in [
            (
                REQUEST_DURATION,
                "Time from request head to the end of the response body.",
                (|sh: &RouteShard| &sh.duration) as fn(&RouteShard) -> &Hist,
            ),
            (
                UPSTREAM_FIRST_BYTE,
                "Time from request head to the upstream's response head.",
                |sh: &RouteShard| &sh.first_byte,
            ),
        ] {
            family(&mut s, name, "histogram", help);
            for (k, st) in &routes {
                histogram(&mut s, name, &labels(k), st, pick);
            }
        }
        // upstream errors are labelled by agent and environment: versions summed
        let mut errors: BTreeMap<(&str, &str), [u64; 4]> = BTreeMap::new();
        for ((a, e, _), st) in &routes {
            let sums = errors.entry((a, e)).or_default();
            for (i, n) in sums.iter_mut().enumerate() {
                *n = n.wrapping_add(st.sum(|sh| &sh.upstream_errors[i]));
            }
        }
        family(
            &mut s,
            UPSTREAM_ERRORS,
            "counter",
            "Failed upstream calls, by kind: connect, timeout, reset, protocol.",
        );
        for ((a, e), sums) in errors {
            for (kind, n) in UpstreamErrorKind::ALL.iter().zip(sums) {
                let _ = writeln!(
                    s,
                    "{UPSTREAM_ERRORS}{{agent=\"{}\",environment=\"{}\",kind=\"{}\"}} {n}",
                    escape_label(a),
                    escape_label(e),
                    kind.as_str()
                );
            }
        }
        s
    }
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

fn histogram(
    s: &mut String,
    name: &str,
    labels: &str,
    st: &RouteStats,
    pick: fn(&RouteShard) -> &Hist,
) {
    let mut cumulative = 0u64;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative = cumulative.wrapping_add(st.sum(|sh| &pick(sh).counts[i]));
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let count = cumulative.wrapping_add(st.sum(|sh| &pick(sh).counts[BUCKETS.len()]));
    let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let sum = st.sum(|sh| &pick(sh).sum_ns) as f64 / 1e9;
    let _ = writeln!(s, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(s, "{name}_count{{{labels}}} {count}");
}

/// Counts of request-path events that are not per route (refusals by reason, overload
/// refusals, pinned requests): one row per worker (and one for other threads), summed
/// into the recorder's series when the metrics are rendered ([`Self::publish`]).
/// Counting one writes only its worker's row, never a line every worker writes.
#[derive(Debug)]
pub struct EventCounts<const N: usize> {
    rows: Box<[EventRow<N>]>,
    /// The recorder's series, one per kind (no-ops when metrics are off).
    series: [Counter; N],
}

#[derive(Debug)]
#[repr(align(128))]
struct EventRow<const N: usize>([AtomicU64; N]);

impl<const N: usize> EventCounts<N> {
    /// Rows for `workers` client workers and one for other threads, published to
    /// `series`.
    pub fn new(workers: usize, series: [Counter; N]) -> Self {
        Self {
            rows: (0..=workers.max(1))
                .map(|_| EventRow(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            series,
        }
    }

    /// Counts one event of kind `i` (ignored when `i` is out of range).
    pub fn increment(&self, i: usize) {
        let row = &self.rows[crate::worker::shard(self.rows.len())];
        if let Some(c) = row.0.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets each series to its kind's total over all rows (a counter only rises).
    pub fn publish(&self) {
        for (i, series) in self.series.iter().enumerate() {
            let total = self
                .rows
                .iter()
                .map(|r| r.0[i].load(Ordering::Relaxed))
                .fold(0, u64::wrapping_add);
            series.absolute(total);
        }
    }
}

/// One worker's open requests and streams.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LoadShard {
    requests: AtomicUsize,
    streams: AtomicUsize,
}

/// Open requests, response streams (per worker) and client connections: counted
/// whether metrics are on or not (the limits read them), rendered at scrape time.
#[derive(Debug)]
pub struct Load {
    shards: Box<[LoadShard]>,
    /// Client workers the in-flight limit is shared among.
    workers: usize,
    /// Open client connections, over-limit ones included until they are answered
    /// (written once per connection, not per request).
    pub connections: AtomicUsize,
}

impl Default for Load {
    fn default() -> Self {
        Self::new(1)
    }
}

/// A request or stream counted open in one shard; the shard is remembered so the
/// count goes back where it came from, whichever thread drops it.
#[derive(Debug, Clone, Copy)]
pub struct Counted(usize);

impl Load {
    /// Counters for `workers` client workers (and one shard for other threads).
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        Self {
            shards: (0..=workers).map(|_| LoadShard::default()).collect(),
            workers,
            connections: AtomicUsize::new(0),
        }
    }

    fn mine(&self) -> usize {
        crate::worker::shard(self.shards.len())
    }

    /// Counts a request open; `false` beside it when its worker is already at its
    /// share of `limit` (the limit divided among the workers, rounded up: each
    /// worker enforces its own, like nginx's `worker_connections`).
    pub fn open_request(&self, limit: usize) -> (Counted, bool) {
        let i = self.mine();
        let before = self.shards[i].requests.fetch_add(1, Ordering::Relaxed);
        (Counted(i), before < limit.div_ceil(self.workers))
    }

    pub fn close_request(&self, c: Counted) {
        self.shards[c.0].requests.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open_stream(&self) -> Counted {
        let i = self.mine();
        self.shards[i].streams.fetch_add(1, Ordering::Relaxed);
        Counted(i)
    }

    pub fn close_stream(&self, c: Counted) {
        self.shards[c.0].streams.fetch_sub(1, Ordering::Relaxed);
    }

    fn total(&self, f: impl Fn(&LoadShard) -> &AtomicUsize) -> usize {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .fold(0, usize::wrapping_add)
    }

    /// The scrape-time series.
    pub fn gauges(&self) -> [(&'static str, &'static str, f64); 3] {
        [
            (
                super::IN_FLIGHT,
                "Client requests being handled, from request head to the end of the response body.",
                self.total(|s| &s.requests) as f64,
            ),
            (
                super::STREAMS,
                "Response bodies and upgraded connections still streaming to clients.",
                self.total(|s| &s.streams) as f64,
            ),
            (
                super::CONNECTIONS,
                "Open client connections.",
                self.connections.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_count_in_their_own_shards_and_scrapes_sum_them() {
        let reg = Arc::new(RouteRegistry::new(3));
        let m = reg.route("bot", "staging", "v1");
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let m = m.clone();
                std::thread::spawn(move || {
                    crate::worker::set(w);
                    for _ in 0..1000 {
                        m.count(http::StatusCode::OK);
                        m.record_duration(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        m.count(http::StatusCode::BAD_GATEWAY); // a thread that is no worker
        m.upstream_error(UpstreamErrorKind::Reset);
        let st = m.0.as_ref().unwrap();
        let per: Vec<u64> = st
            .shards
            .iter()
            .map(|s| s.by_class[1].load(Ordering::Relaxed))
            .collect();
        assert_eq!(per, [1000, 1000, 0], "each worker wrote only its shard");
        let text = reg.render();
        let l = r#"agent="bot",environment="staging",version="v1""#;
        assert!(text.contains(&format!("{REQUESTS}{{{l},status_class=\"2xx\"}} 2000")));
        assert!(text.contains(&format!("{REQUESTS}{{{l},status_class=\"5xx\"}} 1")));
        // 300 µs falls in le=0.0005 and every bucket above it, not in 0.00025
        assert!(text.contains(&format!(
            "{REQUEST_DURATION}_bucket{{{l},le=\"0.00025\"}} 0"
        )));
        assert!(text.contains(&format!(
            "{REQUEST_DURATION}_bucket{{{l},le=\"0.0005\"}} 2000"
        )));
        assert!(text.contains(&format!(
            "{REQUEST_DURATION}_bucket{{{l},le=\"+Inf\"}} 2000"
        )));
        assert!(text.contains(&format!("{REQUEST_DURATION}_count{{{l}}} 2000")));
        assert!(text.contains(&format!("{REQUEST_DURATION}_sum{{{l}}} 0.6\n")));
        assert!(text.contains(
            r#"switchyard_upstream_errors_total{agent="bot",environment="staging",kind="reset"} 1"#
        ));
    }

    #[test]
    fn a_route_that_comes_back_continues_its_counters() {
        let reg = RouteRegistry::new(1);
        reg.route("a", "e", "v1").count(http::StatusCode::OK);
        reg.route("a", "e", "v2").count(http::StatusCode::OK);
        reg.route("a", "e", "v1").count(http::StatusCode::OK);
        let text = reg.render();
        assert!(
            text.contains(r#"version="v1",status_class="2xx"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"version="v2",status_class="2xx"} 1"#));
        // errors are summed over the versions of one environment, once per kind
        assert_eq!(text.matches(r#"kind="connect""#).count(), 1);
    }

    #[test]
    fn the_in_flight_limit_is_shared_among_workers() {
        let load = Arc::new(Load::new(2));
        let l2 = Arc::clone(&load);
        std::thread::spawn(move || {
            crate::worker::set(0);
            // a limit of 3 over 2 workers: 2 each
            let (a, ok_a) = l2.open_request(3);
            let (b, ok_b) = l2.open_request(3);
            let (c, ok_c) = l2.open_request(3);
            assert!(ok_a && ok_b && !ok_c);
            for x in [a, b, c] {
                l2.close_request(x);
            }
            let s = l2.open_stream();
            assert_eq!(l2.gauges()[1].2, 1.0);
            l2.close_stream(s);
        })
        .join()
        .unwrap();
        assert_eq!(load.gauges()[0].2, 0.0);
        assert_eq!(load.gauges()[1].2, 0.0);
    }
}
