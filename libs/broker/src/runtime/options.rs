//! What a task declares about itself (Celery's `@app.task(...)` arguments) and how it can fail:
//! [`TaskOptions`], [`RetryPolicy`], [`RateLimit`], the [`TaskError`] a handler returns, and the
//! [`Hook`]s called on retry and failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a task failed, and so what the runtime does with its message.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// Worth another try (network, timeouts, SMTP 4xx, partner 5xx). `countdown` overrides the
    /// task's retry policy for this one retry.
    Transient {
        message: String,
        countdown: Option<Duration>,
    },
    /// Will fail the same way every time (invalid input, not found, SMTP 5xx): no retry, the
    /// message goes to the dead-letter queue with this reason.
    Permanent { message: String },
    /// A dependency of the worker itself (its database) could not be reached: not the task's
    /// fault, so it spends none of the task's retries. The worker stops taking messages until
    /// the dependency answers its probe again, then the message runs again (requeued).
    Unavailable { dependency: String, message: String },
}

impl TaskError {
    pub fn transient(message: impl fmt::Display) -> Self {
        TaskError::Transient {
            message: message.to_string(),
            countdown: None,
        }
    }

    pub fn permanent(message: impl fmt::Display) -> Self {
        TaskError::Permanent {
            message: message.to_string(),
        }
    }

    /// `dependency` (e.g. `database`) is unreachable: see [`TaskError::Unavailable`].
    pub fn unavailable(dependency: &str, message: impl fmt::Display) -> Self {
        TaskError::Unavailable {
            dependency: dependency.to_owned(),
            message: message.to_string(),
        }
    }

    /// A dependency's error: [`TaskError::Unavailable`] when it could not be reached
    /// (`unreachable`), else transient (the dependency answered with an error, which another
    /// try may not repeat).
    pub fn from_dependency(dependency: &str, unreachable: bool, error: impl fmt::Display) -> Self {
        if unreachable {
            TaskError::unavailable(dependency, error)
        } else {
            TaskError::transient(format!("{dependency}: {error}"))
        }
    }

    pub fn message(&self) -> &str {
        match self {
            TaskError::Transient { message, .. }
            | TaskError::Permanent { message }
            | TaskError::Unavailable { message, .. } => message,
        }
    }

    /// The `exc_type` shown in results, as a Celery user would read it.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::Transient { .. } => "TransientError",
            TaskError::Permanent { .. } => "PermanentError",
            TaskError::Unavailable { .. } => "DependencyUnavailable",
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

/// When to try again after a transient error.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// Celery's `countdown`: the same wait every time.
    Fixed(Duration),
    /// Celery's `retry_backoff`: `base × 2^retries`, capped at `max` (`retry_backoff_max`), and
    /// with `jitter` a uniformly random wait in `[0, that]` (full jitter, `retry_jitter`).
    Exponential {
        base: Duration,
        max: Duration,
        jitter: bool,
    },
}

impl RetryPolicy {
    /// The wait before retry number `retries + 1`, with a fresh random draw for the jitter.
    pub fn delay(&self, retries: u32) -> Duration {
        self.delay_at(retries, rand::random::<f64>())
    }

    /// The wait before retry number `retries + 1`, given `draw` in `[0, 1)` for the jitter (the
    /// decision step takes its randomness as an input, so it stays a pure function).
    pub fn delay_at(&self, retries: u32, draw: f64) -> Duration {
        match self {
            RetryPolicy::Fixed(d) => *d,
            RetryPolicy::Exponential { base, max, jitter } => {
                let factor = 2u32.saturating_pow(retries.min(31));
                let capped = base.saturating_mul(factor).min(*max);
                if *jitter {
                    // Uniform in [0, capped], whole milliseconds.
                    let ms = u64::try_from(capped.as_millis()).unwrap_or(u64::MAX);
                    let draw = if draw.is_finite() {
                        draw.clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    // `as` saturates: a float product beyond u64 cannot wrap.
                    let picked = ((ms as f64 + 1.0) * draw).floor() as u64;
                    Duration::from_millis(picked.min(ms))
                } else {
                    capped
                }
            }
        }
    }
}

/// Celery's `rate_limit` ("10/s", "100/m", "1000/h"): at most `count` starts of the task per
/// `per`, per worker process, spaced evenly (a token bucket holding one token, as Celery's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The time between two starts.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// Parses Celery's syntax: a positive whole number, `/`, and `s`, `m` or `h`; a bare number
    /// is per second, as in Celery.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: u32 = count.trim().parse().map_err(|_| {
            format!("rate limit {text:?}: expected <tasks>/<s|m|h>, e.g. \"10/s\" or \"100/m\"")
        })?;
        if count == 0 {
            return Err(format!(
                "rate limit {text:?}: the number of tasks must be at least 1"
            ));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "rate limit {text:?}: unknown unit {other:?} (use s, m or h)"
                ));
            }
        };
        Ok(RateLimit { count, per })
    }
}

/// What an `on_retry` or `on_failure` hook is told.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub task_id: String,
    pub task: String,
    pub queue: String,
    /// The handler's error (for a hard time limit, a permanent `TimeLimitExceeded` error).
    pub error: TaskError,
    /// Retries done before this attempt (the message's `retries` header).
    pub retries: u32,
    /// `on_retry`: the wait before the next attempt. `on_failure`: none.
    pub retry_in: Option<Duration>,
    /// `on_failure`: the reason written to the dead letter (`x-shopfds-reason`).
    pub reason: String,
}

/// A callback declared next to a handler (Celery's `on_retry` / `on_failure`), for error
/// reporting or metrics of one's own. It runs on the worker's task, so it must be quick; a hook
/// that panics is logged and does not change what happens to the message.
#[derive(Clone)]
pub struct Hook(Arc<dyn Fn(&TaskFailure) + Send + Sync>);

impl Hook {
    pub fn new(f: impl Fn(&TaskFailure) + Send + Sync + 'static) -> Self {
        Hook(Arc::new(f))
    }

    pub(crate) fn call(&self, event: &TaskFailure, which: &str) {
        let f = &self.0;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(event))).is_err() {
            tracing::error!(hook = which, task_id = %event.task_id, "task hook panicked");
        }
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook(..)")
    }
}

impl PartialEq for Hook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Options declared next to a handler (Celery's `@app.task(...)` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// Don't write states and results for this task (fire-and-forget, for throughput). Celery's
    /// `ignore_result`; a message's `ignore_result` header has the same effect. Nothing is
    /// written at all, failures included (Celery's `store_errors_even_if_ignored=False`); the
    /// dead-letter queue and the `on_failure` hook still see failures.
    pub ignore_result: bool,
    /// Override the worker's default limits (a message's own `timelimit` header wins).
    pub time_limit: Option<Duration>,
    pub soft_time_limit: Option<Duration>,
    /// Celery's `rate_limit`: starts of this task per worker process. A message waiting for its
    /// turn holds a concurrency slot, as in Celery.
    pub rate_limit: Option<RateLimit>,
    /// Celery's `track_started`: record STARTED when the task begins (one more write per task).
    /// Off by default, as in Celery: a plain task costs one write, its final state.
    pub track_started: bool,
    /// Called after a retry was scheduled.
    pub on_retry: Option<Hook>,
    /// Called when the task failed for good (permanent error, retries spent, hard time limit),
    /// after its FAILURE was recorded and before its message goes to the dead-letter queue.
    pub on_failure: Option<Hook>,
}

impl Default for TaskOptions {
    /// The seed's email task: 3 retries, 60 s apart.
    fn default() -> Self {
        TaskOptions {
            max_retries: 3,
            retry: RetryPolicy::Fixed(Duration::from_secs(60)),
            ignore_result: false,
            time_limit: None,
            soft_time_limit: None,
            rate_limit: None,
            track_started: false,
            on_retry: None,
            on_failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: false,
        };
        let waits: Vec<u64> = (0..5).map(|r| p.delay(r).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16]);
        assert_eq!(p.delay(20), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_capped_delay() {
        let p = RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: true,
        };
        assert_eq!(p.delay_at(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay_at(3, 0.5), Duration::from_millis(4000));
        assert_eq!(p.delay_at(3, 0.999_999_9), Duration::from_secs(8));
        assert_eq!(p.delay_at(3, f64::NAN), Duration::ZERO);
        let samples: Vec<Duration> = (0..200).map(|_| p.delay(3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(samples.iter().any(|d| *d < Duration::from_secs(4)));
    }

    #[test]
    fn rate_limits_parse_celery_syntax() {
        let r: RateLimit = "10/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(100));
        let r: RateLimit = "100/m".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(600));
        assert_eq!(
            "5".parse::<RateLimit>().unwrap().per,
            Duration::from_secs(1)
        );
        assert!("0/s".parse::<RateLimit>().is_err());
        assert!("ten/s".parse::<RateLimit>().is_err());
        assert!("1/d".parse::<RateLimit>().is_err());
    }
}
