//! Listener: accept loops, TLS termination, per-connection timeouts, graceful drain, and
//! worker threads.

mod coalesce;
mod conn;
mod dorm;
pub mod exec;
pub mod proxy_protocol;
pub mod tls;
mod workers;

pub use conn::serve_connection;
pub use workers::bind_reuseport;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::runtime::Shared;
use dorm::Dorms;

/// The connections of one server: the process-wide state they share, and the table of
/// those hibernated (`dorm.rs`). Kept apart from `Shared` so that the runtime types need not
/// name the listener's connection types (see docs/ARCHITECTURE.md).
pub struct Connections {
    pub shared: Arc<Shared>,
    /// Hibernated connections: closed when the drain starts.
    pub(crate) dorms: Dorms,
}

impl Connections {
    pub fn new(shared: Arc<Shared>) -> Arc<Connections> {
        Arc::new(Connections {
            dorms: Dorms::with_gauge(shared.drain.hibernated_gauge()),
            shared,
        })
    }

    /// Starts draining: listeners stop accepting, idle and hibernated connections close,
    /// busy ones close after their current request.
    pub fn start_drain(&self) {
        self.shared.drain.start();
        self.dorms.drain();
    }
}

/// Accepts connections on `listener` (number `index` of `server.listeners`) until the
/// drain starts, each served on its own task.
/// At most `limits.max_connections` connections are open over all listeners: beyond that,
/// torii stops accepting and new connections wait in the kernel's backlog.
pub async fn serve(listener: TcpListener, index: usize, connections: Arc<Connections>) {
    let shared = &connections.shared;
    let mut draining = shared.drain.subscribe();
    loop {
        if *draining.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = shared.conn_limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = draining.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.metrics.connections_accepted.inc();
                let _ = stream.set_nodelay(true);
                let connections = connections.clone();
                tokio::spawn(serve_connection(stream, peer, index, connections, permit));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
