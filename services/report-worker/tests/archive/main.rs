//! `archive_old_logs` against the real PostgreSQL and a local object store in a temporary
//! directory: old lines end in the archive exactly once and leave the table, newer ones stay, and
//! a run stopped between writing an object and deleting its lines is finished by the next run
//! without archiving anything twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::sync::Arc;

use chrono::{Duration, Utc};
use flate2::read::GzDecoder;
use object_store::local::LocalFileSystem;
use report_worker::tasks::archive::{PREFIX, archive_before, write_batch};
use shopfds_store::{ActivityLine, DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;

/// A line `days` old.
async fn line(store: &Store, event: &str, days: i64) -> i64 {
    shopfds_store::sqlx::query_scalar(
        "INSERT INTO activity_logs (event, details, created_at) VALUES ($1, '{}', now() - $2 * interval '1 day') RETURNING id",
    )
    .bind(event)
    .bind(days as f64)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Every line of every archive object under `dir`.
fn archived(dir: &std::path::Path) -> Vec<ActivityLine> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir.join(PREFIX)).unwrap() {
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(entry.unwrap().path()).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    lines
}

#[tokio::test]
async fn old_lines_are_archived_once_and_a_run_stopped_half_way_archives_nothing_twice() {
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let mut old = Vec::new();
    for n in 0..5 {
        old.push(line(&store, &format!("old-{n}"), 100).await);
    }
    let newer = [
        line(&store, "new-0", 1).await,
        line(&store, "new-1", 89).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let cutoff = Utc::now() - Duration::days(90);

    // A run that stops after writing its first object (3 lines), before deleting them.
    let batch = store
        .activity_logs()
        .next_batch(cutoff, 3, PREFIX)
        .await
        .unwrap()
        .expect("a batch to archive");
    let written = write_batch(&store, objects.as_ref(), &batch).await.unwrap();
    assert_eq!(written.len(), 3);
    assert_eq!(store.activity_logs().count_before(cutoff).await.unwrap(), 5);

    // The next run finishes that batch first, then archives the rest.
    let (count, paths) = archive_before(&store, objects.as_ref(), cutoff, 3)
        .await
        .unwrap();
    assert_eq!(count, 5);
    assert_eq!(paths.len(), 2, "{paths:?}");
    let mut ids: Vec<i64> = archived(dir.path()).iter().map(|l| l.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, old, "each old line in the archive exactly once");
    assert_eq!(store.activity_logs().count_before(cutoff).await.unwrap(), 0);
    let left: Vec<i64> =
        shopfds_store::sqlx::query_scalar("SELECT id FROM activity_logs ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(left, newer.to_vec(), "newer lines stay");

    // Nothing left: a third run writes nothing.
    let (count, paths) = archive_before(&store, objects.as_ref(), cutoff, 3)
        .await
        .unwrap();
    assert_eq!((count, paths.len()), (0, 0));
    store.close().await;
}
