//! The settings every binary has, and the trait a binary's settings implement.

use std::net::SocketAddr;

use shopfds_config::{ConfigError, Env};
use shopfds_telemetry::TelemetrySettings;
use shopfds_telemetry::server::HttpServerSettings;

/// A binary's whole configuration, read from one [`Env`].
pub trait ServiceSettings: Sized + std::fmt::Debug + Send + 'static {
    /// The binary's name: the default `service.name` of its spans, the prefix of its errors.
    const SERVICE: &'static str;

    /// The binary's version, `env!("CARGO_PKG_VERSION")` written in the binary's own package (a
    /// library cannot know it): `service.version` of its spans and the `version` of its
    /// start-up line.
    const VERSION: &'static str;

    /// Reads and checks every variable; the first bad one is the error.
    fn read(env: &Env) -> Result<Self, ConfigError>;

    /// The part every binary shares.
    fn shell(&self) -> &ShellSettings;
}

/// Telemetry, the operations port and the limits of every HTTP port of the process.
#[derive(Debug, Clone)]
pub struct ShellSettings {
    /// `LOG_FORMAT`, `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`.
    pub telemetry: TelemetrySettings,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`, on an address of their own (port 0 picks a
    /// free one, for tests). Default `127.0.0.1:<the binary's port>`.
    pub ops_addr: SocketAddr,
    /// `HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_MAX_CONNECTIONS`: limits on slow, idle and numerous
    /// clients of every HTTP port of the process (the ops port, order-api's API port).
    pub http: HttpServerSettings,
}

impl ShellSettings {
    /// `default_ops_addr` is the binary's own default (each binary has its own port, so all six
    /// can run on one laptop).
    pub fn read(env: &Env, service: &str, default_ops_addr: &str) -> Result<Self, ConfigError> {
        Ok(ShellSettings {
            telemetry: TelemetrySettings::read(env, service)?,
            ops_addr: env.addr("OPS_ADDR", default_ops_addr)?,
            http: HttpServerSettings::read(env)?,
        })
    }
}
