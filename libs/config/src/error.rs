//! The one configuration error: which variable, and what is wrong with it.

/// A variable that is missing, malformed or inconsistent with another. Its message shows the
/// offending value unless the variable holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The variable to fix, e.g. `WORKER_CONCURRENCY`.
    pub variable: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.into(),
            message: message.into(),
        }
    }
}
