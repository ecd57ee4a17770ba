//! `[cache]` and `[cache.shared]`: the memory, disk and shared (Redis) tiers.

use std::path::PathBuf;

use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::Checker;

pub(super) fn cache_settings(
    c: &mut Checker,
    s: file::CacheSection,
    base: Option<&std::path::Path>,
) -> CacheSettings {
    let d = CacheSettings::default();
    let memory = c.size(&s.memory, "cache.memory", d.memory);
    let disk = s.disk.as_ref().and_then(|disk| {
        let section = disk.get_ref();
        let Some(path) = &section.path else {
            c.report(disk.span(), "cache.disk", "missing `path`");
            c.hint("e.g. disk = { path = \"/var/cache/torii\", size = \"10GiB\" }");
            return None;
        };
        if path.get_ref().is_empty() {
            c.report(path.span(), "cache.disk.path", "empty path");
            return None;
        }
        let size = c.size(&section.size, "cache.disk.size", 1 << 30);
        Some(DiskSettings {
            path: PathBuf::from(path.get_ref()),
            size,
        })
    });
    let purge_allow = match &s.purge_allow {
        None => d.purge_allow,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let net = IpNet::parse(v.get_ref().trim());
                if net.is_none() {
                    c.report(
                        v.span(),
                        format!("cache.purge_allow[{i}]"),
                        format!("{:?} is not an address or CIDR range", v.get_ref()),
                    );
                    c.hint("e.g. \"127.0.0.1\", \"10.0.0.0/8\", \"::1\"");
                }
                net
            })
            .collect(),
    };
    let shared = s
        .shared
        .as_ref()
        .and_then(|section| shared_settings(c, section, base));
    if let (Some(section), 0) = (&s.shared, memory) {
        c.report(
            section.span(),
            "cache.shared",
            "a shared tier needs the memory tier, and cache.memory = \"0\" turns caching off",
        );
        c.hint("give cache.memory a size (e.g. \"256MiB\"), or remove [cache.shared]");
    }
    CacheSettings {
        memory,
        disk,
        purge_allow,
        shared,
    }
}

pub(super) fn shared_settings(
    c: &mut Checker,
    section: &Spanned<file::SharedSection>,
    base: Option<&std::path::Path>,
) -> Option<SharedSettings> {
    let s = section.get_ref();
    let Some(url) = &s.redis else {
        c.report(section.span(), "cache.shared", "missing `redis`");
        c.hint("e.g. redis = \"redis://127.0.0.1:6379\" or \"redis+cluster://10.0.0.1:6379,10.0.0.2:6379\"");
        return None;
    };
    let redis = match RedisTarget::parse(url.get_ref()) {
        Ok(t) => t,
        Err(why) => {
            c.report(url.span(), "cache.shared.redis", why);
            c.hint("redis://host:port[/db], unix:///path.sock, redis+cluster://h1:p1,h2:p2, or comma-separated redis:// URLs");
            return None;
        }
    };
    let d = SharedSettings::new(redis);
    let timeout = c.duration(&s.timeout, "cache.shared.timeout", d.timeout);
    if timeout.is_zero() {
        if let Some(t) = &s.timeout {
            c.report(t.span(), "cache.shared.timeout", "must be more than 0");
            c.hint("e.g. \"100ms\"");
        }
    }
    let prefix = match &s.prefix {
        Some(p) if p.get_ref().is_empty() || p.get_ref().contains(['{', '}']) => {
            c.report(
                p.span(),
                "cache.shared.prefix",
                format!("{:?} cannot be a key prefix", p.get_ref()),
            );
            c.hint("a non-empty name without { or }, e.g. \"torii:\" or \"shop:\"");
            d.prefix.clone()
        }
        Some(p) => p.get_ref().clone(),
        None => d.prefix.clone(),
    };
    Some(SharedSettings {
        timeout,
        max_object_size: c.size(
            &s.max_object_size,
            "cache.shared.max_object_size",
            d.max_object_size,
        ),
        lease: c.duration(&s.lease, "cache.shared.lease", d.lease),
        breaker_failures: c.count(
            &s.breaker_failures,
            "cache.shared.breaker_failures",
            1..1001,
            d.breaker_failures as usize,
        ) as u32,
        breaker_retry: c.duration(
            &s.breaker_retry,
            "cache.shared.breaker_retry",
            d.breaker_retry,
        ),
        prefix,
        tls: super::redis_tls::redis_tls(c, s.tls.as_ref(), url, &d.redis, base),
        redis: d.redis,
    })
}
