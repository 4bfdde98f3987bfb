//! TLS of order-api's gRPC channel to fds-worker: an `https://` `FDS_GRPC_URL` is TLS, with the
//! CA of `FDS_GRPC_CA_FILE` and, for a server that requires mutual TLS, the client certificate
//! of `FDS_GRPC_CERT_FILE`/`FDS_GRPC_KEY_FILE`.
//!
//! With `FDS_GRPC_CA_FILE` only that CA is trusted; without it, the system's CAs. The server's
//! certificate must name the URL's host, or `FDS_GRPC_TLS_DOMAIN` when set (a certificate issued
//! for the Service name while the URL names an address). The files are read and checked at
//! start; rotating them means restarting order-api. A handshake that fails (wrong CA, no client
//! certificate for an mTLS server) fails the call, and the order gets the fallback decision like
//! any other unanswered Score.

use shopfds_config::{ConfigError, Env};
use shopfds_tls::{CaCertificates, Identity};
use tonic::transport::{Certificate, ClientTlsConfig};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdsClientTls {
    /// `FDS_GRPC_CA_FILE` (PEM): the CA that signed fds-worker's certificate, the only one trusted.
    /// Unset (default): the system's CAs.
    pub ca: Option<CaCertificates>,
    /// `FDS_GRPC_CERT_FILE` and `FDS_GRPC_KEY_FILE` (PEM, both or neither): order-api's client
    /// certificate for a server with `GRPC_TLS_CLIENT_CA_FILE`. Unset (default): none.
    pub identity: Option<Identity>,
    /// `FDS_GRPC_TLS_DOMAIN`: the name fds-worker's certificate must carry. Unset (default):
    /// the host of `FDS_GRPC_URL`.
    pub domain: Option<String>,
}

impl FdsClientTls {
    /// The variables; `url` (`FDS_GRPC_URL`) must be `https://` when any is set, or they would
    /// silently go unused.
    pub fn read(env: &Env, url: &str) -> Result<Self, ConfigError> {
        let tls = FdsClientTls {
            ca: CaCertificates::read(env, "FDS_GRPC_CA_FILE")?,
            identity: Identity::read(env, "FDS_GRPC_CERT_FILE", "FDS_GRPC_KEY_FILE")?,
            domain: env.get("FDS_GRPC_TLS_DOMAIN"),
        };
        if !is_https(url) {
            let set = [
                ("FDS_GRPC_CA_FILE", tls.ca.is_some()),
                ("FDS_GRPC_CERT_FILE", tls.identity.is_some()),
                ("FDS_GRPC_TLS_DOMAIN", tls.domain.is_some()),
            ];
            if let Some((variable, _)) = set.into_iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    variable,
                    "is set, but FDS_GRPC_URL is not https://: TLS settings are only used over \
                     https",
                ));
            }
        }
        Ok(tls)
    }

    /// tonic's client configuration for an `https://` URL.
    pub fn client_config(&self) -> ClientTlsConfig {
        // tonic's channel builds its rustls configuration with the process-wide provider.
        shopfds_tls::crypto_provider();
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca.pem())),
            None => config.with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(
                identity.cert_pem(),
                identity.key_pem(),
            ));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// Whether `url` asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}
