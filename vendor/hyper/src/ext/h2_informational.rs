// torii patch 11: interim (1xx) responses from the service of an HTTP/2 server stream.
//
// An HTTP/2 connection serves its streams concurrently, so a per-connection source (as
// `http1::Connection::informational` takes) can't say which stream a head is for. Instead
// each stream, while it polls its service's future, makes itself "current" on its thread:
// `send_informational`, called from that future, queues the head in a thread-local list,
// and the stream sends what was queued as HEADERS frames as soon as the poll returns,
// before any final head. Nothing is allocated per request (the list keeps its capacity
// per thread); a poll with nothing queued costs a few thread-local reads and writes.

use std::cell::{Cell, RefCell};

use http::{Response, StatusCode};

thread_local! {
    /// Whether an HTTP/2 server stream is polling its service's future on this thread.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The interim heads queued from within such a poll, not yet sent.
    static QUEUED: RefCell<Vec<Response<()>>> = const { RefCell::new(Vec::new()) };
}

/// Sends an interim (1xx) response on the HTTP/2 server stream whose service is answering
/// the request: call it from the service's future (which hyper polls), before that future
/// gives its final response. The stream sends it as soon as that poll returns, with
/// connection-specific fields removed (HTTP/2 forbids them).
///
/// Gives `head` back, unsent, when it is not 1xx or is `101 Switching Protocols`
/// (HTTP/2 has no such thing), or when called from anywhere but the poll of an HTTP/2
/// server stream's service future (an HTTP/1 connection, another task, a client).
pub fn send_informational(head: Response<()>) -> Result<(), Response<()>> {
    let status = head.status();
    if !status.is_informational()
        || status == StatusCode::SWITCHING_PROTOCOLS
        || !POLLING.with(Cell::get)
    {
        return Err(head);
    }
    QUEUED.with(|queue| queue.borrow_mut().push(head));
    Ok(())
}

/// Restores the state of an enclosing poll, and drops what was left queued, on the way out
/// of `polling` (a panic included).
struct Current {
    was_polling: bool,
    queued_before: usize,
}

impl Drop for Current {
    fn drop(&mut self) {
        POLLING.with(|polling| polling.set(self.was_polling));
        QUEUED.with(|queue| queue.borrow_mut().truncate(self.queued_before));
    }
}

/// Runs `poll` (a stream's poll of its service's future) as the current stream, then hands
/// each head `send_informational` queued meanwhile to `send`, in order.
pub(crate) fn polling<T>(poll: impl FnOnce() -> T, mut send: impl FnMut(Response<()>)) -> T {
    let current = Current {
        was_polling: POLLING.with(|polling| polling.replace(true)),
        queued_before: QUEUED.with(|queue| queue.borrow().len()),
    };
    let out = poll();
    POLLING.with(|polling| polling.set(current.was_polling));
    while let Some(head) = QUEUED.with(|queue| {
        let mut queue = queue.borrow_mut();
        (queue.len() > current.queued_before).then(|| queue.remove(current.queued_before))
    }) {
        send(head);
    }
    drop(current);
    out
}
