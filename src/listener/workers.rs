//! The listening sockets of the workers.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

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
