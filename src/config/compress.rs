//! `routes[].compress`: which responses torii compresses, and with which codings.

/// A content coding torii can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    /// The token in `Content-Encoding` / `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    pub fn from_token(token: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|c| c.token().eq_ignore_ascii_case(token))
    }

    /// Index into per-coding counters (`torii_compressions_total{coding}`).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The media types compressed by default: text, and the structured and script types
/// served as text. Images other than SVG, audio, video, fonts in WOFF2 and archives are
/// compressed already.
pub const DEFAULT_TYPES: [&str; 12] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/ld+json",
    "application/wasm",
    "image/svg+xml",
    "font/ttf",
];

/// A route's compression settings (on by default).
#[derive(Debug, Clone, PartialEq)]
pub struct Compress {
    /// The codings torii may produce, in its order of preference (ties in the client's
    /// `Accept-Encoding` weights go to the earlier one).
    pub codings: Vec<Coding>,
    /// Bodies known to be smaller are sent as they are.
    pub min_size: u64,
    /// Media types (`type/subtype` or `type/*`, lowercase) that are compressed.
    pub types: Vec<String>,
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            codings: Coding::ALL.to_vec(),
            min_size: 1024,
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        }
    }
}

impl Compress {
    /// Whether a `Content-Type` value names a type in the list (parameters ignored).
    pub fn compressible(&self, content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let Ok(essence) = std::str::from_utf8(essence) else {
            return false;
        };
        self.types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => {
                essence.len() > prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
            None => essence.eq_ignore_ascii_case(t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_by_essence_and_wildcard() {
        let c = Compress::default();
        assert!(c.compressible(b"text/html; charset=utf-8"));
        assert!(c.compressible(b"Text/CSS"));
        assert!(c.compressible(b"application/json"));
        assert!(c.compressible(b"image/svg+xml"));
        assert!(!c.compressible(b"image/png"));
        assert!(!c.compressible(b"application/octet-stream"));
        assert!(!c.compressible(b"text/"));
        assert!(!c.compressible(b""));
    }
}
