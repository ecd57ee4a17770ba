//! `routes[].access`: allow and deny lists of client addresses (the address `identity`
//! resolved), and whether a verified client certificate is required (mutual TLS). Deny
//! wins; an empty allow list allows everyone not denied. Checked in
//! `proxy::admit` right after the route is found: before the rate limit, the cache (its hit
//! fast path too) and the upstream.

use std::net::IpAddr;

use crate::config::Access;
use crate::error::ProxyError;

/// # Errors
/// `Denied` (403) when `client` is denied, or not in a non-empty allow list, or the route
/// requires a client certificate (`client_cert = "required"`) and `cert_verified` is false.
pub fn check(access: &Access, client: IpAddr, cert_verified: bool) -> Result<(), ProxyError> {
    if access.client_cert && !cert_verified {
        return Err(ProxyError::Denied(
            "a verified client certificate is required",
        ));
    }
    if access.deny.iter().any(|n| n.contains(client)) {
        return Err(ProxyError::Denied("this address is denied"));
    }
    if !access.allow.is_empty() && !access.allow.iter().any(|n| n.contains(client)) {
        return Err(ProxyError::Denied("this address is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNet;

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        let nets = |l: &[&str]| l.iter().map(|n| IpNet::parse(n).unwrap()).collect();
        Access {
            allow: nets(allow),
            deny: nets(deny),
            client_cert: false,
        }
    }

    #[test]
    fn deny_wins_and_empty_allow_is_everyone() {
        let a = access(&["192.0.2.0/24"], &["192.0.2.13"]);
        assert!(check(&a, "192.0.2.1".parse().unwrap(), false).is_ok());
        assert!(check(&a, "192.0.2.13".parse().unwrap(), false).is_err());
        assert!(check(&a, "198.51.100.1".parse().unwrap(), false).is_err());
        assert!(check(&a, "::ffff:192.0.2.1".parse().unwrap(), false).is_ok());
        let everyone = access(&[], &["10.0.0.0/8"]);
        assert!(check(&everyone, "8.8.8.8".parse().unwrap(), false).is_ok());
        assert!(check(&everyone, "10.1.2.3".parse().unwrap(), false).is_err());
        let certs = Access {
            client_cert: true,
            ..access(&[], &[])
        };
        assert!(check(&certs, "8.8.8.8".parse().unwrap(), false).is_err());
        assert!(check(&certs, "8.8.8.8".parse().unwrap(), true).is_ok());
    }
}
