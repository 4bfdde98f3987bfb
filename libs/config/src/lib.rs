//! The one settings reader of every ShopFDS binary.
//!
//! Each binary reads its configuration from environment variables through one [`Env`]: every
//! value is trimmed (an exported-but-empty variable, `FOO=` in a compose file, means "not set"),
//! parsed by the same rules, and a bad value is one [`ConfigError`] naming the variable. The
//! reader records the name of every variable it was asked for, so a test can hold each binary's
//! settings against the README's configuration table ([`Env::variables`]).
//!
//! Passwords and keys are [`Secret`]s and URLs that may carry a password are [`SecretUrl`]s: their
//! `Debug` and `Display` never show the secret, so `{:?}` of a settings struct is safe to log.

mod env;
mod error;
mod secret;

pub use env::Env;
pub use error::ConfigError;
pub use secret::{Secret, SecretUrl, redact_url, split_url_list};
