//! HTTP routes of the public API.

pub mod orders;
pub mod reports;
pub mod tasks;

/// An id from a path as an error message may quote it: at most 64 characters, so a huge path
/// is not echoed back.
fn shown(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", raw.get(..end).unwrap_or_default()),
        None => raw.to_owned(),
    }
}
