//! The stop signal as connections poll it: once to register, then only when it fires.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::sync::watch;

/// Completes once the stop flag is set (the watch guard is not held across awaits).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// [`stopped`] for a client connection, which is polled on every wake of the
/// connection: the watch is shared by every connection and polling a waiting watch
/// takes its lock, so here it is polled once to register and then only when it
/// woke the connection.
pub(super) struct Stop<'a> {
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    relay: Arc<StopRelay>,
    waker: Waker,
}

pub(super) struct StopRelay {
    /// The signal woke (or has not been polled yet).
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for StopRelay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a> Stop<'a> {
    pub(super) fn new(stop: &'a mut watch::Receiver<bool>) -> Self {
        let relay = Arc::new(StopRelay {
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            signal: Box::pin(stopped(stop)),
            waker: Waker::from(Arc::clone(&relay)),
            relay,
        }
    }
}

impl Future for Stop<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.relay.task.register(cx.waker());
        if !self.relay.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.signal
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}
