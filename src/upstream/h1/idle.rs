//! The idle HTTP/1 connections of one server: a stack (the most recently idle is reused
//! first, so a surplus left over from a burst ages out). Its pool owns it; a response body
//! puts its connection back at its clean end.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Conn;

/// Idle HTTP/1 connections, oldest first.
pub struct IdleStack {
    max_idle: usize,
    idle_timeout: Duration,
    /// A std Mutex: held for a push or a pop, never across an await.
    stack: Mutex<VecDeque<Idle>>,
}

/// An idle HTTP/1 connection on the stack.
struct Idle {
    conn: Conn,
    since: Instant,
}

impl IdleStack {
    /// A stack keeping at most `max_idle` connections (0: none), each at most
    /// `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> IdleStack {
        IdleStack {
            max_idle,
            idle_timeout,
            stack: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether connections are kept at all (`pool_max_idle` > 0).
    pub fn keeps(&self) -> bool {
        self.max_idle > 0
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The most recently idle connection that is still open and in time, if any.
    pub fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.stack.lock().expect("poisoned");
        while let Some(mut entry) = idle.pop_back() {
            if now.saturating_duration_since(entry.since) >= self.idle_timeout {
                // Older ones are older still; closed outside the lock.
                let expired = std::mem::take(&mut *idle);
                drop(idle);
                drop(expired);
                return None;
            }
            if entry.conn.alive() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Back on the stack after its exchange, from the response body at its clean end.
    pub fn put_back(&self, conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        let entry = Idle {
            conn,
            since: Instant::now(),
        };
        let evicted = {
            let mut idle = self.stack.lock().expect("poisoned");
            let evicted = if idle.len() >= self.max_idle {
                idle.pop_front()
            } else {
                None
            };
            idle.push_back(entry);
            evicted
        };
        // Closed outside the lock.
        drop(evicted);
    }

    /// Drops the connections idle past `idle_timeout` and those the server closed.
    pub fn sweep(&self) {
        let now = Instant::now();
        let stale: Vec<Idle> = {
            let mut idle = self.stack.lock().expect("poisoned");
            let expired = idle
                .iter()
                .take_while(|e| now.saturating_duration_since(e.since) >= self.idle_timeout)
                .count();
            let mut stale: Vec<Idle> = idle.drain(..expired).collect();
            let mut i = 0;
            while i < idle.len() {
                if !idle[i].conn.alive() {
                    stale.extend(idle.remove(i));
                } else {
                    i += 1;
                }
            }
            stale
        };
        drop(stale);
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.stack.lock().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
