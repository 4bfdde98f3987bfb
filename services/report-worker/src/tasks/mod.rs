//! The tasks this worker runs. `archive_old_logs` is the first; the report tasks are not built
//! yet (their messages are dead-lettered as unknown tasks).

pub mod archive;

use std::sync::Arc;

use object_store::ObjectStore;
use shopfds_broker::Registry;
use shopfds_store::Store;

/// Registers every task of this worker with its dependencies.
pub fn register(
    registry: &mut Registry,
    store: Store,
    objects: Option<Arc<dyn ObjectStore>>,
    batch_size: i64,
) {
    registry.task(archive::ArchiveOldLogsTask {
        store,
        objects,
        batch_size,
    });
}
