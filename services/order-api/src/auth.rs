//! Who may call which route, in one place.
//!
//! Every `/v1` route passes [`authorize`]: the `Authorization: Bearer <key>` header is checked
//! by `shopfds-auth` and the key must hold the scope [`required_scope`] names for the route
//! (`admin` holds them all). No key, or a key that is malformed, unknown, wrong or revoked:
//! 401 with `WWW-Authenticate: Bearer`. A valid key without the scope: 403 naming the scope.
//! A route missing from the table needs `admin`, so a new route is closed until listed.
//! The handler gets the caller as an `Extension<Principal>`.
//!
//! [`client_ip`] decides which address the fraud rules see.

use std::net::IpAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use shopfds_auth::{AuthError, Authenticator, Principal, Scope};

use crate::error::ApiError;

/// The scope a route needs: the whole policy of the HTTP API.
pub fn required_scope(method: &Method, route: Option<&str>) -> Scope {
    match (method, route) {
        (&Method::POST, Some("/v1/orders")) => Scope::OrdersWrite,
        (&Method::GET, Some("/v1/orders/{id}" | "/v1/orders/{id}/invoice" | "/v1/tasks/{id}")) => {
            Scope::OrdersRead
        }
        (&Method::POST, Some("/v1/reports/sales"))
        | (&Method::GET, Some("/v1/reports/sales/{task_id}" | "/v1/reports/{task_id}/pdf")) => {
            Scope::Reports
        }
        _ => Scope::Admin,
    }
}

/// The middleware of every `/v1` route (installed with `route_layer`, so the matched route
/// is known).
pub async fn authorize(
    State(auth): State<Authenticator>,
    route: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let needed = required_scope(request.method(), route.as_ref().map(MatchedPath::as_str));
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    match auth.authenticate_header(header).await {
        Ok(principal) if principal.allows(needed) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(principal) => {
            tracing::info!(key_id = %principal.key_id, scope = %needed, "API key lacks the scope");
            ApiError::Forbidden(needed).into_response()
        }
        Err(AuthError::Unavailable) => ApiError::Unavailable.into_response(),
        Err(e) => ApiError::Unauthenticated(e.to_string()).into_response(),
    }
}

/// The address the fraud rules see for this request.
///
/// - an `admin` caller (a shop backend ordering on a customer's behalf) may name it in the
///   body's `client_ip`; anyone else's `client_ip` is ignored;
/// - `X-Forwarded-For` counts only when the TCP peer is a trusted proxy (`TRUSTED_PROXIES`);
///   then the client is the right-most address in it that is not a trusted proxy itself (each
///   proxy appends the address it saw; only the entries added by our own proxies are facts);
/// - otherwise the TCP peer.
pub fn client_ip(
    caller: &Principal,
    from_body: Option<IpAddr>,
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> IpAddr {
    if let Some(ip) = from_body
        && caller.allows(Scope::Admin)
    {
        return ip;
    }
    forwarded_client(peer, headers, trusted)
}

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Several X-Forwarded-For headers are one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An entry that is no address ends the walk: what lies left of it is not to be believed.
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use shopfds_auth::Scopes;

    use super::*;

    fn caller(scope: Scope) -> Principal {
        Principal {
            key_id: "k".into(),
            name: "test".into(),
            scopes: Scopes::new([scope]),
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn every_route_has_its_scope_and_the_rest_needs_admin() {
        assert_eq!(
            required_scope(&Method::POST, Some("/v1/orders")),
            Scope::OrdersWrite
        );
        assert_eq!(
            required_scope(&Method::GET, Some("/v1/orders/{id}")),
            Scope::OrdersRead
        );
        assert_eq!(
            required_scope(&Method::GET, Some("/v1/tasks/{id}")),
            Scope::OrdersRead
        );
        assert_eq!(
            required_scope(&Method::GET, Some("/v1/orders/{id}/invoice")),
            Scope::OrdersRead
        );
        for (method, route) in [
            (Method::POST, "/v1/reports/sales"),
            (Method::GET, "/v1/reports/sales/{task_id}"),
            (Method::GET, "/v1/reports/{task_id}/pdf"),
        ] {
            assert_eq!(
                required_scope(&method, Some(route)),
                Scope::Reports,
                "{route}"
            );
        }
        assert_eq!(
            required_scope(&Method::DELETE, Some("/v1/orders/{id}")),
            Scope::Admin
        );
        assert_eq!(required_scope(&Method::GET, None), Scope::Admin);
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let writer = caller(Scope::OrdersWrite);
        let peer_proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        let headers = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]);
        // The spoofed left-most entry is skipped; the right-most untrusted one is the client.
        assert_eq!(
            client_ip(&writer, None, peer_proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&writer, None, stranger, &headers, &trusted),
            stranger
        );
        assert_eq!(
            client_ip(&writer, None, peer_proxy, &headers, &[]),
            peer_proxy
        );
        // Two headers are one list; garbage ends the walk.
        let split = xff(&["203.0.113.1", "203.0.113.2, 10.0.0.5"]);
        assert_eq!(
            client_ip(&writer, None, peer_proxy, &split, &trusted),
            "203.0.113.2".parse::<IpAddr>().unwrap()
        );
        let garbage = xff(&["203.0.113.1, nonsense, 10.0.0.5"]);
        assert_eq!(
            client_ip(&writer, None, peer_proxy, &garbage, &trusted),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_body_client_ip_counts_only_for_admin() {
        let body: IpAddr = "192.0.2.44".parse().unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(
            client_ip(&caller(Scope::Admin), Some(body), peer, &none, &[]),
            body
        );
        assert_eq!(
            client_ip(&caller(Scope::OrdersWrite), Some(body), peer, &none, &[]),
            peer
        );
    }
}
