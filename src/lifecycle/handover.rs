//! The zero-downtime binary upgrade (SIGUSR2): the old process starts the binary again
//! with the same arguments and hands it every listening socket; the new process adopts
//! them, and says when it is ready.
//!
//! The channel is a private `SOCK_SEQPACKET` socket pair: one end stays in the old process,
//! the other becomes the new process's standard input (nothing on the filesystem that
//! another user could connect to; no file descriptor number to trust). `TORII_UPGRADE_FROM`
//! (the old PID) tells the new process to read it. Messages, old to new: any number of
//! `torii-handover 1\n` followed by one role line (`proxy` or `admin`) per socket carried
//! as SCM_RIGHTS, then `end\n`; new to old: `ready PID\n`, once every listener accepts.
//! The new process then points its standard input at /dev/null, closing the channel; an
//! end of file before `ready` means it failed.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::AsyncReadExt as _;

/// The environment variable naming the old process to the new one.
pub const ENV: &str = "TORII_UPGRADE_FROM";
/// Sockets per message (the kernel takes at most 253).
const PER_MESSAGE: usize = 64;
const HEADER: &str = "torii-handover 1";

/// What a handed-over socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A proxy listener (one of possibly several SO_REUSEPORT sockets of its address).
    Proxy,
    /// The admin listener.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "proxy" => Some(Role::Proxy),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upgrade channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade channel: {0}")]
    Protocol(String),
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::Io(e.into())
    }
}

// === old process ===

/// An upgrade under way: the new process and the old end of the channel.
pub struct Pending {
    child: tokio::process::Child,
    channel: tokio::net::UnixStream,
    /// The new process.
    pub pid: u32,
}

/// How an upgrade ended, for the old process.
#[derive(Debug)]
pub enum Outcome {
    /// The new process (this PID) serves every address: stop accepting and drain.
    Ready(u32),
    /// The new process is gone, or was stopped; the old one keeps serving.
    Failed(String),
}

/// Starts `exe` with `args` and hands it `sockets` (each a duplicate of a listening socket
/// this process serves on). Call from within a tokio runtime.
///
/// # Errors
/// When the channel cannot be made or written, or the program cannot be started.
pub fn spawn(exe: &Path, args: &[OsString], sockets: &[(Role, OwnedFd)]) -> Result<Pending, Error> {
    let (old_end, new_end) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // Queued before the start: the new process reads them when it gets there. Never block
    // the signal loop on a full buffer: that is an error.
    rustix::io::ioctl_fionbio(&old_end, true)?;
    for chunk in sockets.chunks(PER_MESSAGE) {
        let mut text = format!("{HEADER}\n");
        for (role, _) in chunk {
            text.push_str(role.as_str());
            text.push('\n');
        }
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| fd.as_fd()).collect();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Error::Protocol("too many sockets for one message".into()));
        }
        rustix::net::sendmsg(
            &old_end,
            &[IoSlice::new(text.as_bytes())],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
    }
    rustix::net::send(&old_end, b"end\n", SendFlags::NOSIGNAL)?;

    let me = std::process::id();
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        .env(ENV, me.to_string())
        .stdin(std::process::Stdio::from(new_end));
    // systemd's watchdog names the main PID; the new process is to ping it once it is.
    if std::env::var("WATCHDOG_PID").ok() == Some(me.to_string()) {
        command.env_remove("WATCHDOG_PID");
    }
    let child = command.spawn()?;
    // The new end must live only in the new process, or its death would go unseen.
    drop(command);
    let pid = child.id().unwrap_or(0);
    // Read through tokio's `UnixStream`: on a SEQPACKET socket, `read` returns one message
    // and 0 at the end, which is all this end needs (and registers the fd safely).
    let channel = std::os::unix::net::UnixStream::from(old_end);
    channel.set_nonblocking(true)?;
    Ok(Pending {
        child,
        channel: tokio::net::UnixStream::from_std(channel)?,
        pid,
    })
}

impl Pending {
    /// Waits until the new process says it is ready, exits, or `deadline` passes (then it
    /// is killed and reaped: exactly one process keeps each address). `timeout` is what
    /// the deadline came from, for the log.
    pub async fn wait(&mut self, deadline: tokio::time::Instant, timeout: Duration) -> Outcome {
        let pid = self.pid;
        match tokio::time::timeout_at(deadline, self.read_ready()).await {
            Ok(Ok(Some(ready))) if ready == pid => Outcome::Ready(pid),
            Ok(Ok(Some(other))) => {
                self.stop().await;
                Outcome::Failed(format!(
                    "new process {pid} announced PID {other}; stopped it"
                ))
            }
            Ok(Ok(None)) => {
                // The channel closed: the process has exited or is exiting.
                match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
                    Ok(Ok(status)) => Outcome::Failed(format!(
                        "new process {pid} {} before it was ready (its own log lines say why)",
                        describe(status)
                    )),
                    _ => {
                        self.stop().await;
                        Outcome::Failed(format!(
                            "new process {pid} closed the upgrade channel before it was ready; stopped it"
                        ))
                    }
                }
            }
            Ok(Err(e)) => {
                self.stop().await;
                Outcome::Failed(format!("new process {pid}: {e}; stopped it"))
            }
            Err(_) => {
                self.stop().await;
                Outcome::Failed(format!(
                    "new process {pid} was not ready within {timeout:?}; stopped it"
                ))
            }
        }
    }

    /// Asks the new process to stop (SIGTERM: it drains whatever it accepted), for a
    /// SIGTERM of the old process during an upgrade.
    pub fn cancel(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Kills the new process (not ready: it serves nothing yet) and reaps it.
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// `Some(pid)` from `ready PID`, `None` at end of file.
    async fn read_ready(&mut self) -> Result<Option<u32>, Error> {
        let mut buf = [0u8; 64];
        let n = match self.channel.read(&mut buf).await {
            // A process that exits without reading the handover resets the channel.
            Ok(0) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        text.trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("unexpected message {text:?}")))
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

// === new process ===

/// The sockets a new process received from the old one, and the channel to say "ready".
pub struct Inherited {
    /// The old process.
    pub from: u32,
    sockets: Vec<(Role, SocketAddr, TcpListener)>,
    channel: OwnedFd,
}

impl Inherited {
    /// When `TORII_UPGRADE_FROM` is set: reads the sockets the old process handed over on
    /// standard input, then points standard input at /dev/null. `None` when not set.
    ///
    /// # Errors
    /// When standard input is not the upgrade channel, or what arrives on it is not a
    /// handover of listening TCP sockets.
    pub fn receive() -> Result<Option<Inherited>, Error> {
        let Some(from) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        let from: u32 = from
            .to_str()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("{ENV}={from:?} is not a PID")))?;
        let channel = std::io::stdin().as_fd().try_clone_to_owned()?;
        let devnull = std::fs::File::open("/dev/null")?;
        rustix::stdio::dup2_stdin(&devnull)?;
        if rustix::net::sockopt::socket_type(&channel).ok()
            != Some(rustix::net::SocketType::SEQPACKET)
        {
            return Err(Error::Protocol(format!(
                "{ENV} is set but standard input is not the upgrade channel (started by hand?)"
            )));
        }
        // The messages were queued before this process started; never hang on a stray one.
        rustix::net::sockopt::set_socket_timeout(
            &channel,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(10)),
        )?;
        let mut sockets = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            let mut space =
                [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = rustix::net::recvmsg(
                &channel,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            let fds: Vec<OwnedFd> = control
                .drain()
                .filter_map(|m| match m {
                    RecvAncillaryMessage::ScmRights(fds) => Some(fds.collect::<Vec<_>>()),
                    _ => None,
                })
                .flatten()
                .collect();
            if msg
                .flags
                .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
            {
                return Err(Error::Protocol("a message was truncated".into()));
            }
            if msg.bytes == 0 {
                return Err(Error::Protocol(
                    "closed before the end of the handover".into(),
                ));
            }
            let text = std::str::from_utf8(&buf[..msg.bytes])
                .map_err(|_| Error::Protocol("a message is not text".into()))?;
            if text == "end\n" && fds.is_empty() {
                break;
            }
            let mut lines = text.lines();
            if lines.next() != Some(HEADER) {
                return Err(Error::Protocol(format!("unexpected message {text:?}")));
            }
            let roles: Vec<Role> = lines
                .map(|l| Role::parse(l).ok_or_else(|| Error::Protocol(format!("role {l:?}"))))
                .collect::<Result<_, _>>()?;
            if roles.len() != fds.len() {
                return Err(Error::Protocol(format!(
                    "{} roles for {} sockets",
                    roles.len(),
                    fds.len()
                )));
            }
            for (role, fd) in roles.into_iter().zip(fds) {
                let (addr, listener) = adopt(fd)?;
                sockets.push((role, addr, listener));
            }
        }
        Ok(Some(Inherited {
            from,
            sockets,
            channel,
        }))
    }

    /// Takes every inherited socket with this role and address.
    pub fn take(&mut self, role: Role, addr: SocketAddr) -> Vec<TcpListener> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.sockets.len() {
            if self.sockets[i].0 == role && self.sockets[i].1 == addr {
                taken.push(self.sockets.remove(i).2);
            } else {
                i += 1;
            }
        }
        taken
    }

    /// The addresses of the sockets nobody took (dropped with `self`: the new config no
    /// longer listens there).
    pub fn left(&self) -> Vec<SocketAddr> {
        let mut left: Vec<SocketAddr> = self.sockets.iter().map(|(_, a, _)| *a).collect();
        left.sort();
        left.dedup();
        left
    }

    /// Tells the old process this one is ready (it then stops accepting and drains), and
    /// closes the channel.
    ///
    /// # Errors
    /// When the old process is gone.
    pub fn ready(self) -> Result<(), Error> {
        let text = format!("ready {}\n", std::process::id());
        rustix::net::send(&self.channel, text.as_bytes(), SendFlags::NOSIGNAL)?;
        Ok(())
    }
}

/// A received descriptor as a listener, if it is a listening TCP socket.
fn adopt(fd: OwnedFd) -> Result<(SocketAddr, TcpListener), Error> {
    let stream = rustix::net::sockopt::socket_type(&fd)? == rustix::net::SocketType::STREAM;
    let listening = rustix::net::sockopt::socket_acceptconn(&fd)?;
    if !stream || !listening {
        return Err(Error::Protocol(
            "a handed-over socket is not listening".into(),
        ));
    }
    let listener = TcpListener::from(fd);
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Protocol(format!("a handed-over socket is not TCP: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok((addr, listener))
}
