//! The client's request body on its way upstream: at most `limit` bytes, and never
//! a wait longer than `idle` for its next piece. A body over the limit fails with
//! [`BodyTooLarge`] (→ 413), a stalled one with [`BodyTimeout`] (→ 408), a broken one
//! (framing error, or the client gone before its end) with [`BodyBroken`] (→ 400, or
//! `client_aborted`).
//!
//! A body of up to `[proxy] request_buffer_bytes` (64 KiB by default) is read whole
//! ([`ClientBody::buffer`]) before any upstream is contacted, so a broken or stalled
//! one never leaves the gateway: the upstream sees a complete request with a
//! `content-length`, or nothing. A larger body is streamed after its first bytes; if
//! it breaks, the upstream request is aborted and its connection discarded.
//!
//! The timer costs nothing while the body arrives promptly: it is allocated the first
//! time the body makes the gateway wait, and only re-armed after that. A request
//! without a body is never buffered (one `is_end_stream` check).

use bytes::{Bytes, BytesMut};
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

/// The client's body broke: bad chunked framing, or the connection ended before the
/// body did (`aborted`).
#[derive(Debug, thiserror::Error)]
#[error("request body broken: {source}")]
pub struct BodyBroken {
    pub aborted: bool,
    #[source]
    pub source: hyper::Error,
}

impl BodyBroken {
    fn new(source: hyper::Error) -> Self {
        // the connection ended mid-body: hyper says "incomplete message", or carries the
        // I/O error of the read (an unexpected end, a reset); a framing error of the
        // body is a parse error
        let mut aborted = source.is_incomplete_message() || source.is_canceled();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&source);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{
                    BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof,
                };
                aborted |= matches!(
                    io.kind(),
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
                );
            }
            cur = e.source();
        }
        Self { aborted, source }
    }
}

pub struct ClientBody {
    /// The rest of the body still to read from the client; None once read whole.
    inner: Option<Incoming>,
    /// Bytes read before forwarding started, sent first.
    head: Option<Bytes>,
    remaining: u64,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: u64, idle: Duration) -> Self {
        Self {
            inner: Some(inner),
            head: None,
            remaining: limit,
            idle,
            timer: None,
            waiting: false,
        }
    }

    /// No body: what is left in a request whose body was taken.
    pub fn empty() -> Self {
        Self {
            inner: None,
            head: None,
            remaining: 0,
            idle: Duration::ZERO,
            timer: None,
            waiting: false,
        }
    }

    /// Reads the body whole when it is at most `max` bytes; otherwise reads a little
    /// over `max` and leaves the rest to be streamed. An error here means nothing was
    /// sent anywhere.
    pub async fn buffer(&mut self, max: usize) -> Result<(), super::upstream::BoxError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if inner.is_end_stream() {
            self.inner = None;
            return Ok(());
        }
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut len = 0usize;
        loop {
            let frame = std::future::poll_fn(|cx| self.poll_client(cx)).await;
            match frame {
                None => {
                    self.inner = None;
                    break;
                }
                Some(Err(e)) => return Err(e),
                // trailers are not forwarded (the `trailer` field that would announce
                // them is hop-by-hop), as when the body is streamed
                Some(Ok(frame)) => {
                    let Ok(d) = frame.into_data() else { continue };
                    len += d.len();
                    match (&mut joined, first.take()) {
                        (Some(j), _) => j.extend_from_slice(&d),
                        (None, None) => first = Some(d),
                        (None, Some(f)) => {
                            let mut j = BytesMut::with_capacity(len.max(max / 4));
                            j.extend_from_slice(&f);
                            j.extend_from_slice(&d);
                            joined = Some(j);
                        }
                    }
                    if len > max {
                        break; // too big to hold: stream the rest
                    }
                }
            }
        }
        self.head = joined.map(BytesMut::freeze).or(first);
        Ok(())
    }

    /// A copy to send again on another endpoint, when the whole body is in memory
    /// (read whole, or there is none); None while part of it is still to come.
    pub fn replay(&self) -> Option<Self> {
        if self.inner.as_ref().is_some_and(|i| !i.is_end_stream()) {
            return None;
        }
        Some(Self {
            inner: None,
            head: self.head.clone(),
            remaining: self.remaining,
            idle: self.idle,
            timer: None,
            waiting: false,
        })
    }

    /// The client's next frame under the size and idle limits.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::upstream::BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if !self.waiting {
                    self.waiting = true;
                    timer.as_mut().reset(Instant::now() + idle);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyBroken::new(e).into()))),
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = super::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(d) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if this.inner.is_some() {
            return this.poll_client(cx);
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let Some(inner) = &self.inner else {
            // read whole: the upstream gets a content-length
            return SizeHint::with_exact(head);
        };
        let mut h = inner.size_hint();
        if h.lower() > self.remaining {
            // hyper must not announce a length the body will never reach
            return SizeHint::default();
        }
        if h.upper().is_none_or(|u| u > self.remaining) {
            h.set_upper(self.remaining);
        }
        let mut out = SizeHint::new();
        out.set_lower(h.lower() + head);
        if let Some(u) = h.upper() {
            out.set_upper(u + head);
        }
        out
    }
}
