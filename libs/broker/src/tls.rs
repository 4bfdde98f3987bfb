//! `BrokerTls`: the CA and client certificate of an `amqps://` broker connection.
//!
//! `BROKER_URL`'s scheme decides whether the connection is encrypted (`amqps://`). The server's
//! certificate must chain to a CA of the system's trust store (lapin is built with rustls and
//! its platform verifier) or to `BROKER_TLS_CA_FILE`, which is trusted in addition, and name the
//! URL's host. A broker that requires client certificates (`ssl_options.fail_if_no_peer_cert`)
//! gets `BROKER_TLS_CERT_FILE` with `BROKER_TLS_KEY_FILE`. Every connection the workspace opens
//! to the broker goes through [`crate::amqp::connect`], which applies these settings.
//!
//! The files are read and checked at start (a key that does not parse, or is not the
//! certificate's, stops the process naming the variable); rotating them means a restart.

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use shopfds_config::{ConfigError, Env};
use shopfds_tls::{CaCertificates, Identity};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// `BROKER_TLS_CA_FILE`: PEM certificate(s) of the CA that signed the broker's certificate,
    /// trusted besides the system's CAs. Unset (default): the system's CAs only.
    pub ca: Option<CaCertificates>,
    /// `BROKER_TLS_CERT_FILE` and `BROKER_TLS_KEY_FILE` (PEM, both or neither): the client
    /// certificate chain and its key, for a broker that verifies its clients. Unset (default):
    /// no client certificate.
    pub identity: Option<Identity>,
}

impl BrokerTls {
    /// The three variables; `url` (`BROKER_URL`) must be `amqps://` when any is set, or the
    /// files would silently go unused.
    pub fn read(env: &Env, url: &str) -> Result<Self, ConfigError> {
        Self::read_for_nodes(env, &crate::nodes::split(url))
    }

    /// [`BrokerTls::read`] for a `BROKER_URL` listing several nodes: every one must be
    /// `amqps://` when a TLS file is set.
    pub fn read_for_nodes(env: &Env, nodes: &[impl AsRef<str>]) -> Result<Self, ConfigError> {
        let tls = BrokerTls {
            ca: CaCertificates::read(env, "BROKER_TLS_CA_FILE")?,
            identity: Identity::read(env, "BROKER_TLS_CERT_FILE", "BROKER_TLS_KEY_FILE")?,
        };
        let plain = nodes
            .iter()
            .any(|url| !url.as_ref().starts_with("amqps://"));
        if tls != BrokerTls::default() && plain {
            let variable = if tls.ca.is_some() {
                "BROKER_TLS_CA_FILE"
            } else {
                "BROKER_TLS_CERT_FILE"
            };
            return Err(ConfigError::new(
                variable,
                "is set, but BROKER_URL is not amqps://: TLS files are only used over amqps",
            ));
        }
        Ok(tls)
    }

    /// The configuration lapin's TLS connector takes.
    pub fn lapin_config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self.identity.as_ref().map(|id| OwnedIdentity::PKCS8 {
                pem: id.cert_pem().to_vec(),
                key: id.key_pem().to_vec(),
            }),
            cert_chain: self
                .ca
                .as_ref()
                .map(|ca| String::from_utf8_lossy(ca.pem()).into_owned()),
        }
    }
}
