//! `${VAR}` and `${VAR:-default}` in config string values: the substitution itself, and where
//! the values come from (the process environment, or a map in tests).
//!
//! The rules, as documented in the README ("Environment variables and includes"):
//! - `${NAME}` is the value of `NAME`; an unset variable is an error.
//! - `${NAME:-default}` is the value of `NAME` when it is set and not empty, else `default`
//!   (taken literally, up to the first `}`).
//! - `$$` is a literal `$`. A `$` not followed by `{` or `$` stays as it is, so regex anchors
//!   (`^/a$`) and capture references (`$1`) need no escaping; a named capture `${name}` in a
//!   rewrite or redirect is written `$${name}`.
//! - `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.

use std::borrow::Cow;
use std::collections::HashMap;

/// Where `${NAME}` values come from.
#[derive(Debug, Clone, Default)]
pub enum Vars {
    /// The process environment (`torii run`, `torii check`, SIGHUP reload).
    #[default]
    Process,
    /// A fixed map, so tests never touch the environment.
    Map(HashMap<String, String>),
}

impl Vars {
    /// A fixed set of variables.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vars {
        Vars::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The value of `name`; an error when it is set but not UTF-8.
    fn get(&self, name: &str) -> Result<Option<String>, String> {
        match self {
            Vars::Process => match std::env::var(name) {
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            Vars::Map(map) => Ok(map.get(name).cloned()),
        }
    }
}

/// Why a string could not be substituted: the message and a hint, for `torii check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub message: String,
    pub hint: String,
}

fn fail(message: String, hint: &str) -> SubstError {
    SubstError {
        message,
        hint: hint.to_string(),
    }
}

/// `text` with every `${NAME}`, `${NAME:-default}` and `$$` replaced. Borrows when there is
/// nothing to replace (the common case: no `$` at all).
///
/// # Errors
/// An unset variable without a default, an unterminated `${`, or a bad variable name.
pub fn substitute<'a>(text: &'a str, vars: &Vars) -> Result<Cow<'a, str>, SubstError> {
    if !text.contains("${") && !text.contains("$$") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(fail(
                    format!("unterminated ${{ in {text:?}"),
                    "close it: ${NAME} or ${NAME:-default}; write $$ for a literal $",
                ));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(fail(
                    format!("${{{inner}}} does not name an environment variable"),
                    "names are letters, digits and _, not starting with a digit; a regex \
                     capture ${name} is written $${name}",
                ));
            }
            match (vars.get(name).map_err(|m| fail(m, "set it to UTF-8 text"))?, default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(fail(
                        format!("environment variable {name} is not set"),
                        &format!(
                            "set {name}, or give a default: ${{{name}:-value}}; write $$ for a literal $"
                        ),
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([("HOST", "redis.internal"), ("EMPTY", ""), ("PORT", "6380")])
    }

    fn sub(text: &str) -> Result<String, SubstError> {
        substitute(text, &vars()).map(Cow::into_owned)
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            substitute("/a$", &vars()),
            Ok(Cow::Borrowed("/a$"))
        ));
    }

    #[test]
    fn nested_in_a_longer_string() {
        assert_eq!(
            sub("redis://${HOST}:${PORT}/0").unwrap(),
            "redis://redis.internal:6380/0"
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(sub("${MISSING:-127.0.0.1}").unwrap(), "127.0.0.1");
        assert_eq!(sub("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(sub("${HOST:-x}").unwrap(), "redis.internal");
        assert_eq!(sub("${MISSING:-}").unwrap(), "");
        assert_eq!(sub("${EMPTY}").unwrap(), "");
    }

    #[test]
    fn literal_dollar() {
        assert_eq!(sub("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(sub("a$$b").unwrap(), "a$b");
        assert_eq!(sub("^/blog/(\\d+)$").unwrap(), "^/blog/(\\d+)$");
        assert_eq!(sub("/p/$1 ${HOST}").unwrap(), "/p/$1 redis.internal");
        assert_eq!(sub("$").unwrap(), "$");
    }

    #[test]
    fn unset_without_default_is_an_error() {
        let e = sub("x-${NOPE}-y").unwrap_err();
        assert_eq!(e.message, "environment variable NOPE is not set");
        assert!(e.hint.contains("${NOPE:-value}"), "{}", e.hint);
    }

    #[test]
    fn malformed() {
        assert!(sub("${HOST").unwrap_err().message.contains("unterminated"));
        assert!(sub("${}").is_err());
        assert!(sub("${1}").unwrap_err().hint.contains("$${name}"));
        assert!(sub("${A B}").is_err());
    }

    #[test]
    fn a_value_is_not_substituted_again() {
        let vars = Vars::from_pairs([("A", "${B}"), ("B", "no")]);
        assert_eq!(substitute("${A}", &vars).unwrap(), "${B}");
    }
}
