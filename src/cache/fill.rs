//! `Fill`: copies a response body into the cache while it streams to the first client.
//! Stored only when the body ends cleanly and is complete; a truncated, failed or oversized
//! body is never stored (the flight's followers then fetch themselves).

use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use super::object::{CachedObject, ObjectParts};
use super::{Cache, FlightGuard, FlightState};

/// A response on its way into the cache.
pub struct Fill {
    cache: Arc<Cache>,
    flight: Option<FlightGuard>,
    /// The object to store, without its body yet.
    template: ObjectParts,
    /// The `Vary` marker to store under the primary key, for variants.
    index: Option<CachedObject>,
    /// The body's chunks so far (copies of their `Bytes`): a small body's one or two are
    /// held inline, with no allocation.
    chunks: SmallVec<[Bytes; 2]>,
    len: usize,
    max: usize,
    /// `Content-Length` of the response, when it had one.
    expected: Option<u64>,
    /// Stored only once the body has said it ended (`Ready(None)`), not on its last
    /// data frame: the body is read by a decoder that may still refuse it.
    pub held: bool,
    /// Set for a hit's copy of a stored identity object (`Fill::recode`): stored only
    /// if the response step encodes it, and the claim is given back if it is not.
    recode: Option<Arc<CachedObject>>,
}

impl Fill {
    pub fn new(
        cache: Arc<Cache>,
        flight: Option<FlightGuard>,
        template: ObjectParts,
        index: Option<CachedObject>,
        max: usize,
        expected: Option<u64>,
    ) -> Fill {
        Fill {
            cache,
            flight,
            template,
            index,
            chunks: SmallVec::new(),
            len: 0,
            max,
            expected,
            held: false,
            recode: None,
        }
    }

    /// For a hit on `obj`, a stored identity object that the response step may encode:
    /// a fill that stores the encoded variant in its place (same key and freshness), so
    /// the next client for that coding gets it without compressing again (compress
    /// once). `None` when another hit is already doing so.
    pub fn recode(cache: Arc<Cache>, obj: &Arc<CachedObject>) -> Option<Fill> {
        if !obj.memo.claim_recode() {
            return None;
        }
        let template = obj.parts();
        let max = obj.body.len().saturating_add(4096);
        let mut fill = Fill::new(
            cache,
            None,
            template,
            None,
            max,
            Some(obj.body.len() as u64),
        );
        fill.recode = Some(obj.clone());
        Some(fill)
    }

    /// Whether this fill is a hit's re-encoding (`recode`): worth storing only encoded.
    pub fn is_recode(&self) -> bool {
        self.recode.is_some()
    }

    /// The fields of the object to be stored.
    pub fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.template.headers.map_mut()
    }

    /// The body stored is not the one announced (it is encoded on its way): its length is
    /// whatever it comes to.
    pub fn unknown_length(&mut self) {
        self.expected = None;
    }

    /// Takes a copy of the next chunk (a reference count, not the bytes). Returns false
    /// once the body is larger than the max object size: the fill is then abandoned.
    pub fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        if self.len > self.max {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    /// The body ended cleanly: store the object and hand it to the followers.
    pub fn finish(mut self) {
        // Stored or refused, the claim stays taken: the object is replaced, or is one
        // that does not fit encoded either.
        self.recode = None;
        if self.expected.is_some_and(|e| e != self.len as u64) {
            return; // shorter or longer than announced: never store
        }
        // Fields and body in one allocation sized to them: a chunk read from the origin
        // may hold on to a larger buffer (its head, the connection's read buffer).
        let template = std::mem::replace(&mut self.template, empty());
        let obj = Arc::new(template.into_object(&self.chunks));
        self.chunks = SmallVec::new();
        self.cache.store(obj.clone(), self.index.take());
        if let Some(flight) = self.flight.take() {
            flight.finish(FlightState::Stored(obj));
        }
    }
}

fn empty() -> ObjectParts {
    let now = std::time::SystemTime::UNIX_EPOCH;
    ObjectParts {
        meta: super::object::ObjectMeta::at("", now),
        status: http::StatusCode::OK,
        headers: super::object::PartsFields::Lines(Default::default()),
        freshness: None,
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Abandoned (not encoded, cut, too big): another hit may try.
        if let Some(obj) = self.recode.take() {
            obj.memo.release_recode();
        }
    }
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("key", &self.template.meta.key)
            .field("len", &self.len)
            .finish()
    }
}
