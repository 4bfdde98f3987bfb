//! [`Authenticator`]: from a presented key to a [`Principal`], or a refusal.
//!
//! A key is looked up by its public id: first among the `API_KEYS` entries (no I/O), then in the
//! `api_keys` table. A database answer — the key, or that there is none — is cached for
//! `API_KEYS_CACHE_SECS`, so a revoke takes effect within that bound and a flood of requests
//! costs one query per key id and period. Only then is the presented key's SHA-256 compared with
//! the stored one, in constant time. Every refusal looks the same to the caller (unknown id,
//! wrong secret, revoked, malformed): nothing tells a guesser which part was right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shopfds_store::{ApiKeyRecord, ApiKeys};

use crate::key::{KeyHash, PresentedKey};
use crate::scope::{Scope, Scopes};
use crate::settings::AuthSettings;

/// Database answers kept at most; past it the expired ones are dropped, and if that is not
/// enough, all (random key ids must not grow the cache without bound).
const MAX_CACHED: usize = 10_000;

/// Who is calling: the key's id (for logs and to scope idempotency keys), its name and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub scopes: Scopes,
}

impl Principal {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.allows(scope)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("no API key: send Authorization: Bearer <key>")]
    Missing,
    /// Malformed, unknown, wrong or revoked: the same answer for each.
    #[error("the API key is not valid")]
    Invalid,
    /// The key is not configured and the database did not answer: unknown, not refused.
    #[error("API keys cannot be checked right now")]
    Unavailable,
}

#[derive(Clone)]
struct Known {
    name: String,
    scopes: Scopes,
    hash: KeyHash,
}

struct Cached {
    known: Option<Known>,
    at: Instant,
}

/// Cheap to clone; every clone shares the cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    configured: HashMap<String, Known>,
    table: Option<ApiKeys>,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Authenticator({} configured keys, table: {})",
            self.inner.configured.len(),
            self.inner.table.is_some()
        )
    }
}

impl Authenticator {
    /// Keys from `settings` (`API_KEYS`) and, when `table` is given, the `api_keys` table.
    pub fn new(settings: &AuthSettings, table: Option<ApiKeys>) -> Authenticator {
        let configured = settings
            .keys
            .iter()
            .map(|k| {
                (
                    k.id.clone(),
                    Known {
                        name: format!("API_KEYS {}", k.id),
                        scopes: k.scopes,
                        hash: k.hash.clone(),
                    },
                )
            })
            .collect();
        Authenticator {
            inner: Arc::new(Inner {
                configured,
                table,
                ttl: settings.cache_ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The value of an `Authorization` header (HTTP or gRPC metadata), checked.
    pub async fn authenticate_header(&self, value: Option<&str>) -> Result<Principal, AuthError> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let Some(value) = value else {
            return Err(AuthError::Missing);
        };
        let key = bearer(value).ok_or(AuthError::Invalid)?;
        self.authenticate(key).await
    }

    /// A key, checked.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let presented = PresentedKey::parse(key.trim()).ok_or(AuthError::Invalid)?;
        let known = match self.inner.configured.get(presented.id) {
            Some(known) => Some(known.clone()),
            None => self.in_table(presented.id).await?,
        };
        let known = known.ok_or(AuthError::Invalid)?;
        if !known.hash.matches(&presented.hash()) {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            key_id: presented.id.to_owned(),
            name: known.name,
            scopes: known.scopes,
        })
    }

    async fn in_table(&self, id: &str) -> Result<Option<Known>, AuthError> {
        let Some(table) = &self.inner.table else {
            return Ok(None);
        };
        if let Some(known) = self.cached(id) {
            return Ok(known);
        }
        let record = table.find(id).await.map_err(|e| {
            tracing::warn!(error = %e, "API key lookup failed");
            AuthError::Unavailable
        })?;
        let known = record.and_then(known_from_record);
        self.remember(id, known.clone());
        Ok(known)
    }

    fn cached(&self, id: &str) -> Option<Option<Known>> {
        let cache = match self.inner.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache
            .get(id)
            .filter(|c| c.at.elapsed() < self.inner.ttl)
            .map(|c| c.known.clone())
    }

    fn remember(&self, id: &str, known: Option<Known>) {
        let mut cache = match self.inner.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.len() >= MAX_CACHED {
            let ttl = self.inner.ttl;
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            id.to_owned(),
            Cached {
                known,
                at: Instant::now(),
            },
        );
    }
}

/// A stored key that may be used: not revoked, a well-formed hash, scope names we know (an
/// unknown name is dropped, never widened).
fn known_from_record(record: ApiKeyRecord) -> Option<Known> {
    if record.revoked_at.is_some() {
        return None;
    }
    let hash = KeyHash::from_hex(&record.hash)?;
    let scopes = Scopes::new(record.scopes.iter().filter_map(|name| {
        let scope = name.parse().ok();
        if scope.is_none() {
            tracing::warn!(key_id = %record.id, scope = %name, "unknown scope in api_keys ignored");
        }
        scope
    }));
    Some(Known {
        name: record.name,
        scopes,
        hash,
    })
}

/// The key of `Bearer <key>` (the scheme is case-insensitive, RFC 9110 §11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(key.trim())
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NewKey;
    use crate::settings::ConfiguredKey;

    fn with_key(scopes: Scopes) -> (Authenticator, NewKey) {
        let key = NewKey::generate();
        let settings = AuthSettings {
            keys: vec![ConfiguredKey {
                id: key.id.clone(),
                scopes,
                hash: key.hash.clone(),
            }],
            ..AuthSettings::default()
        };
        (Authenticator::new(&settings, None), key)
    }

    #[tokio::test]
    async fn a_configured_key_is_accepted_and_a_wrong_secret_is_not() {
        let (auth, key) = with_key(Scopes::new([Scope::OrdersRead]));
        let header = format!("Bearer {}", key.key.expose());
        let principal = auth.authenticate_header(Some(&header)).await.unwrap();
        assert_eq!(principal.key_id, key.id);
        assert!(principal.allows(Scope::OrdersRead));
        assert!(!principal.allows(Scope::OrdersWrite));
        let lower = format!("bearer {}", key.key.expose());
        assert!(auth.authenticate_header(Some(&lower)).await.is_ok());

        let mut wrong = key.key.expose().to_owned();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert_eq!(auth.authenticate(&wrong).await, Err(AuthError::Invalid));
        let other = NewKey::generate();
        assert_eq!(
            auth.authenticate(other.key.expose()).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.authenticate_header(None).await,
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.authenticate_header(Some(&format!("Basic {}", key.key.expose())))
                .await,
            Err(AuthError::Invalid)
        );
    }
}
