//! The request body sent upstream: the client's body, streamed, under the size limit.
//!
//! When a version has several upstreams the body is *reclaimable*: it sits in a shared
//! slot and is taken only when the upstream connection polls it for the first time, so
//! after a refused connection the same body can go to the next upstream. A version with
//! one upstream pays nothing for this.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Limit = Limited<Incoming>;

/// The shared slot of a reclaimable body.
pub type Shared = Arc<Mutex<Option<Limit>>>;

pub enum ForwardBody {
    Direct(Limit),
    Reclaimable(Shared),
    Done,
}

impl ForwardBody {
    /// Whether a reclaimable body is still untouched in its slot.
    pub fn untouched(shared: &Shared) -> bool {
        shared.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    fn take(&mut self) {
        if let ForwardBody::Reclaimable(shared) = self {
            let taken = shared.lock().ok().and_then(|mut g| g.take());
            *self = match taken {
                Some(b) => ForwardBody::Direct(b),
                None => ForwardBody::Done,
            };
        }
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.take();
        match &mut *self {
            ForwardBody::Direct(b) => Pin::new(b).poll_frame(cx),
            ForwardBody::Reclaimable(_) | ForwardBody::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ForwardBody::Direct(b) => b.is_end_stream(),
            ForwardBody::Reclaimable(s) => s
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|b| b.is_end_stream()))
                .unwrap_or(true),
            ForwardBody::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Direct(b) => b.size_hint(),
            ForwardBody::Reclaimable(s) => s
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|b| b.size_hint()))
                .unwrap_or_else(|| SizeHint::with_exact(0)),
            ForwardBody::Done => SizeHint::with_exact(0),
        }
    }
}
