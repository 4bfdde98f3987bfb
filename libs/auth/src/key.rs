//! The key itself: `sfk_<id>_<secret>`, where `id` (16 hex digits) names the key in logs, the
//! CLI and `API_KEYS`, and `secret` is 32 random bytes (64 hex digits). Only the SHA-256 of the
//! whole key is kept anywhere; the key is shown once, when it is made.
//!
//! Why a plain SHA-256 and not a password hash (argon2, bcrypt): those are slow on purpose so
//! that guessing a human-chosen password from its hash is expensive. A key's secret is 256
//! random bits; no amount of guessing finds it, fast hash or slow, so the slowness would only
//! cost every request CPU time. The hash is compared in constant time all the same, so a
//! caller cannot learn it byte by byte from response times.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use shopfds_config::Secret;
use subtle::ConstantTimeEq;

const PREFIX: &str = "sfk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A freshly generated key: print it once, keep its [`KeyHash`].
pub struct NewKey {
    pub id: String,
    pub key: Secret,
    pub hash: KeyHash,
}

impl NewKey {
    /// A new random key from the thread-local CSPRNG (ChaCha, seeded from the operating system).
    pub fn generate() -> NewKey {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let id = hex(&id);
        let key = format!("{PREFIX}{id}_{}", hex(&secret));
        let hash = KeyHash::of(&key);
        NewKey {
            id,
            key: Secret::new(key),
            hash,
        }
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}, ***)", self.id)
    }
}

/// A key as a caller presented it: well-formed, not yet checked.
pub struct PresentedKey<'a> {
    pub id: &'a str,
    whole: &'a str,
}

impl<'a> PresentedKey<'a> {
    /// `None` unless `text` has the shape of a key (prefix, 16 hex id, 64 hex secret).
    pub fn parse(text: &'a str) -> Option<PresentedKey<'a>> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex_of = |s: &str, bytes: usize| {
            s.len() == 2 * bytes && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES))
            .then_some(PresentedKey { id, whole: text })
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.whole)
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({}, ***)", self.id)
    }
}

/// SHA-256 of a whole key. `Debug` shows only that it is a hash: a hash is not a secret the way
/// the key is, but it has no business in a log line either.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// From 64 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Option<KeyHash> {
        let text = text.trim();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(2 * i..2 * i + 2)?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(KeyHash(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Equal in time that does not depend on where the hashes differ.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(***)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_matches_its_hash() {
        let new = NewKey::generate();
        let key = new.key.expose();
        assert!(key.starts_with("sfk_"));
        assert_eq!(key.len(), 4 + 16 + 1 + 64);
        let presented = PresentedKey::parse(key).unwrap();
        assert_eq!(presented.id, new.id);
        assert!(presented.hash().matches(&new.hash));
        assert_eq!(
            KeyHash::from_hex(&new.hash.to_hex()),
            Some(new.hash.clone())
        );
        assert!(!format!("{new:?}").contains(&key[21..]));
        assert_ne!(NewKey::generate().key, new.key);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let new = NewKey::generate();
        let key = new.key.expose();
        for bad in [
            "",
            "sfk_",
            &key[..key.len() - 1],
            &key.replace("sfk_", "sk_"),
            &key.to_uppercase(),
            &format!("{key}0"),
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad}");
        }
        let other = PresentedKey::parse(key).unwrap().hash();
        assert!(!other.matches(&KeyHash::of("sfk_x")));
        assert!(KeyHash::from_hex("zz").is_none());
    }
}
