//! Rate limits shared by every replica: at most `limit` calls per second under one name, counted
//! in the database, so twenty workers together stay within what a partner allows.
//!
//! A call asks for a slot in the current second (the database's clock): one upsert counts it and
//! answers how many were asked for in that second. Within the limit it may go; past it the
//! caller is told how long until the next second, waits, and asks again. Windows older than a
//! minute are deleted by the first caller of each new window.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

repository! {
    /// The `rate_limit_windows` table.
    RateLimits
}

impl Store {
    /// Rate limits shared by every replica.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits::new(self.pool.clone())
    }
}

/// The answer to one request for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Go now; the slot is one of the second starting at `window` (the database's clock).
    Granted { window: DateTime<Utc> },
    /// The second is full: ask again after this long.
    Wait(Duration),
}

impl RateLimits {
    /// Asks for one call under `name`, at most `per_second` per second over all replicas.
    pub async fn acquire(&self, name: &str, per_second: u32) -> Result<Slot, StoreError> {
        let (used, window_start, now): (i32, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO rate_limit_windows (name, window_start, used) \
             VALUES ($1, date_trunc('second', clock_timestamp()), 1) \
             ON CONFLICT (name, window_start) \
             DO UPDATE SET used = rate_limit_windows.used + 1 \
             RETURNING used, window_start, clock_timestamp()",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        if used == 1 {
            sqlx::query(
                "DELETE FROM rate_limit_windows \
                 WHERE name = $1 AND window_start < now() - interval '1 minute'",
            )
            .bind(name)
            .execute(&self.pool)
            .await?;
        }
        if i64::from(used) <= i64::from(per_second) {
            return Ok(Slot::Granted {
                window: window_start,
            });
        }
        let next = window_start + chrono::Duration::seconds(1);
        let wait = (next - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1));
        Ok(Slot::Wait(wait))
    }
}
