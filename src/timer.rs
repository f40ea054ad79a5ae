//! hyper's timer for one client connection, with one reusable timer per connection.
//!
//! An HTTP/1.1 connection asks hyper's timer for a header-read timer before every
//! request head and drops it once the head has arrived. With a fresh tokio timer each
//! time, every request registers an entry in the runtime's timer wheel and removes it
//! again. [`ConnTimer`] lends out one tokio `Sleep` kept for the connection instead and
//! moves its deadline: a later deadline only updates the entry, and the wheel is
//! touched when the old deadline comes due. A second timer asked for while the first
//! is lent out (hyper's HTTP/2 keep-alive, say) is an ordinary tokio timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The per-connection [`hyper::rt::Timer`]; clones share the connection's timer.
#[derive(Clone, Default)]
pub struct ConnTimer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Created on first use (inside the runtime), then reset for each loan.
    sleep: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
    lent: AtomicBool,
}

/// The connection's timer while lent out; returned when dropped. Dropping it leaves
/// the tokio timer registered: when its deadline passes unmoved it wakes the task
/// that polled it last, once.
struct Lent {
    shared: Arc<Shared>,
}

/// A timer of its own, for a request while the connection's timer is lent out.
struct Own {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl ConnTimer {
    pub fn new() -> Self {
        Self::default()
    }

    fn lend(&self, deadline: Instant) -> Option<Lent> {
        if self.shared.lent.swap(true, Ordering::Acquire) {
            return None;
        }
        let lent = Lent {
            shared: Arc::clone(&self.shared),
        };
        // a poisoned lock: the previous holder panicked; fall back to a timer of its own
        let mut slot = self.shared.sleep.lock().ok()?;
        match slot.as_mut() {
            Some(s) => s.as_mut().reset(deadline.into()),
            None => *slot = Some(Box::pin(tokio::time::sleep_until(deadline.into()))),
        }
        drop(slot);
        Some(lent)
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match self.lend(deadline) {
            Some(lent) => Box::pin(lent),
            None => Box::pin(Own {
                sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            }),
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        if sleep.as_mut().downcast_mut_pin::<Lent>().is_some() {
            if let Ok(mut slot) = self.shared.sleep.lock() {
                if let Some(s) = slot.as_mut() {
                    s.as_mut().reset(new_deadline.into());
                    return;
                }
            }
        } else if let Some(own) = sleep.as_mut().downcast_mut_pin::<Own>() {
            own.get_mut().sleep.as_mut().reset(new_deadline.into());
            return;
        }
        *sleep = self.sleep_until(new_deadline);
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl Future for Lent {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.shared.sleep.lock() {
            Ok(mut slot) => match slot.as_mut() {
                Some(s) => s.as_mut().poll(cx),
                None => Poll::Ready(()),
            },
            // unreachable in practice (nothing panics while holding it); end the wait
            Err(_) => Poll::Ready(()),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.shared.lent.store(false, Ordering::Release);
    }
}

impl hyper::rt::Sleep for Lent {}

impl Future for Own {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Own {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test(start_paused = true)]
    async fn a_lent_timer_fires_at_its_latest_deadline() {
        let t = ConnTimer::new();
        let start = tokio::time::Instant::now();
        let first = t.sleep(Duration::from_millis(100));
        drop(first);
        // the same timer, moved further out: it must not fire at the first deadline
        let second = t.sleep(Duration::from_millis(300));
        second.await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        // and moved back in, after it fired: an earlier deadline still holds
        let third = t.sleep(Duration::from_millis(50));
        let at = tokio::time::Instant::now();
        third.await;
        assert!(at.elapsed() >= Duration::from_millis(50));
        assert!(at.elapsed() < Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_timer_while_one_is_lent_is_independent() {
        let t = ConnTimer::new();
        let long = t.sleep(Duration::from_secs(10));
        let short = t.sleep(Duration::from_millis(20));
        let start = tokio::time::Instant::now();
        short.await;
        assert!(start.elapsed() < Duration::from_secs(10));
        let mut long = long;
        // the lent one was not moved by the second
        assert!(futures_util::poll!(long.as_mut()).is_pending());
        long.await;
        assert!(start.elapsed() >= Duration::from_secs(10) - Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn reset_moves_either_kind() {
        let t = ConnTimer::new();
        let mut lent = t.sleep(Duration::from_secs(10));
        let mut own = t.sleep(Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        t.reset(&mut lent, t.now() + Duration::from_millis(10));
        t.reset(&mut own, t.now() + Duration::from_millis(20));
        lent.await;
        own.await;
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
