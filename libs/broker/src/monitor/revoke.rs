//! Revoked task ids, kept where a restart cannot lose them.
//!
//! Celery keeps revokes in each worker's memory: a worker that restarts, or was offline when the
//! revoke was broadcast, runs the task anyway (celery #8888). Here a revoke is also written to a
//! [`RevokeStore`] (PostgreSQL in the services), every worker reads the store when it connects
//! and every [`SYNC_SECS`] after, and checks the set before running any task. A revoke broadcast
//! while no Rust worker listened waits in a durable queue bound to the control exchange
//! ([`super::pidbox::REVOKE_QUEUE`]) until a worker comes online and stores it; that worker then
//! broadcasts it again so stock Celery workers honour it too, and stock workers that start later
//! learn the set from the `hello` reply of Celery's start-up sync (mingle).
//!
//! A revoke lasts [`crate::WorkerSettings::revoke_expires`] (Celery's `REVOKE_EXPIRES`, 3 h by
//! default), after which the id is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

/// How often a worker reads revokes written by others.
pub const SYNC_SECS: u64 = 2;

/// How far before the newest revoke already read each read starts again.
const SYNC_OVERLAP_SECS: i64 = 60;

/// Revoked ids with when they were revoked.
pub type Revokes = Vec<(String, DateTime<Utc>)>;

/// Where revokes outlive the workers: the crate edge to a database.
pub trait RevokeStore: Send + Sync {
    /// Stores `ids` as revoked at `at`, until `expires_at`; the ids that were not stored yet.
    fn add<'a>(
        &'a self,
        ids: &'a [String],
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;

    /// The unexpired revokes stored at or after `since` (all of them for `None`), with when.
    fn since(&self, since: Option<DateTime<Utc>>) -> BoxFuture<'_, Result<Revokes, String>>;
}

/// The ids revoked, with when; shared by a worker's sessions.
pub struct Revoked {
    ids: RwLock<HashMap<String, DateTime<Utc>>>,
    expires: Duration,
    store: Option<Arc<dyn RevokeStore>>,
    /// The newest revocation time read from the store.
    synced: RwLock<Option<DateTime<Utc>>>,
}

impl Revoked {
    pub fn new(expires: Duration, store: Option<Arc<dyn RevokeStore>>) -> Revoked {
        Revoked {
            ids: RwLock::new(HashMap::new()),
            expires,
            store,
            synced: RwLock::new(None),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .read()
            .is_ok_and(|ids| !ids.is_empty() && ids.contains_key(id))
    }

    /// Revokes `ids` here and in the store; the ids the store had not seen (all of them
    /// without a store). A store that cannot be written is logged: the revoke still holds
    /// in this worker's memory, as in Celery.
    pub async fn add(&self, ids: &[String]) -> Vec<String> {
        let now = Utc::now();
        self.remember(ids.iter().map(|id| (id.clone(), now)));
        let Some(store) = &self.store else {
            return ids.to_vec();
        };
        let until =
            now + chrono::Duration::from_std(self.expires).unwrap_or(chrono::Duration::hours(3));
        match store.add(ids, now, until).await {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!(error = %e, ids = ?ids, "revoke not stored (kept in memory only)");
                Vec::new()
            }
        }
    }

    /// Reads revokes stored since the last read; the number new to this worker.
    pub async fn sync(&self) -> Result<usize, String> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        // A minute back from the newest seen: a revoke stamped earlier by a slower writer (or
        // another host's clock) but committed after that read is still found.
        let since = self
            .synced
            .read()
            .ok()
            .and_then(|s| *s)
            .map(|s| s - chrono::Duration::seconds(SYNC_OVERLAP_SECS));
        let rows = store.since(since).await?;
        if let Some(newest) = rows.iter().map(|(_, at)| *at).max()
            && let Ok(mut synced) = self.synced.write()
        {
            *synced = Some(synced.map_or(newest, |s| s.max(newest)));
        }
        let before = self.len();
        self.remember(rows);
        Ok(self.len().saturating_sub(before))
    }

    fn remember(&self, ids: impl IntoIterator<Item = (String, DateTime<Utc>)>) {
        let Ok(mut set) = self.ids.write() else {
            return;
        };
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.expires).unwrap_or(chrono::Duration::hours(3));
        set.retain(|_, at| *at > cutoff);
        for (id, at) in ids {
            set.entry(id).or_insert(at);
        }
    }

    pub fn len(&self) -> usize {
        self.ids.read().map(|ids| ids.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids, for `inspect revoked`.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ids
            .read()
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The set as Celery's `LimitedSet._data` travels in a `hello` reply: `{id: [time, id]}`.
    pub fn as_limited_set(&self) -> serde_json::Value {
        let Ok(ids) = self.ids.read() else {
            return serde_json::json!({});
        };
        ids.iter()
            .map(|(id, at)| {
                (
                    id.clone(),
                    serde_json::json!([super::event::seconds(*at), id]),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
