//! The request body sent upstream: the downstream body streamed through, with a size limit
//! and a limit on how long the client may leave it stalled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The body of an upstream request.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// The downstream body, passed through as it arrives. The stream fails, and `fault`
    /// says why, when more than `remaining` bytes arrive (answered 413) or when no byte
    /// arrives for `stall` (`limits.body_timeout`, answered 408).
    Stream {
        body: Incoming,
        remaining: u64,
        stall: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        fault: Arc<BodyFault>,
    },
}

impl ReqBody {
    /// Streams `body` with at most `max` bytes and at most `stall` between two reads.
    pub fn stream(body: Incoming, max: u64, stall: Duration) -> (ReqBody, Arc<BodyFault>) {
        let fault = Arc::new(BodyFault::default());
        let req = ReqBody::Stream {
            body,
            remaining: max,
            stall,
            timer: None,
            fault: fault.clone(),
        };
        (req, fault)
    }
}

/// Why a streamed request body failed, if it was the client's fault.
#[derive(Debug, Default)]
pub struct BodyFault(AtomicU8);

impl BodyFault {
    const TOO_LARGE: u8 = 1;
    const STALLED: u8 = 2;
    const BROKEN: u8 = 3;

    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TOO_LARGE
    }

    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::STALLED
    }

    /// The client's body was malformed (bad chunking) or cut short.
    pub fn broken(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::BROKEN
    }
}

/// Raised when a streamed body exceeds `limits.max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the limit")]
pub struct TooLarge;

/// Raised when the client sent no body bytes for `limits.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled longer than limits.body_timeout")]
pub struct Stalled;

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
                stall,
                timer,
                fault,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *timer = None;
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            fault.0.store(BodyFault::TOO_LARGE, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    fault.0.store(BodyFault::BROKEN, Ordering::Relaxed);
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    // The clock runs only while torii waits on the client.
                    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*stall)));
                    if timer.as_mut().poll(cx).is_ready() {
                        fault.0.store(BodyFault::STALLED, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(Stalled))));
                    }
                    Poll::Pending
                }
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

/// The body of an upstream response.
#[derive(Debug)]
pub enum UpstreamBody {
    /// All of it, read with the head (`None`: empty).
    Full(Option<Bytes>),
    /// Streamed from an HTTP/1.1 connection.
    H1(Box<super::h1::Body>),
    /// A stream of the shared HTTP/2 connection.
    H2(Incoming),
    /// The answer was `101 Switching Protocols`: no body, the connection is a tunnel now.
    Tunnel(Box<super::h1::Upgraded>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::H1(body) => Pin::new(body.as_mut()).poll_frame(cx),
            UpstreamBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            UpstreamBody::Tunnel(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::H1(body) => body.is_end_stream(),
            UpstreamBody::H2(body) => body.is_end_stream(),
            UpstreamBody::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::H1(body) => body.size_hint(),
            UpstreamBody::H2(body) => body.size_hint(),
            UpstreamBody::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}
