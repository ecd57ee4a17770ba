//! Tests of the shared tier that need no Redis (kept apart so `shared.rs` stays short);
//! those with a real redis-server are in tests/shared_tier.rs.

use super::*;

#[test]
fn broadcast_round_trip() {
    for (kind, target) in [
        ("url", Target::Urls(UrlMatch::Exact("http://a/x".into()))),
        ("prefix", Target::Urls(UrlMatch::Prefix("http://a/".into()))),
        ("path", Target::Urls(UrlMatch::PathPrefix("/s/".into()))),
        ("tag", Target::Tag("t1".into())),
    ] {
        let value = match &target {
            Target::Urls(UrlMatch::Exact(v) | UrlMatch::Prefix(v) | UrlMatch::PathPrefix(v))
            | Target::Tag(v) => v.clone(),
        };
        let b = Broadcast {
            node: "n".into(),
            kind: kind.into(),
            value,
            soft: false,
        };
        let text = serde_json::to_string(&b).unwrap();
        let back: Broadcast = serde_json::from_str(&text).unwrap();
        assert_eq!(back.target(), Some(target));
    }
    let unknown = Broadcast {
        node: "n".into(),
        kind: "everything".into(),
        value: String::new(),
        soft: false,
    };
    assert_eq!(unknown.target(), None);
}

#[tokio::test]
async fn a_cancelled_probe_frees_the_breaker() {
    // A "Redis" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = SharedSettings::new(
        RedisTarget::parse(&format!("redis://{}", silent.local_addr().unwrap())).unwrap(),
    );
    settings.timeout = Duration::from_millis(50);
    settings.breaker_failures = 1;
    settings.breaker_retry = Duration::from_millis(50);
    let tier = SharedTier::new(settings).unwrap();
    assert!(matches!(tier.get("k").await, Err(Error::Timeout(_))));
    assert_eq!(tier.breaker_state(), 1, "open after one failure");
    assert!(matches!(tier.get("k").await, Err(Error::Unavailable)));
    tokio::time::sleep(Duration::from_millis(120)).await;
    // The probe's request is cancelled after its first poll.
    let cancelled = tokio::time::timeout(Duration::ZERO, tier.get("k")).await;
    assert!(cancelled.is_err());
    assert_eq!(tier.breaker_state(), 2, "half-open, probe free again");
    assert!(
        matches!(tier.get("k").await, Err(Error::Timeout(_))),
        "the next call probes"
    );
    assert_eq!(tier.breaker_state(), 1);
    assert!(tier.stats.skipped.load(Relaxed) >= 1);
}

#[test]
fn primary_of_a_variant() {
    let v = crate::cache::variant_key("http://a/x\nh:accept=x", "accept-encoding=gzip");
    assert_eq!(crate::cache::primary_of(&v), "http://a/x\nh:accept=x");
    assert_eq!(crate::cache::primary_of("http://a/x"), "http://a/x");
}

#[test]
fn keys_of_one_url_share_a_slot() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let tier = SharedTier::new(SharedSettings::new(
        RedisTarget::parse("redis://127.0.0.1:1").unwrap(),
    ))
    .unwrap();
    let primary = "http://a/x?q=1";
    let variant = crate::cache::variant_key(primary, "accept=gzip");
    let tag = |k: String| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
    let slot = tag(tier.url_key(primary));
    assert_eq!(tag(tier.object_key(primary)), slot);
    assert_eq!(tag(tier.object_key(&variant)), slot);
    assert_eq!(tag(tier.lease_key(primary)), slot);
    assert_ne!(tag(tier.url_key("http://a/y")), slot);
    assert!(tier.object_key(primary).starts_with("torii:{"));
}
