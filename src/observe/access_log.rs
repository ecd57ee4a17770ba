//! The access log: one line per exchange, `combined` or `json`, to stdout or a file.
//!
//! Lines are formatted on the worker and handed to one writer thread, which batches writes
//! and flushes whenever it runs out of lines, so a slow disk never blocks a worker.
//! `reopen()` (SIGUSR1) closes and reopens the file, for logrotate.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use crate::config::{AccessTarget, Log, LogFormat};

use super::Record;

enum Msg {
    Line(String),
    Reopen,
}

/// Handle to the access-log writer thread; dropping the last handle ends the thread.
#[derive(Debug)]
pub struct AccessLog {
    config: Log,
    tx: mpsc::Sender<Msg>,
}

impl AccessLog {
    /// Starts the writer; `None` when the access log is off.
    ///
    /// # Errors
    /// When the log file cannot be opened for appending.
    pub fn start(config: &Log) -> std::io::Result<Option<AccessLog>> {
        let sink: Box<dyn Fn() -> std::io::Result<Box<dyn Write + Send>> + Send> =
            match &config.access {
                AccessTarget::Off => return Ok(None),
                AccessTarget::Stdout => Box::new(|| Ok(Box::new(std::io::stdout()))),
                AccessTarget::File(path) => {
                    let path: PathBuf = path.clone();
                    Box::new(move || {
                        let file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)?;
                        Ok(Box::new(file))
                    })
                }
            };
        let first = sink()?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("torii-access-log".into())
            .spawn(move || writer(rx, first, sink))?;
        Ok(Some(AccessLog {
            config: config.clone(),
            tx,
        }))
    }

    /// The settings this log was started with (reload keeps the log when they are unchanged).
    pub fn config(&self) -> &Log {
        &self.config
    }

    /// Asks the writer to reopen its file.
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    pub fn write(&self, record: &Record) {
        let line = match self.config.format {
            LogFormat::Combined => combined(record),
            LogFormat::Json => json(record),
        };
        let _ = self.tx.send(Msg::Line(line));
    }
}

type Sink = Box<dyn Fn() -> std::io::Result<Box<dyn Write + Send>> + Send>;

fn writer(rx: mpsc::Receiver<Msg>, first: Box<dyn Write + Send>, sink: Sink) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, first);
    while let Ok(mut msg) = rx.recv() {
        loop {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Msg::Reopen => {
                    let _ = out.flush();
                    match sink() {
                        Ok(w) => out = std::io::BufWriter::with_capacity(64 * 1024, w),
                        Err(e) => tracing::error!("access log: cannot reopen: {e}"),
                    }
                }
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

fn combined(r: &Record) -> String {
    let mut line = String::with_capacity(256);
    let time = r
        .time
        .map(httpdate::fmt_http_date)
        .unwrap_or_else(|| "-".into());
    let client = r
        .client
        .map_or_else(|| "-".to_string(), |c| c.ip().to_string());
    let _ = write!(
        line,
        "{client} - - [{time}] \"{} {} {:?}\" {} {} \"{}\" \"{}\"",
        r.method,
        escape(&r.target),
        r.version,
        r.status.as_u16(),
        r.bytes,
        escape(r.referer.as_deref().unwrap_or("-")),
        escape(r.user_agent.as_deref().unwrap_or("-")),
    );
    let duration = r.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let _ = write!(line, " rt={duration:.6}");
    match &r.upstream {
        Some(u) => {
            let _ = write!(line, " upstream={u}");
        }
        None => line.push_str(" upstream=-"),
    }
    match r.upstream_time {
        Some(t) => {
            let _ = write!(line, " urt={:.6}", t.as_secs_f64());
        }
        None => line.push_str(" urt=-"),
    }
    let _ = write!(
        line,
        " scheme={} tls={} cache={}",
        r.scheme(),
        r.tls.map_or("-", |v| v.as_str()),
        r.cache.map_or("-", |c| c.reason())
    );
    let _ = write!(
        line,
        " rid=\"{}\" trace={}",
        escape(r.request_id.as_deref().unwrap_or("-")),
        r.trace_id.as_deref().unwrap_or("-")
    );
    if !r.complete {
        line.push_str(" incomplete");
    }
    if let Some(e) = &r.error {
        let _ = write!(line, " error=\"{}\"", escape(e));
    }
    line.push('\n');
    line
}

fn json(r: &Record) -> String {
    let value = serde_json::json!({
        "time": r.time.map(httpdate::fmt_http_date),
        "client": r.client.map(|c| c.ip().to_string()),
        "method": r.method.as_str(),
        "target": r.target,
        "protocol": format!("{:?}", r.version),
        "scheme": r.scheme(),
        "tls": r.tls.map(|v| v.as_str()),
        "status": r.status.as_u16(),
        "bytes": r.bytes,
        "duration": r.start.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        "referer": r.referer,
        "user_agent": r.user_agent,
        "upstream": r.upstream.as_ref().map(|u| u.to_string()),
        "upstream_time": r.upstream_time.map(|t| t.as_secs_f64()),
        "complete": r.complete,
        "cache": r.cache.map(|c| c.reason()),
        "error": r.error,
        "request_id": r.request_id,
        "trace_id": r.trace_id,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Escapes quotes, backslashes and control bytes so a line can't be forged by a request.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_line_escapes() {
        let r = Record {
            target: "/a\"b\n".into(),
            status: http::StatusCode::OK,
            bytes: 5,
            complete: true,
            ..Default::default()
        };
        let line = combined(&r);
        assert!(
            line.contains("\"GET /a\\\"b\\x0a HTTP/1.1\" 200 5"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(" scheme=http tls=- cache=-"), "{line}");
    }

    #[test]
    fn tls_version_and_scheme_logged() {
        let r = Record {
            status: http::StatusCode::OK,
            complete: true,
            tls: Some(crate::config::TlsVersion::Tls13),
            ..Default::default()
        };
        assert!(combined(&r).contains(" scheme=https tls=TLSv1.3"));
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["scheme"], "https");
        assert_eq!(v["tls"], "TLSv1.3");
    }

    #[test]
    fn cache_outcome_logged_with_its_reason() {
        use crate::cache::status::{CacheStatus, Miss};
        let r = Record {
            status: http::StatusCode::OK,
            complete: true,
            cache: Some(CacheStatus::Miss(Miss::Expired)),
            ..Default::default()
        };
        assert!(
            combined(&r).contains(" cache=miss-expired"),
            "{}",
            combined(&r)
        );
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["cache"], "miss-expired");
    }

    #[test]
    fn json_line_parses() {
        let r = Record {
            status: http::StatusCode::NOT_FOUND,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["status"], 404);
    }
}
