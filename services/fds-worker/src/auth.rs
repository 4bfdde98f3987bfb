//! Who may call the gRPC server, in one place: a tower layer in front of every service on the
//! port.
//!
//! - `grpc.health.v1.Health/*`: open (probes carry no credentials);
//! - `fds.v1.FraudDetection/Score`: a verified client certificate, or an API key with scope
//!   `fds:score` (order-api's own key, sent as `authorization: Bearer <key>`);
//! - everything else — `ScoreBatch`, server reflection, any method added later: internal
//!   callers only, i.e. a verified client certificate or an `admin` key.
//!
//! A client certificate counts when the TLS session holds one: the server only completes a
//! handshake with a client certificate that its configured CA verified. No credentials, or a key
//! that is malformed, unknown, wrong or revoked: `UNAUTHENTICATED`; a valid key without the
//! scope: `PERMISSION_DENIED`; the key table unreachable: `UNAVAILABLE`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use shopfds_auth::{AuthError, Authenticator, Principal, Scope};
use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

const HEALTH: &str = "/grpc.health.v1.Health/";
const SCORE: &str = "/fds.v1.FraudDetection/Score";

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    /// A client certificate or a key with this scope.
    Scope(Scope),
    /// A client certificate or an `admin` key.
    Internal,
}

/// The policy of the gRPC port, by request path (`/package.Service/Method`).
pub fn required_access(path: &str) -> Access {
    if path.starts_with(HEALTH) {
        Access::Open
    } else if path == SCORE {
        Access::Scope(Scope::FdsScore)
    } else {
        Access::Internal
    }
}

/// The caller, once admitted.
#[derive(Debug, Clone)]
pub enum Caller {
    Certificate,
    Key(Principal),
    Anonymous,
}

/// Checks a request's credentials against `access`.
pub async fn admit(
    auth: &Authenticator,
    access: Access,
    verified_certificate: bool,
    authorization: Option<&str>,
) -> Result<Caller, Status> {
    if access == Access::Open {
        return Ok(Caller::Anonymous);
    }
    if verified_certificate {
        return Ok(Caller::Certificate);
    }
    let principal = auth
        .authenticate_header(authorization)
        .await
        .map_err(|e| match e {
            AuthError::Unavailable => Status::unavailable(e.to_string()),
            AuthError::Missing => Status::unauthenticated(
                "send authorization: Bearer <key> (or a client certificate)",
            ),
            AuthError::Invalid => Status::unauthenticated(e.to_string()),
        })?;
    let needed = match access {
        Access::Scope(scope) => scope,
        Access::Internal | Access::Open => Scope::Admin,
    };
    if principal.allows(needed) {
        Ok(Caller::Key(principal))
    } else {
        tracing::info!(key_id = %principal.key_id, scope = %needed, "gRPC caller lacks the scope");
        Err(Status::permission_denied(format!(
            "this API key lacks the scope {needed}"
        )))
    }
}

/// The layer: `Server::builder().layer(AuthLayer::new(authenticator))`.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl AuthLayer {
    pub fn new(auth: Authenticator) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Authenticator,
}

impl<S, B, ResBody> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let access = required_access(request.uri().path());
            let certificate = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .is_some_and(|certs| !certs.is_empty());
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("invalid"));
            match admit(&auth, access, certificate, authorization).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_open_score_needs_its_scope_and_the_rest_is_internal() {
        assert_eq!(
            required_access("/grpc.health.v1.Health/Check"),
            Access::Open
        );
        assert_eq!(
            required_access("/grpc.health.v1.Health/Watch"),
            Access::Open
        );
        assert_eq!(
            required_access("/fds.v1.FraudDetection/Score"),
            Access::Scope(Scope::FdsScore)
        );
        assert_eq!(
            required_access("/fds.v1.FraudDetection/ScoreBatch"),
            Access::Internal
        );
        assert_eq!(
            required_access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Internal
        );
        assert_eq!(
            required_access("/fds.v1.FraudDetection/ScoreX"),
            Access::Internal
        );
    }
}
