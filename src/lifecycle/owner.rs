//! One owner per address: binding a listen address that another process holds is an error
//! ("address in use", with that process's PID when /proc shows it), even though torii's
//! own workers share each address with SO_REUSEPORT.
//!
//! The first socket of an address is bound *without* SO_REUSEPORT, so the kernel refuses
//! it when any other socket listens there (a SO_REUSEPORT one of another torii included);
//! SO_REUSEPORT is set on it after the bind and before `listen`, so torii's other workers,
//! and the new process of an upgrade, can join it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A process that holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub name: Option<String>,
}

/// Why an address cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another socket listens on the address.
    #[error("{addr}: address in use{}", owner_text(.owner))]
    InUse {
        addr: SocketAddr,
        owner: Option<Owner>,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn owner_text(owner: &Option<Owner>) -> String {
    match owner {
        Some(Owner {
            pid,
            name: Some(name),
        }) => format!(" by PID {pid} ({name})"),
        Some(Owner { pid, name: None }) => format!(" by PID {pid}"),
        None => " (by a process this user cannot see)".to_string(),
    }
}

/// Binds `addr` as its only owner (see the module doc), then listens with `backlog`.
/// `share` sets SO_REUSEPORT after the bind, so that torii's own workers can add sockets
/// with [`crate::listener::bind_reuseport`]. The socket is non-blocking.
///
/// # Errors
/// [`BindError::InUse`] when another socket listens on the address (or overlaps it through
/// a wildcard address), naming the owning process when it can be found.
pub fn bind_owned(
    addr: SocketAddr,
    backlog: i32,
    share: bool,
) -> Result<std::net::TcpListener, BindError> {
    let io = |source| BindError::Io { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(io)?;
    socket.set_reuse_address(true).map_err(io)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(io)?;
    }
    socket.set_nonblocking(true).map_err(io)?;
    if let Err(e) = socket.bind(&addr.into()) {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            return Err(BindError::InUse {
                addr,
                owner: find_owner(addr),
            });
        }
        return Err(io(e));
    }
    if share {
        socket.set_reuse_port(true).map_err(io)?;
    }
    socket.listen(backlog).map_err(io)?;
    Ok(socket.into())
}

/// The process (other than this one) holding a listening TCP socket that overlaps `addr`:
/// its inode from /proc/net/tcp{,6}, then the `socket:[inode]` link among /proc/*/fd.
/// `None` when none is found (another user's process is not readable without privileges).
pub fn find_owner(addr: SocketAddr) -> Option<Owner> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, addr));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .ok()
                    .map(|n| n.trim().to_string());
                return Some(Owner { pid, name });
            }
        }
    }
    None
}

/// The inodes of the sockets in a /proc/net/tcp or tcp6 table that listen on an address
/// overlapping `addr`: the same port, and the same IP or a wildcard on either side.
pub fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != LISTEN {
            continue;
        }
        let Some(local) = parse_proc_addr(fields[1]) else {
            continue;
        };
        if local.port() == addr.port() && overlaps(local.ip(), addr.ip()) {
            if let Ok(inode) = fields[9].parse::<u64>() {
                if inode != 0 {
                    found.push(inode);
                }
            }
        }
    }
    found
}

fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canon(a), canon(b));
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): the address as the kernel
/// prints it, each 32-bit word in host byte order, the port as a number.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    fn table(rows: &[(&str, &str, u64)]) -> String {
        let mut t = String::from("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n");
        for (i, (local, st, inode)) in rows.iter().enumerate() {
            t.push_str(&format!(
                "   {i}: {local} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            ));
        }
        t
    }

    #[test]
    fn finds_listening_sockets_on_the_port_including_wildcards() {
        let lo = le([127, 0, 0, 1]);
        let any = le([0, 0, 0, 0]);
        let t = table(&[
            (&format!("{lo}:1F90"), "0A", 11),
            (&format!("{any}:1F90"), "0A", 12),
            (&format!("{lo}:1F91"), "0A", 13),
            // An established connection from the port is no listener.
            (&format!("{lo}:1F90"), "01", 14),
            (&format!("{}:1F90", le([10, 0, 0, 1])), "0A", 15),
        ]);
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(listening_inodes(&t, addr), vec![11, 12]);
        let any_addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(listening_inodes(&t, any_addr), vec![11, 12, 15]);
    }

    #[test]
    fn parses_ipv6_rows() {
        let mut hex = String::new();
        for word in Ipv6Addr::LOCALHOST.octets().chunks(4) {
            hex.push_str(&format!(
                "{:08X}",
                u32::from_ne_bytes(word.try_into().unwrap())
            ));
        }
        let t = table(&[(&format!("{hex}:0050"), "0A", 7)]);
        assert_eq!(listening_inodes(&t, "[::1]:80".parse().unwrap()), vec![7]);
        assert!(listening_inodes(&t, "127.0.0.1:80".parse().unwrap()).is_empty());
    }

    #[test]
    fn garbage_rows_are_skipped() {
        let t = "header\nnot a row\n 0: zz:zz 0:0 0A a b c d e f\n 1: 0100007F 0 0A 1 2 3 4 5 x\n";
        assert!(listening_inodes(t, "127.0.0.1:80".parse().unwrap()).is_empty());
    }

    #[test]
    fn a_second_owner_is_refused_and_named() {
        let first = bind_owned("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let addr = first.local_addr().unwrap();
        // torii's own workers still join with SO_REUSEPORT.
        let _worker = crate::listener::bind_reuseport(addr, 16).unwrap();
        match bind_owned(addr, 16, true) {
            Err(BindError::InUse { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(BindError::InUse { addr, owner: None }
            .to_string()
            .contains("address in use"));
    }
}
