//! `torii check --print`: the effective config (after includes and `${VAR}`) as TOML, with
//! secrets redacted.

use super::model::redact;

/// Keys whose values are secrets wherever they appear (lowercase; a key containing one).
/// Header rules count: `set = { authorization = "Bearer ${TOKEN}" }`.
const SECRET_KEYS: [&str; 8] = [
    "password",
    "token",
    "secret",
    "authorization",
    "api-key",
    "api_key",
    "apikey",
    "credential",
];

/// The merged, substituted values as TOML text, secrets replaced by `***`: passwords in
/// Redis URLs (`cache.shared.redis`, as the logs show them) and any value under a key
/// naming a password, token, secret, authorization, API key or credential.
pub fn render(mut table: toml::Table) -> String {
    if let Some(toml::Value::String(urls)) = table
        .get_mut("cache")
        .and_then(|c| c.get_mut("shared"))
        .and_then(|s| s.get_mut("redis"))
    {
        *urls = urls
            .split(',')
            .map(|u| redact(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_keys(&mut table);
    let mut text =
        toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn redact_keys(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        let key = key.to_ascii_lowercase();
        if SECRET_KEYS.iter().any(|s| key.contains(s)) {
            *value = toml::Value::String("***".into());
            continue;
        }
        redact_value(value);
    }
}

fn redact_value(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => redact_keys(t),
        toml::Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_and_tokens_are_redacted() {
        let table: toml::Table = toml::from_str(
            r#"
            [cache.shared]
            redis = "rediss://app:hunter2@r1:6380,redis://:pw@r2:6379"
            [upstreams.api]
            servers = ["127.0.0.1:1"]
            auth = { token = "abc", basic_password = "x" }
            [routes.headers.request.set]
            Authorization = "Bearer xyz"
            "#,
        )
        .unwrap();
        let text = render(table);
        assert!(
            !text.contains("hunter2")
                && !text.contains("pw@")
                && !text.contains("abc")
                && !text.contains("xyz")
        );
        assert!(
            text.contains("rediss://app:***@r1:6380,redis://:***@r2:6379"),
            "{text}"
        );
        assert!(text.contains("token = \"***\""), "{text}");
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert!(back.contains_key("upstreams"));
    }
}
