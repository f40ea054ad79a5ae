//! What a slot serves beyond its live version: a canary split, session pins, and the
//! outcome window a bake reads.
//!
//! None of this is on the path of a request to a route without a canary, without
//! sticky sessions and without a bake: the route then holds no [`Choice`], and the
//! proxy asks nothing more than whether it is there.
//!
//! * **Canary.** A request goes to the canary iff its session bucket
//!   ([`crate::domain::release::canary_bucket`]) is below the weight.
//! * **Session pins** are stateless: an HMAC-SHA256-signed value naming agent,
//!   environment, version, the revision it was issued at and its expiry
//!   ([`PinKey`]). A pin issued before its version's last release there is ignored.
//! * **Bakes** count outcomes in one-second buckets of atomics ([`Bake`]); a
//!   background task reads them ([`crate::admin::autoroll`]).

use crate::domain::{AutoRollback, Millis};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Which of a route's targets served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// The environment's version.
    #[default]
    Main,
    /// `Route::alts[i]`: the canary (always first when open) or a version a pin named.
    Alt(u16),
}

/// How a request chose its target, beyond the pointer: for the access log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pinned {
    #[default]
    No,
    /// `x-switchyard-pin-version` (evaluation).
    Evaluation,
    /// A session pin.
    Session,
}

/// The canary split and session affinity of a route, when it has either, and its
/// bake. A route with none of them has no `Choice`.
#[derive(Debug)]
pub struct Choice {
    /// Weight in hundredths of a percent and the revision the canary started at; the
    /// canary is `alts[0]`.
    pub canary: Option<(u32, u64)>,
    /// Sticky sessions: how long a pin holds after it was last refreshed.
    pub sticky_ttl_ms: Option<i64>,
}

/// A version a valid pin may name, and where its target is.
#[derive(Debug, Clone, Copy)]
pub struct PinEntry {
    pub version: u32,
    /// Pins issued before this revision no longer hold (0: never released).
    pub released_at: u64,
    pub which: Which,
}

/// The signing key of session pins, kept in the store and the same on every node.
pub struct PinKey(ring::hmac::Key);

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(..)")
    }
}

/// What a verified pin says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub version: u32,
    pub revision: u64,
    pub expires_at: Millis,
}

const TAG: usize = 32;
const FIXED: usize = 4 + 8 + 8;

impl PinKey {
    pub fn new(bytes: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The pin's text: hex of `version ‖ revision ‖ expiry ‖ agent \0 environment`
    /// and its tag.
    pub fn sign(&self, agent: &str, environment: &str, pin: Pin) -> String {
        let mut msg = Vec::with_capacity(FIXED + agent.len() + 1 + environment.len() + TAG);
        msg.extend_from_slice(&pin.version.to_be_bytes());
        msg.extend_from_slice(&pin.revision.to_be_bytes());
        msg.extend_from_slice(&pin.expires_at.to_be_bytes());
        msg.extend_from_slice(agent.as_bytes());
        msg.push(0);
        msg.extend_from_slice(environment.as_bytes());
        let tag = ring::hmac::sign(&self.0, &msg);
        msg.extend_from_slice(tag.as_ref());
        hex::encode(msg)
    }

    /// The pin `text` carries if it is well formed, signed with this key and names
    /// this agent and environment; None otherwise (a bad pin is ignored, never an
    /// error). Expiry is the caller's to check.
    pub fn verify(&self, agent: &str, environment: &str, text: &[u8]) -> Option<Pin> {
        if text.len() > 2 * (FIXED + 2 * 64 + 1 + TAG) {
            return None;
        }
        let raw = hex::decode(text).ok()?;
        if raw.len() < FIXED + 1 + TAG {
            return None;
        }
        let (msg, tag) = raw.split_at(raw.len() - TAG);
        ring::hmac::verify(&self.0, msg, tag).ok()?;
        let names = &msg[FIXED..];
        let want = agent.len() + 1 + environment.len();
        if names.len() != want
            || &names[..agent.len()] != agent.as_bytes()
            || names[agent.len()] != 0
            || &names[agent.len() + 1..] != environment.as_bytes()
        {
            return None;
        }
        let n = |r: std::ops::Range<usize>| -> Option<[u8; 8]> {
            let mut b = [0u8; 8];
            b[8 - r.len()..].copy_from_slice(msg.get(r)?);
            Some(b)
        };
        Some(Pin {
            version: u64::from_be_bytes(n(0..4)?) as u32,
            revision: u64::from_be_bytes(n(4..12)?),
            expires_at: i64::from_be_bytes(n(12..20)?),
        })
    }
}

/// One second of a bake's outcomes.
#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    /// Requests whose first byte came later than the policy's `max_ttfb_p99_ms`.
    slow: AtomicU32,
}

/// What a window of a bake holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
}

/// The outcomes of the version under watch after a forward move, on this node, in
/// one-second buckets. Shared by the requests that version serves (atomics only);
/// read by the background task that decides.
#[derive(Debug)]
pub struct Bake {
    /// The version under watch, and whether it is the environment's canary.
    pub version: u32,
    pub canary: bool,
    /// The forward move that started it, and when the watch ends.
    pub started_at: Millis,
    pub until: Millis,
    pub spec: AutoRollback,
    buckets: Box<[Bucket]>,
    /// A rollback was committed (or found unnecessary): the bake decides no more.
    pub done: AtomicBool,
}

impl Bake {
    pub fn new(version: u32, canary: bool, started_at: Millis, spec: AutoRollback) -> Self {
        let n = spec.window_s as usize + 2;
        Self {
            version,
            canary,
            started_at,
            until: started_at.saturating_add(i64::from(spec.bake_s) * 1000),
            spec,
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            done: AtomicBool::new(false),
        }
    }

    /// Whether this bake watches the same move under the same rules as `other`
    /// (a route rebuilt for another reason keeps the counts it has).
    pub fn same_watch(
        &self,
        version: u32,
        canary: bool,
        started_at: Millis,
        spec: &AutoRollback,
    ) -> bool {
        self.version == version
            && self.canary == canary
            && self.started_at == started_at
            && self.spec == *spec
    }

    /// Whether a request now still counts.
    pub fn active(&self, now: Millis) -> bool {
        now < self.until && !self.done.load(Ordering::Relaxed)
    }

    /// Counts one answered request: whether it was an error and how long its first
    /// byte took.
    pub fn record(&self, now: Millis, error: bool, ttfb_ms: u64) {
        let second = (now / 1000) as u64;
        let b = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != second {
            // the first request of a new second clears the bucket (a count racing
            // with the reset may be lost: the window is approximate by a few)
            if b.second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                b.requests.store(0, Ordering::Relaxed);
                b.errors.store(0, Ordering::Relaxed);
                b.slow.store(0, Ordering::Relaxed);
            }
        }
        b.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            b.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .spec
            .max_ttfb_p99_ms
            .is_some_and(|max| ttfb_ms > u64::from(max))
        {
            b.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The outcomes of the last `window_s` seconds up to `now`, this second included.
    pub fn window(&self, now: Millis) -> Window {
        let now_s = (now / 1000) as u64;
        let from = now_s.saturating_sub(u64::from(self.spec.window_s) - 1);
        let mut w = Window::default();
        for b in self.buckets.iter() {
            let s = b.second.load(Ordering::Acquire);
            if s >= from && s <= now_s {
                w.requests += u64::from(b.requests.load(Ordering::Relaxed));
                w.errors += u64::from(b.errors.load(Ordering::Relaxed));
                w.slow += u64::from(b.slow.load(Ordering::Relaxed));
            }
        }
        w
    }

    /// The reason to roll back now, if the window breaches the policy.
    pub fn breach(&self, now: Millis) -> Option<String> {
        let w = self.window(now);
        if w.requests < u64::from(self.spec.min_requests) {
            return None;
        }
        let rate = w.errors as f64 / w.requests as f64;
        if rate > self.spec.max_error_rate {
            return Some(format!(
                "error rate {rate:.2} ({} of {}) over {} s > {}",
                w.errors, w.requests, self.spec.window_s, self.spec.max_error_rate
            ));
        }
        if let Some(max) = self.spec.max_ttfb_p99_ms {
            // the p99 is above max exactly when more than 1 % of requests were slower
            if w.slow * 100 > w.requests {
                return Some(format!(
                    "time to first byte p99 over {max} ms ({} of {} slower) over {} s",
                    w.slow, w.requests, self.spec.window_s
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_verify_only_as_signed_for_their_slot() {
        let k = PinKey::new(b"0123456789abcdef0123456789abcdef");
        let pin = Pin {
            version: 3,
            revision: 41,
            expires_at: 1_900_000_000_000,
        };
        let text = k.sign("bot", "production", pin);
        assert_eq!(k.verify("bot", "production", text.as_bytes()), Some(pin));
        assert_eq!(k.verify("bot", "staging", text.as_bytes()), None, "foreign");
        assert_eq!(k.verify("bo", "tproduction", text.as_bytes()), None);
        let other = PinKey::new(b"another key, another fleet......");
        assert_eq!(other.verify("bot", "production", text.as_bytes()), None);
        // any changed digit breaks the tag
        let mut t = text.clone().into_bytes();
        t[7] = if t[7] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify("bot", "production", &t), None, "tampered");
        assert_eq!(k.verify("bot", "production", b"zz"), None);
        assert_eq!(k.verify("bot", "production", b""), None);
    }

    #[test]
    fn a_bake_breaches_on_errors_over_the_window_only() {
        let spec = AutoRollback {
            window_s: 10,
            min_requests: 20,
            max_error_rate: 0.05,
            max_ttfb_p99_ms: Some(500),
            bake_s: 600,
        };
        let b = Bake::new(2, false, 1_000_000, spec);
        let t = 1_000_000;
        for i in 0..19 {
            b.record(t + i * 10, true, 1);
        }
        assert_eq!(b.breach(t + 500), None, "fewer than min_requests");
        b.record(t + 600, false, 1);
        let why = b.breach(t + 700).unwrap();
        assert!(
            why.starts_with("error rate 0.95 (19 of 20) over 10 s"),
            "{why}"
        );
        // 11 s later the window has moved past them
        assert_eq!(b.window(t + 11_500).requests, 0);
        for i in 0..100 {
            b.record(t + 20_000 + i, false, if i < 2 { 900 } else { 10 });
        }
        assert!(b.breach(t + 20_500).unwrap().contains("p99"));
        assert!(b.active(t + 599_000) && !b.active(t + 600_000));
    }
}
