//! `auth.basic`: RFC 7617 credentials against the users of an htpasswd file.
//!
//! - A hash is verified on tokio's blocking pool (bcrypt and argon2id take tens of
//!   milliseconds of CPU), at most `VERIFY_AT_ONCE` at a time per route.
//! - An unknown user's password is verified against the file's first hash and refused,
//!   so it takes as long as a wrong password; the verifiers compare in constant time.
//! - A verified `Authorization` value is remembered (by its SHA-256) for `VERIFIED_FOR`,
//!   at most `VERIFIED_MAX` of them, so a logged-in browser does not pay a hash per request.
//! - Every attempt that is not remembered counts against the client address as soon as it
//!   is made, and is forgiven when it verifies: after `MAX_FAILURES` in `FAILURE_WINDOW`
//!   the address is answered 429 without verifying anything until the window ends
//!   (fail2ban-like; concurrent guesses count too). An IPv6 address counts as its /64,
//!   which one host or site usually holds whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderValue};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{digest, Asking, Digest, Inner, Passed, Refusal, Step};
use crate::config::auth::{BasicAuth, PasswordHash, Users};

/// Failed attempts from one address allowed in `FAILURE_WINDOW`.
pub const MAX_FAILURES: u32 = 10;
/// The window failed attempts are counted in, from the first.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a verified credential is taken without verifying it again.
pub const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// How many verified credentials are remembered per route.
pub const VERIFIED_MAX: usize = 1024;
/// Addresses whose failures are tracked per route; past that, expired ones are dropped,
/// and when none has expired new addresses are not tracked (logged).
const TRACKED_MAX: usize = 65_536;
/// The longest `Authorization` value looked at (a Basic one of 4 KiB is already absurd).
const MAX_HEADER: usize = 4096;

pub struct Basic {
    state: Arc<State>,
    challenge: HeaderValue,
    keep_authorization: bool,
}

struct State {
    users: Arc<Users>,
    /// Verified `Authorization` values (their digests), until when.
    verified: quick_cache::sync::Cache<Digest, Instant>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Verifications running at once (each holds a core).
    verifying: Semaphore,
}

/// Attempts from one address in its current window.
#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// How many hashes a route verifies at once: the cores, at least 2.
fn verify_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

impl Basic {
    pub fn new(settings: &BasicAuth) -> Basic {
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", settings.realm);
        Basic {
            state: Arc::new(State {
                users: settings.users.clone(),
                verified: quick_cache::sync::Cache::new(VERIFIED_MAX),
                failures: Mutex::new(HashMap::new()),
                verifying: Semaphore::new(verify_at_once()),
            }),
            // Validation refused realms with quotes or control characters.
            challenge: HeaderValue::try_from(challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Basic charset=\"UTF-8\"")),
            keep_authorization: settings.forward_authorization,
        }
    }

    pub(super) fn check(&self, req: &Asking<'_>) -> Inner {
        let passed = Passed::Basic {
            keep_authorization: self.keep_authorization,
        };
        let challenge = || Inner::Refuse(Refusal::Challenge(self.challenge.clone()));
        let mut values = req.headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return challenge();
        };
        // Two credentials: which one the next hop would read is anyone's guess.
        if values.next().is_some() {
            self.state.charge(req.client, Instant::now());
            return challenge();
        }
        let now = Instant::now();
        let key = digest(&[value.as_bytes()]);
        if self
            .state
            .verified
            .get(&key)
            .is_some_and(|until| until > now)
        {
            return Inner::Pass(passed);
        }
        if let Some(retry_after) = self.state.locked_out(req.client, now) {
            return Inner::Refuse(Refusal::LockedOut { retry_after });
        }
        // Counted now, forgiven if it verifies: concurrent guesses count too.
        self.state.charge(req.client, now);
        let Some((user, password)) = credentials(value) else {
            return challenge();
        };
        Inner::Pending(Box::new(Step::Basic(Pending {
            state: self.state.clone(),
            user,
            password,
            key,
            client: req.client,
            passed,
            challenge: self.challenge.clone(),
        })))
    }
}

/// User and password of a Basic `Authorization` value; `None` when it is not one.
fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let bytes = value.as_bytes();
    if bytes.len() > MAX_HEADER {
        return None;
    }
    let (scheme, rest) = bytes.split_at(bytes.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Whose failures an attempt from `client` counts as: the address, or an IPv6 /64.
fn attempter(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl State {
    /// When `client` may try again, if it is locked out now.
    fn locked_out(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("poisoned");
        let f = failures.get(&attempter(client))?;
        let ends = f.since + FAILURE_WINDOW;
        (f.count >= MAX_FAILURES && ends > now).then(|| ends - now)
    }

    /// Counts one attempt from `client`.
    fn charge(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().expect("poisoned");
        let client = attempter(client);
        if failures.len() >= TRACKED_MAX && !failures.contains_key(&client) {
            failures.retain(|_, f| f.since + FAILURE_WINDOW > now);
            if failures.len() >= TRACKED_MAX {
                tracing::warn!(%client, "auth: too many addresses with failed logins to track");
                return;
            }
        }
        let f = failures.entry(client).or_insert(Failures {
            since: now,
            count: 0,
        });
        if f.since + FAILURE_WINDOW <= now {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count += 1;
    }

    /// Forgives one attempt of `client` (it verified).
    fn forgive(&self, client: IpAddr) {
        let mut failures = self.failures.lock().expect("poisoned");
        if let Some(f) = failures.get_mut(&attempter(client)) {
            f.count = f.count.saturating_sub(1);
        }
    }
}

/// A password to verify.
pub(super) struct Pending {
    state: Arc<State>,
    user: String,
    password: Vec<u8>,
    key: Digest,
    client: IpAddr,
    passed: Passed,
    challenge: HeaderValue,
}

impl Pending {
    pub(super) async fn settle(self) -> Result<Passed, Refusal> {
        let Pending {
            state,
            user,
            password,
            key,
            client,
            passed,
            challenge,
        } = self;
        let ok = {
            // Never closed: the semaphore lives as long as `state`.
            let _permit = state.verifying.acquire().await;
            let users = state.users.clone();
            tokio::task::spawn_blocking(move || {
                let (hash, known) = users.hash_of(&user);
                // An unknown user is verified against the dummy hash all the same.
                verify(hash, &password) && known
            })
            .await
            .unwrap_or(false)
        };
        if ok {
            state.forgive(client);
            state.verified.insert(key, Instant::now() + VERIFIED_FOR);
            Ok(passed)
        } else {
            Err(Refusal::Challenge(challenge))
        }
    }
}

/// Whether `password` matches `hash` (the verifiers compare in constant time).
fn verify(hash: &PasswordHash, password: &[u8]) -> bool {
    match hash {
        PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        PasswordHash::Argon2id(h) => {
            use argon2::PasswordVerifier;
            argon2::PasswordHash::new(h)
                .and_then(|parsed| argon2::Argon2::default().verify_password(password, &parsed))
                .is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parsed_and_garbage_refused() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        // "ann:pa:ss" — the password may hold colons.
        assert_eq!(
            credentials(&v("Basic YW5uOnBhOnNz")),
            Some(("ann".into(), b"pa:ss".to_vec()))
        );
        assert_eq!(
            credentials(&v("basic   YW5uOnBhOnNz")),
            Some(("ann".into(), b"pa:ss".to_vec()))
        );
        for bad in [
            "Basic",
            "Basic !!!",
            "Bearer YW5uOnBhOnNz",
            "Basic YW5u", // no colon
            "Basic /w==", // not UTF-8 user
        ] {
            assert_eq!(credentials(&v(bad)), None, "{bad}");
        }
        let huge = format!("Basic {}", "A".repeat(MAX_HEADER));
        assert_eq!(credentials(&v(&huge)), None);
    }

    #[test]
    fn lockout_after_max_failures_until_the_window_ends() {
        let state = State {
            users: Arc::new(
                crate::config::auth::parse_htpasswd(&format!(
                    "a:{}",
                    bcrypt::hash_with_salt("x", 4, [0; 16]).unwrap()
                ))
                .unwrap(),
            ),
            verified: quick_cache::sync::Cache::new(4),
            failures: Mutex::default(),
            verifying: Semaphore::new(1),
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(state.locked_out(ip, now), None);
            state.charge(ip, now);
        }
        assert_eq!(state.locked_out(ip, now), Some(FAILURE_WINDOW));
        state.forgive(ip);
        assert_eq!(state.locked_out(ip, now), None);
        state.charge(ip, now);
        let later = now + FAILURE_WINDOW;
        assert_eq!(state.locked_out(ip, later), None);
        // Another address is not affected; an IPv6 /64 is one attempter.
        assert_eq!(state.locked_out("192.0.2.2".parse().unwrap(), now), None);
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            state.charge(v6, now);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(state.locked_out(same_64, now).is_some());
        assert_eq!(
            state.locked_out("2001:db8:1:3::1".parse().unwrap(), now),
            None
        );
    }
}
