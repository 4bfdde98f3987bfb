//! The threat-intelligence feed's stored versions: one `threat_intel` row per validated feed
//! version, the newest of which every replica loads. A snapshot equal to the newest version only
//! moves its `checked_at`; one writer at a time (an advisory lock); the newest few versions are
//! kept.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One stored version of the threat-intelligence feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ThreatIntelRecord {
    pub version: i64,
    pub source: String,
    pub snapshot: serde_json::Value,
    pub fetched_at: DateTime<Utc>,
    pub checked_at: DateTime<Utc>,
}

/// What [`ThreatIntel::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedThreatIntel {
    pub version: i64,
    /// False when the newest stored version already had this content (only `checked_at` moved).
    pub created: bool,
}

repository! {
    /// The `threat_intel` table.
    ThreatIntel
}

impl ThreatIntel {
    /// Stores a validated feed snapshot as a new version, unless the newest version has the same
    /// content (then only its `checked_at` moves). Keeps the newest `keep` versions.
    pub async fn save(
        &self,
        source: &str,
        snapshot: &serde_json::Value,
        keep: i64,
    ) -> Result<SavedThreatIntel, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One writer at a time, so "same as the newest?" and the insert see the same newest row.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('threat_intel', 0))")
            .execute(&mut *tx)
            .await?;
        let newest: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT version, snapshot FROM threat_intel ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let saved = match newest {
            Some((version, stored)) if stored == *snapshot => {
                sqlx::query(
                    "UPDATE threat_intel SET checked_at = now(), source = $2 WHERE version = $1",
                )
                .bind(version)
                .bind(source)
                .execute(&mut *tx)
                .await?;
                SavedThreatIntel {
                    version,
                    created: false,
                }
            }
            _ => {
                let version = sqlx::query_scalar(
                    "INSERT INTO threat_intel (source, snapshot) VALUES ($1, $2) RETURNING version",
                )
                .bind(source)
                .bind(snapshot)
                .fetch_one(&mut *tx)
                .await?;
                SavedThreatIntel {
                    version,
                    created: true,
                }
            }
        };
        sqlx::query(
            "DELETE FROM threat_intel WHERE version NOT IN \
             (SELECT version FROM threat_intel ORDER BY version DESC LIMIT $1)",
        )
        .bind(keep.max(1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// The newest stored feed version, if any.
    pub async fn latest(&self) -> Result<Option<ThreatIntelRecord>, StoreError> {
        let record = sqlx::query_as(
            "SELECT version, source, snapshot, fetched_at, checked_at FROM threat_intel \
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(record)
    }

    /// The newest stored feed version number (a cheap poll: the primary key's last entry).
    pub async fn latest_version(&self) -> Result<Option<i64>, StoreError> {
        let version = sqlx::query_scalar("SELECT max(version) FROM threat_intel")
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }
}
