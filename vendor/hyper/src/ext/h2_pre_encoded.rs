// torii patch 16: fields encoded beforehand (`h2::ext::PreEncoded`) for the final response
// of an HTTP/2 server stream, handed over without the response's extensions.
//
// Carried in the response's extensions, the block cost three allocations per response
// (the extensions' box, its table, the value's box). Instead the service's future, in the
// poll where it gives its response, hands the block to `send_pre_encoded`, which keeps it
// in a thread-local slot; the stream polling that future takes it as soon as the poll
// returns and gives it to `h2` with the response (`SendResponse::send_response_pre_encoded`).
// A block handed over in a poll that does not give the response is dropped, never kept
// for another: each poll starts with an empty slot.

use std::cell::Cell;

use h2::ext::PreEncoded;

thread_local! {
    /// Whether an HTTP/2 server stream is polling its service's future on this thread.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The block handed over within that poll.
    static SLOT: Cell<Option<PreEncoded>> = const { Cell::new(None) };
}

/// Sends `block` after the fields of the response the service's future gives: call it from
/// that future (which hyper polls), in the poll that returns the response. The block must
/// not repeat a field of the response's map (unless it may repeat), and the response gets
/// no automatic `Date` or `Content-Length` (put them in the block).
///
/// Gives `block` back when called from anywhere but the poll of an HTTP/2 server stream's
/// service future (an HTTP/1 connection, another task, a client).
pub fn send_pre_encoded(block: PreEncoded) -> Result<(), PreEncoded> {
    if !POLLING.with(Cell::get) {
        return Err(block);
    }
    SLOT.with(|slot| slot.set(Some(block)));
    Ok(())
}

/// Restores the state of an enclosing poll on the way out of `polling` (a panic included).
struct Current {
    was_polling: bool,
    before: Option<PreEncoded>,
}

impl Drop for Current {
    fn drop(&mut self) {
        POLLING.with(|polling| polling.set(self.was_polling));
        SLOT.with(|slot| slot.set(self.before.take()));
    }
}

/// Runs `poll` (a stream's poll of its service's future) as the current stream; gives its
/// result and the block `send_pre_encoded` was handed meanwhile.
pub(crate) fn polling<T>(poll: impl FnOnce() -> T) -> (T, Option<PreEncoded>) {
    let current = Current {
        was_polling: POLLING.with(|polling| polling.replace(true)),
        before: SLOT.with(Cell::take),
    };
    let out = poll();
    let block = SLOT.with(Cell::take);
    drop(current);
    (out, block)
}
