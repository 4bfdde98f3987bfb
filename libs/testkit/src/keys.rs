//! API keys for tests: a fresh key with the scopes a test needs, and its `API_KEYS` entry, so a
//! service under test admits it without any table or CLI.

use shopfds_auth::{AuthSettings, ConfiguredKey, NewKey, Scope, Scopes};

/// A generated key: `key` to send (`Authorization: Bearer <key>`), `entry` for `API_KEYS`.
#[derive(Clone)]
pub struct TestKey {
    pub id: String,
    pub key: String,
    pub entry: String,
    configured: ConfiguredKey,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TestKey({}: {})",
            self.id,
            self.configured.scopes.join(",")
        )
    }
}

impl TestKey {
    pub fn new(scopes: &[Scope]) -> TestKey {
        let new = NewKey::generate();
        let configured = ConfiguredKey {
            id: new.id.clone(),
            scopes: Scopes::new(scopes.iter().copied()),
            hash: new.hash,
        };
        TestKey {
            id: new.id,
            key: new.key.expose().to_owned(),
            entry: configured.entry(),
            configured,
        }
    }

    /// `Bearer <key>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }
}

/// The value of `API_KEYS` admitting `keys`.
pub fn api_keys_var(keys: &[&TestKey]) -> String {
    keys.iter()
        .map(|k| k.entry.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Settings admitting `keys` (default cache period).
pub fn auth_settings(keys: &[&TestKey]) -> AuthSettings {
    AuthSettings {
        keys: keys.iter().map(|k| k.configured.clone()).collect(),
        ..AuthSettings::default()
    }
}
