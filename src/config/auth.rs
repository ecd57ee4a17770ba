//! `routes[].auth` (and `[defaults].auth`) as validated: Basic auth against an htpasswd
//! file, or forward auth to an upstream group; and the htpasswd parser that `torii check`
//! and every reload run, so a weak or broken file is refused before it is used.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::HeaderName;

// Through the parent (which re-exports `model`): `model` names `Auth`.
use crate::config::UpstreamName;

/// Who may use a route.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `auth.basic`: RFC 7617 credentials checked against an htpasswd file.
    Basic(BasicAuth),
    /// `auth.forward`: a subrequest to an auth service decides.
    Forward(ForwardAuth),
}

#[derive(Debug, Clone)]
pub struct BasicAuth {
    /// `realm`, shown by browsers in the login prompt. Default `"restricted"`.
    pub realm: String,
    /// `users_file`, as resolved (relative to the config file's directory).
    pub users_file: PathBuf,
    /// The users read from it when this config generation was validated.
    pub users: std::sync::Arc<Users>,
    /// `forward_authorization`: send the client's `Authorization` upstream. Default off.
    pub forward_authorization: bool,
}

#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// `upstream`: the group that answers the subrequests (resolved to exist).
    pub upstream: UpstreamName,
    /// `path`: what the subrequest GETs on it.
    pub path: PathAndQuery,
    /// `copy_headers`: fields copied from a 2xx auth answer onto the request sent upstream
    /// (any the client sent under these names are removed first).
    pub copy_headers: Vec<HeaderName>,
    /// `cache`: how long a 2xx answer is reused for the same `Authorization` + `Cookie`.
    /// `None` (the default): every request asks the auth service.
    pub cache: Option<Duration>,
}

/// A password hash torii accepts: slow, salted, and verified in constant time.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2y$`, `$2b$`, `$2a$`.
    Bcrypt(String),
    /// `$argon2id$`.
    Argon2id(String),
}

impl fmt::Debug for PasswordHash {
    // Never print a hash (logs, panics): only its kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Bcrypt(_) => f.write_str("Bcrypt(..)"),
            PasswordHash::Argon2id(_) => f.write_str("Argon2id(..)"),
        }
    }
}

/// The users of an htpasswd file.
#[derive(Clone)]
pub struct Users {
    by_name: HashMap<String, PasswordHash>,
    /// The file's first hash: an unknown user's password is verified against it (and the
    /// answer thrown away), so an unknown user costs the same time as a wrong password.
    dummy: PasswordHash,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} users)", self.by_name.len())
    }
}

impl Users {
    /// The hash of `user`, or the dummy one with `false` for an unknown user.
    pub fn hash_of(&self, user: &str) -> (&PasswordHash, bool) {
        match self.by_name.get(user) {
            Some(hash) => (hash, true),
            None => (&self.dummy, false),
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The largest htpasswd file read (a bigger one is refused, not read).
pub const MAX_USERS_FILE: u64 = 4 << 20;
/// The most expensive bcrypt cost accepted: each verification at cost 14 takes about a
/// second of CPU; above that one request could hold a core for many seconds.
pub const MAX_BCRYPT_COST: u32 = 14;
/// Argon2id bounds: memory (KiB), passes and lanes. One verification at the memory bound
/// takes 256 MiB; more would let a handful of concurrent logins exhaust memory.
pub const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
pub const MAX_ARGON2_T: u32 = 16;
pub const MAX_ARGON2_P: u32 = 16;

/// Parses htpasswd text: `user:hash` per line; empty lines and `#` comments skipped.
///
/// # Errors
/// Every bad line, as `(line number, why)`: no `:`, an empty or repeated user, and any
/// hash but bcrypt and argon2id (plaintext, MD5-crypt `$apr1$`, `{SHA}`, crypt(3) are
/// refused as weak), or one out of the bounds above. A file with no users is an error too.
pub fn parse_htpasswd(text: &str) -> Result<Users, Vec<(usize, String)>> {
    let mut by_name = HashMap::new();
    let mut first = None;
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            problems.push((n, "not `user:hash`".to_string()));
            continue;
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            problems.push((n, "empty or unprintable user name".to_string()));
            continue;
        }
        let hash = match classify(hash) {
            Ok(hash) => hash,
            Err(why) => {
                problems.push((n, format!("user {user:?}: {why}")));
                continue;
            }
        };
        if by_name.contains_key(user) {
            problems.push((n, format!("user {user:?} is listed twice")));
            continue;
        }
        first.get_or_insert_with(|| hash.clone());
        by_name.insert(user.to_string(), hash);
    }
    match (problems.is_empty(), first) {
        (true, Some(dummy)) => Ok(Users { by_name, dummy }),
        (true, None) => Err(vec![(0, "no users".to_string())]),
        (false, _) => Err(problems),
    }
}

/// What kind of hash `hash` is, if torii accepts it.
fn classify(hash: &str) -> Result<PasswordHash, String> {
    let refuse = |what: &str| {
        Err(format!(
            "{what} hashes are refused (weak); re-hash with `htpasswd -B` (bcrypt) or argon2id"
        ))
    };
    if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|_| "a malformed bcrypt hash".to_string())?;
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {} is above {MAX_BCRYPT_COST} (each login would take seconds of CPU)",
                parts.get_cost()
            ));
        }
        return Ok(PasswordHash::Bcrypt(hash.to_string()));
    }
    if hash.starts_with("$argon2id$") {
        let parsed = argon2::PasswordHash::new(hash)
            .map_err(|e| format!("a malformed argon2id hash: {e}"))?;
        let params =
            argon2::Params::try_from(&parsed).map_err(|e| format!("argon2id parameters: {e}"))?;
        if params.m_cost() > MAX_ARGON2_M_KIB
            || params.t_cost() > MAX_ARGON2_T
            || params.p_cost() > MAX_ARGON2_P
        {
            return Err(format!(
                "argon2id parameters above m={MAX_ARGON2_M_KIB},t={MAX_ARGON2_T},p={MAX_ARGON2_P}"
            ));
        }
        return Ok(PasswordHash::Argon2id(hash.to_string()));
    }
    if hash.starts_with("$argon2") {
        return Err("only argon2id is accepted of the argon2 variants".to_string());
    }
    if hash.starts_with("$apr1$") {
        return refuse("MD5-crypt ($apr1$)");
    }
    if hash.starts_with("{SHA}") {
        return refuse("SHA1 ({SHA})");
    }
    if hash.starts_with('$') {
        return refuse("crypt(3)");
    }
    refuse("plaintext or DES crypt(3)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_hashes_refused_with_their_line() {
        let bcrypt = bcrypt::hash_with_salt("pw", 4, [7; 16])
            .unwrap()
            .to_string();
        let text = format!(
            "# staff\n\nann:{bcrypt}\nbob:$apr1$abc$def\ncid:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\ndan:plain\neve:$6$salt$x\nann:{bcrypt}\nnocolon\n"
        );
        let problems = parse_htpasswd(&text).unwrap_err();
        let lines: Vec<usize> = problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, vec![4, 5, 6, 7, 8, 9], "{problems:?}");
        assert!(problems[0].1.contains("MD5-crypt"));
        assert!(problems[1].1.contains("SHA1"));
        assert!(problems[2].1.contains("plaintext"));
        assert!(problems[3].1.contains("crypt(3)"));
        assert!(problems[4].1.contains("twice"));
    }

    #[test]
    fn bcrypt_and_argon2id_accepted_unknown_users_get_the_dummy() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let bcrypt = bcrypt::hash_with_salt("pw", 4, [7; 16])
            .unwrap()
            .to_string();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
        let users = parse_htpasswd(&format!("ann:{bcrypt}\r\nbob:{argon}\n")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(matches!(
            users.hash_of("bob"),
            (PasswordHash::Argon2id(_), true)
        ));
        assert!(matches!(
            users.hash_of("zed"),
            (PasswordHash::Bcrypt(_), false)
        ));
        assert!(parse_htpasswd("# nobody\n").is_err());
        // The cost is only read, never run: a cost-15 hash is refused as written.
        let costly = bcrypt.replacen("$04$", "$15$", 1);
        let problems = parse_htpasswd(&format!("x:{costly}")).unwrap_err();
        assert!(problems[0].1.contains("cost 15"), "{problems:?}");
    }
}
