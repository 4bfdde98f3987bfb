//! Values that must never reach a log line, an error body or a panic message.

use std::fmt;

/// A password, API key or token. `Debug` and `Display` print `***`; the value is only reachable
/// through [`Secret::expose`], so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, to hand to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// A connection URL that may carry a password (`amqp://user:pass@host`, `redis://:pass@host`,
/// `postgres://user:pass@host/db`). `Debug` and `Display` show it with the password replaced
/// by `***` ([`redact_url`]); [`SecretUrl::expose`] gives the whole URL to the client library.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL with its password, to hand to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced, for logs and error messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:password@host…` with the password replaced by `***`; a URL with a user and no
/// password (`redis://token@host`, where the user part is the secret) has the user replaced.
/// Query parameters named like a secret (`password`, `token`, `key`, `secret`) are replaced too.
/// Anything that is not a URL with an authority comes back unchanged. A list of URLs (see
/// [`split_url_list`], e.g. a `BROKER_URL` naming several cluster nodes) has every URL redacted.
pub fn redact_url(url: &str) -> String {
    let parts = split_url_list(url);
    if parts.len() > 1 {
        // Joined with `;`, whatever separated them: the shown form is for reading, not parsing.
        return parts
            .iter()
            .map(|part| redact_one(part))
            .collect::<Vec<_>>()
            .join(";");
    }
    redact_one(url)
}

/// Splits a list of URLs as Celery's `broker_url` (`;`) or a comma-separated variable gives it:
/// `amqp://a:5672/v;amqp://b:5672/v` or `amqp://a/v, amqp://b/v`. A `;` or `,` separates only
/// where what follows (after spaces) starts a new URL (`scheme://`) or is the end, so a password
/// or query holding a comma stays whole. Parts are trimmed; empty parts (a trailing separator,
/// `a;;b`) are kept as `""` for the caller to refuse. A string without a separator is one part.
pub fn split_url_list(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in list.char_indices() {
        if c == ';' || c == ',' {
            let rest = list[i + 1..].trim_start();
            if rest.is_empty() || rest.starts_with([';', ',']) || starts_with_scheme(rest) {
                parts.push(list[start..i].trim());
                start = i + 1;
            }
        }
    }
    let last = list[start..].trim();
    if !last.is_empty() || parts.is_empty() {
        parts.push(last);
    }
    parts
}

/// Whether `text` starts with `scheme://` (RFC 3986: a letter, then letters, digits, `+-.`).
fn starts_with_scheme(text: &str) -> bool {
    let Some(end) = text.find("://") else {
        return false;
    };
    let scheme = &text[..end];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let shown_authority = match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!("{}:***{}", &authority[..colon], &authority[at..]),
            None => format!("***{}", &authority[at..]),
        },
        None => authority.to_owned(),
    };
    let tail = &rest[authority_end..];
    format!(
        "{}{}{}",
        &url[..scheme_end],
        shown_authority,
        redact_query(tail)
    )
}

fn redact_query(tail: &str) -> String {
    let Some(question) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(question + 1);
    let (query, fragment) = match query.find('#') {
        Some(hash) => query.split_at(hash),
        None => (query, ""),
    };
    let shown: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", shown.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "token", "secret", "key"]
        .iter()
        .any(|word| name.contains(word))
        && !name.starts_with("ssl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn urls_print_without_their_password() {
        let cases = [
            (
                "amqp://shop:hunter2@rabbit:5672/%2f",
                "amqp://shop:***@rabbit:5672/%2f",
            ),
            (
                "postgres://app:p%40ss@db/shop?sslmode=require",
                "postgres://app:***@db/shop?sslmode=require",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            ("rediss://hunter2@cache/0", "rediss://***@cache/0"),
            (
                "https://feed.example/list?api_key=hunter2&format=csv",
                "https://feed.example/list?api_key=***&format=csv",
            ),
            (
                "postgres://db/shop?sslmode=verify-full&sslrootcert=/ca.pem",
                "postgres://db/shop?sslmode=verify-full&sslrootcert=/ca.pem",
            ),
            ("amqp://rabbit:5672", "amqp://rabbit:5672"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            let wrapped = SecretUrl::new(url);
            assert_eq!(format!("{wrapped}"), shown);
            assert!(!format!("{wrapped:?}").contains("hunter2"));
        }
    }

    #[test]
    fn every_url_of_a_list_is_redacted() {
        let list = "amqp://shop:hunter2@r1:5672/%2f;amqp://shop:hunter3@r2:5672/%2f, \
                    amqps://shop:hunter4@r3/%2f";
        let shown = redact_url(list);
        assert_eq!(
            shown,
            "amqp://shop:***@r1:5672/%2f;amqp://shop:***@r2:5672/%2f;amqps://shop:***@r3/%2f"
        );
        assert!(!format!("{:?}", SecretUrl::new(list)).contains("hunter"));
    }

    #[test]
    fn a_url_list_splits_only_before_a_new_url() {
        assert_eq!(split_url_list("amqp://a/%2f"), vec!["amqp://a/%2f"]);
        assert_eq!(
            split_url_list("amqp://a/%2f;amqp://b/%2f"),
            vec!["amqp://a/%2f", "amqp://b/%2f"]
        );
        assert_eq!(
            split_url_list(" amqp://a/v , amqps://b/v ;amqp://c/v"),
            vec!["amqp://a/v", "amqps://b/v", "amqp://c/v"]
        );
        // A comma inside a password or a query is not a separator.
        assert_eq!(
            split_url_list("amqp://u:p,w;d@a/v?x=1,2;amqp://b/v"),
            vec!["amqp://u:p,w;d@a/v?x=1,2", "amqp://b/v"]
        );
        // A trailing separator ends the list; an empty entry in the middle is kept, to refuse.
        assert_eq!(split_url_list("amqp://a/v;"), vec!["amqp://a/v"]);
        assert_eq!(
            split_url_list("amqp://a/v;;amqp://b/v"),
            vec!["amqp://a/v", "", "amqp://b/v"]
        );
        assert_eq!(split_url_list(""), vec![""]);
        assert_eq!(split_url_list(";"), vec![""]);
    }

    #[test]
    fn a_password_with_an_at_sign_is_hidden_whole() {
        // The last '@' of the authority ends the user part.
        assert_eq!(
            redact_url("amqp://shop:a@b@rabbit/%2f"),
            "amqp://shop:***@rabbit/%2f"
        );
    }
}
