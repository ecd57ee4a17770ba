//! The stored-object decoder (what the disk tier reads back after a crash): any bytes are
//! refused or decoded, never a panic. The fuzzer's bytes get valid lengths and checksums
//! first, so it explores the fields behind them rather than only the CRC check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torii::cache::object::{decode_meta, meta_prefix_len, CachedObject, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let _ = CachedObject::decode(data);
    let mut buf = data.to_vec();
    if buf.len() >= HEADER_LEN + 4 {
        buf[0..4].copy_from_slice(b"TRCO");
        buf[4] = 1;
        let total = buf.len() as u64;
        buf[8..16].copy_from_slice(&total.to_le_bytes());
        let meta_len = u32::from_le_bytes(buf[16..20].try_into().unwrap()) as usize;
        let meta_len = meta_len.min(buf.len() - HEADER_LEN - 4);
        buf[16..20].copy_from_slice(&(meta_len as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf[..20]);
        crc.update(&buf[HEADER_LEN..HEADER_LEN + meta_len]);
        buf[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
        let end = buf.len() - 4;
        let trailer = crc32fast::hash(&buf[..end]);
        buf[end..].copy_from_slice(&trailer.to_le_bytes());
    }
    if let Ok(len) = meta_prefix_len(&buf) {
        if len <= buf.len() {
            let _ = decode_meta(&buf[..len]);
        }
    }
    if let Ok(object) = CachedObject::decode(&buf) {
        // What decodes encodes back to a record that decodes to the same object.
        if object.encodable() {
            let again = CachedObject::decode(&object.encode()).expect("re-encoded record");
            assert_eq!(again.size(), object.size());
        }
    }
});
