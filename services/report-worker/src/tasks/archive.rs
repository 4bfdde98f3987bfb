//! `archive_old_logs(older_than_days=90)` (queue `maintenance`): activity log lines older than the
//! cutoff written to the object store as gzip-compressed JSON lines, then deleted, batch by batch.
//!
//! Each batch is planned in the database before its object is written and finished (its lines
//! deleted, exactly those written) in one transaction after: a run stopped at any point is
//! completed by the next one, which writes the same object again, so no line is lost and none
//! is archived twice (see `shopfds_store::activity_logs`). Objects are named
//! `activity-logs/<first id>-<last id>.jsonl.gz`.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Duration as Days, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use object_store::ObjectStore;
use object_store::path::Path;
use serde_json::{Value, json};
use shopfds_broker::{Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::payloads::ArchiveOldLogs;
use shopfds_protocol::tasks::ARCHIVE_OLD_LOGS;
use shopfds_results::database_error as database;
use shopfds_store::{ActivityLine, ArchiveBatch, Store};

/// Where the archive objects go, under this prefix.
pub const PREFIX: &str = "activity-logs";

pub struct ArchiveOldLogsTask {
    pub store: Store,
    /// `STORAGE_DIR` / `STORAGE_URL`; `None`: the task is refused with the reason.
    pub objects: Option<Arc<dyn ObjectStore>>,
    /// Lines per object (`ARCHIVE_BATCH_SIZE`).
    pub batch_size: i64,
}

impl Task for ArchiveOldLogsTask {
    const NAME: &'static str = ARCHIVE_OLD_LOGS;
    type Args = ArchiveOldLogs;

    fn options(&self) -> TaskOptions {
        TaskOptions {
            max_retries: 3,
            ..TaskOptions::default()
        }
    }

    async fn run(&self, args: ArchiveOldLogs, _: TaskContext) -> Result<Value, TaskError> {
        let Some(objects) = &self.objects else {
            return Err(TaskError::permanent(
                "neither STORAGE_DIR nor STORAGE_URL is set: nowhere to archive the logs",
            ));
        };
        let cutoff = Utc::now() - Days::days(i64::from(args.older_than_days));
        let (archived, written) =
            archive_before(&self.store, objects.as_ref(), cutoff, self.batch_size).await?;
        tracing::info!(archived, objects = written.len(), %cutoff, "old activity logs archived");
        Ok(json!({
            "archived_count": archived,
            "objects": written,
            "older_than_days": args.older_than_days,
        }))
    }
}

/// Archives every line older than `cutoff`, `batch_size` per object, finishing first any batch
/// an earlier run left half-done; the lines archived and the objects written.
pub async fn archive_before(
    store: &Store,
    objects: &dyn ObjectStore,
    cutoff: DateTime<Utc>,
    batch_size: i64,
) -> Result<(usize, Vec<String>), TaskError> {
    let mut archived = 0usize;
    let mut written = Vec::new();
    while let Some(batch) = store
        .activity_logs()
        .next_batch(cutoff, batch_size, PREFIX)
        .await
        .map_err(database)?
    {
        archived += archive_batch(store, objects, &batch).await?;
        written.push(batch.path);
    }
    Ok((archived, written))
}

/// Writes `batch`'s object, then deletes exactly its lines and marks it done; the number of
/// lines archived.
pub async fn archive_batch(
    store: &Store,
    objects: &dyn ObjectStore,
    batch: &ArchiveBatch,
) -> Result<usize, TaskError> {
    let lines = write_batch(store, objects, batch).await?;
    let ids: Vec<i64> = lines.iter().map(|line| line.id).collect();
    store
        .activity_logs()
        .finish(batch, &ids)
        .await
        .map_err(database)?;
    Ok(ids.len())
}

/// Writes `batch`'s object (again, if an earlier run wrote it): the first half of
/// [`archive_batch`], public so a test can stop between the two halves.
pub async fn write_batch(
    store: &Store,
    objects: &dyn ObjectStore,
    batch: &ArchiveBatch,
) -> Result<Vec<ActivityLine>, TaskError> {
    let lines = store.activity_logs().lines(batch).await.map_err(database)?;
    let body = compress(&lines).map_err(|e| TaskError::permanent(format!("archive: {e}")))?;
    objects
        .put(&Path::from(batch.path.as_str()), body.into())
        .await
        .map_err(|e| TaskError::transient(format!("object store: {e}")))?;
    Ok(lines)
}

/// One JSON object per line, gzip-compressed.
fn compress(lines: &[ActivityLine]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        serde_json::to_writer(&mut gz, line)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}
