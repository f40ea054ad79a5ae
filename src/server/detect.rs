//! Telling HTTP/2 prior knowledge from HTTP/1.1 on a cleartext connection, without
//! losing a byte and without polling.

use std::pin::Pin;
use std::task::{Context, Poll};

pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 prior knowledge (the connection preface) from anything else (HTTP/1.1).
/// The first bytes are peeked; only when they are a strict prefix of the preface are
/// they read, with the rest, waiting on the socket rather than peeking again — those
/// bytes are returned, for the protocol to read first through [`Prefixed`].
pub(super) async fn detect_h2(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<(bool, Option<bytes::Bytes>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await?;
    if n == 0 || buf[..n] != H2_PREFACE[..n] {
        return Ok((false, None));
    }
    if n == H2_PREFACE.len() {
        return Ok((true, None));
    }
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    while got.len() < H2_PREFACE.len() {
        // never more than the preface's remaining bytes: nothing after it is taken
        let want = H2_PREFACE.len() - got.len();
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if got[..] != H2_PREFACE[..got.len()] {
            return Ok((false, Some(got.into())));
        }
    }
    Ok((true, Some(got.into())))
}

/// A stream whose first reads return bytes already taken from it (during protocol
/// detection). Only a connection whose first bytes were a strict prefix of the
/// preface is wrapped; every other one is served on its socket directly.
pub(super) struct Prefixed<T> {
    prefix: Option<bytes::Bytes>,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(super) fn new(inner: T, prefix: Option<bytes::Bytes>) -> Self {
        Self { prefix, inner }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(p) = self.prefix.as_mut() {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p.split_to(n));
            if p.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
