//! Who is asking: `server.trusted_proxies`, `listeners[].proxy_protocol` and
//! `routes[].access`.

use std::sync::Arc;

use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::Checker;

const CIDR_HINT: &str =
    "e.g. \"10.0.0.0/8\", \"192.0.2.13\", \"2001:db8::/32\" (no zone: \"fe80::1%eth0\" is refused)";

/// A list of addresses or CIDR ranges; each bad entry is reported at its place.
pub(super) fn ip_nets(c: &mut Checker, list: &[Spanned<String>], path: &str) -> Vec<IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let net = IpNet::parse(v.get_ref().trim());
            if net.is_none() {
                c.report(
                    v.span(),
                    format!("{path}[{i}]"),
                    format!("{:?} is not an address or CIDR range", v.get_ref()),
                );
                c.hint(CIDR_HINT);
            }
            net
        })
        .collect()
}

/// `server.trusted_proxies` (default: none).
pub(super) fn trusted_proxies(c: &mut Checker, s: &file::ServerSection) -> Vec<IpNet> {
    s.trusted_proxies
        .as_deref()
        .map_or_else(Vec::new, |list| ip_nets(c, list, "server.trusted_proxies"))
}

/// `listeners[].proxy_protocol` (default: off).
pub(super) fn proxy_protocol(
    c: &mut Checker,
    s: &file::ListenerSection,
    path: &str,
) -> ProxyProtocol {
    let Some(v) = &s.proxy_protocol else {
        return ProxyProtocol::Off;
    };
    match v.get_ref().as_str() {
        "off" => ProxyProtocol::Off,
        "v1" => ProxyProtocol::V1,
        "v2" => ProxyProtocol::V2,
        "any" => ProxyProtocol::Any,
        other => {
            c.report(
                v.span(),
                format!("{path}.proxy_protocol"),
                format!("unknown PROXY protocol version {other:?}"),
            );
            c.hint("use \"v1\", \"v2\", \"any\" or \"off\"");
            ProxyProtocol::Off
        }
    }
}

/// `routes[].access` (default: none, everyone allowed).
pub(super) fn access(c: &mut Checker, s: &file::RouteSection, path: &str) -> Option<Arc<Access>> {
    let section = s.access.as_ref()?.get_ref();
    let list = |c: &mut Checker, l: &Option<Vec<Spanned<String>>>, key: &str| {
        l.as_deref()
            .map_or_else(Vec::new, |l| ip_nets(c, l, &format!("{path}.access.{key}")))
    };
    let allow = list(c, &section.allow, "allow");
    let deny = list(c, &section.deny, "deny");
    let client_cert = match &section.client_cert {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "required" => true,
            "optional" | "off" => false,
            other => {
                c.report(
                    v.span(),
                    format!("{path}.access.client_cert"),
                    format!("unknown client_cert {other:?}"),
                );
                c.hint("use \"required\" (a verified client certificate, else 403) or \"optional\" (the default)");
                false
            }
        },
    };
    Some(Arc::new(Access {
        allow,
        deny,
        client_cert,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, IpNet, ProxyProtocol};

    fn problems(text: &str) -> Vec<String> {
        match load_str("t.toml", text) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(String::from).collect(),
        }
    }

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
trusted_proxies = ["10.0.0.0/8", "127.0.0.1/32", "::1"]

[[listeners]]
addr = "127.0.0.1:8443"
proxy_protocol = "v2"

[upstreams.app]
servers = ["127.0.0.1:3000"]

[[routes]]
path = "/admin"
upstream = "app"
access = { allow = ["192.0.2.0/24"], deny = ["192.0.2.13"] }

[[routes]]
upstream = "app"
"#;

    #[test]
    fn identity_keys_load() {
        let config = load_str("t.toml", GOOD).unwrap();
        assert_eq!(config.server.trusted_proxies.len(), 3);
        assert!(config.server.trusted_proxies[0].contains([10, 9, 8, 7].into()));
        assert_eq!(
            config.server.listeners[0].proxy_protocol,
            ProxyProtocol::Off
        );
        assert_eq!(config.server.listeners[1].proxy_protocol, ProxyProtocol::V2);
        let access = config.routes[0].access.as_ref().unwrap();
        assert_eq!(access.allow, vec![IpNet::parse("192.0.2.0/24").unwrap()]);
        assert_eq!(access.deny, vec![IpNet::parse("192.0.2.13").unwrap()]);
        assert!(config.routes[1].access.is_none());
        let plain = load_str(
            "t.toml",
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n",
        )
        .unwrap();
        assert!(plain.server.trusted_proxies.is_empty());
    }

    #[test]
    fn identity_mistakes_point_at_the_value_with_a_hint() {
        let text = r#"
[server]
trusted_proxies = ["10.0.0.0/33", "fe80::1%eth0"]
[[listeners]]
addr = "127.0.0.1:1"
proxy_protocol = "v3"
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
upstream = "app"
access = { allow = ["192.0.2.0/24", "example.com"], deny = ["1.2.3"] }
"#;
        let p = problems(text);
        let find = |needle: &str| {
            p.iter()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in {p:#?}"))
        };
        assert!(
            find("\"10.0.0.0/33\" is not").starts_with("t.toml:3:20: server.trusted_proxies[0]")
        );
        assert!(find("\"fe80::1%eth0\" is not").contains("hint: e.g. \"10.0.0.0/8\""));
        assert!(find("unknown PROXY protocol version \"v3\"")
            .starts_with("t.toml:6:18: listeners[0].proxy_protocol"));
        assert!(find("\"v3\"").contains("hint: use \"v1\", \"v2\", \"any\" or \"off\""));
        assert!(
            find("\"example.com\" is not").starts_with("t.toml:11:37: routes[0].access.allow[1]")
        );
        assert!(find("\"1.2.3\" is not").contains("routes[0].access.deny[0]"));
        assert!(
            problems(&text.replace("\"v3\"", "\"any\"")).len() == 4,
            "{p:?}"
        );
    }

    /// A TLS listener (the test CA's files under examples/tls) with `extra` keys, and a
    /// route with `access`.
    fn mtls(extra: &str, access: &str) -> Result<crate::config::Config, Vec<String>> {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let text = format!(
            "[[listeners]]\naddr = \"127.0.0.1:8443\"\n[listeners.tls]\ncert = \"tls/example.pem\"\n\
             key = \"tls/example.key\"\n{extra}\n[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n\
             [[routes]]\nupstream = \"app\"\naccess = {access}\n"
        );
        crate::config::load_str_in("t.toml", &text, Some(&examples))
            .map_err(|e| e.to_string().lines().map(String::from).collect())
    }

    #[test]
    fn issue_19_client_certificates_load() {
        use crate::config::ClientAuthMode;
        let config = mtls(
            "client_ca = \"tls/ca.pem\"\nclient_auth = \"optional\"",
            "{ client_cert = \"required\" }",
        )
        .unwrap();
        let tls = config.server.listeners[0].tls.as_ref().unwrap();
        let auth = tls.client_auth.as_ref().unwrap();
        assert_eq!(auth.mode, ClientAuthMode::Optional);
        assert_eq!(auth.ca.certs.len(), 1);
        assert!(config.routes[0].access.as_ref().unwrap().client_cert);
        // client_ca alone: required.
        let config = mtls("client_ca = \"tls/ca.pem\"", "{}").unwrap();
        let tls = config.server.listeners[0].tls.as_ref().unwrap();
        assert_eq!(
            tls.client_auth.as_ref().unwrap().mode,
            ClientAuthMode::Required
        );
        assert!(!config.routes[0].access.as_ref().unwrap().client_cert);
    }

    #[test]
    fn issue_19_client_certificate_mistakes_point_at_the_value_with_a_hint() {
        let p = mtls("client_auth = \"optional\"", "{}").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "t.toml:6:15: listeners[0].tls.client_auth: client_auth without client_ca"
            ),
            "{p:?}"
        );
        assert!(p[0].contains("hint: add client_ca = "), "{p:?}");
        let p = mtls(
            "client_ca = \"tls/missing.pem\"\nclient_auth = \"sometimes\"",
            "{ client_cert = \"yes\" }",
        )
        .unwrap_err();
        let find = |needle: &str| {
            p.iter()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in {p:#?}"))
        };
        assert!(find("cannot read").starts_with("t.toml:6:13: listeners[0].tls.client_ca: "));
        assert!(find("cannot read").contains("hint: a PEM file with the CA certificate(s)"));
        assert!(find("unknown client_auth \"sometimes\"")
            .starts_with("t.toml:7:15: listeners[0].tls.client_auth"));
        assert!(find("unknown client_cert \"yes\"")
            .starts_with("t.toml:12:26: routes[0].access.client_cert"));
        assert!(find("unknown client_cert").contains("hint: use \"required\""));
        assert_eq!(p.len(), 3, "{p:?}");
        // A file without a certificate in it.
        let p = mtls("client_ca = \"tls/example.key\"", "{}").unwrap_err();
        assert!(p[0].contains("holds no certificate"), "{p:?}");
    }
}
