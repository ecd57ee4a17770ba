// torii patch 17: pre-encoded fields (`crate::RawFields`) for the response of an HTTP/1
// server connection, handed over without the response's extensions.
//
// Carried in the response's extensions, the lines cost three allocations per response
// (the extensions' box, its table, the value's box) and a table insert and lookup. As
// patch 16 does for HTTP/2: the service's future, in the poll where it gives its response,
// hands the lines to `send_raw_fields`, which keeps them in a thread-local slot; the
// connection polling that future takes them as soon as the poll returns and writes them
// with that response's head. Lines handed over in a poll that does not give the response
// are dropped, never kept for another: each poll starts with an empty slot.

use std::cell::{Cell, RefCell};

use crate::RawFields;

thread_local! {
    /// Whether an HTTP/1 server connection is polling its service's future on this thread.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The lines handed over within that poll.
    static SLOT: RefCell<Option<RawFields>> = const { RefCell::new(None) };
}

/// Writes `raw` as the fields of the response the service's future gives: call it from
/// that future (which hyper polls), in the poll that returns the response. The lines must
/// hold a `Date` (hyper then adds none) and leave out the framing fields, as
/// [`RawFields`] says; the response's own map is written after them.
///
/// Gives `raw` back when called from anywhere but the poll of an HTTP/1 server
/// connection's service future (an HTTP/2 stream, another task, a client).
pub fn send_raw_fields(raw: RawFields) -> Result<(), RawFields> {
    if !POLLING.with(Cell::get) {
        return Err(raw);
    }
    SLOT.with(|slot| *slot.borrow_mut() = Some(raw));
    Ok(())
}

/// Restores the state of an enclosing poll on the way out of `polling` (a panic included).
struct Current {
    was_polling: bool,
    before: Option<RawFields>,
}

impl Drop for Current {
    fn drop(&mut self) {
        POLLING.with(|polling| polling.set(self.was_polling));
        SLOT.with(|slot| *slot.borrow_mut() = self.before.take());
    }
}

/// Runs `poll` (a connection's poll of its service's future) as the current connection;
/// gives its result and the lines `send_raw_fields` was handed meanwhile.
pub(crate) fn polling<T>(poll: impl FnOnce() -> T) -> (T, Option<RawFields>) {
    let current = Current {
        was_polling: POLLING.with(|polling| polling.replace(true)),
        before: SLOT.with(|slot| slot.borrow_mut().take()),
    };
    let out = poll();
    let raw = SLOT.with(|slot| slot.borrow_mut().take());
    drop(current);
    (out, raw)
}
