//! Step 1, "Fetching data...": the period's orders, summed in SQL by the store
//! (`shopfds_store::sales`): per day, currency and status, and the best products per currency.
//! A database that cannot be reached is the worker's outage (the message waits for it); any
//! other database error is retried.

use shopfds_broker::TaskError;
use shopfds_results::database_error as database;
use shopfds_store::{SalesData, Store};

use super::period::{Period, TIME_ZONE};

/// Products listed per currency.
pub const TOP_PRODUCTS: i64 = 10;

pub async fn fetch(store: &Store, period: &Period) -> Result<SalesData, TaskError> {
    store
        .sales()
        .period(period.start, period.end, TIME_ZONE, TOP_PRODUCTS)
        .await
        .map_err(database)
}
