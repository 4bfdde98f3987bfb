//! `update_threat_intelligence(url=None)`: fetches the threat-intelligence feed, validates it,
//! stores it as a new version in PostgreSQL (`threat_intel`) and swaps it into this replica's
//! engine; [`spawn_reloader`] brings every other replica to the newest stored version.
//!
//! The feed is JSON: `{"ips": ["203.0.113.0/24", "198.51.100.7", …], "email_domains":
//! ["mailinator.com", …]}` (other top-level keys are ignored; at least one of the two lists must
//! be there). One bad entry refuses the whole feed (a permanent error naming the entry): the
//! indicators in force stay. HTTP 5xx, 408, 429, timeouts and connection errors are transient.
//! Only one replica runs the task (beat publishes one message an hour); the database is how the
//! others learn the result.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::TaskError;
use shopfds_protocol::payloads::UpdateThreatIntelligence;
use shopfds_store::{Store, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, IntelSnapshot, IpRange};
use crate::tasks::TasksSettings;

/// Feeds larger than this are refused (a misconfigured URL serving something else).
pub const MAX_FEED_BYTES: usize = 16 * 1024 * 1024;

/// Stored versions kept (older ones are deleted when a new one is written).
pub const KEEP_VERSIONS: i64 = 48;

/// A feed that passed validation: the engine's snapshot and its normalized JSON (sorted,
/// deduplicated, canonical spelling), which is what is stored and compared.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidFeed {
    pub snapshot: IntelSnapshot,
    pub json: Value,
}

/// Why a feed document was refused; names the entry (`ips[3]: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threat intel feed refused: {0}")]
pub struct InvalidFeed(pub String);

/// Validates a feed document.
pub fn parse_feed(body: &[u8]) -> Result<ValidFeed, InvalidFeed> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| InvalidFeed(format!("not valid JSON: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(InvalidFeed("not a JSON object".to_owned()));
    };
    if !doc.contains_key("ips") && !doc.contains_key("email_domains") {
        return Err(InvalidFeed(
            "neither `ips` nor `email_domains` is present".to_owned(),
        ));
    }
    let mut ips = BTreeSet::new();
    for (i, entry) in strings(&doc, "ips")?.into_iter().enumerate() {
        let range: IpRange = entry
            .parse()
            .map_err(|e: String| InvalidFeed(format!("ips[{i}]: {e}")))?;
        ips.insert(String::from(range));
    }
    let mut domains = BTreeSet::new();
    for (i, entry) in strings(&doc, "email_domains")?.into_iter().enumerate() {
        let domain = normalize_domain(entry)
            .map_err(|e| InvalidFeed(format!("email_domains[{i}]: {entry:?} {e}")))?;
        domains.insert(domain);
    }
    let mut ranges = Vec::with_capacity(ips.len());
    for ip in &ips {
        // Canonical spellings of ranges that parsed above: parsing them again cannot fail.
        ranges.push(
            ip.parse::<IpRange>()
                .map_err(|e| InvalidFeed(format!("ips: {e}")))?,
        );
    }
    Ok(ValidFeed {
        snapshot: IntelSnapshot::new(ranges, domains.iter()),
        json: json!({"ips": ips, "email_domains": domains}),
    })
}

fn strings<'a>(
    doc: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a str>, InvalidFeed> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| InvalidFeed(format!("{key}[{i}]: {v} is not a string")))
            })
            .collect(),
        Some(other) => Err(InvalidFeed(format!("{key}: {other} is not an array"))),
    }
}

/// A host name as an email domain: lower case, without a leading `@` or `.`, labels of letters,
/// digits and inner hyphens, at least two labels.
fn normalize_domain(raw: &str) -> Result<String, &'static str> {
    let domain = raw
        .trim()
        .trim_start_matches(['@', '.'])
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return Err("is not a domain name (empty or longer than 253 characters)");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("is not a domain name (needs at least two labels)");
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !labels.iter().all(label_ok) {
        return Err("is not a domain name (labels are letters, digits and inner hyphens)");
    }
    Ok(domain)
}

/// A URL without its query and credentials, safe to log and store (feed URLs often carry an API
/// key).
pub fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Fetches and validates the feed at `url`.
pub async fn fetch_feed(url: &reqwest::Url, timeout: Duration) -> Result<ValidFeed, TaskError> {
    let shown = redact(url);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("shopfds-fds-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TaskError::permanent(format!("HTTP client: {e}")))?;
    let unavailable =
        |e: reqwest::Error| TaskError::transient(format!("threat intel feed {shown}: {e}"));
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(unavailable)?;
    let status = response.status();
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        return Err(TaskError::transient(format!(
            "threat intel feed {shown} answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(TaskError::permanent(format!(
            "threat intel feed {shown} answered {status}"
        )));
    }
    let too_large = || {
        TaskError::permanent(format!(
            "threat intel feed {shown}: larger than {MAX_FEED_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_FEED_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_FEED_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    parse_feed(&body).map_err(|e| TaskError::permanent(format!("{e} (from {shown})")))
}

/// The task handler.
pub async fn run(
    UpdateThreatIntelligence { url }: UpdateThreatIntelligence,
    store: &Store,
    engine: &Engine,
    settings: &TasksSettings,
) -> Result<Value, TaskError> {
    let Some(url) = url.or_else(|| settings.threat_intel_url.clone()) else {
        return Err(TaskError::permanent(
            "no feed URL: pass `url` or set THREAT_INTEL_URL",
        ));
    };
    let url = reqwest::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| TaskError::permanent(format!("url: {url:?} is not an http(s) URL")))?;
    let feed = fetch_feed(&url, settings.threat_intel_timeout).await?;
    let source = redact(&url);
    // Stored before it is used here, so every replica converges on the same version.
    let saved = store
        .threat_intel()
        .save(&source, &feed.json, KEEP_VERSIONS)
        .await
        .map_err(shopfds_results::database_error)?;
    let ips = feed.snapshot.ips.len();
    let domains = feed.snapshot.email_domains.len();
    install(engine, feed.snapshot);
    tracing::info!(
        version = saved.version,
        changed = saved.created,
        ips,
        email_domains = domains,
        source = %source,
        "threat intelligence updated"
    );
    Ok(json!({
        "version": saved.version,
        "changed": saved.created,
        "ips": ips,
        "email_domains": domains,
        "source": source,
    }))
}

/// Puts `snapshot` in force unless it is what is in force already.
fn install(engine: &Engine, snapshot: IntelSnapshot) {
    if *engine.intel().snapshot() != snapshot {
        engine.intel().replace(snapshot);
    }
}

/// Why the stored snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("stored version {version}: {source}")]
    Invalid {
        version: i64,
        #[source]
        source: InvalidFeed,
    },
}

/// One reload step: if the newest stored version is not `loaded`, loads it into `engine`.
/// Returns the version now in force (`loaded` when nothing changed).
pub async fn reload_threat_intel(
    store: &Store,
    engine: &Engine,
    loaded: Option<i64>,
) -> Result<Option<i64>, ReloadError> {
    let newest = store.threat_intel().latest_version().await?;
    if newest.is_none() || newest == loaded {
        return Ok(loaded);
    }
    let Some(record) = store.threat_intel().latest().await? else {
        return Ok(loaded);
    };
    let bytes = serde_json::to_vec(&record.snapshot).unwrap_or_default();
    let feed = parse_feed(&bytes).map_err(|source| ReloadError::Invalid {
        version: record.version,
        source,
    })?;
    install(engine, feed.snapshot);
    tracing::debug!(
        version = record.version,
        "threat intelligence version loaded"
    );
    Ok(Some(record.version))
}

/// Loads the newest stored version at once, then checks every `settings.threat_intel_reload`
/// until `shutdown`. Errors are logged; the indicators in force stay.
pub fn spawn_reloader(
    store: Store,
    engine: Arc<Engine>,
    settings: &TasksSettings,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let every = settings.threat_intel_reload.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut loaded = None;
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match reload_threat_intel(&store, &engine, loaded).await {
                Ok(version) => loaded = version,
                Err(ReloadError::Invalid { version, source }) => {
                    tracing::error!(version, error = %source, "stored threat intelligence refused; the indicators in force stay");
                    // Not retried every tick: only a newer version is tried next.
                    loaded = Some(version);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "threat intelligence reload failed; will retry")
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_is_normalized() {
        let feed = parse_feed(
            br#"{"ips": ["203.0.113.9/24", "198.51.100.7", "2001:db8::/32", "198.51.100.7"],
                 "email_domains": ["@Mailinator.com", "guerrillamail.com."],
                 "generated_at": "2025-06-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            feed.json,
            json!({"ips": ["198.51.100.7/32", "2001:db8::/32", "203.0.113.0/24"],
                   "email_domains": ["guerrillamail.com", "mailinator.com"]})
        );
        assert_eq!(feed.snapshot.ips.len(), 3);
        assert!(
            feed.snapshot
                .matches_ip(&"203.0.113.200".parse().unwrap())
                .is_some()
        );
        assert_eq!(
            feed.snapshot.matches_domain("mx.mailinator.com"),
            Some("mailinator.com")
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        for (body, needle) in [
            (r#"{"ips": ["203.0.113.0/24", "300.1.2.3/24"]}"#, "ips[1]"),
            (r#"{"ips": ["203.0.113.0/33"]}"#, "ips[0]"),
            (
                r#"{"email_domains": ["ok.example", "bad domain.com"]}"#,
                "email_domains[1]",
            ),
            (r#"{"email_domains": ["localhost"]}"#, "email_domains[0]"),
            (r#"{"email_domains": ["-bad.example"]}"#, "email_domains[0]"),
            (r#"{"ips": [42]}"#, "ips[0]"),
            (r#"{"ips": "203.0.113.0/24"}"#, "ips"),
            (r#"{"indicators": []}"#, "neither"),
            (r#"["203.0.113.0/24"]"#, "object"),
            ("<html>", "JSON"),
        ] {
            let err = parse_feed(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let url =
            reqwest::Url::parse("https://user:pw@intel.example/feed.json?key=s3cret").unwrap();
        assert_eq!(redact(&url), "https://intel.example/feed.json");
    }
}
