//! Reading a config that spans files: `${VAR}` substitution in every file, and
//! `include = ["conf.d/*.toml"]`, which merges the `upstreams`, `routes` and `listeners` of
//! more files into the including one.
//!
//! Every file's spans live in one offset space: a file's text is parsed behind as many
//! spaces as the files before it hold (TOML ignores leading blanks), so a span says both
//! which file and where, and validation (which sees one merged `FileConfig`) needs no
//! change. `Source::base` maps an offset back to its file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::env::Vars;
use super::expand::{self, Expand};
use super::file::FileConfig;
use super::{line_col, parse_hint, Problem};

/// One config file: its name in messages, its text, and the offset its spans start at.
#[derive(Debug, Clone)]
pub struct Source {
    pub origin: String,
    pub text: String,
    pub base: usize,
}

/// The top-level keys an included file may set; the process-wide sections stay in the main
/// file, so one file says how the process runs.
const INCLUDABLE: [&str; 4] = ["upstreams", "routes", "listeners", "include"];

/// Files one config may span, so a glob gone wrong cannot make torii read half a disk.
const MAX_FILES: usize = 256;

/// Largest config file read.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Largest sum of the files' sizes: bounds the padding an included file is parsed behind.
const MAX_TOTAL_BYTES: usize = 8 << 20;

/// The whole config: the merged file for validation, the merged values (substituted, for
/// `torii check --print`), and the files it came from.
pub struct Tree {
    pub file: FileConfig,
    pub table: toml::Table,
    pub sources: Vec<Source>,
}

/// Loads `text` (named `origin`, in directory `dir`; read from `path`, when it was a file)
/// and everything it includes.
///
/// # Errors
/// The sources read so far and every problem found: TOML syntax, bad `${VAR}`s, includes
/// that are missing, cyclic or set sections they may not, and names or addresses defined
/// twice.
pub fn load(
    origin: &str,
    text: &str,
    dir: Option<&Path>,
    path: Option<&Path>,
    vars: &Vars,
) -> Result<Tree, (Vec<Source>, Vec<Problem>)> {
    let mut loader = Loader {
        vars,
        sources: Vec::new(),
        next_base: 0,
        problems: Vec::new(),
        stack: path
            .and_then(|p| std::fs::canonicalize(p).ok())
            .into_iter()
            .collect(),
    };
    let root = loader.parse(origin, text.to_string(), false);
    let Some((mut file, mut table)) = root else {
        return Err((loader.sources, loader.problems));
    };
    loader.includes(&mut file, &mut table, dir);
    loader.duplicate_listeners(&file);
    if loader.problems.is_empty() {
        table.remove("include");
        Ok(Tree {
            file,
            table,
            sources: loader.sources,
        })
    } else {
        Err((loader.sources, loader.problems))
    }
}

/// `FILE:LINE:COL` of an offset in the merged offset space.
pub fn locate(sources: &[Source], offset: usize) -> String {
    match sources.iter().rev().find(|s| s.base <= offset) {
        Some(s) => {
            let (line, col) = line_col(&s.text, offset - s.base);
            format!("{}:{line}:{col}", s.origin)
        }
        None => "?".into(),
    }
}

struct Loader<'v> {
    vars: &'v Vars,
    sources: Vec<Source>,
    next_base: usize,
    problems: Vec<Problem>,
    /// Canonical paths of the files being included, outermost first (for cycles).
    stack: Vec<PathBuf>,
}

impl Loader<'_> {
    fn report(&mut self, span: Option<Range<usize>>, path: &str, message: String, hint: &str) {
        self.problems.push(Problem {
            span,
            path: path.to_string(),
            message,
            hint: Some(hint.to_string()),
        });
    }

    /// Parses one file into the typed file and the plain table, both substituted.
    fn parse(
        &mut self,
        origin: &str,
        text: String,
        included: bool,
    ) -> Option<(FileConfig, toml::Table)> {
        let base = self.next_base;
        self.next_base += text.len() + 1;
        let padded = format!("{:base$}{text}", "");
        self.sources.push(Source {
            origin: origin.to_string(),
            text,
            base,
        });
        let doc = match toml_edit::ImDocument::parse(padded.as_str()) {
            Ok(doc) => doc,
            Err(e) => {
                self.problems.push(Problem {
                    span: e.span(),
                    path: String::new(),
                    message: e.message().trim().to_string(),
                    hint: parse_hint(e.message()),
                });
                return None;
            }
        };
        if included {
            for (key, item) in doc.as_table().iter() {
                if !INCLUDABLE.contains(&key) {
                    self.report(
                        item.span(),
                        key,
                        format!("an included file cannot set `{key}`"),
                        "included files hold upstreams, routes and listeners (and may include \
                         more); keep the other sections in the main file",
                    );
                }
            }
        }
        let bad = expand::check(&doc, self.vars);
        if !bad.is_empty() {
            self.problems.extend(bad);
            return None;
        }
        let typed =
            FileConfig::deserialize(Expand::new(toml::Deserializer::new(&padded), self.vars));
        let file = match typed {
            Ok(file) => file,
            Err(e) => {
                self.problems.push(Problem {
                    span: e.span(),
                    path: String::new(),
                    message: e.message().trim().to_string(),
                    hint: parse_hint(e.message()),
                });
                return None;
            }
        };
        let table =
            toml::Table::deserialize(Expand::new(toml::Deserializer::new(&padded), self.vars))
                .unwrap_or_default();
        Some((file, table))
    }

    /// Reads the files `file` includes (relative to `dir`) and merges them into it.
    fn includes(&mut self, file: &mut FileConfig, table: &mut toml::Table, dir: Option<&Path>) {
        let Some(patterns) = file.include.take() else {
            return;
        };
        for pattern in patterns.into_inner() {
            for path in self.expand(&pattern, dir) {
                self.include(file, table, &pattern, &path);
            }
        }
    }

    /// The files one `include` entry names: a glob's matches in sorted order (none is
    /// fine), or one literal path, which must exist.
    fn expand(&mut self, pattern: &Spanned<String>, dir: Option<&Path>) -> Vec<PathBuf> {
        let written = Path::new(pattern.get_ref());
        let full = match dir {
            Some(dir) if written.is_relative() => dir.join(written),
            _ => written.to_path_buf(),
        };
        if !pattern.get_ref().contains(['*', '?', '[']) {
            return vec![full];
        }
        let Some(text) = full.to_str() else {
            self.report(
                Some(pattern.span()),
                "include",
                format!("{} is not UTF-8", full.display()),
                "use a UTF-8 path",
            );
            return Vec::new();
        };
        match glob::glob(text) {
            Ok(paths) => {
                let mut paths: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                paths.retain(|p| p.is_file());
                paths.sort();
                paths
            }
            Err(e) => {
                self.report(
                    Some(pattern.span()),
                    "include",
                    format!("{:?} is not a valid glob: {e}", pattern.get_ref()),
                    "e.g. include = [\"conf.d/*.toml\"]",
                );
                Vec::new()
            }
        }
    }

    fn include(
        &mut self,
        file: &mut FileConfig,
        table: &mut toml::Table,
        pattern: &Spanned<String>,
        path: &Path,
    ) {
        let span = Some(pattern.span());
        let read = std::fs::canonicalize(path).and_then(|canonical| {
            // Read through `take`: a device or FIFO reports no length and may never end.
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(&canonical)?
                .take(MAX_FILE_BYTES + 1)
                .read_to_string(&mut text)?;
            if text.len() as u64 > MAX_FILE_BYTES {
                return Err(std::io::Error::other(format!(
                    "larger than {} MiB",
                    MAX_FILE_BYTES >> 20
                )));
            }
            Ok((text, canonical))
        });
        let (text, canonical) = match read {
            Ok(read) => read,
            Err(e) => {
                self.report(
                    span,
                    "include",
                    format!("cannot read {}: {e}", path.display()),
                    "paths are relative to the including file; a glob (conf.d/*.toml) may \
                     match nothing, a plain path must exist",
                );
                return;
            }
        };
        if self.stack.contains(&canonical) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            self.report(
                span,
                "include",
                format!("include cycle: {}", chain.join(" -> ")),
                "a file cannot include itself, directly or through others",
            );
            return;
        }
        if self.sources.len() >= MAX_FILES || self.next_base + text.len() > MAX_TOTAL_BYTES {
            self.report(
                span,
                "include",
                format!(
                    "more than {MAX_FILES} config files, or more than {} MiB in all",
                    MAX_TOTAL_BYTES >> 20
                ),
                "narrow the glob",
            );
            return;
        }
        let Some((mut inc, mut inc_table)) = self.parse(&path.display().to_string(), text, true)
        else {
            return;
        };
        let dir = canonical.parent().map(Path::to_path_buf);
        self.stack.push(canonical);
        self.includes(&mut inc, &mut inc_table, dir.as_deref());
        self.stack.pop();
        if let Some(dir) = &dir {
            absolute_paths(&mut inc, &mut inc_table, dir);
        }
        self.merge(file, table, inc, inc_table);
    }

    fn merge(
        &mut self,
        file: &mut FileConfig,
        table: &mut toml::Table,
        inc: FileConfig,
        mut inc_table: toml::Table,
    ) {
        for (name, section) in inc.upstreams {
            if let Some((first, _)) = file.upstreams.get_key_value(&name) {
                let first = locate(&self.sources, first.span().start);
                self.report(
                    Some(name.span()),
                    &format!("upstreams.{}", name.get_ref()),
                    format!(
                        "upstream {:?} is defined twice: here and at {first}",
                        name.get_ref()
                    ),
                    "rename one of them, or remove one",
                );
            } else {
                file.upstreams.insert(name, section);
            }
        }
        file.routes.extend(inc.routes);
        file.listeners.extend(inc.listeners);
        if let Some(toml::Value::Table(ups)) = inc_table.remove("upstreams") {
            let into = table
                .entry("upstreams")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(into) = into {
                for (k, v) in ups {
                    into.entry(k).or_insert(v);
                }
            }
        }
        for key in ["routes", "listeners"] {
            if let Some(toml::Value::Array(more)) = inc_table.remove(key) {
                let into = table
                    .entry(key)
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(into) = into {
                    into.extend(more);
                }
            }
        }
    }

    /// A listener address given twice (in `server.listen` or `[[listeners]]`, in any file);
    /// port 0 (any free port) can be given any number of times.
    fn duplicate_listeners(&mut self, file: &FileConfig) {
        let listen = file
            .server
            .as_ref()
            .and_then(|s| s.listen.as_ref())
            .map(|l| l.get_ref().iter().collect::<Vec<_>>())
            .unwrap_or_default();
        let sections = file
            .listeners
            .iter()
            .filter_map(|l| l.get_ref().addr.as_ref());
        let mut seen: HashMap<SocketAddr, Range<usize>> = HashMap::new();
        for addr in listen.into_iter().chain(sections) {
            let Some(parsed) = socket_addr(addr.get_ref()) else {
                continue; // validation reports it
            };
            if parsed.port() == 0 {
                continue; // each is its own port, chosen when bound
            }
            if let Some(first) = seen.get(&parsed) {
                let first = locate(&self.sources, first.start);
                self.report(
                    Some(addr.span()),
                    "listeners",
                    format!("listener address {parsed} is defined twice: here and at {first}"),
                    "each address is listened on once; remove one of them",
                );
            } else {
                seen.insert(parsed, addr.span());
            }
        }
    }
}

/// The address forms `validate` accepts: `IP:port` and `:port`.
fn socket_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
    }
    text.parse().ok()
}

/// Relative certificate, key and CA paths of an included file are taken from its own
/// directory: they are made absolute before the merge, as validation resolves relative
/// paths from the main file's directory.
fn absolute_paths(inc: &mut FileConfig, table: &mut toml::Table, dir: &Path) {
    let fix = |p: &mut Option<Spanned<String>>| {
        if let Some(v) = p {
            if Path::new(v.get_ref()).is_relative() {
                let joined = dir.join(v.get_ref()).display().to_string();
                *v = Spanned::new(v.span(), joined);
            }
        }
    };
    for l in &mut inc.listeners {
        if let Some(tls) = &mut l.get_mut().tls {
            let t = tls.get_mut();
            fix(&mut t.cert);
            fix(&mut t.key);
            for c in t.certs.iter_mut().flatten() {
                fix(&mut c.get_mut().cert);
                fix(&mut c.get_mut().key);
            }
        }
    }
    for u in inc.upstreams.values_mut() {
        fix(&mut u.tls_ca);
    }
    // The same in the printed values.
    let fix_value = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v {
            if Path::new(s.as_str()).is_relative() {
                *s = dir.join(s.as_str()).display().to_string();
            }
        }
    };
    if let Some(toml::Value::Array(ls)) = table.get_mut("listeners") {
        for l in ls {
            let Some(tls) = l.get_mut("tls") else {
                continue;
            };
            for key in ["cert", "key"] {
                if let Some(v) = tls.get_mut(key) {
                    fix_value(v);
                }
            }
            if let Some(toml::Value::Array(certs)) = tls.get_mut("certs") {
                for c in certs {
                    for key in ["cert", "key"] {
                        if let Some(v) = c.get_mut(key) {
                            fix_value(v);
                        }
                    }
                }
            }
        }
    }
    if let Some(toml::Value::Table(ups)) = table.get_mut("upstreams") {
        for (_, u) in ups.iter_mut() {
            if let Some(v) = u.get_mut("tls_ca") {
                fix_value(v);
            }
        }
    }
}
