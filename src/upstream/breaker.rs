//! Passive health: a circuit breaker per server, fed by the outcome of real requests.
//!
//! Closed (in rotation) → after `failures` consecutive failures, Open (ejected) for a
//! back-off that doubles with each ejection in a row, up to `max_ejection` → HalfOpen: one
//! probe request is let through; success closes the breaker, failure opens it again.
//! An ejection the group can't afford (`max_ejection_percent`) is not made: the caller
//! says so with `may_eject`, and the server stays closed.
//! Pure: every method takes `now`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// Back-off over; `probing` while the one probe request is in flight.
    HalfOpen {
        probing: bool,
    },
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the half-open probe (claim it with `start_probe`).
    Probe,
    No,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    pub state: State,
    /// Consecutive failures while closed.
    consecutive: u32,
    /// Ejections in a row without a success in between; sets the back-off.
    streak: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            consecutive: 0,
            streak: 0,
        }
    }
}

impl Breaker {
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: false };
                Admit::Probe
            }
            State::Open { .. } => Admit::No,
            State::HalfOpen { probing: false } => Admit::Probe,
            State::HalfOpen { probing: true } => Admit::No,
        }
    }

    /// Claims the half-open probe; false when another request already has it.
    pub fn start_probe(&mut self) -> bool {
        match self.state {
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::Closed => true,
            _ => false,
        }
    }

    /// Whether the server is out of rotation by this breaker (ejected, or on probation).
    pub fn is_out(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// Records one outcome. Returns the ejection period when this outcome ejects the server;
    /// with `may_eject` false (the group's ejection cap is reached) it never ejects, and a
    /// failed probe puts the server back in rotation instead.
    pub fn record(
        &mut self,
        ok: bool,
        now: Instant,
        s: &BreakerSettings,
        may_eject: bool,
    ) -> Option<Duration> {
        match (self.state, ok) {
            (State::Closed, true) => {
                self.consecutive = 0;
                None
            }
            (State::Closed, false) => {
                self.consecutive += 1;
                (may_eject && s.failures > 0 && self.consecutive >= s.failures)
                    .then(|| self.eject(now, s))
            }
            (State::HalfOpen { .. }, true) => {
                *self = Breaker::default();
                None
            }
            (State::HalfOpen { .. }, false) if !may_eject => {
                self.state = State::Closed;
                self.consecutive = 0;
                None
            }
            (State::HalfOpen { .. }, false) => Some(self.eject(now, s)),
            // Answers of requests sent before the ejection change nothing.
            (State::Open { .. }, _) => None,
        }
    }

    fn eject(&mut self, now: Instant, s: &BreakerSettings) -> Duration {
        let period = s
            .ejection
            .saturating_mul(1u32 << self.streak.min(20))
            .min(s.max_ejection);
        self.streak += 1;
        self.consecutive = 0;
        self.state = State::Open {
            until: now + period,
        };
        period
    }

    /// Time left in the current ejection, if ejected.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until } if until > now => Some(until - now),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 3,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(5),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_with_growing_back_off() {
        let s = settings();
        let mut b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.record(false, t, &s, true), None);
        assert_eq!(
            b.record(true, t, &s, true),
            None,
            "a success resets the count"
        );
        assert_eq!(b.record(false, t, &s, true), None);
        assert_eq!(b.record(false, t, &s, true), None);
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(1)));
        assert_eq!(b.admit(t), Admit::No);
        // Back-off over: one probe only.
        let t = t + Duration::from_secs(1);
        assert_eq!(b.admit(t), Admit::Probe);
        assert!(b.start_probe());
        assert_eq!(b.admit(t), Admit::No);
        assert!(!b.start_probe());
        // The probe fails: ejected for twice as long, then 4 s, then capped at 5 s.
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(2)));
        let t = t + Duration::from_secs(2);
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(4)));
        let t = t + Duration::from_secs(4);
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(5)));
        // A passing probe closes it and forgets the streak.
        let t = t + Duration::from_secs(5);
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.record(true, t, &s, true), None);
        assert_eq!(b.admit(t), Admit::Yes);
        for _ in 0..2 {
            b.record(false, t, &s, true);
        }
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(1)));
    }

    #[test]
    fn zero_failures_never_ejects() {
        let s = BreakerSettings {
            failures: 0,
            ..settings()
        };
        let mut b = Breaker::default();
        for _ in 0..100 {
            assert_eq!(b.record(false, Instant::now(), &s, true), None);
        }
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
    }

    #[test]
    fn an_ejection_the_group_cannot_afford_is_not_made() {
        let s = settings();
        let mut b = Breaker::default();
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.record(false, t, &s, false), None);
        }
        assert_eq!(b.admit(t), Admit::Yes);
        // Allowed again: the failures in a row so far count.
        assert_eq!(b.record(false, t, &s, true), Some(Duration::from_secs(1)));
        // A failed probe when the cap is reached puts it back in rotation.
        let t = t + Duration::from_secs(1);
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.record(false, t, &s, false), None);
        assert_eq!(b.admit(t), Admit::Yes);
    }
}
