//! Hibernated connections: idle keep-alive HTTP/1 connections held as their socket alone.
//!
//! An idle connection's socket leaves tokio's IO driver (whose state per socket is 256
//! bytes, 128-aligned) and its task ends (its cell is another 256): the server keeps its
//! hibernated sockets in a table, watched by one thread of its own with an epoll set. When
//! one becomes readable (the next request, or its end), it goes back to the worker it came
//! from, where a new task serves it; at its idle deadline, or when the drain starts, it is
//! closed. A hibernated connection so costs its row here (~200 bytes).
//!
//! The thread runs only while some connection hibernates.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Interest, Token};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::conn::{Core, Watched};
use crate::connection::ConnState;

/// How often at most the dorm thread looks for connections whose deadline passed: they are
/// closed at most this late.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The token of the dorm thread's waker (slots are `u32`).
const WAKE: Token = Token(usize::MAX);

/// A server's hibernated connections.
#[derive(Default)]
pub(crate) struct Dorms {
    beds: Arc<Mutex<Beds>>,
}

impl fmt::Debug for Dorms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dorms").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Beds {
    rows: Vec<Option<Bed>>,
    free: Vec<u32>,
    used: usize,
    /// Mirrors `used` for `torii_connections_hibernated` (`Drain::hibernated_connections`),
    /// stored under the lock on every way in and out (hibernate, wake-up, idle timeout,
    /// drain).
    gauge: Arc<std::sync::atomic::AtomicUsize>,
    /// The earliest deadline the thread knows of.
    next: Option<Instant>,
    draining: bool,
    /// The dorm thread, while it runs.
    thread: Option<Thread>,
}

impl Beds {
    /// Publishes `used` to the gauge.
    fn count(&self) {
        self.gauge
            .store(self.used, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How to reach the dorm thread.
struct Thread {
    registry: mio::Registry,
    waker: mio::Waker,
}

/// A hibernated connection.
struct Bed {
    socket: mio::net::TcpStream,
    state: State,
    core: Core,
    deadline: Instant,
    /// The worker it came from, which serves it again.
    worker: Handle,
}

/// A hibernated connection's state: inline when nothing else holds it, so that nothing of
/// the connection is left on the heap but its row here (and it gets a new `Arc` when it
/// wakes up).
enum State {
    Owned(ConnState),
    Shared(Arc<ConnState>),
}

impl Dorms {
    /// Hibernates `io` (with its `core`) until it is readable, `deadline` passes or the
    /// drain starts. When it can't (the drain started, or no thread or epoll set), the
    /// connection is closed, as hyper closes an idle connection when the drain starts.
    pub(super) fn hibernate(&self, io: Watched<TcpStream>, core: Core, deadline: Instant) {
        let mut guard = self.beds.lock().expect("poisoned");
        let beds = &mut *guard;
        if beds.draining {
            return;
        }
        if beds.thread.is_none() {
            match start(self.beds.clone()) {
                Ok(thread) => beds.thread = Some(thread),
                Err(e) => {
                    tracing::warn!("no thread for idle connections: {e}");
                    return;
                }
            }
        }
        let Watched { io, state, .. } = io;
        let mut socket = match io.into_std() {
            Ok(socket) => mio::net::TcpStream::from_std(socket),
            Err(e) => {
                tracing::debug!(peer = %core.peer, "connection ended: {e}");
                return;
            }
        };
        let slot = match beds.free.pop() {
            Some(slot) => slot,
            None => {
                beds.rows.push(None);
                (beds.rows.len() - 1) as u32
            }
        };
        let thread = beds.thread.as_ref().expect("started above");
        if let Err(e) =
            thread
                .registry
                .register(&mut socket, Token(slot as usize), Interest::READABLE)
        {
            beds.free.push(slot);
            drop(guard);
            tracing::debug!(peer = %core.peer, "epoll: {e}");
            return;
        }
        if beds.next.is_none_or(|next| deadline < next) {
            beds.next = Some(deadline);
            let _ = thread.waker.wake();
        }
        beds.rows[slot as usize] = Some(Bed {
            socket,
            state: Arc::try_unwrap(state).map_or_else(State::Shared, State::Owned),
            core,
            deadline,
            worker: Handle::current(),
        });
        beds.used += 1;
        beds.count();
    }

    /// Dorms that keep their count of hibernated connections in `gauge`.
    pub(crate) fn with_gauge(gauge: Arc<std::sync::atomic::AtomicUsize>) -> Dorms {
        let dorms = Dorms::default();
        dorms.beds.lock().expect("poisoned").gauge = gauge;
        dorms
    }

    /// The drain started: every hibernated connection is closed, and none is taken in.
    pub(super) fn drain(&self) {
        let closed: Vec<Bed> = {
            let mut beds = self.beds.lock().expect("poisoned");
            beds.draining = true;
            beds.free.clear();
            beds.used = 0;
            beds.count();
            if let Some(thread) = &beds.thread {
                let _ = thread.waker.wake();
            }
            beds.rows.drain(..).flatten().collect()
        };
        drop(closed);
    }
}

/// Starts the dorm thread.
fn start(beds: Arc<Mutex<Beds>>) -> io::Result<Thread> {
    let poll = mio::Poll::new()?;
    let thread = Thread {
        registry: poll.registry().try_clone()?,
        waker: mio::Waker::new(poll.registry(), WAKE)?,
    };
    std::thread::Builder::new()
        .name("torii-idle".into())
        .spawn(move || run(&beds, poll))?;
    Ok(thread)
}

/// The dorm thread: hands connections that became readable back to their worker, closes
/// those whose deadline passed; ends when none is left.
fn run(beds: &Mutex<Beds>, mut poll: mio::Poll) {
    let mut events = mio::Events::with_capacity(256);
    let mut swept: Option<Instant> = None;
    loop {
        let (timeout, closed) = {
            let mut b = beds.lock().expect("poisoned");
            if b.used == 0 {
                b.thread = None;
                b.next = None;
                return;
            }
            let now = Instant::now();
            // The next sweep: at the earliest deadline, but not within SWEEP_EVERY of the
            // last (each one looks at every row).
            let mut at = b.next.unwrap_or(now);
            if let Some(swept) = swept {
                at = at.max(swept + SWEEP_EVERY);
            }
            let mut closed = Vec::new();
            if at <= now {
                swept = Some(now);
                let mut next: Option<Instant> = None;
                let Beds { rows, free, .. } = &mut *b;
                for (i, row) in rows.iter_mut().enumerate() {
                    let Some(bed) = row else { continue };
                    if bed.deadline <= now {
                        closed.extend(row.take());
                        free.push(i as u32);
                    } else {
                        next = Some(next.map_or(bed.deadline, |n| n.min(bed.deadline)));
                    }
                }
                b.used -= closed.len();
                b.count();
                b.next = next;
                at = next.unwrap_or(now).max(now + SWEEP_EVERY);
            }
            (at.saturating_duration_since(now), closed)
        };
        for bed in closed {
            tracing::debug!(peer = %bed.core.peer, "connection timed out");
        }
        // Look again at least every minute, in case a wake-up was lost.
        let timeout = timeout.min(Duration::from_secs(60));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("epoll: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for event in &events {
            if event.token() == WAKE {
                continue;
            }
            let bed = {
                let mut b = beds.lock().expect("poisoned");
                let Some(bed) = b.rows.get_mut(event.token().0).and_then(Option::take) else {
                    continue;
                };
                b.free.push(event.token().0 as u32);
                b.used -= 1;
                b.count();
                bed
            };
            wake_up(poll.registry(), bed);
        }
    }
}

/// A hibernated connection's socket is readable: its worker serves it again.
fn wake_up(registry: &mio::Registry, bed: Bed) {
    let Bed {
        mut socket,
        state,
        core,
        worker,
        ..
    } = bed;
    let _ = registry.deregister(&mut socket);
    let socket: std::net::TcpStream = socket.into();
    let state = match state {
        State::Owned(state) => Arc::new(state),
        State::Shared(state) => state,
    };
    worker.spawn(async move {
        match TcpStream::from_std(socket) {
            Ok(io) => {
                let metrics = core.connections.shared.metrics.clone();
                super::conn::resumed(Watched { io, state, metrics }, core).await;
            }
            Err(e) => tracing::debug!(peer = %core.peer, "connection ended: {e}"),
        }
    });
}
