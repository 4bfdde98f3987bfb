//! `shopfds-auth`: API keys for order-api's HTTP API and fds-worker's gRPC server.
//!
//! - [`key`]: the key format `sfk_<id>_<secret>` (a public id, 32 random bytes), generated
//!   here, stored only as a SHA-256 ([`KeyHash`]) and compared in constant time;
//! - [`scope`]: `orders:write`, `orders:read`, `reports`, `fds:score`, `admin` (every scope);
//! - [`settings`]: `API_KEYS` (keys given by configuration, as hashes) and
//!   `API_KEYS_CACHE_SECS`;
//! - [`authenticator`]: a presented key to a [`Principal`] — configured keys first, then the
//!   `api_keys` table (`shopfds_store::ApiKeys`) behind a short cache, so a revoke takes effect
//!   within `API_KEYS_CACHE_SECS`.

pub mod authenticator;
pub mod key;
pub mod scope;
pub mod settings;

pub use authenticator::{AuthError, Authenticator, Principal, bearer};
pub use key::{KeyHash, NewKey, PresentedKey};
pub use scope::{Scope, Scopes, UnknownScope};
pub use settings::{AuthSettings, ConfiguredKey};
