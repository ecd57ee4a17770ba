//! Listener: accept loops, TLS termination, per-connection timeouts, graceful drain, and
//! worker threads.

mod conn;
mod dorm;
pub mod tls;
mod workers;

pub use conn::serve_connection;
pub use workers::{bind_reuseport, Drain};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::server::Shared;

/// Accepts connections on `listener` (number `index` of `server.listeners`) until the
/// drain starts, each served on its own task.
/// At most `limits.max_connections` connections are open over all listeners: beyond that,
/// torii stops accepting and new connections wait in the kernel's backlog.
pub async fn serve(listener: TcpListener, index: usize, shared: Arc<Shared>) {
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
                let shared = shared.clone();
                tokio::spawn(serve_connection(stream, peer, index, shared, permit));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
