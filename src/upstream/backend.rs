//! One server of a group at run time: in-flight count, admin drain, active and passive
//! health, and its recent error rate.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::balance::hash64;
use super::breaker::{Admit, Breaker, State};
use super::pool::Pool;
use crate::config::{BreakerSettings, ServerSpec, Upstream};

/// A server's place in rotation, as `GET /upstreams` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Up,
    /// Failed its active health checks.
    Down,
    /// Ejected by the circuit breaker (passive health), or on its half-open probe.
    Ejected,
    /// Taken out of rotation by the admin API; in-flight requests finish.
    Draining,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Down => "down",
            ServerState::Ejected => "ejected",
            ServerState::Draining => "draining",
        }
    }
}

#[derive(Debug)]
pub struct Backend {
    pub spec: ServerSpec,
    /// Hash of the address: the server's identity for rendezvous hashing, independent of
    /// its position in the list.
    pub id: u64,
    /// Requests sent and not yet answered (response head).
    pub in_flight: AtomicUsize,
    pub draining: AtomicBool,
    /// Active health: false after `fall` failed checks, true again after `rise` passes.
    pub active_up: AtomicBool,
    /// (consecutive passes, consecutive failures) of the active check.
    checks: Mutex<(u32, u32)>,
    /// A std Mutex: held for a few instructions, never across an await.
    breaker: Mutex<Breaker>,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub ejections: AtomicU64,
    /// The last 64 outcomes as bits (1 = failure), and how many of them are real.
    recent: Mutex<(u64, u32)>,
    /// Keep-alive connections to this server.
    pub pool: Arc<Pool>,
}

impl Backend {
    pub fn new(spec: ServerSpec, config: &Upstream) -> Backend {
        Backend {
            pool: Pool::new(spec.addr.clone(), config),
            id: hash64(spec.addr.authority.as_str()),
            spec,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            active_up: AtomicBool::new(true),
            checks: Mutex::new((0, 0)),
            breaker: Mutex::new(Breaker::default()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            recent: Mutex::new((0, 0)),
        }
    }

    /// Whether the server is in rotation (ignoring `max_conns`).
    pub fn admit(&self, now: Instant) -> Admit {
        if self.draining.load(Relaxed) || !self.active_up.load(Relaxed) {
            return Admit::No;
        }
        self.breaker.lock().expect("poisoned").admit(now)
    }

    /// Whether the server may take requests in panic mode: not draining, and not failing
    /// its active health checks (its breaker aside).
    pub fn eligible(&self) -> bool {
        !self.draining.load(Relaxed) && self.active_up.load(Relaxed)
    }

    pub fn has_room(&self) -> bool {
        self.spec.max_conns == 0 || self.in_flight.load(Relaxed) < self.spec.max_conns
    }

    /// Takes a connection slot; false when `max_conns` was reached meanwhile or another
    /// request took the half-open probe.
    pub fn claim(&self, admit: Admit) -> bool {
        let prev = self.in_flight.fetch_add(1, Relaxed);
        if self.spec.max_conns > 0 && prev >= self.spec.max_conns {
            self.in_flight.fetch_sub(1, Relaxed);
            return false;
        }
        if admit == Admit::Probe && !self.breaker.lock().expect("poisoned").start_probe() {
            self.in_flight.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Whether the breaker has the server out of rotation (ejected or on probation).
    pub fn breaker_out(&self) -> bool {
        self.breaker.lock().expect("poisoned").is_out()
    }

    /// Records a request's outcome; returns the ejection period if it ejected the server
    /// (never when `may_eject` is false: the group's ejection cap is reached).
    pub fn record(
        &self,
        ok: bool,
        settings: &BreakerSettings,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        self.requests.fetch_add(1, Relaxed);
        if !ok {
            self.failures.fetch_add(1, Relaxed);
        }
        {
            let mut recent = self.recent.lock().expect("poisoned");
            recent.0 = (recent.0 << 1) | u64::from(!ok);
            recent.1 = (recent.1 + 1).min(64);
        }
        // Asked only on a failure, before this breaker's lock is taken (it looks at the
        // other servers' breakers).
        let may_eject = !ok && may_eject();
        let ejected =
            self.breaker
                .lock()
                .expect("poisoned")
                .record(ok, Instant::now(), settings, may_eject);
        if let Some(period) = ejected {
            self.ejections.fetch_add(1, Relaxed);
            tracing::warn!(server = %self.spec.addr, "ejected for {period:?} after failures");
        }
        ejected
    }

    /// Records an active check; returns `Some(up)` when the server changed state.
    pub fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let mut c = self.checks.lock().expect("poisoned");
        if ok {
            c.0 += 1;
            c.1 = 0;
        } else {
            c.1 += 1;
            c.0 = 0;
        }
        let up = self.active_up.load(Relaxed);
        if !up && c.0 >= rise {
            self.active_up.store(true, Relaxed);
            Some(true)
        } else if up && c.1 >= fall {
            self.active_up.store(false, Relaxed);
            Some(false)
        } else {
            None
        }
    }

    pub fn state(&self, now: Instant) -> ServerState {
        if self.draining.load(Relaxed) {
            ServerState::Draining
        } else if !self.active_up.load(Relaxed) {
            ServerState::Down
        } else {
            match self.breaker.lock().expect("poisoned").state {
                State::Closed => ServerState::Up,
                State::Open { until } if until <= now => ServerState::Up,
                _ => ServerState::Ejected,
            }
        }
    }

    /// Time left in the current ejection, if ejected.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        self.breaker.lock().expect("poisoned").ejected_for(now)
    }

    /// Failures among the last (up to) 64 answers, as a fraction; 0 with no answers yet.
    pub fn recent_error_rate(&self) -> f64 {
        let (bits, n) = *self.recent.lock().expect("poisoned");
        if n == 0 {
            return 0.0;
        }
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        f64::from((bits & mask).count_ones()) / f64::from(n)
    }
}
