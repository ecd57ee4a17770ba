//! The process's life around serving: binding with one owner per address
//! (`owner.rs`), the SIGUSR2 binary upgrade's socket handover (`handover.rs`), the pid file
//! (`pidfile.rs`) and systemd notifications (`notify.rs`). `process.rs` drives them.

pub mod handover;
pub mod notify;
pub mod owner;
pub mod pidfile;
