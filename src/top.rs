//! `torii top`: a terminal view of a running torii's `/stats.json`, refreshed in place every
//! second (in the spirit of varnishstat and htop); `q` or Ctrl-C quits.
//!
//! Fetching and drawing are apart: [`render`] turns one `/stats.json` document into lines
//! (pure, unit-tested), [`run`] fetches, draws with crossterm and reads keys.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::{Attribute, Print, SetAttribute};
use crossterm::terminal::{self, ClearType};
use crossterm::{cursor, queue};
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

/// How often the view refreshes.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one `/stats.json` request may take before it counts as a failure.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// What can stop `torii top`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin listener did not answer (not running, wrong address, firewall).
    #[error("cannot reach the admin listener at {admin}: {reason}; is torii running with --admin {admin}?")]
    Unreachable { admin: String, reason: String },
    /// The admin listener answered, but not with 200 and a JSON document.
    #[error("{admin}/stats.json: {reason}")]
    BadAnswer { admin: String, reason: String },
    /// The terminal could not be set up, read or drawn to.
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
}

/// Runs the view against the admin listener at `admin` (`host:port`, `http://` optional) until
/// `q` or Ctrl-C. Sends `Authorization: Bearer $TORII_ADMIN_TOKEN` when that variable is set.
/// When stdout is not a terminal, prints one snapshot and returns (like `varnishstat -1`).
///
/// # Errors
/// [`Error::Unreachable`] or [`Error::BadAnswer`] when the first fetch fails (later failures are
/// shown in the view, which keeps retrying); [`Error::Terminal`] when the terminal fails.
pub fn run(admin: &str) -> Result<(), Error> {
    let admin = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let fetcher = Fetcher::new(&admin)?;
    let mut stats = fetcher.fetch()?;
    let mut out = io::stdout();
    if !out.is_terminal() {
        for line in render(&stats, &admin, &clock(), None) {
            writeln!(out, "{}", line.text)?;
        }
        return Ok(());
    }
    let _terminal = TerminalGuard::enter()?;
    let mut error: Option<String> = None;
    loop {
        draw(
            &mut out,
            &render(&stats, &admin, &clock(), error.as_deref()),
        )?;
        // Read keys until the next refresh is due.
        let next = std::time::Instant::now() + REFRESH;
        loop {
            let left = next.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left)? {
                continue;
            }
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                        && matches!(key.code, KeyCode::Char('c' | 'C'));
                    if ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => draw(
                    &mut out,
                    &render(&stats, &admin, &clock(), error.as_deref()),
                )?,
                _ => {}
            }
        }
        match fetcher.fetch() {
            Ok(s) => {
                stats = s;
                error = None;
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
}

// === fetching ===

struct Fetcher {
    rt: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    admin: String,
    token: Option<String>,
}

impl Fetcher {
    fn new(admin: &str) -> Result<Fetcher, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = {
            let _entered = rt.enter();
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http()
        };
        Ok(Fetcher {
            rt,
            client,
            admin: admin.to_string(),
            token: std::env::var("TORII_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    fn fetch(&self) -> Result<Value, Error> {
        let admin = &self.admin;
        let unreachable = |reason: String| Error::Unreachable {
            admin: admin.clone(),
            reason,
        };
        let bad = |reason: String| Error::BadAnswer {
            admin: admin.clone(),
            reason,
        };
        let mut req = http::Request::get(format!("http://{admin}/stats.json"));
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| unreachable(format!("bad address: {e}")))?;
        self.rt.block_on(async {
            let resp = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(req))
                .await
                .map_err(|_| unreachable(format!("no answer within {FETCH_TIMEOUT:?}")))?
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            let body = tokio::time::timeout(FETCH_TIMEOUT, resp.into_body().collect())
                .await
                .map_err(|_| bad("body not complete within 2 s".into()))?
                .map_err(|e| bad(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(bad(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body).trim()
                )));
            }
            serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))
        })
    }
}

/// `e` and its sources, `: `-separated (hyper's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

// === drawing ===

/// Raw mode, the alternate screen and a hidden cursor while alive; restores them on drop,
/// so an error or a panic leaves a usable terminal.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        crossterm::execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The title bar: reverse video across the width.
    Title,
    /// A table header or section name: bold.
    Heading,
    Plain,
    /// A problem (the last fetch failed): reverse video.
    Alert,
}

/// One line of the view.
#[derive(Debug, Clone)]
pub struct Line {
    pub look: Look,
    pub text: String,
}

fn draw(out: &mut impl Write, lines: &[Line]) -> io::Result<()> {
    let (width, height) = terminal::size().unwrap_or((80, 24));
    let width = usize::from(width);
    for (row, line) in lines.iter().take(usize::from(height)).enumerate() {
        let mut text: String = line.text.chars().take(width).collect();
        queue!(out, cursor::MoveTo(0, row as u16))?;
        match line.look {
            Look::Title | Look::Alert => {
                let pad = width.saturating_sub(text.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
                queue!(out, SetAttribute(Attribute::Reverse))?;
            }
            Look::Heading => queue!(out, SetAttribute(Attribute::Bold))?,
            Look::Plain => {}
        }
        queue!(
            out,
            Print(text),
            SetAttribute(Attribute::Reset),
            terminal::Clear(ClearType::UntilNewLine)
        )?;
    }
    let below = lines.len().min(usize::from(height)) as u16;
    if below < height {
        queue!(
            out,
            cursor::MoveTo(0, below),
            terminal::Clear(ClearType::FromCursorDown)
        )?;
    }
    out.flush()
}

/// The wall clock as `HH:MM:SS UTC`.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Turns one `/stats.json` document into the lines of the view. Fields that are missing are
/// shown as `-`; upstream server fields beyond `server` and `state` become extra columns.
pub fn render(stats: &Value, admin: &str, now: &str, error: Option<&str>) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut push = |look, text: String| lines.push(Line { look, text });
    let draining = if stats["draining"].as_bool() == Some(true) {
        "  DRAINING"
    } else {
        ""
    };
    push(
        Look::Title,
        format!(" torii top  {admin}  {now}{draining}   (q quits)"),
    );
    if let Some(e) = error {
        push(Look::Alert, format!(" disconnected: {e} (retrying)"));
    }
    push(Look::Plain, String::new());

    // Rates and percentiles, 5 s and 60 s side by side.
    let r5 = &stats["recent_5s"];
    let r60 = &stats["recent_60s"];
    let mut t = Table::new(&["", "last 5 s", "last 60 s"], &[false, true, true]);
    t.row(vec![
        "requests/s".into(),
        num(&r5["requests_per_second"]),
        num(&r60["requests_per_second"]),
    ]);
    t.row(vec![
        "hit ratio".into(),
        pct(&r5["hit_ratio"]),
        pct(&r60["hit_ratio"]),
    ]);
    for (label, key) in [
        ("p50", "p50"),
        ("p75", "p75"),
        ("p99", "p99"),
        ("p99.9", "p999"),
        ("mean", "mean"),
    ] {
        t.row(vec![
            label.into(),
            secs(&r5["latency"][key]),
            secs(&r60["latency"][key]),
        ]);
    }
    t.lines(&mut push);
    push(Look::Plain, String::new());

    let c = &stats["connections"];
    let b = &stats["bytes"];
    push(
        Look::Plain,
        format!(
            "requests {}   connections {} open, {} accepted   bytes in {}, out {}",
            num(&stats["requests"]),
            num(&c["open"]),
            num(&c["accepted"]),
            bytes(&b["received"]),
            bytes(&b["sent"]),
        ),
    );
    let cache = &stats["cache"];
    if cache.is_object() {
        let mut text = String::from("cache");
        for k in [
            "hits",
            "misses",
            "stale",
            "revalidated",
            "coalesced",
            "bypass",
        ] {
            let _ = write!(text, "  {k} {}", num(&cache[k]));
        }
        for tier in ["memory", "disk"] {
            let t = &cache[tier];
            if t.is_object() {
                let _ = write!(
                    text,
                    "   {tier} {} objects, {} of {}",
                    num(&t["objects"]),
                    bytes(&t["bytes"]),
                    bytes(&t["max_bytes"])
                );
            }
        }
        push(Look::Plain, text);
        let shared = &cache["shared"];
        if shared.is_object() {
            let breaker = shared["breaker"].as_str().unwrap_or("-");
            let mut text = format!("shared tier  {breaker}");
            if breaker != "closed" {
                text.push_str(" (local only)");
            }
            for (k, label) in [
                ("hits", "hits"),
                ("misses", "misses"),
                ("writes", "writes"),
                ("errors", "errors"),
                ("lease_waits", "lease waits"),
                ("purges_received", "purges received"),
            ] {
                let _ = write!(text, "  {label} {}", num(&shared[k]));
            }
            let look = if breaker == "closed" {
                Look::Plain
            } else {
                Look::Alert
            };
            push(look, text);
        }
    } else {
        push(Look::Plain, "cache off".into());
    }
    push(Look::Plain, String::new());

    // Routes, with their rates and percentiles over the last minute.
    let seconds = r60["seconds"].as_f64().filter(|s| *s > 0.0);
    let mut t = Table::new(
        &[
            "ROUTE", "KIND", "TARGET", "REQUESTS", "REQ/S", "P50", "P99", "P99.9",
        ],
        &[false, false, false, true, true, true, true, true],
    );
    for r in stats["routes"].as_array().into_iter().flatten() {
        let label = r["route"].as_str().unwrap_or("-");
        let l = &r60["routes"][label];
        let rate = match (l["count"].as_f64(), seconds) {
            (Some(n), Some(s)) => fmt_num(n / s),
            _ => "-".into(),
        };
        t.row(vec![
            label.into(),
            text(&r["kind"]),
            text(&r["target"]),
            num(&r["requests"]),
            rate,
            secs(&l["p50"]),
            secs(&l["p99"]),
            secs(&l["p999"]),
        ]);
    }
    t.lines(&mut push);
    push(Look::Plain, String::new());

    // Upstream servers: group, server, state, then whatever else each server reports
    // (known fields first, with short names); then one line per group (queue, latency).
    let groups: Vec<&Value> = stats["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut extra: Vec<String> = Vec::new();
    for g in &groups {
        for s in g["servers"].as_array().into_iter().flatten() {
            for k in s.as_object().into_iter().flat_map(|o| o.keys()) {
                if k != "server" && k != "state" && !extra.contains(k) {
                    extra.push(k.clone());
                }
            }
        }
    }
    let known = |k: &str| SERVER_FIELDS.iter().position(|(name, _)| *name == k);
    extra.sort_by_key(|k| (known(k).unwrap_or(SERVER_FIELDS.len()), k.clone()));
    let mut heads: Vec<String> = ["UPSTREAM", "SERVER", "STATE"].map(String::from).to_vec();
    heads.extend(extra.iter().map(|k| match known(k) {
        Some(i) => SERVER_FIELDS[i].1.to_string(),
        None => k.replace('_', " ").to_uppercase(),
    }));
    let mut right = vec![false, false, false];
    right.extend(extra.iter().map(|_| true));
    let head_refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs, &right);
    let mut summaries = Vec::new();
    for g in &groups {
        let group = g["group"].as_str().unwrap_or("-");
        for s in g["servers"].as_array().into_iter().flatten() {
            let mut row = vec![group.to_string(), text(&s["server"]), text(&s["state"])];
            row.extend(extra.iter().map(|k| server_value(k, &s[k.as_str()])));
            t.row(row);
        }
        summaries.push(group_summary(group, g, &r60["upstreams"][group]));
    }
    t.lines(&mut push);
    for line in summaries {
        push(Look::Plain, line);
    }
    lines
}

/// Server fields shown first, in this order, under these column names.
const SERVER_FIELDS: [(&str, &str); 8] = [
    ("in_flight", "IN-FLIGHT"),
    ("max_conns", "MAX"),
    ("requests", "REQUESTS"),
    ("failures", "FAILURES"),
    ("recent_error_rate", "ERRORS"),
    ("ejections", "EJECTIONS"),
    ("ejected_for_ms", "EJECTED FOR"),
    ("weight", "WEIGHT"),
];

fn server_value(key: &str, v: &Value) -> String {
    match (key, v.as_f64()) {
        ("recent_error_rate", Some(_)) => pct(v),
        ("ejected_for_ms", Some(ms)) => secs(&serde_json::json!(ms / 1000.0)),
        ("max_conns", Some(0.0)) => "-".into(),
        _ => text(v),
    }
}

/// `group: balance, queue length/size, retries, upstream p50/p99` from what is present.
fn group_summary(group: &str, g: &Value, latency: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(b) = g["balance"].as_str() {
        parts.push(b.to_string());
    }
    let q = &g["queue"];
    if q.is_object() {
        let mut text = format!("queue {}", num(&q["length"]));
        if !q["size"].is_null() {
            let _ = write!(text, "/{}", num(&q["size"]));
        }
        for (key, what) in [("full", "refused full"), ("timeouts", "timed out")] {
            if q[key].as_u64().is_some_and(|n| n > 0) {
                let _ = write!(text, ", {} {what}", num(&q[key]));
            }
        }
        parts.push(text);
    } else if !q.is_null() {
        parts.push(format!("queue {}", text(q)));
    }
    for (key, what) in [("retries", "retries"), ("unavailable", "unavailable")] {
        if !g[key].is_null() {
            parts.push(format!("{} {what}", num(&g[key])));
        }
    }
    if g["panic"].as_bool() == Some(true) {
        parts.push("PANIC (no server in rotation: sending to all)".to_string());
    }
    if g["panic_requests"].as_u64().is_some_and(|n| n > 0) {
        parts.push(format!("{} sent in panic", num(&g["panic_requests"])));
    }
    if latency["count"].as_u64().is_some_and(|n| n > 0) {
        parts.push(format!(
            "p50 {}, p99 {} (60 s)",
            secs(&latency["p50"]),
            secs(&latency["p99"])
        ));
    }
    format!("{group}: {}", parts.join("  "))
}

/// A text table: columns as wide as their widest cell, numbers right-aligned.
struct Table {
    heads: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(heads: &[&str], right: &[bool]) -> Table {
        Table {
            heads: heads.iter().map(|h| h.to_string()).collect(),
            right: right.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn lines(&self, push: &mut impl FnMut(Look, String)) {
        let mut widths: Vec<usize> = self.heads.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    let _ = write!(out, "{cell:>w$}");
                } else {
                    let _ = write!(out, "{cell:<w$}");
                }
            }
            out.trim_end().to_string()
        };
        push(Look::Heading, line(&self.heads));
        for row in &self.rows {
            push(Look::Plain, line(row));
        }
    }
}

// === formatting ===

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(_) => num(v),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> String {
    match (v.as_u64(), v.as_f64()) {
        (Some(n), _) => fmt_count(n),
        (None, Some(f)) => fmt_num(f),
        _ => "-".into(),
    }
}

fn fmt_count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

fn fmt_num(f: f64) -> String {
    if !f.is_finite() {
        "-".into()
    } else if f >= 10_000.0 {
        fmt_count(f as u64)
    } else if f >= 10.0 {
        format!("{f:.1}")
    } else {
        format!("{f:.2}")
    }
}

fn secs(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0} µs", s * 1e6),
        Some(s) if s < 0.01 => format!("{:.2} ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |r| format!("{:.1} %", r * 100.0))
}

fn bytes(v: &Value) -> String {
    let Some(mut b) = v.as_f64() else {
        return "-".into();
    };
    let mut unit = 0;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    while b >= 1024.0 && unit < UNITS.len() - 1 {
        b /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{b:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "connections": {"open": 2, "accepted": 206},
            "bytes": {"received": 17203, "sent": 40141},
            "requests": 206,
            "draining": false,
            "recent_5s": {"requests": 120, "requests_per_second": 26.7, "hit_ratio": 0.496, "seconds": 5.0,
                "latency": {"count": 120, "p50": 0.000524, "p75": 0.000655, "p99": 0.0126, "p999": 2.15, "mean": 0.015},
                "routes": {}, "upstreams": {}, "histogram": [[0.000262144, 3]]},
            "recent_60s": {"requests": 206, "requests_per_second": 20.0, "hit_ratio": null, "seconds": 10.0,
                "latency": {"count": 0, "p50": null, "p75": null, "p99": null, "p999": null, "mean": null},
                "routes": {"*/": {"count": 200, "p50": 0.0005, "p75": 0.001, "p99": 0.02, "p999": 2.1, "mean": 0.01}},
                "upstreams": {"app": {"count": 104, "p50": 0.0006, "p75": 0.001, "p99": 0.02, "p999": 2.1, "mean": 0.01}},
                "histogram": []},
            "routes": [{"route": "*/", "kind": "proxy+cache", "target": "app", "requests": 206}],
            "upstreams": [{"group": "app", "balance": "p2c", "retries": 1,
                "queue": {"length": 2, "size": 100, "full": 0, "timeouts": 0},
                "servers": [
                {"server": "http://127.0.0.1:3000", "state": "up", "zone": "a", "in_flight": 3,
                    "recent_error_rate": 0.25},
                {"server": "http://127.0.0.1:3001", "state": "ejected", "ejected_for_ms": 1500}]}],
            "cache": {"hits": 102, "misses": 104, "stale": 0, "revalidated": 0, "coalesced": 0, "bypass": 0,
                "memory": {"objects": 2, "bytes": 873, "max_bytes": 268435456, "evictions": 0}, "disk": null},
        })
    }

    #[test]
    fn a_group_in_panic_mode_says_so() {
        let mut stats = sample();
        stats["upstreams"][0]["panic"] = true.into();
        stats["upstreams"][0]["panic_requests"] = 7.into();
        let lines = render(&stats, "127.0.0.1:9901", "12:00:00 UTC", None);
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert!(
            text.iter().any(|l| l.starts_with("app: p2c")
                && l.contains("PANIC (no server in rotation: sending to all)")
                && l.contains("7 sent in panic")),
            "{text:?}"
        );
    }

    #[test]
    fn renders_rates_routes_and_upstreams() {
        let lines = render(&sample(), "127.0.0.1:9901", "12:00:00 UTC", None);
        let all: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let text = all.join("\n");
        assert_eq!(lines[0].look, Look::Title);
        assert!(all[0].contains("127.0.0.1:9901"), "{text}");
        assert!(text.contains("requests/s      26.7       20.0"), "{text}");
        assert!(text.contains("hit ratio     49.6 %          -"), "{text}");
        assert!(text.contains("p99.9         2.15 s          -"), "{text}");
        assert!(
            text.contains("*/     proxy+cache  app          206   20.0  500 µs  20.0 ms  2.10 s"),
            "{text}"
        );
        // Server fields become columns, known ones first (in-flight, errors, ejected for),
        // unknown ones after; missing ones show '-'; group figures go on a line of their own.
        for row in [
            "UPSTREAM  SERVER                 STATE    IN-FLIGHT  ERRORS  EJECTED FOR  ZONE",
            "app       http://127.0.0.1:3000  up               3  25.0 %            -     a",
            "app       http://127.0.0.1:3001  ejected          -       -       1.50 s     -",
            "app: p2c  queue 2/100  1 retries  p50 600 µs, p99 20.0 ms (60 s)",
        ] {
            assert!(all.contains(&row), "{row:?} in\n{text}");
        }
        assert!(
            text.contains("memory 2 objects, 873 B of 256.0 MiB"),
            "{text}"
        );
        assert!(!lines.iter().any(|l| l.look == Look::Alert));
    }

    #[test]
    fn shows_the_shared_tier_and_alerts_while_its_breaker_is_open() {
        let mut stats = sample();
        stats["cache"]["shared"] = serde_json::json!({"breaker": "closed", "hits": 7, "misses": 3,
            "writes": 2, "errors": 0, "lease_waits": 1, "purges_received": 4});
        let lines = render(&stats, "x:1", "now", None);
        let line = lines
            .iter()
            .find(|l| l.text.starts_with("shared tier"))
            .expect("a shared tier line");
        assert_eq!(
            line.text,
            "shared tier  closed  hits 7  misses 3  writes 2  errors 0  lease waits 1  purges received 4"
        );
        assert_eq!(line.look, Look::Plain);
        stats["cache"]["shared"]["breaker"] = "open".into();
        let lines = render(&stats, "x:1", "now", None);
        let line = lines
            .iter()
            .find(|l| l.text.starts_with("shared tier"))
            .unwrap();
        assert!(
            line.text.starts_with("shared tier  open (local only)"),
            "{}",
            line.text
        );
        assert_eq!(line.look, Look::Alert);
    }

    #[test]
    fn a_failed_fetch_shows_an_alert_and_missing_fields_show_dashes() {
        let lines = render(
            &serde_json::json!({}),
            "x:1",
            "now",
            Some("connection refused"),
        );
        assert_eq!(lines[1].look, Look::Alert);
        assert!(lines[1].text.contains("connection refused"));
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert!(text.contains(&"cache off"), "{text:?}");
        assert!(text
            .iter()
            .any(|l| l.starts_with("requests -   connections - open")));
    }

    #[test]
    fn units() {
        assert_eq!(secs(&serde_json::json!(0.000_262)), "262 µs");
        assert_eq!(secs(&serde_json::json!(0.0042)), "4.20 ms");
        assert_eq!(secs(&serde_json::json!(2.147)), "2.15 s");
        assert_eq!(bytes(&serde_json::json!(1536)), "1.5 KiB");
        assert_eq!(num(&serde_json::json!(123_456)), "123.5k");
        assert_eq!(num(&serde_json::json!(0.5)), "0.50");
    }
}
