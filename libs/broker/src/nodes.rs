//! A broker reached through several cluster nodes. `BROKER_URL` may list them, full URLs
//! separated by `;` (Celery's `broker_url`, kombu's failover) or `,`:
//! `amqp://app:pw@rabbit-0:5672/%2f;amqp://app:pw@rabbit-1:5672/%2f`.
//!
//! The contract:
//! - [`parse`] validates every entry at start (scheme `amqp` or `amqps`, a URL lapin reads) and
//!   names `BROKER_URL` and the entry (its password redacted) when one is wrong.
//! - Every connection of the workspace goes through [`crate::amqp::connect`], which tries the
//!   nodes in order, once each, starting after the node that last gave a connection
//!   ([`NodeCursor`]): after a node is lost, the next attempt goes to the next node first, and a
//!   node that keeps failing is passed over within the same attempt.
//! - The caller's backoff ([`crate::amqp::Backoff`]) runs between whole rounds, as kombu sleeps
//!   only after a full cycle over its hosts: a dead node costs one refused connect, not a wait.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shopfds_config::{ConfigError, redact_url, split_url_list};

/// The nodes of `list` (the value of `variable`), each a URL lapin can read, in the given order.
pub fn parse(variable: &str, list: &str) -> Result<Vec<String>, ConfigError> {
    let entries = split_url_list(list);
    let count = entries.len();
    let mut nodes = Vec::with_capacity(count);
    for (i, entry) in entries.into_iter().enumerate() {
        let which = if count > 1 {
            format!("entry {} of {count}", i + 1)
        } else {
            "the URL".to_owned()
        };
        if entry.is_empty() {
            return Err(ConfigError::new(
                variable,
                format!("{which} is empty (separate the nodes' URLs with `;` or `,`)"),
            ));
        }
        if !(entry.starts_with("amqp://") || entry.starts_with("amqps://")) {
            return Err(ConfigError::new(
                variable,
                format!(
                    "{which} ({}) must start with amqp:// or amqps://",
                    redact_url(entry)
                ),
            ));
        }
        if let Err(reason) = lapin::uri::AMQPUri::from_str(entry) {
            return Err(ConfigError::new(
                variable,
                format!(
                    "{which} ({}) is not a valid URL: {reason}",
                    redact_url(entry)
                ),
            ));
        }
        nodes.push(entry.to_owned());
    }
    Ok(nodes)
}

/// The nodes of a list as given, without validation (for settings built in code; the
/// connection attempt reports what is wrong). Empty entries are skipped.
pub fn split(list: &str) -> Vec<&str> {
    let nodes: Vec<&str> = split_url_list(list)
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() { vec![list] } else { nodes }
}

/// Where the next connection attempt starts: just after the node that gave the last connection.
/// Clones share it, so the connections of one process (worker, publisher, relay) built from one
/// settings value rotate together and spread over the nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeCursor(Arc<AtomicUsize>);

impl NodeCursor {
    /// The indices of `count` nodes in the order to try them now.
    pub fn order(&self, count: usize) -> Vec<usize> {
        if count == 0 {
            return Vec::new();
        }
        let start = self.0.load(Ordering::Relaxed) % count;
        (0..count).map(|k| (start + k) % count).collect()
    }

    /// Node `index` gave a connection: the next attempt (after this connection is lost) starts
    /// with the node after it.
    pub fn connected(&self, index: usize) {
        self.0.store(index.wrapping_add(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_list_separated_by_semicolons_or_commas() {
        assert_eq!(
            parse("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").unwrap(),
            vec!["amqp://guest:guest@127.0.0.1:5672/%2f"]
        );
        let nodes = parse(
            "BROKER_URL",
            "amqp://u:p@r0:5672/%2f;amqp://u:p@r1:5673/%2f, amqps://u:p@r2:5671/%2f",
        )
        .unwrap();
        assert_eq!(
            nodes,
            vec![
                "amqp://u:p@r0:5672/%2f",
                "amqp://u:p@r1:5673/%2f",
                "amqps://u:p@r2:5671/%2f"
            ]
        );
    }

    #[test]
    fn a_bad_entry_is_named_with_the_variable_and_without_its_password() {
        let err = parse("BROKER_URL", "amqp://u:hunter2@r0/%2f;http://u:hunter2@r1/").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("BROKER_URL"), "{text}");
        assert!(text.contains("entry 2 of 2"), "{text}");
        assert!(text.contains("amqp://"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let err = parse("BROKER_URL", "amqp://r0/%2f;;amqp://r1/%2f").unwrap_err();
        assert!(err.to_string().contains("entry 2 of 3 is empty"), "{err}");
        let err = parse("BROKER_URL", "").unwrap_err();
        assert!(err.to_string().contains("the URL is empty"), "{err}");
        let err = parse("BROKER_URL", "amqp://u:hunter2@r0:notaport/%2f").unwrap_err();
        assert!(err.to_string().contains("not a valid URL"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_cursor_starts_after_the_last_good_node_and_wraps() {
        let cursor = NodeCursor::default();
        assert_eq!(cursor.order(3), vec![0, 1, 2]);
        cursor.connected(0);
        assert_eq!(cursor.order(3), vec![1, 2, 0]);
        let shared = cursor.clone();
        shared.connected(2);
        assert_eq!(cursor.order(3), vec![0, 1, 2]);
        cursor.connected(1);
        assert_eq!(cursor.order(3), vec![2, 0, 1]);
        assert_eq!(cursor.order(1), vec![0]);
        assert!(cursor.order(0).is_empty());
    }

    #[test]
    fn split_keeps_a_single_value_whole() {
        assert_eq!(split("amqp://a/%2f"), vec!["amqp://a/%2f"]);
        assert_eq!(
            split("amqp://a/v;amqp://b/v;"),
            vec!["amqp://a/v", "amqp://b/v"]
        );
        assert_eq!(split(""), vec![""]);
    }
}
