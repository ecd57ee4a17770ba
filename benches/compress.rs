//! CPU per MiB and ratio of each coding at a few levels, on real text (torii's own
//! sources and README, concatenated) and on JSON, against gzip -6 (flate2 level 6: zlib's
//! deflate at gzip's default level, which is also what nginx's gzip module produces at
//! `gzip_comp_level 6`). The streaming path torii uses (`torii::compress::Coder`, 16 KiB
//! steps) is measured at the chosen levels. Plain `main`: `cargo bench --bench compress`.
//!
//! Thread CPU time (CLOCK_THREAD_CPUTIME_ID), best of 3 runs.

use std::io::Write;
use std::time::Duration;

use torii::compress::{encode_all, Coding};

fn cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn best<F: FnMut() -> usize>(mut f: F) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut len = 0;
    for _ in 0..3 {
        let t = cpu();
        len = f();
        best = best.min(cpu() - t);
    }
    (best, len)
}

fn corpus_text() -> Vec<u8> {
    let mut out = Vec::new();
    let mut paths = vec![std::path::PathBuf::from("README.md")];
    let mut dirs = vec![std::path::PathBuf::from("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                paths.push(p);
            }
        }
    }
    paths.sort();
    for p in paths {
        out.extend(std::fs::read(p).unwrap());
    }
    out
}

fn corpus_json() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..20_000)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "name": format!("item-{i}"),
                "price": (i * 37 % 1000) as f64 / 10.0,
                "tags": ["a", "b", if i % 3 == 0 { "sale" } else { "new" }],
                "in_stock": i % 7 != 0,
            })
        })
        .collect();
    serde_json::to_vec(&items).unwrap()
}

fn row(name: &str, data: &[u8], (t, len): (Duration, usize)) {
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    println!(
        "| {name:<28} | {:>6.2} | {:>8.1} | {:>8.0} |",
        data.len() as f64 / len as f64,
        t.as_secs_f64() * 1000.0 / mib,
        mib / t.as_secs_f64(),
    );
}

fn main() {
    hit_decision();
    for (label, data) in [
        ("text (src + README)", corpus_text()),
        ("JSON", corpus_json()),
    ] {
        println!(
            "\n{label}: {:.2} MiB\n\n| coding, level                | ratio  | ms/MiB   | MiB/s    |\n|---|---|---|---|",
            data.len() as f64 / 1048576.0
        );
        for level in [1, 6, 9] {
            row(
                &format!("gzip -{level} (flate2)"),
                &data,
                best(|| {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                    e.write_all(&data).unwrap();
                    e.finish().unwrap().len()
                }),
            );
        }
        for (q, lgwin) in [
            (1, 22),
            (4, 22),
            (4, 18),
            (5, 22),
            (5, 18),
            (6, 22),
            (9, 22),
        ] {
            row(
                &format!("br q{q} lgwin {lgwin}"),
                &data,
                best(|| {
                    let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, q, lgwin);
                    e.write_all(&data).unwrap();
                    e.into_inner().len()
                }),
            );
        }
        for level in [1, 3, 6, 9] {
            row(
                &format!("zstd {level}"),
                &data,
                best(|| zstd::bulk::compress(&data, level).unwrap().len()),
            );
        }
        for c in Coding::ALL {
            row(
                &format!("torii {} (streaming, chosen)", c.token()),
                &data,
                best(|| encode_all(c, &data).unwrap().len()),
            );
        }
    }
}

/// The decision a fresh hit on a compressing route pays before taking the raw fast path
/// (`proxy::compress::hit_as_is`), ns per call.
fn hit_decision() {
    use http::{HeaderMap, HeaderValue, StatusCode};
    use std::hint::black_box;
    let config = torii::config::Compress::default();
    let mut br = HeaderMap::new();
    br.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    br.insert("content-encoding", HeaderValue::from_static("br"));
    br.insert("cache-control", HeaderValue::from_static("max-age=600"));
    let mut png = HeaderMap::new();
    png.insert("content-type", HeaderValue::from_static("image/png"));
    png.insert("cache-control", HeaderValue::from_static("max-age=600"));
    let mut req = HeaderMap::new();
    req.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br, zstd"),
    );
    println!("\n| fresh hit, decision before the raw path | ns/call |\n|---|---|");
    for (name, stored, cfg) in [
        ("stored br, client takes br", &br, Some(&config)),
        ("image/png, not compressible", &png, Some(&config)),
        ("route without compression", &png, None),
    ] {
        let n = 2_000_000u32;
        let t = cpu();
        for _ in 0..n {
            black_box(torii::proxy::compress::hit_as_is(
                black_box(cfg),
                StatusCode::OK,
                black_box(stored),
                50_000,
                black_box(&req),
            ));
        }
        println!(
            "| {name} | {:.0} |",
            (cpu() - t).as_nanos() as f64 / f64::from(n)
        );
    }
}
