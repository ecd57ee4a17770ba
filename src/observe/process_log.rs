//! torii's own log on stderr (not the access log): text, coloured only when stderr is a
//! terminal (and `NO_COLOR` is unset), or one JSON object per line.
//!
//! Precedence: `TORII_LOG_FORMAT` (`text` | `json`) > `server.log_format` > text. The level
//! filter is `TORII_LOG` (e.g. `info`, `torii=debug`), default `info`. Set once at start; a
//! reload does not change it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::ProcessLogFormat;

/// The format to use: `TORII_LOG_FORMAT` when it is set to a known value, else `file`.
/// An unknown `TORII_LOG_FORMAT` is returned as `Err` so the caller can say so.
pub fn format(file: Option<ProcessLogFormat>) -> Result<ProcessLogFormat, String> {
    match std::env::var("TORII_LOG_FORMAT") {
        Ok(v) if !v.trim().is_empty() => ProcessLogFormat::parse(v.trim())
            .ok_or_else(|| format!("TORII_LOG_FORMAT={v:?}: use \"text\" or \"json\"")),
        _ => Ok(file.unwrap_or_default()),
    }
}

/// Installs the global subscriber. `file` is the config's `server.log_format`, when a
/// config was loaded. Call once; later calls do nothing.
pub fn init(file: Option<ProcessLogFormat>) {
    let (format, bad_env) = match format(file) {
        Ok(f) => (f, None),
        Err(why) => (file.unwrap_or_default(), Some(why)),
    };
    let filter = EnvFilter::try_from_env("TORII_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        ProcessLogFormat::Json => builder.json().with_ansi(false).try_init(),
        ProcessLogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
    };
    if let (Ok(()), Some(why)) = (installed, bad_env) {
        tracing::warn!("{why}; using {format:?}");
    }
}
