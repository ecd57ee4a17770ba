//! Back pressure: a connection slot per request on a server with room (`max_conns`), or a
//! bounded wait for one in the group's queue (`queue_size`, `queue_timeout`).
//!
//! Panic mode (as Envoy's): when no server is in rotation, but some are out by their
//! breakers only (not draining, not failing active health checks), requests go to those
//! rather than get 503: passive health alone never takes a whole group down. With
//! `max_ejection_percent` below 100 this only happens when probes are in flight or
//! ejections raced; the 503 + `Retry-After` stays for groups whose every server is
//! draining or fails its active checks.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::balance::{Candidate, PickContext};
use super::breaker::Admit;
use super::Error;
use super::Group;
use super::Patience;

/// A request's hold on one server: counted in its in-flight requests until dropped, which
/// wakes one queued request.
pub struct Slot<'a> {
    group: &'a Group,
    pub index: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.group.backends[self.index]
            .in_flight
            .fetch_sub(1, Relaxed);
        self.group.freed.notify_one();
    }
}

/// Why no slot could be taken at once.
enum NoSlot {
    /// No server is in rotation.
    NoneUp,
    /// Servers are up but all at `max_conns`.
    Full,
}

/// Decrements the queue length when a waiting request leaves the queue, however it leaves.
struct Queued<'a>(&'a Group);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Relaxed);
    }
}

impl Group {
    /// The servers in rotation now, each with its admission, skipping `avoid` (servers
    /// already tried) unless nothing else is up, and with `need_room` those at `max_conns`.
    pub(super) fn candidates(
        &self,
        now: Instant,
        avoid: &[usize],
        need_room: bool,
    ) -> Vec<Candidate> {
        let collect = |avoid: &[usize]| -> Vec<Candidate> {
            self.backends
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    !avoid.contains(i) && b.admit(now) != Admit::No && (!need_room || b.has_room())
                })
                .map(|(i, b)| Candidate {
                    index: i,
                    weight: b.spec.weight,
                    in_flight: b.in_flight.load(Relaxed),
                    id: b.id,
                })
                .collect()
        };
        let c = collect(avoid);
        if c.is_empty() && !avoid.is_empty() {
            // Every other server is out: trying the same one again beats failing.
            return collect(&[]);
        }
        c
    }

    /// The servers that pass their active checks and are not draining, whatever their
    /// breakers say (panic mode), skipping `avoid` unless nothing else is left.
    fn panic_candidates(&self, avoid: &[usize], need_room: bool) -> Vec<Candidate> {
        let collect = |avoid: &[usize]| -> Vec<Candidate> {
            self.backends
                .iter()
                .enumerate()
                .filter(|(i, b)| !avoid.contains(i) && b.eligible() && (!need_room || b.has_room()))
                .map(|(i, b)| Candidate {
                    index: i,
                    weight: b.spec.weight,
                    in_flight: b.in_flight.load(Relaxed),
                    id: b.id,
                })
                .collect()
        };
        let c = collect(avoid);
        if c.is_empty() && !avoid.is_empty() {
            return collect(&[]);
        }
        c
    }

    fn try_acquire(&self, ctx: &PickContext, avoid: &[usize]) -> Result<Slot<'_>, NoSlot> {
        // A claim can lose a race (another request took the last slot or the probe);
        // pick again a few times before calling the group full.
        for _ in 0..4 {
            let now = Instant::now();
            if let [b] = &self.backends[..] {
                // One server: nothing to choose, no candidate list to build.
                let admit = match b.admit(now) {
                    Admit::No if b.eligible() => {
                        self.note_panic(true);
                        Admit::Yes
                    }
                    Admit::No => return Err(NoSlot::NoneUp),
                    admit => admit,
                };
                if !b.has_room() {
                    return Err(NoSlot::Full);
                }
                if b.claim(admit) {
                    return Ok(Slot {
                        group: self,
                        index: 0,
                    });
                }
                continue;
            }
            let mut panic = false;
            let mut candidates = self.candidates(now, avoid, true);
            if candidates.is_empty() {
                if !self.candidates(now, avoid, false).is_empty() {
                    return Err(NoSlot::Full);
                }
                panic = true;
                candidates = self.panic_candidates(avoid, true);
                if candidates.is_empty() {
                    return if self.panic_candidates(avoid, false).is_empty() {
                        Err(NoSlot::NoneUp)
                    } else {
                        Err(NoSlot::Full)
                    };
                }
            }
            self.note_panic(panic);
            let index = self.balancer.pick(&candidates, ctx);
            let b = &self.backends[index];
            // In panic mode the breaker is passed by (no probe is claimed).
            let admit = if panic { Admit::Yes } else { b.admit(now) };
            if b.claim(admit) {
                return Ok(Slot { group: self, index });
            }
        }
        Err(NoSlot::Full)
    }

    /// Notes whether the group picked in panic mode, for its gauge and counter.
    fn note_panic(&self, panic: bool) {
        if panic {
            self.metrics.panic_requests.inc();
        }
        if self.metrics.panic.load(Relaxed) != panic {
            self.metrics.panic.store(panic, Relaxed);
            if panic {
                tracing::warn!(group = %self.name, "no server in rotation: panic mode, sending to every server that passes its active checks");
            } else {
                tracing::info!(group = %self.name, "a server is back in rotation: panic mode over");
            }
        }
    }

    /// Takes a slot on a server in rotation, waiting in the queue while all are full.
    ///
    /// # Errors
    /// `Unavailable` at once when no server can take requests; `QueueFull` at once when
    /// `queue_size` requests already wait (or when the request may not wait at all);
    /// `QueueTimeout` after `queue_timeout` (or at the overall `deadline`).
    pub(super) async fn acquire(
        &self,
        ctx: &PickContext,
        avoid: &[usize],
        deadline: Option<Instant>,
        patience: Patience,
    ) -> Result<Slot<'_>, Error> {
        match self.try_acquire(ctx, avoid) {
            Ok(slot) => return Ok(slot),
            Err(NoSlot::NoneUp) => return Err(self.unavailable()),
            Err(NoSlot::Full) => {}
        }
        if patience == Patience::Never {
            return Err(Error::QueueFull {
                group: self.name.clone(),
            });
        }
        if self.queued.fetch_add(1, Relaxed) >= self.config.queue_size {
            self.queued.fetch_sub(1, Relaxed);
            self.queue_full.fetch_add(1, Relaxed);
            return Err(Error::QueueFull {
                group: self.name.clone(),
            });
        }
        let _queued = Queued(self);
        let started = Instant::now();
        let mut until = started + self.config.queue_timeout;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_acquire(ctx, avoid) {
                Ok(slot) => {
                    self.metrics.queue_wait.record(started.elapsed());
                    return Ok(slot);
                }
                Err(NoSlot::NoneUp) => return Err(self.unavailable()),
                Err(NoSlot::Full) => {}
            }
            if tokio::time::timeout_at(until, freed).await.is_err() {
                self.metrics.queue_wait.record(started.elapsed());
                self.queue_timeouts.fetch_add(1, Relaxed);
                return Err(Error::QueueTimeout {
                    group: self.name.clone(),
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// The 503 for a group with no server that can take requests; `Retry-After` is the
    /// time until the first ejection ends (at least 1 s).
    fn unavailable(&self) -> Error {
        self.unavailable.fetch_add(1, Relaxed);
        let now = Instant::now();
        let retry_after = self
            .backends
            .iter()
            .filter_map(|b| b.ejected_for(now))
            .min()
            .unwrap_or(Duration::from_secs(1));
        Error::Unavailable {
            group: self.name.clone(),
            retry_after,
        }
    }
}
