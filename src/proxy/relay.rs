//! Streams that end gracefully when their version leaves the environment (or the
//! gateway shuts down): the hint is written only between events of an SSE stream and
//! only between frames of a WebSocket's upstream-to-client direction.
//!
//! SSE: [`SseRelay`] watches the bytes it relays for the blank line that ends an event
//! (any of the line ends `text/event-stream` allows), keeping only how many line ends
//! came last — no event is buffered. Once its ticket's deadline passes, the relay goes
//! on to the next boundary (at most [`OVERRUN_BYTES`] or [`OVERRUN`] more), writes
//! `event: switchyard-reconnect` and ends the response.
//!
//! WebSocket: [`FrameTracker`] follows frame headers (RFC 6455 §5.2) to know where each
//! frame ends; it only counts lengths, so it relays any extension's frames unchanged.
//! At the deadline the relay finishes the frame in flight, writes a close frame 1012
//! with the reason, and closes both sides.

use crate::routing::streams::{EndReason, StreamEnd, StreamTicket};
use crate::telemetry::Metrics;
use bytes::Bytes;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

/// How long past its deadline a stream may take to reach a boundary.
pub const OVERRUN: Duration = Duration::from_secs(5);
/// How many bytes past its deadline a stream may relay to reach a boundary.
pub const OVERRUN_BYTES: usize = 1 << 20;

/// Whether a response's `content-type` is `text/event-stream`.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let b = v.as_bytes();
        b.len() >= 17 && b[..17].eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// The SSE event that tells a client to reconnect, and why.
pub fn sse_hint(end: &StreamEnd) -> Bytes {
    let data = serde_json::json!({"reason": end.reason.as_str(), "version": end.version});
    Bytes::from(format!("event: switchyard-reconnect\ndata: {data}\n\n"))
}

/// Where an event stream stands: how many line ends in a row it ended with.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventBoundary {
    ends: u8,
    cr: bool,
    started: bool,
}

impl EventBoundary {
    /// Takes in relayed bytes. Only the line ends at the tail matter, so the scan
    /// starts after the last other byte.
    pub fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.started = true;
        let tail = match data.iter().rposition(|b| *b != b'\n' && *b != b'\r') {
            Some(i) => {
                self.ends = 0;
                self.cr = false;
                &data[i + 1..]
            }
            None => data,
        };
        for b in tail {
            match b {
                b'\n' if self.cr => self.cr = false, // the LF of a CRLF
                b'\n' => self.ends = self.ends.saturating_add(1),
                _ => {
                    self.cr = true;
                    self.ends = self.ends.saturating_add(1);
                }
            }
        }
    }

    /// Whether what was relayed so far ends between events.
    pub fn at_boundary(&self) -> bool {
        !self.started || self.ends >= 2
    }
}

/// What an SSE relay is doing.
enum Phase {
    /// Relaying; not told to end (or told, waiting for the deadline).
    Open,
    /// Past the deadline: relaying up to the next boundary.
    Draining {
        bytes: usize,
    },
    Done,
}

/// Relays an SSE response body and ends it with the hint when its ticket says so.
pub struct SseRelay {
    ticket: Arc<StreamTicket>,
    metrics: Arc<Metrics>,
    boundary: EventBoundary,
    end: Option<StreamEnd>,
    sleep: Option<Pin<Box<Sleep>>>,
    phase: Phase,
}

impl SseRelay {
    pub fn new(ticket: Arc<StreamTicket>, metrics: Arc<Metrics>) -> Self {
        Self {
            ticket,
            metrics,
            boundary: EventBoundary::default(),
            end: None,
            sleep: None,
            phase: Phase::Open,
        }
    }

    /// Polls `inner` through the relay.
    pub fn poll<B>(
        &mut self,
        inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body<Data = Bytes>,
    {
        if matches!(self.phase, Phase::Done) {
            return Poll::Ready(None);
        }
        if self.end.is_none() {
            self.ticket.register(cx.waker());
            if let Some(e) = self.ticket.end() {
                self.sleep = Some(Box::pin(tokio::time::sleep_until(e.deadline)));
                self.end = Some(e);
            }
        }
        if let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_ready() {
                match self.phase {
                    Phase::Open => {
                        self.phase = Phase::Draining { bytes: 0 };
                        s.as_mut().reset(Instant::now() + OVERRUN);
                        // registers the overrun's timer with this task
                        let _ = s.as_mut().poll(cx);
                    }
                    _ => return self.cut(),
                }
            }
        }
        if let (Phase::Draining { bytes }, Some(end)) = (&self.phase, &self.end) {
            if self.boundary.at_boundary() {
                let hint = sse_hint(end);
                self.finish(end.reason);
                return Poll::Ready(Some(Ok(Frame::data(hint))));
            }
            if *bytes > OVERRUN_BYTES {
                return self.cut();
            }
        }
        let polled = inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.boundary.feed(d);
                    if let Phase::Draining { bytes } = &mut self.phase {
                        *bytes += d.len();
                        // the boundary may be here: come back for the hint at once
                        cx.waker().wake_by_ref();
                    }
                }
            }
            Poll::Ready(_) => self.phase = Phase::Done,
            Poll::Pending => {}
        }
        polled
    }

    fn finish(&mut self, reason: EndReason) {
        self.phase = Phase::Done;
        self.sleep = None;
        self.metrics.stream_ended(reason.as_str());
    }

    /// No boundary came within the overrun: the stream ends without the hint rather
    /// than inside an event.
    fn cut<E>(&mut self) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        tracing::warn!(
            "a stream reached no event boundary within the overrun; ended without the hint"
        );
        let reason = self.end.as_ref().map_or(EndReason::Redeploy, |e| e.reason);
        self.finish(reason);
        Poll::Ready(None)
    }
}

/// Where a WebSocket byte stream stands between frames (RFC 6455 §5.2): lengths only.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    head: [u8; 14],
    have: usize,
    /// Payload bytes left of the current frame (once its header is complete).
    left: u64,
    in_payload: bool,
}

impl FrameTracker {
    /// How many header bytes a header starting with `b0 b1` has.
    fn head_len(b1: u8) -> usize {
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    fn payload_len(&self) -> u64 {
        let b1 = self.head[1];
        match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }

    /// Consumes `data` up to and including the end of the frame in flight (or all of
    /// it); returns how many bytes were consumed. Call again with the rest.
    pub fn advance(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.in_payload {
                let n = (data.len() - i).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                i += n;
                if self.left == 0 {
                    self.in_payload = false;
                    return i;
                }
                continue;
            }
            self.head[self.have] = data[i];
            self.have += 1;
            i += 1;
            if self.have >= 2 && self.have == Self::head_len(self.head[1]) {
                self.left = self.payload_len();
                self.have = 0;
                if self.left == 0 {
                    return i;
                }
                self.in_payload = true;
            }
        }
        i
    }

    /// Whether the bytes so far end between frames.
    pub fn at_boundary(&self) -> bool {
        !self.in_payload && self.have == 0
    }
}

/// A close frame from the server side (unmasked): status 1012 and the reason.
pub fn close_frame(reason: EndReason) -> Vec<u8> {
    let r = reason.as_str().as_bytes();
    let mut f = Vec::with_capacity(4 + r.len());
    f.push(0x88);
    f.push(u8::try_from(2 + r.len()).unwrap_or(125));
    f.extend_from_slice(&1012u16.to_be_bytes());
    f.extend_from_slice(r);
    f
}

/// Waits until the ticket is told to end, then until its deadline.
async fn deadline_of(ticket: &StreamTicket) -> StreamEnd {
    let end = std::future::poll_fn(|cx| {
        ticket.register(cx.waker());
        match ticket.end() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    })
    .await;
    tokio::time::sleep_until(end.deadline).await;
    end
}

/// Relays a WebSocket both ways until either side ends, or until the ticket's end:
/// then the frame in flight from the upstream is finished, a close frame 1012 is sent
/// to the client, and both sides are closed.
pub async fn websocket<U, D>(up: U, down: D, ticket: Arc<StreamTicket>, metrics: Arc<Metrics>)
where
    U: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ur, mut uw) = tokio::io::split(up);
    let (mut dr, mut dw) = tokio::io::split(down);
    let client_to_up = async {
        let _ = tokio::io::copy(&mut dr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let up_to_client = async {
        let mut frames = FrameTracker::default();
        let mut buf = vec![0u8; 16 * 1024];
        let end = deadline_of(&ticket);
        tokio::pin!(end);
        let mut ending: Option<(StreamEnd, Instant, usize)> = None;
        loop {
            if let Some((e, _, _)) = &ending {
                if frames.at_boundary() {
                    let _ = dw.write_all(&close_frame(e.reason)).await;
                    metrics.stream_ended(e.reason.as_str());
                    let _ = dw.shutdown().await;
                    return true;
                }
            }
            let read = tokio::select! {
                r = ur.read(&mut buf) => r,
                e = &mut end, if ending.is_none() => {
                    ending = Some((e, Instant::now() + OVERRUN, 0));
                    continue;
                }
                _ = tokio::time::sleep_until(ending.as_ref().map_or_else(Instant::now, |x| x.1)), if ending.is_some() => {
                    tracing::warn!("a WebSocket frame did not end within the overrun; closed without the close frame");
                    let _ = dw.shutdown().await;
                    return true;
                }
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    let _ = dw.shutdown().await;
                    return false;
                }
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                let used = frames.advance(chunk);
                if dw.write_all(&chunk[..used]).await.is_err() {
                    return false;
                }
                chunk = &chunk[used..];
                if let Some((_, _, bytes)) = &mut ending {
                    *bytes += used;
                    if frames.at_boundary() || *bytes > OVERRUN_BYTES {
                        // what follows the frame in flight is not relayed
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(client_to_up);
    tokio::pin!(up_to_client);
    tokio::select! {
        ended = &mut up_to_client => {
            // after the close frame the client's reply may still reach the upstream,
            // briefly; after the upstream's own end, what the client still sends
            let wait = Duration::from_secs(if ended { 1 } else { 5 });
            let _ = tokio::time::timeout(wait, &mut client_to_up).await;
        }
        _ = &mut client_to_up => {
            // the client is done sending: the upstream's frames still go out, until
            // it ends or a move or shutdown ends the stream
            let _ = (&mut up_to_client).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_boundaries_in_every_line_ending() {
        let at = |chunks: &[&[u8]]| {
            let mut b = EventBoundary::default();
            for c in chunks {
                b.feed(c);
            }
            b.at_boundary()
        };
        assert!(at(&[]));
        assert!(at(&[b"data: a\n\n"]));
        assert!(at(&[b"data: a\r\n\r\n"]));
        assert!(at(&[b"data: a\r\r"]));
        assert!(at(&[b"data: a\n", b"\n"]));
        assert!(at(&[b"data: a\r\n", b"\r", b"\n"]));
        assert!(at(&[b"data: a\r\n", b"\r"]));
        assert!(!at(&[b"data: a\n"]));
        assert!(!at(&[b"data: a\r\n"]));
        assert!(!at(&[b"data: a\n\ndata: b"]));
        assert!(!at(&[b"data: a\n\n", b"data: b\n"]));
        assert!(at(&[b"data: a\n\n", b"data: b\n", b"\n"]));
    }

    #[test]
    fn frame_lengths_of_every_header_size() {
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        // a 5-byte text frame, then a masked 200-byte one, then a 70000-byte one
        let mut s = vec![0x81, 5];
        s.extend_from_slice(b"hello");
        s.extend_from_slice(&[0x82, 0x80 | 126, 0, 200, 1, 2, 3, 4]);
        s.extend(std::iter::repeat_n(7u8, 200));
        s.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        s.extend(std::iter::repeat_n(9u8, 70_000));
        let ends = [7, 7 + 8 + 200, s.len()];
        // fed in awkward pieces, the boundaries fall exactly at the frame ends
        let mut pos = 0;
        let mut seen = Vec::new();
        for piece in s.chunks(3) {
            let mut rest = piece;
            while !rest.is_empty() {
                let used = t.advance(rest);
                pos += used;
                rest = &rest[used..];
                if t.at_boundary() {
                    seen.push(pos);
                }
            }
        }
        assert_eq!(seen, ends);
        // an empty frame (a ping with no payload) is a frame
        let mut t = FrameTracker::default();
        assert_eq!(t.advance(&[0x89, 0, 0x81]), 2);
        assert!(t.at_boundary());
    }

    #[test]
    fn the_close_frame_and_the_hint() {
        assert_eq!(
            close_frame(EndReason::Redeploy),
            [&[0x88, 10, 0x03, 0xf4][..], b"redeploy"].concat()
        );
        let e = StreamEnd {
            reason: EndReason::Shutdown,
            version: Some("v2".into()),
            deadline: Instant::now(),
        };
        assert_eq!(
            sse_hint(&e),
            "event: switchyard-reconnect\ndata: {\"reason\":\"shutdown\",\"version\":\"v2\"}\n\n"
        );
        let mut h = http::HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            "content-type",
            "Text/Event-Stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(&h));
        h.insert("content-type", "application/json".parse().unwrap());
        assert!(!is_event_stream(&h));
    }
}
