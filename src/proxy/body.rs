//! The client's request body on its way upstream: at most `limit` bytes, and never
//! a wait longer than `idle` for its next piece. A body over the limit fails with
//! [`BodyTooLarge`] (→ 413), a stalled one with [`BodyTimeout`] (→ 408); either
//! failure aborts the upstream request, whose connection is then discarded.
//!
//! The timer costs nothing while the body arrives promptly: it is allocated the first
//! time the body makes the gateway wait, and only re-armed after that.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The request body is larger than the gateway accepts.
#[derive(Debug, thiserror::Error)]
#[error("request body over the limit")]
pub struct BodyTooLarge;

/// The client stopped sending its request body.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled longer than the body read timeout")]
pub struct BodyTimeout;

pub struct ClientBody {
    inner: Incoming,
    remaining: u64,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: u64, idle: Duration) -> Self {
        Self {
            inner,
            remaining: limit,
            idle,
            timer: None,
            waiting: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(Instant::now() + idle);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > this.remaining {
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.inner.size_hint();
        if h.lower() > self.remaining {
            // hyper must not announce a length the body will never reach
            return SizeHint::default();
        }
        if h.upper().is_none_or(|u| u > self.remaining) {
            h.set_upper(self.remaining);
        }
        h
    }
}
