//! TLS of the gRPC score server: `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE` turn it on (both
//! or neither), `GRPC_TLS_CLIENT_CA_FILE` makes it mutual.
//!
//! - neither file: plain HTTP/2 (the default; a cluster-internal port);
//! - certificate and key: every connection is TLS, and a plaintext client fails its handshake;
//! - with `GRPC_TLS_CLIENT_CA_FILE` too: a client must present a certificate chaining to that CA,
//!   or the handshake fails before any RPC (health and reflection included).
//!
//! The files are read and checked at start; rotating them means restarting fds-worker.

use std::time::Duration;

use shopfds_config::{ConfigError, Env};
use shopfds_tls::{CaCertificates, Identity};
use tonic::transport::{Certificate, ServerTlsConfig};

/// How long a client may take to finish its TLS handshake: a connection that opens and says
/// nothing does not hold a slot for longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcServerTls {
    /// `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE` (PEM, both or neither): the server's
    /// certificate chain and key. Unset (default): no TLS.
    pub identity: Option<Identity>,
    /// `GRPC_TLS_CLIENT_CA_FILE` (PEM): clients must present a certificate signed by this CA
    /// (mutual TLS). Unset (default): no client certificate asked for. Needs the two above.
    pub client_ca: Option<CaCertificates>,
}

impl GrpcServerTls {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let identity = Identity::read(env, "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE")?;
        let client_ca = CaCertificates::read(env, "GRPC_TLS_CLIENT_CA_FILE")?;
        if client_ca.is_some() && identity.is_none() {
            return Err(ConfigError::new(
                "GRPC_TLS_CLIENT_CA_FILE",
                "mutual TLS needs the server's own certificate: set GRPC_TLS_CERT_FILE and \
                 GRPC_TLS_KEY_FILE too",
            ));
        }
        Ok(GrpcServerTls {
            identity,
            client_ca,
        })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// tonic's server configuration; `None` without TLS.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.as_ref()?;
        // tonic's server builds its rustls configuration with the process-wide provider.
        shopfds_tls::crypto_provider();
        let mut config = ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                identity.cert_pem(),
                identity.key_pem(),
            ))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca.pem()));
        }
        Some(config)
    }
}
