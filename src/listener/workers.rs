//! Sockets and the drain signal shared by all workers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Notify};

use super::dorm::Dorms;

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
    /// Hibernated connections: closed when the drain starts.
    pub(crate) dorms: Dorms,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            dorms: Dorms::default(),
        }
    }
}

impl Drain {
    /// Starts draining: listeners stop accepting, idle connections close, busy ones close
    /// after their current request.
    pub fn start(&self) {
        self.tx.send_replace(true);
        self.dorms.drain();
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

    /// Open connections that hibernate now (idle keep-alive ones held as their socket
    /// alone; counted in `open_connections` too).
    pub fn hibernated_connections(&self) -> usize {
        self.dorms.hibernated()
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
