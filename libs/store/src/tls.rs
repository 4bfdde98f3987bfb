//! `DatabaseTls`: the CA that PostgreSQL's server certificate must chain to, besides what
//! `DATABASE_URL` says (`sslmode=disable|prefer|require|verify-ca|verify-full`).
//!
//! `DATABASE_URL`'s `sslmode` decides whether the connection is encrypted and what is checked:
//! `require` encrypts without checking the certificate, `verify-ca` checks that it chains to a
//! trusted CA, `verify-full` also that it names the host. `DATABASE_CA_FILE` is that CA, trusted
//! besides the Mozilla roots sqlx always trusts (`webpki-roots`). With a CA file, `require`
//! checks the chain too, as libpq does; with `sslmode` `disable`, `allow` or `prefer` a CA file
//! would silently check nothing, so that combination is refused at start.

use shopfds_config::{ConfigError, Env};
use shopfds_tls::CaCertificates;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseTls {
    /// `DATABASE_CA_FILE`: PEM certificate(s) of the CA that signed the server's certificate
    /// (for `sslmode=verify-ca`/`verify-full`, or `require`); it replaces the URL's
    /// `sslrootcert`. Unset (default): the URL alone decides. Read at start.
    pub ca: Option<CaCertificates>,
}

impl DatabaseTls {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(DatabaseTls {
            ca: CaCertificates::read(env, "DATABASE_CA_FILE")?,
        })
    }

    /// `options` with the CA as root certificate. The error names `DATABASE_CA_FILE` when the
    /// URL's `sslmode` would not use it.
    pub fn apply(&self, options: PgConnectOptions) -> Result<PgConnectOptions, ConfigError> {
        if !matches!(options.get_ssl_mode(), PgSslMode::Disable) {
            // sqlx builds its `verify-ca` verifier with the process-wide provider, and rustls
            // panics choosing one when two are compiled in.
            shopfds_tls::crypto_provider();
        }
        let Some(ca) = &self.ca else {
            return Ok(options);
        };
        match options.get_ssl_mode() {
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
                Ok(options.ssl_root_cert_from_pem(ca.pem().to_vec()))
            }
            mode => Err(ConfigError::new(
                "DATABASE_CA_FILE",
                format!(
                    "is set, but DATABASE_URL's sslmode is {mode:?}, which checks no \
                     certificate: add ?sslmode=verify-full (or verify-ca) to DATABASE_URL"
                ),
            )),
        }
    }
}
