//! `shopfds-results`: the result backends the worker runtime writes through
//! ([`shopfds_broker::ResultBackend`]), chosen by `RESULT_BACKEND`:
//!
//! - [`postgres`] (the default): PostgreSQL, batched. State changes are queued to one writer that
//!   coalesces them by task id and writes every queued row in one statement while the previous
//!   statement was in flight (group commit); a final state resolves once its batch committed, so
//!   the runtime acks after the commit. Chords are counted in PostgreSQL.
//!
//! The same value also serves `GET /v1/tasks/{id}`: order-api reads whichever backend is
//! configured.

pub mod postgres;
pub mod settings;

pub use postgres::{BatchSettings, PostgresBackend};
pub use settings::{BackendKind, ResultConfigError, ResultSettings};

/// The `database` check of `/readyz`: `SELECT 1` on the service's pool.
pub fn database_check(store: &shopfds_store::Store) -> shopfds_telemetry::ops::Check {
    let store = store.clone();
    shopfds_telemetry::ops::check(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    })
}

/// The PostgreSQL backend over `store` with the default batch settings (tests, tools).
pub fn postgres(store: &shopfds_store::Store) -> std::sync::Arc<dyn shopfds_broker::ResultBackend> {
    std::sync::Arc::new(PostgresBackend::new(
        store.clone(),
        BatchSettings::default(),
    ))
}
