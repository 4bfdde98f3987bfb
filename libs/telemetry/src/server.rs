//! The one HTTP server loop every binary runs: order-api's public port and every ops port serve
//! their axum `Router` through [`serve`], never through `axum::serve`, because `axum::serve`
//! cannot bound how long a client may take to send its request head.
//!
//! What a connection is allowed ([`HttpServerSettings`]):
//! - **Request head**: a connection must deliver a complete request line and headers within
//!   `header_read_timeout` of the server starting to wait for them, or it is closed without an
//!   answer. The wait starts when the connection is accepted and again after every response, so
//!   the same limit closes an idle keep-alive connection. (A body is not covered: order-api bounds
//!   the whole request with its request timeout.)
//! - **Connections at once**: at most `max_connections`; past it, new connections wait in the
//!   kernel's listen backlog until one closes, and are not read meanwhile.
//! - **HTTP/1.1 only** (and 1.0). Cleartext HTTP/2 is not offered: the header timeout is an
//!   HTTP/1 feature of hyper, and detecting the protocol would read a connection's first bytes
//!   with no limit at all.
//!
//! Shutdown: when the token is cancelled the listener is closed at once, idle connections are
//! closed, a request in progress is answered (then its connection closed), and `serve` returns
//! once every connection is gone. The caller bounds that wait with its grace period.
//!
//! Every request carries `axum::extract::ConnectInfo<SocketAddr>` (the peer address).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use shopfds_config::{ConfigError, Env};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Limits of an HTTP listener. The defaults suit both a public API behind a load balancer and
/// an ops port scraped by Prometheus and probed by the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpServerSettings {
    /// `HTTP_HEADER_READ_TIMEOUT_SECS` (default 10): time to send a complete request head, and
    /// the longest an idle keep-alive connection stays open. A proxy that keeps connections to
    /// us open (nginx `keepalive_timeout`, a cloud load balancer's idle timeout) should close
    /// them sooner than this.
    pub header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (default 1024): open connections at once.
    pub max_connections: usize,
}

impl Default for HttpServerSettings {
    fn default() -> Self {
        HttpServerSettings {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

impl HttpServerSettings {
    /// Reads `HTTP_HEADER_READ_TIMEOUT_SECS` and `HTTP_MAX_CONNECTIONS` (each ≥ 1; unset or
    /// empty keeps the default).
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(HttpServerSettings {
            header_read_timeout: Duration::from_secs(env.positive(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout.as_secs(),
            )?),
            max_connections: env.positive("HTTP_MAX_CONNECTIONS", defaults.max_connections)?,
        })
    }
}

/// How long to stop accepting after an accept error that is not about one connection (out of
/// file descriptors, say): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` with the limits of `settings` until `shutdown` is cancelled,
/// then lets requests in progress finish and returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let connections = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    loop {
        // A slot first, so a server at its cap leaves new connections in the backlog.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed; pausing");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        // Small responses go out at once instead of waiting for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A closed or timed-out connection is the client's business, not an error of ours.
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Errors about the one connection being accepted; the listener itself is fine.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().copied())
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            HttpServerSettings::read(&lookup(&[])).unwrap(),
            HttpServerSettings::default()
        );
        let set = HttpServerSettings::read(&lookup(&[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "3"),
            ("HTTP_MAX_CONNECTIONS", " 20 "),
        ]))
        .unwrap();
        assert_eq!(set.header_read_timeout, Duration::from_secs(3));
        assert_eq!(set.max_connections, 20);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (variable, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "1.5"),
            ("HTTP_MAX_CONNECTIONS", "-1"),
        ] {
            let error = HttpServerSettings::read(&lookup(&[(variable, value)])).unwrap_err();
            assert!(error.to_string().contains(variable), "{error}");
        }
    }
}
