//! Long-lived streams (SSE responses, WebSocket connections) and the moves that take
//! their version out of an environment.
//!
//! Each open stream holds a [`StreamTicket`] registered with its slot. When the slot
//! installs a route that takes the stream's version out ([`leaving`]: in `follow` mode
//! any move away from it, in `sticky` mode only when its pins are released), the
//! ticket is told to end after the environment's `stream_drain_s`, naming the version
//! now live; the relay ([`crate::proxy::relay`]) writes the hint at the next boundary
//! and ends. Shutdown does the same with reason `shutdown`.
//!
//! Costs: nothing for a request that is not a stream. A stream registers once (a mutex
//! held for a push), and a route install with streams open takes that mutex once.

use super::Route;
use futures_util::task::AtomicWaker;
use std::sync::{Arc, Mutex, Weak};
use tokio::time::Instant;

/// Why a stream is ended by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Redeploy,
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redeploy => "redeploy",
            Self::Shutdown => "shutdown",
        }
    }
}

/// When and how a stream is to end.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub reason: EndReason,
    /// The version the environment points at now (`v3`), if any.
    pub version: Option<String>,
    /// The hint is written at the first boundary after this.
    pub deadline: Instant,
}

/// One open stream, as its slot knows it.
#[derive(Debug)]
pub struct StreamTicket {
    /// The version serving it.
    pub version: u32,
    end: Mutex<Option<StreamEnd>>,
    waker: AtomicWaker,
}

impl StreamTicket {
    /// The end it was told, if any (the first one wins).
    pub fn end(&self) -> Option<StreamEnd> {
        self.end.lock().ok().and_then(|e| e.clone())
    }

    /// Wakes the relay when an end is told; register before reading [`Self::end`].
    pub fn register(&self, w: &std::task::Waker) {
        self.waker.register(w);
    }

    /// Tells the stream to end; an earlier end stands.
    pub fn tell(&self, end: StreamEnd) {
        if let Ok(mut e) = self.end.lock() {
            if e.is_none() {
                *e = Some(end);
            }
        }
        self.waker.wake();
    }
}

/// The streams open on one slot.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<Vec<Weak<StreamTicket>>>,
}

impl Streams {
    /// Registers a stream on `version`.
    pub fn open(&self, version: u32) -> Arc<StreamTicket> {
        let t = Arc::new(StreamTicket {
            version,
            end: Mutex::new(None),
            waker: AtomicWaker::new(),
        });
        if let Ok(mut open) = self.open.lock() {
            // the dead are swept now and then, so the list stays near the live count
            if open.len() >= 64 && open.len().is_power_of_two() {
                open.retain(|w| w.strong_count() > 0);
            }
            open.push(Arc::downgrade(&t));
        }
        t
    }

    /// The streams still open.
    fn live(&self) -> Vec<Arc<StreamTicket>> {
        match self.open.lock() {
            Ok(mut open) => {
                open.retain(|w| w.strong_count() > 0);
                open.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.open.lock().map(|o| o.is_empty()).unwrap_or(true)
    }

    /// After `new` replaced `old`: tells the streams whose version left to end after
    /// `new`'s drain time. Returns how many were told.
    pub fn moved(&self, old: &Route, new: &Route) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut told = 0;
        for t in self.live() {
            if leaving(t.version, old, new) {
                t.tell(StreamEnd {
                    reason: EndReason::Redeploy,
                    version: new_version(new),
                    deadline: Instant::now() + new.stream_drain,
                });
                told += 1;
            }
        }
        told
    }

    /// Tells every open stream to end at `deadline` (shutdown).
    pub fn end_all(&self, reason: EndReason, version: Option<String>, deadline: Instant) {
        for t in self.live() {
            t.tell(StreamEnd {
                reason,
                version: version.clone(),
                deadline,
            });
        }
    }
}

/// The version a route points at, as the hint names it.
pub fn new_version(r: &Route) -> Option<String> {
    r.target
        .as_ref()
        .and_then(|t| t.label.to_str().ok().map(str::to_owned))
}

/// Whether `r` serves `v` to new requests without a pin: its version or its canary.
fn serves(r: &Route, v: u32) -> bool {
    r.target.as_ref().is_some_and(|t| t.version == v)
        || (r.choice.as_ref().is_some_and(|c| c.canary.is_some())
            && r.alts.first().is_some_and(|a| a.target.version == v))
}

/// Whether the move from `old` to `new` takes `v` out of the environment: in `sticky`
/// mode when its pins are released (or it can no longer be pinned), in `follow` mode
/// when it stops being served (or pinnable).
pub fn leaving(v: u32, old: &Route, new: &Route) -> bool {
    let pin_old = old.pin(v);
    let pin_new = new.pin(v);
    let unpinnable = pin_old.is_some() && pin_new.is_none();
    let sticky = new
        .choice
        .as_ref()
        .is_some_and(|c| c.sticky_ttl_ms.is_some());
    if sticky {
        let released = match (pin_old, pin_new) {
            (Some(o), Some(n)) => n.released_at > o.released_at,
            _ => false,
        };
        released || unpinnable || (serves(old, v) && !serves(new, v) && pin_new.is_none())
    } else {
        (serves(old, v) && !serves(new, v)) || unpinnable
    }
}
