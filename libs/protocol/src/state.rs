//! Celery task states, spelled as Celery spells them so a Python `AsyncResult` and our result
//! store agree on every value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task's state. `Progress` is the custom state Celery users set with
/// `update_state(state="PROGRESS", meta=…)`; it is a first-class value here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Received,
    Started,
    Progress,
    Retry,
    Success,
    Failure,
    Revoked,
    Rejected,
}

impl TaskState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Progress => "PROGRESS",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
        }
    }

    /// Ready states never change again (Celery's `READY_STATES`, plus our dead-letter `REJECTED`).
    pub const fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked | TaskState::Rejected
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown task state {0:?}")]
pub struct UnknownTaskState(pub String);

impl FromStr for TaskState {
    type Err = UnknownTaskState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "PROGRESS" => TaskState::Progress,
            "RETRY" => TaskState::Retry,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            other => return Err(UnknownTaskState(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_state_through_its_celery_spelling() {
        for s in [
            TaskState::Pending,
            TaskState::Received,
            TaskState::Started,
            TaskState::Progress,
            TaskState::Retry,
            TaskState::Success,
            TaskState::Failure,
            TaskState::Revoked,
            TaskState::Rejected,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>().ok(), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert!("started".parse::<TaskState>().is_err());
    }
}
