//! Rust source as tokens, enough to find `mod`, `use` and paths.

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    PathSep,
    Punct(char),
}

/// Rust source as identifiers, string literals, `::` and single punctuation, each with its
/// line; comments (doc comments included), char literals, lifetimes and numbers' dots aside.
pub(crate) fn tokenize(src: &str) -> Vec<(Tok, u32)> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    // Advances over c[from..to], counting newlines.
    let skip = |from: usize, to: usize, line: &mut u32| {
        *line += c[from..to.min(c.len())]
            .iter()
            .filter(|&&ch| ch == '\n')
            .count() as u32;
        to
    };
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        if ch.is_whitespace() {
            i = skip(i, i + 1, &mut line);
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut j = i + 2;
            let mut depth = 1;
            while j < c.len() && depth > 0 {
                if c[j] == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            i = skip(i, j, &mut line);
        } else if let Some((text, end)) = raw_string(&c, i) {
            out.push((Tok::Str(text), start_line));
            i = skip(i, end, &mut line);
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') {
            let mut j = if ch == 'b' { i + 2 } else { i + 1 };
            let begin = j;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let text: String = c[begin..j.min(c.len())].iter().collect();
            out.push((Tok::Str(text), start_line));
            i = skip(i, j + 1, &mut line);
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                // An escaped char literal: '\n', '\'', '\u{1F600}'.
                let mut j = q + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or a label: skip the name with it.
                let mut j = q + 1;
                while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_') {
                    j += 1;
                }
                i = j;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let mut j = i;
            while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_') {
                j += 1;
            }
            out.push((Tok::Ident(c[i..j].iter().collect()), line));
            i = j;
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"` at `i`: the text and the index past the literal.
fn raw_string(c: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    let begin = j + 1;
    let mut k = begin;
    while k < c.len() {
        if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
            return Some((c[begin..k].iter().collect(), k + 1 + hashes));
        }
        k += 1;
    }
    Some((c[begin..].iter().collect(), c.len()))
}

pub(crate) fn ident(t: Option<&(Tok, u32)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

pub(crate) fn is(t: Option<&(Tok, u32)>, want: &Tok) -> bool {
    t.is_some_and(|(t, _)| t == want)
}
