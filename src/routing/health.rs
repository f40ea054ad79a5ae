//! What this node knows of each endpoint of a version, and the choice among them.
//!
//! One [`EndpointState`] per (agent, version, endpoint), shared by every worker of the
//! node and kept across moves (a version that comes back keeps its history). A request
//! to a version with several endpoints takes the better of two random eligible ones by
//! outstanding requests (power of two choices); an endpoint is eligible unless it is
//! ejected. Passive ejection: `consecutive_failures` connect errors, timeouts or 5xx
//! answers in a row eject it for `ejection_base_ms × 2^(n-1)` (at most
//! `ejection_max_ms`), and at most half of a version's endpoints are ejected at once.
//! Retries draw on a budget per version and node ([`RetryBudget`]).
//!
//! On the request path this is atomics on the endpoint's own state (shared only by
//! requests to that endpoint) and a per-thread random number; a version with one
//! endpoint skips the choice altogether.

use crate::config::UpstreamConfig;
use crate::domain::{now_ms, Millis};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The ejection, retry and gate rules: `[upstream]` as configured.
pub type UpstreamPolicy = UpstreamConfig;

/// One endpoint of one version as this node sees it.
#[derive(Debug)]
pub struct EndpointState {
    /// The configured URL.
    pub url: String,
    /// Requests sent to it and not yet answered in full.
    outstanding: AtomicU32,
    /// Failures since the last success.
    failures: AtomicU32,
    /// Ejections in a row (the next one lasts twice as long); reset by a success
    /// after re-admission.
    ejections: AtomicU32,
    /// Ejected until this time (ms since the epoch); 0: not ejected.
    ejected_until: AtomicI64,
    /// When a request last told something about it (ms), 0: never.
    checked_at: AtomicI64,
    /// Whether the last request it answered succeeded: 0 unknown, 1 yes, 2 no.
    last_ok: AtomicU32,
    /// The last failure, for operators (written only on failure).
    last_error: Mutex<Option<String>>,
    /// The active check's verdict: 0 none yet, 1 healthy, 2 unhealthy; and its
    /// passes and failures in a row (written by the one checker of this endpoint).
    active: AtomicU32,
    passes: AtomicU32,
    fails: AtomicU32,
}

/// The endpoint's state, as `GET …/versions/{v}/health` words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Unhealthy,
    Ejected,
    Unknown,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
            Self::Unknown => "unknown",
        }
    }
}

impl EndpointState {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            outstanding: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicI64::new(0),
            checked_at: AtomicI64::new(0),
            last_ok: AtomicU32::new(0),
            last_error: Mutex::new(None),
            active: AtomicU32::new(0),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
        }
    }

    /// Whether requests may be sent to it: neither ejected nor found unhealthy by its
    /// active check.
    pub fn is_eligible(&self, now: Millis) -> bool {
        !self.is_ejected(now) && self.active.load(Ordering::Relaxed) != 2
    }

    /// Records an active check: `thresholds` (healthy, unhealthy) passes or failures
    /// in a row change the verdict.
    pub fn checked(&self, result: Result<(), String>, thresholds: (u32, u32)) {
        self.checked_at.store(now_ms(), Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.fails.store(0, Ordering::Relaxed);
                let n = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= thresholds.0 {
                    self.active.store(1, Ordering::Relaxed);
                }
            }
            Err(why) => {
                self.passes.store(0, Ordering::Relaxed);
                let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                if n >= thresholds.1 {
                    self.active.store(2, Ordering::Relaxed);
                }
            }
        }
    }

    /// Forgets the active check's verdict (its checks stopped).
    pub fn unchecked(&self) {
        self.active.store(0, Ordering::Relaxed);
        self.passes.store(0, Ordering::Relaxed);
        self.fails.store(0, Ordering::Relaxed);
    }

    pub fn is_ejected(&self, now: Millis) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn checked_at(&self) -> Option<Millis> {
        match self.checked_at.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This node's view: ejected, else the active check's verdict, else what the
    /// last request found, else unknown.
    pub fn state(&self, now: Millis) -> HealthState {
        if self.is_ejected(now) {
            return HealthState::Ejected;
        }
        match self.active.load(Ordering::Relaxed) {
            1 => return HealthState::Healthy,
            2 => return HealthState::Unhealthy,
            _ => {}
        }
        match self.last_ok.load(Ordering::Relaxed) {
            1 => HealthState::Healthy,
            2 => HealthState::Unhealthy,
            _ => HealthState::Unknown,
        }
    }

    /// Counts a request sent to it until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(Arc::clone(self))
    }

    /// Records a success: written only when something changes, so a healthy
    /// endpoint's state is read by every worker and written by none.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.last_ok.load(Ordering::Relaxed) != 1 {
            self.last_ok.store(1, Ordering::Relaxed);
            self.checked_at.store(now_ms(), Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 && !self.is_ejected(now_ms()) {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; true when it ejected the endpoint. `ejected_peers` counts
    /// the version's endpoints ejected now and `total` all of them (the half cap).
    fn failed(
        &self,
        why: &str,
        policy: &UpstreamPolicy,
        ejected_peers: usize,
        total: usize,
    ) -> Option<u64> {
        let now = now_ms();
        self.last_ok.store(2, Ordering::Relaxed);
        self.checked_at.store(now, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.consecutive_failures || self.is_ejected(now) {
            return None;
        }
        // at most half of a version's endpoints are out at once
        if (ejected_peers + 1) * 2 > total {
            return None;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let ms = policy
            .ejection_base_ms
            .saturating_mul(1u64 << k)
            .min(policy.ejection_max_ms);
        self.ejected_until
            .store(now.saturating_add(ms as i64), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        Some(ms)
    }
}

/// A request counted against an endpoint's outstanding ones while it is held.
#[derive(Debug)]
pub struct Outstanding(Arc<EndpointState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Retries allowed per version and node: those started in the last 10 s stay within
/// `percent` % of the requests started in the last 10 s plus `min_per_s` × 10.
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Per second of the last ten: (the second, requests, retries).
    buckets: [(AtomicI64, AtomicU32, AtomicU32); 10],
}

const WINDOW_S: i64 = 10;

impl RetryBudget {
    fn bucket(&self, sec: i64) -> &(AtomicI64, AtomicU32, AtomicU32) {
        let b = &self.buckets[sec.rem_euclid(WINDOW_S) as usize];
        let at = b.0.load(Ordering::Acquire);
        if at != sec
            && b.0
                .compare_exchange(at, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.1.store(0, Ordering::Release);
            b.2.store(0, Ordering::Release);
        }
        b
    }

    /// Counts a request started.
    pub fn request(&self, now: Millis) {
        self.bucket(now / 1000).1.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_retry(&self, now: Millis, policy: &UpstreamPolicy) -> bool {
        let sec = now / 1000;
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let at = b.0.load(Ordering::Acquire);
            if at + WINDOW_S > sec && at <= sec {
                requests += u64::from(b.1.load(Ordering::Relaxed));
                retries += u64::from(b.2.load(Ordering::Relaxed));
            }
        }
        let allowed = requests * u64::from(policy.retry_budget_percent) / 100
            + u64::from(policy.retry_budget_min_per_s) * WINDOW_S as u64;
        if retries >= allowed {
            return false;
        }
        self.bucket(sec).2.fetch_add(1, Ordering::Relaxed);
        true
    }
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A per-thread xorshift: cheap, and good enough to pick two endpoints.
pub(super) fn random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // seeded from the thread's stack address and the clock
            x = ((&x as *const u64 as u64) ^ (now_ms() as u64).rotate_left(32)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// The endpoints of one version with their states: the choice and the record.
pub trait Replicas {
    fn count(&self) -> usize;
    fn state(&self, i: usize) -> &Arc<EndpointState>;
}

/// Picks the endpoint for the next attempt: the better of two random eligible ones
/// by outstanding requests, none of those in `tried` (a bit per endpoint). When none
/// is eligible, every endpoint not tried is a candidate and `no_healthy` is set.
pub fn pick(r: &dyn Replicas, tried: u32, no_healthy: &mut bool) -> Option<usize> {
    let n = r.count().min(32);
    if n == 1 {
        return (tried & 1 == 0).then_some(0);
    }
    let now = now_ms();
    let mut eligible = [0u8; 32];
    let mut m = 0;
    for i in 0..n {
        if tried & (1 << i) == 0 && r.state(i).is_eligible(now) {
            eligible[m] = i as u8;
            m += 1;
        }
    }
    if m == 0 {
        for i in 0..n {
            if tried & (1 << i) == 0 {
                eligible[m] = i as u8;
                m += 1;
            }
        }
        if m == 0 {
            return None;
        }
        *no_healthy = true;
    }
    if m == 1 {
        return Some(usize::from(eligible[0]));
    }
    let x = random();
    let a = (x % m as u64) as usize;
    let mut b = ((x >> 32) % (m as u64 - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (a, b) = (usize::from(eligible[a]), usize::from(eligible[b]));
    Some(if r.state(b).outstanding() < r.state(a).outstanding() {
        b
    } else {
        a
    })
}

/// Records a failed attempt on endpoint `i`; the ejection's length when it ejected it.
pub fn record_failure(
    r: &dyn Replicas,
    i: usize,
    why: &str,
    policy: &UpstreamPolicy,
) -> Option<u64> {
    let now = now_ms();
    let n = r.count();
    let ejected = (0..n)
        .filter(|&j| j != i && r.state(j).is_ejected(now))
        .count();
    r.state(i).failed(why, policy, ejected, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Three(Vec<Arc<EndpointState>>);
    impl Replicas for Three {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn state(&self, i: usize) -> &Arc<EndpointState> {
            &self.0[i]
        }
    }

    fn three() -> Three {
        Three(
            (0..3)
                .map(|i| Arc::new(EndpointState::new(&format!("http://e{i}"))))
                .collect(),
        )
    }

    fn policy() -> UpstreamPolicy {
        UpstreamPolicy {
            consecutive_failures: 2,
            ejection_base_ms: 1000,
            ejection_max_ms: 3000,
            ..UpstreamPolicy::default()
        }
    }

    #[test]
    fn two_choices_prefer_the_less_loaded() {
        let r = three();
        let _busy: Vec<_> = (0..5).map(|_| r.0[0].begin()).collect();
        let _less: Vec<_> = (0..2).map(|_| r.0[1].begin()).collect();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            let mut nh = false;
            counts[pick(&r, 0, &mut nh).unwrap()] += 1;
            assert!(!nh);
        }
        // e0 loses every comparison, e1 wins only against e0, e2 wins both
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[2] > counts[1], "{counts:?}");
        assert_eq!(r.0[0].outstanding(), 5);
        drop(_busy);
        assert_eq!(r.0[0].outstanding(), 0);
    }

    #[test]
    fn failures_in_a_row_eject_with_backoff_and_at_most_half() {
        let r = three();
        let p = policy();
        assert_eq!(record_failure(&r, 0, "refused", &p), None);
        assert_eq!(record_failure(&r, 0, "refused", &p), Some(1000));
        assert_eq!(r.0[0].state(now_ms()), HealthState::Ejected);
        assert_eq!(r.0[0].last_error().as_deref(), Some("refused"));
        // a second endpoint of three would be more than half
        assert_eq!(record_failure(&r, 1, "x", &p), None);
        assert_eq!(record_failure(&r, 1, "x", &p), None);
        assert!(!r.0[1].is_ejected(now_ms()));
        // the ejected one is never picked while another is eligible
        for _ in 0..200 {
            let mut nh = false;
            assert_ne!(pick(&r, 0, &mut nh), Some(0));
        }
        // re-admitted after the time; failing again doubles it
        r.0[0].ejected_until.store(now_ms() - 1, Ordering::Relaxed);
        assert!(!r.0[0].is_ejected(now_ms()));
        record_failure(&r, 0, "refused", &p);
        assert_eq!(record_failure(&r, 0, "refused", &p), Some(2000));
        r.0[0].ejected_until.store(now_ms() - 1, Ordering::Relaxed);
        record_failure(&r, 0, "refused", &p);
        assert_eq!(record_failure(&r, 0, "refused", &p), Some(3000), "capped");
        // a success after re-admission starts over
        r.0[0].ejected_until.store(now_ms() - 1, Ordering::Relaxed);
        r.0[0].succeeded();
        assert_eq!(r.0[0].state(now_ms()), HealthState::Healthy);
        record_failure(&r, 0, "refused", &p);
        assert_eq!(record_failure(&r, 0, "refused", &p), Some(1000));
    }

    #[test]
    fn with_nothing_eligible_every_endpoint_not_tried_is_a_candidate() {
        let r = Three(vec![
            Arc::new(EndpointState::new("http://a")),
            Arc::new(EndpointState::new("http://b")),
        ]);
        r.0[0]
            .ejected_until
            .store(now_ms() + 10_000, Ordering::Relaxed);
        r.0[1]
            .ejected_until
            .store(now_ms() + 10_000, Ordering::Relaxed);
        let mut nh = false;
        let first = pick(&r, 0, &mut nh).unwrap();
        assert!(nh);
        let mut nh2 = false;
        assert_eq!(pick(&r, 1 << first, &mut nh2), Some(1 - first));
        assert_eq!(pick(&r, 0b11, &mut nh2), None);
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        let p = UpstreamPolicy {
            retry_budget_percent: 20,
            retry_budget_min_per_s: 1,
            ..UpstreamPolicy::default()
        };
        let now = 1_000_000;
        for _ in 0..100 {
            b.request(now);
        }
        // 20 % of 100 plus 1 × 10
        let granted = (0..100).filter(|_| b.try_retry(now, &p)).count();
        assert_eq!(granted, 30);
        // eleven seconds later the window is empty again: the floor alone
        let later = now + 11_000;
        let granted = (0..100).filter(|_| b.try_retry(later, &p)).count();
        assert_eq!(granted, 10);
    }
}
