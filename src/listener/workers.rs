//! Sockets and the drain signal shared by all workers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Binds a listening socket with SO_REUSEADDR and SO_REUSEPORT, so that each worker can
/// have its own accept queue on the same port (the kernel spreads connections).
///
/// # Errors
/// When the address is in use without SO_REUSEPORT, or not available on this host.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Graceful-shutdown state: a flag every accept loop and connection watches, and a count of
/// open connections so the process knows when draining is done.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
    /// Hibernated connections: woken when the drain starts.
    pub(crate) hibernated: Arc<Hibernated>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            hibernated: Arc::default(),
        }
    }
}

impl Drain {
    /// Starts draining: listeners stop accepting, idle connections close, busy ones close
    /// after their current request.
    pub fn start(&self) {
        self.tx.send_replace(true);
        self.hibernated.drain();
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn connection_closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The hibernated connections (idle keep-alive HTTP/1 connections held as their socket
/// alone, see `conn.rs`): each one's idle deadline and waker, so that one sweeper task wakes
/// those whose deadline passed, and the drain wakes them all, instead of every hibernated
/// connection holding a timer and a drain subscription of its own (~250 bytes each).
#[derive(Debug, Default)]
pub(crate) struct Hibernated {
    inner: Mutex<Slots>,
    /// Tells the sweeper that a deadline earlier than the one it sleeps to was added.
    sooner: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    /// A deadline and, until the sweeper wakes it at that deadline, the waker.
    slots: Vec<Option<(Instant, Option<Waker>)>>,
    free: Vec<u32>,
    used: usize,
    /// A sweeper task runs (it stops when no slot is in use).
    sweeping: bool,
    /// When the sweeper wakes next, if it sleeps to a deadline.
    next: Option<Instant>,
    draining: bool,
}

impl Hibernated {
    /// Registers a hibernated connection that must be woken at `deadline` or when the drain
    /// starts: its slot, or `None` once the drain has started (the caller closes the
    /// connection instead).
    pub(crate) fn register(self: &Arc<Self>, deadline: Instant, waker: &Waker) -> Option<u32> {
        let mut s = self.inner.lock().expect("poisoned");
        if s.draining {
            return None;
        }
        let entry = Some((deadline, Some(waker.clone())));
        let i = match s.free.pop() {
            Some(i) => {
                s.slots[i as usize] = entry;
                i
            }
            None => {
                s.slots.push(entry);
                (s.slots.len() - 1) as u32
            }
        };
        s.used += 1;
        if !s.sweeping {
            s.sweeping = true;
            s.next = None;
            tokio::spawn(sweep(self.clone()));
        } else if s.next.is_none_or(|next| deadline < next) {
            self.sooner.notify_one();
        }
        Some(i)
    }

    /// The connection in `slot` waits on: false if its deadline passed or the drain started
    /// (it is to close), else its waker is now `waker`.
    pub(crate) fn refresh(&self, slot: u32, waker: &Waker) -> bool {
        let mut s = self.inner.lock().expect("poisoned");
        match &mut s.slots[slot as usize] {
            Some((_, Some(w))) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets the connection in `slot` (it resumed or closed).
    pub(crate) fn unregister(&self, slot: u32) {
        let mut s = self.inner.lock().expect("poisoned");
        s.slots[slot as usize] = None;
        s.free.push(slot);
        s.used -= 1;
    }

    fn drain(&self) {
        let wakers: Vec<Waker> = {
            let mut s = self.inner.lock().expect("poisoned");
            s.draining = true;
            s.slots
                .iter_mut()
                .filter_map(|e| e.as_mut().and_then(|(_, w)| w.take()))
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        self.sooner.notify_one();
    }
}

/// Wakes each hibernated connection at its deadline; ends when none is left.
async fn sweep(set: Arc<Hibernated>) {
    loop {
        let (due, next) = {
            let mut s = set.inner.lock().expect("poisoned");
            if s.used == 0 || s.draining {
                s.sweeping = false;
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            let mut next: Option<Instant> = None;
            for (deadline, waker) in s.slots.iter_mut().flatten() {
                if *deadline <= now {
                    due.extend(waker.take());
                } else if waker.is_some() {
                    next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
                }
            }
            s.next = next;
            (due, next)
        };
        due.into_iter().for_each(Waker::wake);
        match next {
            Some(next) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = set.sooner.notified() => {}
                }
            }
            None => set.sooner.notified().await,
        }
    }
}
