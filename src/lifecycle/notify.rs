//! systemd's notify protocol (`Type=notify`, sd_notify(3)): one datagram per state change
//! to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), and the watchdog
//! (`WATCHDOG=1` every `WATCHDOG_USEC / 2`). Without `NOTIFY_SOCKET` every call does
//! nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go; `None` outside systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = v.as_bytes();
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(v))),
                _ => {
                    tracing::warn!("NOTIFY_SOCKET={v:?} is neither a path nor @name; ignored");
                    None
                }
            }
        });
        Notifier { target }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Every listener accepts. `main_pid`: this process, when it is the new process of an
    /// upgrade (systemd still knows the old one as the main PID).
    pub fn ready(&self, main_pid: Option<u32>) {
        match main_pid {
            Some(pid) => self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS=serving\n")),
            None => self.send("READY=1\nSTATUS=serving\n"),
        }
    }

    /// A SIGHUP reload begins; `ready` ends it (systemd ≥ 253 wants `MONOTONIC_USEC`).
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"));
    }

    /// The drain begins (SIGTERM).
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }

    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}\n", text.replace('\n', " ")));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound().and_then(|socket| match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)
            }
        });
        if let Err(e) = sent {
            tracing::warn!("sd_notify {:?}: {e}", message.trim_end());
        }
    }
}

/// The watchdog interval (half of `WATCHDOG_USEC`) when systemd asks this process for
/// pings: `WATCHDOG_USEC` set, and `WATCHDOG_PID` unset or this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}
