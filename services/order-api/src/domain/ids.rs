//! The ids in the paths of the `GET` routes. An id that cannot exist is answered like an
//! unknown one (`404`, as the README's error table says for a malformed id) before it reaches
//! the database or Redis: PostgreSQL refuses NUL in text, and a key of megabytes is no key.

/// A Celery task id: 1 to 255 characters, no control character. Celery makes them UUIDs, but a
/// producer may choose its own (`apply_async(task_id=…)`), so no stricter format is assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(String);

const MAX_TASK_ID: usize = 255;

impl TaskId {
    /// `None` for an id no task can have.
    pub fn parse(raw: &str) -> Option<TaskId> {
        let fits = !raw.is_empty() && raw.chars().nth(MAX_TASK_ID).is_none();
        (fits && !raw.chars().any(char::is_control)).then(|| TaskId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_no_task_can_have_are_refused() {
        assert!(TaskId::parse("d2f1c6a0-0b1e-4c1e-9a57-2b6f0c1d9e11").is_some());
        assert!(TaskId::parse("my-own id").is_some());
        for bad in ["", "a\u{0}b", "a\nb", &"x".repeat(256)] {
            assert!(TaskId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
