//! Tests of the disk tier (kept apart so `disk.rs` stays short).

use super::*;
use crate::cache::object::tests::sample;

fn obj(key: &str, url: &str, tags: &[&str], body: usize) -> Arc<CachedObject> {
    Arc::new(sample(key, url, tags, body))
}

fn file_of(tier: &DiskTier, key: &str) -> PathBuf {
    tier.inner.path_for(key_hash(key))
}

fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for shard in fs::read_dir(dir.join("objects")).unwrap().flatten() {
        for f in fs::read_dir(shard.path()).unwrap().flatten() {
            total += f.metadata().unwrap().len();
        }
    }
    total
}

#[tokio::test]
async fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = obj("GET http://h/a\n", "http://h/a", &["t"], 5_000);
    {
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        tier.wait_ready().await;
        assert!(tier.insert(a.clone()).await.unwrap());
        assert_eq!(tier.len(), 1);
        assert_eq!(tier.bytes(), a.encode().len() as u64);
        assert_eq!(tier.get("GET http://h/a\n").await.as_ref(), Some(&*a));
    }
    // Reopen: a lookup issued immediately (scan possibly still running) finds it.
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(tier.get("GET http://h/a\n").await.as_ref(), Some(&*a));
    assert!(tier.get("GET http://h/missing\n").await.is_none());
    tier.wait_ready().await;
    assert_eq!(tier.len(), 1);
    assert_eq!(tier.bytes(), a.encode().len() as u64);
    assert_eq!(tier.get("GET http://h/a\n").await.as_ref(), Some(&*a));
    assert!(tier.remove("GET http://h/a\n").await);
    assert!(!file_of(&tier, "GET http://h/a\n").exists());
    assert!(tier.get("GET http://h/a\n").await.is_none());
}

#[tokio::test]
async fn corrupt_files_ignored_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    for k in ["trunc", "flip", "live", "scan-trunc", "scan-flip-meta"] {
        tier.insert(obj(k, "http://h/", &[], 2_000)).await.unwrap();
    }
    // Corrupt behind the live tier's back: lookups reject and delete.
    let p = file_of(&tier, "trunc");
    let len = fs::metadata(&p).unwrap().len();
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let p = file_of(&tier, "flip");
    let mut data = fs::read(&p).unwrap();
    let i = data.len() - 100; // inside the body
    data[i] ^= 0x01;
    fs::write(&p, data).unwrap();
    assert!(tier.get("trunc").await.is_none());
    assert!(tier.get("flip").await.is_none());
    assert!(!file_of(&tier, "trunc").exists() && !file_of(&tier, "flip").exists());
    assert_eq!(tier.len(), 3);

    // Corrupt while closed: the scan drops them (meta damage, truncation).
    let (p_trunc, p_meta) = (
        file_of(&tier, "scan-trunc"),
        file_of(&tier, "scan-flip-meta"),
    );
    drop(tier);
    let len = fs::metadata(&p_trunc).unwrap().len();
    File::options()
        .write(true)
        .open(&p_trunc)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut data = fs::read(&p_meta).unwrap();
    data[HEADER_LEN + 2] ^= 0x80; // inside the meta section
    fs::write(&p_meta, data).unwrap();
    // A half-written temp file from a "crash" is cleaned too.
    fs::write(dir.path().join("tmp").join("x.1.tmp"), b"half").unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    assert_eq!(tier.len(), 1);
    assert!(!p_trunc.exists() && !p_meta.exists());
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(tier.get("live").await.is_some());
}

#[tokio::test]
async fn direct_read_during_scan_rejects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        tier.insert(obj("k", "http://h/", &[], 500)).await.unwrap();
        let p = file_of(&tier, "k");
        let mut data = fs::read(&p).unwrap();
        let i = data.len() - 10;
        data[i] ^= 0x04;
        fs::write(&p, data).unwrap();
    }
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    assert!(tier.get("k").await.is_none());
    tier.wait_ready().await;
    assert!(tier.get("k").await.is_none());
    assert!(!file_of(&tier, "k").exists());
}

#[tokio::test]
async fn hash_collision_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    tier.insert(obj("a", "http://h/a", &[], 100)).await.unwrap();
    // Put a's record where b's would live: reading b must not return a.
    let pb = file_of(&tier, "b");
    fs::create_dir_all(pb.parent().unwrap()).unwrap();
    fs::copy(file_of(&tier, "a"), &pb).unwrap();
    drop(tier);
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    assert!(tier.get("b").await.is_none());
    tier.wait_ready().await;
    assert!(!pb.exists(), "misplaced record dropped by the scan");
    assert!(tier.get("a").await.is_some());
}

#[tokio::test]
async fn byte_bound_and_lru() {
    let dir = tempfile::tempdir().unwrap();
    let max = 100_000;
    let tier = DiskTier::open(dir.path(), max).unwrap();
    tier.wait_ready().await;
    assert_eq!(tier.max_object_bytes(), max / 8);
    tier.insert(obj("big", "http://h/big", &[], 100))
        .await
        .unwrap();
    let big = obj("big", "http://h/big", &[], 20_000);
    assert!(matches!(
        tier.insert(big).await,
        Err(DiskError::TooLarge { .. })
    ));
    assert!(tier.get("big").await.is_none(), "superseded object removed");
    assert!(!file_of(&tier, "big").exists());
    let has = |k: &str| tier.inner.lock().map.contains_key(&key_hash(k));
    let mut first_eviction_seen = false;
    for i in 0..60 {
        tier.insert(obj(&format!("k{i}"), "http://h/", &[], 4_000))
            .await
            .unwrap();
        assert!(tier.bytes() <= max);
        assert!(disk_usage(dir.path()) <= max);
        if i == 5 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(tier.get("k0").await.is_some()); // k0 becomes more recent than k1..k5
        }
        if !first_eviction_seen && !has("k1") {
            first_eviction_seen = true;
            assert!(has("k0"), "LRU: the hit on k0 protected it");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(first_eviction_seen);
    assert!(tier.len() < 60 && tier.len() >= 20);
    assert!(has("k59"));
    // The bound holds after a restart too, with a smaller budget.
    drop(tier);
    let tier = DiskTier::open(dir.path(), 40_000).unwrap();
    tier.wait_ready().await;
    assert!(tier.bytes() <= 40_000);
    assert!(disk_usage(dir.path()) <= 40_000);
    assert!(tier.get("k59").await.is_some(), "newest files survive");
}

#[tokio::test]
async fn purge_prefix_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    tier.insert(obj("a1", "http://h/a/1", &["x"], 10))
        .await
        .unwrap();
    tier.insert(obj("a2", "http://h/a/2", &["y"], 10))
        .await
        .unwrap();
    tier.insert(obj("b1", "http://h/b/1", &["x"], 10))
        .await
        .unwrap();
    tier.insert(obj("c1", "http://h/c/1", &["z"], 10))
        .await
        .unwrap();
    assert_eq!(tier.purge_prefix("http://h/a/").await, 2);
    assert!(tier.get("a1").await.is_none() && !file_of(&tier, "a2").exists());
    assert_eq!(tier.purge_tag("x").await, 1);
    assert!(tier.get("b1").await.is_none() && !file_of(&tier, "b1").exists());
    assert!(tier.get("c1").await.is_some());
    assert_eq!(tier.len(), 1);

    // A purge issued while the startup scan runs also hits not-yet-indexed files.
    drop(tier);
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.purge_tag("z").await;
    assert!(tier.get("c1").await.is_none());
    tier.wait_ready().await;
    assert_eq!(tier.len(), 0);
    assert!(!file_of(&tier, "c1").exists());
}

#[tokio::test]
async fn expired_entries_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    let mut dead = sample("dead", "u", &[], 10);
    dead.meta
        .set_stale_until(SystemTime::now() - Duration::from_secs(1));
    assert!(
        !tier.insert(Arc::new(dead)).await.unwrap(),
        "already expired: skipped"
    );
    let soon = SystemTime::now() + Duration::from_millis(300);
    for k in ["e1", "e2", "e3"] {
        let mut o = sample(k, "u", &[], 10);
        o.meta.set_stale_until(soon);
        tier.insert(Arc::new(o)).await.unwrap();
    }
    tier.insert(obj("live", "u", &[], 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(tier.get("e1").await.is_none());
    tokio::time::sleep(Duration::from_millis(50)).await; // background delete
    assert!(!file_of(&tier, "e1").exists());
    assert_eq!(tier.sweep_expired().await, 2); // e2, e3
    assert!(!file_of(&tier, "e2").exists() && !file_of(&tier, "e3").exists());
    // The scan path: e4 expires while the tier is closed.
    let mut o = sample("e4", "u", &[], 10);
    o.meta
        .set_stale_until(SystemTime::now() + Duration::from_millis(200));
    tier.insert(Arc::new(o)).await.unwrap();
    drop(tier);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    tier.wait_ready().await;
    assert_eq!(tier.len(), 1);
    assert!(!file_of(&tier, "e4").exists());
    assert!(tier.get("live").await.is_some());
}

#[tokio::test]
async fn insert_future_can_be_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
    let handle = tokio::spawn(tier.insert(obj("k", "u", &[], 10)));
    assert!(handle.await.unwrap().unwrap());
    assert!(tier.get("k").await.is_some());
}

#[test]
fn a_record_in_the_page_cache_is_read_without_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    fs::write(&small, b"record bytes").unwrap();
    // Just written: the page cache holds it.
    assert_eq!(
        read_cached(&small, 12).as_deref(),
        Some(&b"record bytes"[..])
    );
    // Not the indexed length (replaced meanwhile): not read here.
    assert_eq!(read_cached(&small, 11), None);
    assert_eq!(read_cached(&small, 13), None);
    let big = dir.path().join("big");
    let len = INLINE_READ_MAX as u64 + 1;
    fs::write(&big, vec![7u8; len as usize]).unwrap();
    assert_eq!(
        read_cached(&big, len),
        None,
        "too large: the blocking pool reads it"
    );
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    assert_eq!(read_cached(&empty, 0), None);
    assert_eq!(read_cached(&dir.path().join("missing"), 12), None);
}
