//! The request body sent upstream: the downstream body streamed through, with a size limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The body of an upstream request.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// The downstream body, passed through as it arrives. `exceeded` is set when more than
    /// `remaining` bytes arrive (the request is then aborted and answered 413).
    Stream {
        body: Incoming,
        remaining: u64,
        exceeded: Option<Arc<AtomicBool>>,
    },
}

/// Raised when a streamed body exceeds `limits.max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the limit")]
pub struct TooLarge;

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream {
                body,
                remaining,
                exceeded,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            if let Some(flag) = exceeded {
                                flag.store(true, Ordering::Relaxed);
                            }
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                other => other.map_err(|e| -> Self::Error { Box::new(e) }),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream { body, .. } => body.size_hint(),
        }
    }
}
