//! `RespBody`, the body of every response torii sends downstream; it carries the exchange's
//! record, so the access log and in-flight count see the end of the body, not of the head.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::ext::PreEncoded;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::cache::fill::Fill;
use crate::compress::{BoxError, Coder, Source, Transformed};
use crate::observe::Exchange;
use crate::upstream::UpstreamBody;

/// A downstream response body.
#[derive(Debug)]
pub struct RespBody {
    kind: Kind,
    /// How the response's fields go out besides its header map.
    head: Head,
    /// Boxed: hyper keeps a body slot per connection, idle or not, sized for this type.
    exchange: Option<Box<Exchange>>,
}

/// The fields of a response encoded beforehand, which go out before (HTTP/1) or after
/// (HTTP/2) those of its map. Carried with the body, not in the response's extensions,
/// whose map would cost three allocations per response; handed to hyper in the poll that
/// gives the response (`proxy::Handled`).
#[derive(Debug, Default)]
pub enum Head {
    /// None: the map holds every field.
    #[default]
    Map,
    /// HTTP/1 field lines (a hit's or a stored miss's stored fields, a relayed head):
    /// `hyper::ext::send_raw_fields`.
    Raw(hyper::RawFields),
    /// An HTTP/2 hit's stored fields, HPACK-encoded (`proxy::cached::pre_encoded`):
    /// `hyper::ext::send_pre_encoded`.
    PreEncoded(PreEncoded),
}

#[derive(Debug)]
enum Kind {
    /// All of it (`None`: empty, or sent).
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// An upstream body also being copied into the cache.
    Fill(Src, Option<Box<Fill>>),
    /// Another body encoded or decoded on its way to the client (`proxy::compress`).
    Coded(Box<Transformed<RespBody>>),
}

/// What a fill reads: the upstream body, or that body encoded, when the object stored is
/// the encoded one (compress once).
#[derive(Debug)]
enum Src {
    Plain(UpstreamBody),
    Coded(Box<Transformed<UpstreamBody>>),
}

impl Body for Src {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Src::Plain(b) => Pin::new(b).poll_frame(cx),
            Src::Coded(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Src::Plain(b) => b.is_end_stream(),
            Src::Coded(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Src::Plain(b) => b.size_hint(),
            Src::Coded(b) => b.size_hint(),
        }
    }
}

impl Source for UpstreamBody {}

impl Source for RespBody {
    fn abandon(&mut self) {
        match &mut self.kind {
            Kind::Fill(_, fill) => *fill = None,
            Kind::Coded(t) => t.inner_mut().abandon(),
            Kind::Full(..) | Kind::Upstream(_) => {}
        }
    }
}

impl RespBody {
    pub fn full(bytes: impl Into<Bytes>) -> RespBody {
        let bytes = bytes.into();
        RespBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            head: Head::Map,
            exchange: None,
        }
    }

    /// `full`, for a response whose fields (but those of its map) go out as `block`.
    pub fn full_pre_encoded(bytes: Bytes, block: PreEncoded) -> RespBody {
        RespBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            head: Head::PreEncoded(block),
            exchange: None,
        }
    }

    /// This body, its response's fields going out as `raw` lines before its map.
    pub fn with_raw(mut self, raw: hyper::RawFields) -> RespBody {
        self.head = Head::Raw(raw);
        self
    }

    /// Whether the response's fields go out pre-encoded ([`Head`]), until `take_head`.
    pub fn is_pre_encoded(&self) -> bool {
        !matches!(self.head, Head::Map)
    }

    /// The fields encoded beforehand, for hyper ([`Head`]); `Head::Map` after.
    pub fn take_head(&mut self) -> Head {
        std::mem::take(&mut self.head)
    }

    /// Puts back a head `take_head` gave.
    pub fn set_head(&mut self, head: Head) {
        self.head = head;
    }

    pub fn empty() -> RespBody {
        RespBody {
            kind: Kind::Full(None),
            head: Head::Map,
            exchange: None,
        }
    }

    pub fn upstream(body: UpstreamBody) -> RespBody {
        RespBody {
            kind: Kind::Upstream(body),
            head: Head::Map,
            exchange: None,
        }
    }

    /// An upstream body that is stored in the cache as it streams, if it ends cleanly.
    pub fn filling(body: UpstreamBody, fill: Fill) -> RespBody {
        RespBody {
            kind: Kind::Fill(Src::Plain(body), Some(Box::new(fill))),
            head: Head::Map,
            exchange: None,
        }
    }

    /// This body run through `coder` (an encoder or a decoder).
    pub fn transformed(mut self, coder: Coder) -> RespBody {
        // Fields encoded beforehand describe the body as it is (`compress::apply` leaves
        // such a response alone).
        debug_assert!(matches!(self.head, Head::Map), "a pre-encoded head coded");
        let exchange = self.exchange.take();
        let kind = std::mem::replace(&mut self.kind, Kind::Full(None));
        let inner = RespBody {
            kind,
            head: Head::Map,
            exchange: None,
        };
        RespBody {
            kind: Kind::Coded(Box::new(Transformed::new(inner, coder))),
            head: std::mem::take(&mut self.head),
            exchange,
        }
    }

    /// The headers of the object a filling body will store, if it is filling.
    pub fn fill_mut(&mut self) -> Option<&mut Fill> {
        match &mut self.kind {
            Kind::Fill(_, Some(fill)) => Some(fill),
            _ => None,
        }
    }

    /// Drops a hit's re-encoding fill (`Fill::recode`): the body goes out as stored, so
    /// there is nothing new to store.
    pub fn drop_recode(&mut self) {
        if let Kind::Fill(_, fill @ Some(_)) = &mut self.kind {
            if fill.as_ref().is_some_and(|f| f.is_recode()) {
                *fill = None;
            }
        }
    }

    /// For a filling body: encode the upstream body before it is stored, so the object
    /// stored is the encoded one. False (nothing done) for any other body.
    pub fn encode_before_fill(&mut self, coder: Coder) -> bool {
        match &mut self.kind {
            Kind::Fill(src @ Src::Plain(_), Some(_)) => {
                let Src::Plain(body) = std::mem::replace(src, Src::Plain(UpstreamBody::Full(None)))
                else {
                    unreachable!()
                };
                *src = Src::Coded(Box::new(Transformed::new(body, coder)));
                true
            }
            _ => false,
        }
    }

    /// Attaches the exchange record; it is finished when the body ends or is dropped.
    pub fn with_exchange(mut self, exchange: Box<Exchange>) -> RespBody {
        self.exchange = Some(exchange);
        self
    }

    pub fn exchange_mut(&mut self) -> Option<&mut Exchange> {
        self.exchange.as_deref_mut()
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut exchange) = self.exchange.take() {
            exchange.record.complete = complete;
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Coded(body) => Pin::new(&mut **body).poll_frame(cx),
            Kind::Fill(body, fill) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            if fill.as_mut().is_some_and(|f| !f.push(data)) {
                                *fill = None; // too large to store: pass it through
                            }
                        }
                        // hyper stops polling once the body says it has ended, so the
                        // last data frame may be the last poll.
                        if body.is_end_stream() && !fill.as_ref().is_some_and(|f| f.held) {
                            if let Some(f) = fill.take() {
                                f.finish();
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(f) = fill.take() {
                            f.finish();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => *fill = None,
                    Poll::Pending => {}
                }
                polled
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(exchange)) = (frame.data_ref(), this.exchange.as_mut()) {
                    exchange.record.bytes += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Fill(body, _) => body.is_end_stream(),
            Kind::Coded(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Fill(body, _) => body.size_hint(),
            Kind::Coded(body) => body.size_hint(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // A body dropped before its end was cut short (client gone, upstream failed);
        // a finished one already took its exchange.
        let complete = self.is_end_stream();
        self.finish(complete);
        // The client left while the body was still being stored: finish reading it in
        // the background, so the object is stored and the coalesced followers waiting
        // for it get it (instead of all going to the origin at once).
        if let Kind::Fill(body, Some(fill)) = std::mem::replace(&mut self.kind, Kind::Full(None)) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(complete_fill(body, fill));
            }
        }
    }
}

/// Longest wait for the next frame of a body finished without its client.
const ORPHAN_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the rest of `body` into `fill` and stores it if it ends cleanly and complete.
async fn complete_fill(mut body: Src, mut fill: Box<Fill>) {
    loop {
        match tokio::time::timeout(ORPHAN_FRAME_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !fill.push(data) {
                        return; // too large to store
                    }
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => return, // failed or stalled: not stored
        }
    }
    fill.finish();
}
