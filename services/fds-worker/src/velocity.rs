//! The velocity counts of the Score path, kept in memory on every replica.
//!
//! Counting orders per customer, client IP and card in PostgreSQL costs a round trip and about
//! 200 µs of database CPU per Score, most of the budget of a 2 ms p99 at 5,000 calls/s. Instead
//! each replica holds the keys of the last 24 h of orders ([`VelocityIndex`]) and answers from
//! it in a few hundred nanoseconds. It stays in step with `orders` through the database itself
//! ([`sync`]):
//!
//! 1. LISTEN on `orders_new` (a trigger announces every inserted order when its transaction
//!    commits, whichever process inserted it, so every replica sees every order);
//! 2. load the keys of every order of the long window;
//! 3. from then on fetch the orders each burst of notifications names.
//!
//! A replica whose listening connection drops marks the index stale, and the Score path counts
//! in PostgreSQL (the exact query) until the window is loaded again. The only difference from
//! the query is a lag of one notification (around a millisecond) after an order commits; the
//! query cannot see an order that has not committed either, and order-api scores an order
//! before it writes it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shopfds_store::{Velocity, VelocityCounts, VelocityEntry, VelocityQuery};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics;

/// Orders older than this are forgotten (the rules' long window).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Most announced ids fetched in one query.
const FETCH_BATCH: usize = 500;

/// Pause before listening again after the database failed.
const RESYNC_BACKOFF: Duration = Duration::from_secs(1);

/// How often expired orders are dropped, and how many per write lock.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
const PRUNE_BATCH: usize = 2_000;

/// One key's orders, oldest first.
type Timeline = Vec<(i64, Uuid)>;

/// The keys of the orders of the last [`RETENTION`], and whether they are complete.
#[derive(Debug, Default)]
pub struct VelocityIndex {
    inner: RwLock<Inner>,
    /// The window is loaded and the listener is live: counts are exact (up to the lag).
    synced: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    orders: HashMap<Uuid, Stored>,
    /// Order ids in the order they were added (close to time order), for pruning.
    arrivals: VecDeque<(i64, Uuid)>,
    customers: HashMap<String, Timeline>,
    ips: HashMap<String, Timeline>,
    cards: HashMap<String, Timeline>,
}

#[derive(Debug)]
struct Stored {
    customer: String,
    ip: Option<String>,
    card: Option<String>,
}

impl VelocityIndex {
    pub fn new() -> Arc<VelocityIndex> {
        Arc::new(VelocityIndex::default())
    }

    /// Whether counts come from here (`true`) or must come from the database.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        metrics::velocity_index_synced().set(i64::from(synced));
    }

    /// Orders indexed now.
    pub fn len(&self) -> usize {
        self.read().orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counts [`Velocity::counts`] would return for `query`, or `None` while the
    /// index is not synced.
    pub fn counts(&self, query: &VelocityQuery) -> Option<VelocityCounts> {
        if !self.is_synced() {
            return None;
        }
        let short_start = micros(window_start(query.at, query.short_window));
        let long_start = micros(window_start(
            query.at,
            query.long_window.max(query.short_window),
        ));
        let exclude = query.exclude_order;
        let inner = self.read();
        let count = |map: &HashMap<String, Timeline>, key: Option<&str>| -> (i64, i64) {
            let Some(timeline) = key.filter(|k| !k.is_empty()).and_then(|k| map.get(k)) else {
                return (0, 0);
            };
            (
                count_after(timeline, short_start, exclude),
                count_after(timeline, long_start, exclude),
            )
        };
        let (customer_short, customer_long) = count(&inner.customers, Some(&query.customer_id));
        let (ip_short, ip_long) = count(&inner.ips, query.client_ip.as_deref());
        let (card_short, card_long) = count(&inner.cards, query.card_fingerprint.as_deref());
        Some(VelocityCounts {
            customer_short,
            customer_long,
            ip_short,
            ip_long,
            card_short,
            card_long,
        })
    }

    /// Adds orders not yet indexed (an order seen twice, from the load and a notification,
    /// counts once); orders older than [`RETENTION`] are left out.
    pub fn insert(&self, entries: impl IntoIterator<Item = VelocityEntry>) {
        let oldest = micros(window_start(Utc::now(), RETENTION));
        let mut inner = self.write();
        for entry in entries {
            if micros(entry.created_at) > oldest {
                inner.insert(entry);
            }
        }
        metrics::velocity_index_orders().set(gauge(inner.orders.len()));
    }

    /// Drops orders created before `cutoff`, at most `limit` of them; returns how many.
    pub fn prune(&self, cutoff: DateTime<Utc>, limit: usize) -> usize {
        let cutoff = micros(cutoff);
        let mut inner = self.write();
        let mut dropped = 0;
        while dropped < limit {
            match inner.arrivals.front() {
                Some(&(at, _)) if at <= cutoff => {}
                _ => break,
            }
            let Some((at, id)) = inner.arrivals.pop_front() else {
                break;
            };
            inner.remove(at, id);
            dropped += 1;
        }
        metrics::velocity_index_orders().set(gauge(inner.orders.len()));
        dropped
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (every mutation is a single
        // push or remove), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn insert(&mut self, entry: VelocityEntry) {
        if self.orders.contains_key(&entry.order_id) {
            return;
        }
        let at = micros(entry.created_at);
        let id = entry.order_id;
        add(&mut self.customers, &entry.customer_id, at, id);
        if let Some(ip) = &entry.client_ip {
            add(&mut self.ips, ip, at, id);
        }
        if let Some(card) = &entry.card_fingerprint {
            add(&mut self.cards, card, at, id);
        }
        self.arrivals.push_back((at, id));
        self.orders.insert(
            id,
            Stored {
                customer: entry.customer_id,
                ip: entry.client_ip,
                card: entry.card_fingerprint,
            },
        );
    }

    fn remove(&mut self, at: i64, id: Uuid) {
        let Some(stored) = self.orders.remove(&id) else {
            return;
        };
        take(&mut self.customers, &stored.customer, at, id);
        if let Some(ip) = &stored.ip {
            take(&mut self.ips, ip, at, id);
        }
        if let Some(card) = &stored.card {
            take(&mut self.cards, card, at, id);
        }
    }
}

/// Inserts keeping the timeline sorted; orders arrive nearly in time order, so this is almost
/// always a push.
fn add(map: &mut HashMap<String, Timeline>, key: &str, at: i64, id: Uuid) {
    let timeline = match map.get_mut(key) {
        Some(t) => t,
        None => map.entry(key.to_owned()).or_default(),
    };
    if timeline.last().is_none_or(|&(last, _)| last <= at) {
        timeline.push((at, id));
    } else {
        let position = timeline.partition_point(|&(t, _)| t <= at);
        timeline.insert(position, (at, id));
    }
}

fn take(map: &mut HashMap<String, Timeline>, key: &str, at: i64, id: Uuid) {
    let Some(timeline) = map.get_mut(key) else {
        return;
    };
    let from = timeline.partition_point(|&(t, _)| t < at);
    if let Some(offset) = timeline[from..].iter().position(|&(_, i)| i == id) {
        timeline.remove(from + offset);
    }
    if timeline.is_empty() {
        map.remove(key);
    }
}

/// Orders of `timeline` created after `start`, not counting `exclude`.
fn count_after(timeline: &Timeline, start: i64, exclude: Option<Uuid>) -> i64 {
    let from = timeline.partition_point(|&(t, _)| t <= start);
    let window = &timeline[from..];
    let excluded = exclude.is_some_and(|x| window.iter().any(|&(_, id)| id == x));
    gauge(window.len()) - i64::from(excluded)
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `at - window`, saturating at the earliest representable time (as the database query does).
fn window_start(at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Keeps `index` in step with `orders` until `shutdown`: listen, load the window, apply what is
/// announced; after any database error, mark the index stale and start over.
pub fn sync(
    index: Arc<VelocityIndex>,
    store: Velocity,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pruner = tokio::spawn(prune_loop(Arc::clone(&index), shutdown.clone()));
        while !shutdown.is_cancelled() {
            let outcome = tokio::select! {
                outcome = follow(&index, &store) => outcome,
                () = shutdown.cancelled() => break,
            };
            index.set_synced(false);
            if let Err(e) = outcome {
                metrics::velocity_resyncs_total().inc();
                tracing::warn!(
                    error = %e,
                    "velocity index lost its feed; counting in the database until it is reloaded"
                );
            }
            tokio::select! {
                () = tokio::time::sleep(RESYNC_BACKOFF) => {}
                () = shutdown.cancelled() => break,
            }
        }
        index.set_synced(false);
        let _ = pruner.await;
    })
}

/// One life of the feed; returns only with the error that ended it.
async fn follow(index: &VelocityIndex, store: &Velocity) -> anyhow::Result<()> {
    let mut listener = store.orders_listener().await?;
    // Listening before loading: an order committed in between is both loaded and announced, and
    // indexed once.
    let since = Utc::now() - chrono::Duration::from_std(RETENTION)?;
    let entries = store.entries_since(since).await?;
    let loaded = entries.len();
    index.insert(entries);
    index.set_synced(true);
    tracing::info!(
        orders = loaded,
        "velocity index loaded; following new orders"
    );
    // One task reads the notifications (never cancelled mid-message), the other fetches what
    // has piled up meanwhile in one query: a burst of orders costs a few queries, not one each.
    let (ids_tx, mut ids_rx) = tokio::sync::mpsc::unbounded_channel::<Uuid>();
    let receive = async move {
        loop {
            // `None`: the connection was lost, and what was announced meanwhile with it.
            let Some(notification) = listener.try_recv().await? else {
                anyhow::bail!("the orders listener lost its connection");
            };
            match Uuid::parse_str(notification.payload()) {
                Ok(id) => {
                    if ids_tx.send(id).is_err() {
                        return Ok(());
                    }
                }
                Err(_) => tracing::warn!(
                    payload = notification.payload(),
                    "ignoring an orders_new notification without an order id"
                ),
            }
        }
    };
    let apply = async {
        let mut ids = Vec::with_capacity(FETCH_BATCH);
        while ids_rx.recv_many(&mut ids, FETCH_BATCH).await > 0 {
            index.insert(store.entries(&ids).await?);
            ids.clear();
        }
        Ok(())
    };
    tokio::try_join!(receive, apply)?;
    Ok(())
}

async fn prune_loop(index: Arc<VelocityIndex>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(retention) = chrono::Duration::from_std(RETENTION) else {
            return;
        };
        let cutoff = Utc::now() - retention;
        // In slices, so a Score never waits long for the lock.
        while index.prune(cutoff, PRUNE_BATCH) == PRUNE_BATCH {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(customer: &str, ip: Option<&str>, card: Option<&str>, ago_min: i64) -> VelocityEntry {
        VelocityEntry {
            order_id: Uuid::new_v4(),
            customer_id: customer.to_owned(),
            client_ip: ip.map(str::to_owned),
            card_fingerprint: card.map(str::to_owned),
            created_at: Utc::now() - chrono::Duration::minutes(ago_min),
        }
    }

    fn query(customer: &str, ip: Option<&str>, card: Option<&str>) -> VelocityQuery {
        VelocityQuery {
            customer_id: customer.to_owned(),
            client_ip: ip.map(str::to_owned),
            card_fingerprint: card.map(str::to_owned),
            exclude_order: None,
            at: Utc::now(),
            short_window: Duration::from_secs(3600),
            long_window: RETENTION,
        }
    }

    fn synced(entries: Vec<VelocityEntry>) -> Arc<VelocityIndex> {
        let index = VelocityIndex::new();
        index.insert(entries);
        index.set_synced(true);
        index
    }

    #[test]
    fn counts_each_key_in_both_windows() {
        let index = synced(vec![
            entry("c1", Some("10.0.0.1"), Some("card-a"), 10),
            entry("c1", Some("10.0.0.1"), Some("card-a"), 30),
            entry("c1", Some("10.0.0.2"), None, 120),
            entry("c2", Some("10.0.0.1"), Some("card-a"), 300),
            entry("c1", Some("10.0.0.1"), Some("card-a"), 25 * 60),
        ]);
        let counts = index
            .counts(&query("c1", Some("10.0.0.1"), Some("card-a")))
            .expect("synced");
        assert_eq!(
            counts,
            VelocityCounts {
                customer_short: 2,
                customer_long: 3,
                ip_short: 2,
                ip_long: 3,
                card_short: 2,
                card_long: 3,
            }
        );
    }

    #[test]
    fn missing_or_empty_keys_count_zero() {
        let index = synced(vec![entry("c1", Some("10.0.0.1"), Some("card-a"), 5)]);
        let counts = index
            .counts(&query("nobody", Some(""), None))
            .expect("synced");
        assert_eq!(counts, VelocityCounts::default());
    }

    #[test]
    fn the_excluded_order_is_not_counted() {
        let scored = entry("c1", None, None, 1);
        let id = scored.order_id;
        let index = synced(vec![scored, entry("c1", None, None, 2)]);
        let mut q = query("c1", None, None);
        q.exclude_order = Some(id);
        let counts = index.counts(&q).expect("synced");
        assert_eq!((counts.customer_short, counts.customer_long), (1, 1));
    }

    #[test]
    fn an_order_seen_twice_counts_once_and_late_arrivals_stay_sorted() {
        let late = entry("c1", None, None, 90);
        let index = synced(vec![entry("c1", None, None, 5), late.clone()]);
        index.insert(vec![late, entry("c1", None, None, 50)]);
        assert_eq!(index.len(), 3);
        let counts = index.counts(&query("c1", None, None)).expect("synced");
        assert_eq!((counts.customer_short, counts.customer_long), (2, 3));
    }

    #[test]
    fn nothing_is_answered_until_synced() {
        let index = VelocityIndex::new();
        index.insert(vec![entry("c1", None, None, 5)]);
        assert_eq!(index.counts(&query("c1", None, None)), None);
    }

    #[test]
    fn orders_older_than_the_retention_are_not_indexed() {
        let index = synced(vec![entry("old", None, None, 24 * 60 + 1)]);
        assert!(index.is_empty());
    }

    #[test]
    fn pruning_forgets_old_orders_and_their_keys() {
        let index = synced(vec![
            entry("old", Some("10.0.0.9"), Some("card-z"), 60),
            entry("new", Some("10.0.0.9"), None, 5),
        ]);
        let cutoff = Utc::now() - chrono::Duration::minutes(30);
        assert_eq!(index.prune(cutoff, 10), 1);
        assert_eq!(index.len(), 1);
        let inner = index.read();
        assert!(!inner.customers.contains_key("old"));
        assert!(!inner.cards.contains_key("card-z"));
        assert_eq!(inner.ips.get("10.0.0.9").map(Vec::len), Some(1));
    }
}
