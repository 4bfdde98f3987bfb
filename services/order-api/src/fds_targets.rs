//! Where Score calls go: every fds-worker behind `FDS_GRPC_URL`, balanced per call.
//!
//! One HTTP/2 connection through a Kubernetes ClusterIP pins every call to the one pod the
//! connection landed on, so new fds-worker pods get no traffic. Instead order-api resolves each
//! URL's host itself (a headless Service's name resolves to every ready pod's address) and keeps
//! a connection per address, picking one per call (tower's power-of-two-choices balancer, by
//! load). It resolves again every [`RESOLVE_EVERY`]: pods that came are added, pods that went are
//! dropped; a resolution that fails keeps the addresses it had. `FDS_GRPC_URL` may also list
//! several URLs, comma separated (e.g. two fds-workers on one host).
//!
//! Each connection keeps the URL's host as its `:authority` and, over TLS, as the name the
//! server's certificate must carry (unless `FDS_GRPC_TLS_DOMAIN` says otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::fds::FdsSettings;
use crate::fds_tls::is_https;

/// How often the hosts are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// One URL of `FDS_GRPC_URL`: its scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: Uri,
    pub host: String,
    pub port: u16,
    pub https: bool,
}

/// The URLs of `FDS_GRPC_URL` (comma separated), each with a host and a port (default 50051
/// for http, 443 for https); all of one scheme.
pub fn parse(urls: &str) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("FDS_GRPC_URL: {url:?} is not a URL"))?;
        let https = is_https(url);
        if !https && uri.scheme_str() != Some("http") {
            bail!("FDS_GRPC_URL: {url:?} must start with http:// or https://");
        }
        let host = uri
            .host()
            .with_context(|| format!("FDS_GRPC_URL: {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 50051 });
        targets.push(Target {
            uri,
            host,
            port,
            https,
        });
    }
    let Some(first) = targets.first() else {
        bail!("FDS_GRPC_URL: no URL given");
    };
    if targets.iter().any(|t| t.https != first.https) {
        bail!("FDS_GRPC_URL: the URLs must be all http:// or all https://");
    }
    Ok(targets)
}

/// A channel balanced over every address of `targets`, kept current by a task that resolves
/// them again every [`RESOLVE_EVERY`] until the channel is dropped.
pub fn balanced(settings: &FdsSettings, targets: Vec<Target>) -> anyhow::Result<Channel> {
    let runtime =
        tokio::runtime::Handle::try_current().context("the Score channel needs a Tokio runtime")?;
    // Built once here, so a TLS setting that cannot be used fails at start.
    for target in &targets {
        endpoint(
            settings,
            target,
            SocketAddr::from(([127, 0, 0, 1], target.port)),
        )?;
    }
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
    let settings = settings.clone();
    runtime.spawn(async move {
        let mut current: BTreeMap<SocketAddr, ()> = BTreeMap::new();
        let mut every = tokio::time::interval(RESOLVE_EVERY);
        loop {
            every.tick().await;
            // Each address with the target it came from (the first, if several give it).
            let mut seen: BTreeMap<SocketAddr, &Target> = BTreeMap::new();
            for target in &targets {
                match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                    Ok(addrs) => {
                        for address in addrs {
                            seen.entry(address).or_insert(target);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(host = %target.host, error = %e, "cannot resolve fds-worker's address; keeping the known ones");
                        for address in current.keys() {
                            seen.entry(*address).or_insert(target);
                        }
                    }
                }
            }
            let addresses: BTreeSet<SocketAddr> = seen.keys().copied().collect();
            for gone in current.keys().filter(|a| !addresses.contains(a)).copied().collect::<Vec<_>>() {
                current.remove(&gone);
                tracing::info!(address = %gone, "fds-worker address gone");
                if changes.send(Change::Remove(gone)).await.is_err() {
                    return;
                }
            }
            for (address, target) in seen {
                if current.contains_key(&address) {
                    continue;
                }
                let Ok(endpoint) = endpoint(&settings, target, address) else {
                    continue;
                };
                current.insert(address, ());
                tracing::info!(address = %address, "fds-worker address added");
                if changes.send(Change::Insert(address, endpoint)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(channel)
}

/// The endpoint of one address of `target`, naming the target's host.
fn endpoint(
    settings: &FdsSettings,
    target: &Target,
    address: SocketAddr,
) -> anyhow::Result<Endpoint> {
    let scheme = if target.https { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .context("FDS_GRPC_URL: an address")?
        .origin(target.uri.clone())
        .connect_timeout(settings.timeout.max(Duration::from_millis(50)))
        .tcp_nodelay(true);
    if target.https {
        let mut tls = settings.tls.client_config();
        if settings.tls.domain.is_none() {
            tls = tls.domain_name(target.host.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("FDS_GRPC_URL: cannot use the TLS settings")?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_urls_of_one_scheme() {
        let t = parse("http://fds-worker-headless:50051").unwrap_or_default();
        assert_eq!(
            (t[0].host.as_str(), t[0].port, t[0].https),
            ("fds-worker-headless", 50051, false)
        );
        let two = parse(" http://127.0.0.1:1, http://127.0.0.1:2 ,").unwrap_or_default();
        assert_eq!(two.iter().map(|t| t.port).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(parse("https://fds").unwrap_or_default()[0].port, 443);
        let mixed = parse("http://a:1,https://b:2")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("all http:// or all https://"), "{mixed}");
        assert!(parse("").is_err());
        assert!(parse("ftp://x").is_err());
    }
}
