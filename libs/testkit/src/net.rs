//! A TCP forwarder on a loopback port that a test can cut and restore: a real network outage
//! between a service and RabbitMQ or PostgreSQL, without stopping the shared servers. It counts
//! the connections it accepted, so a test can tell how often a service (re)connected. It can
//! also [`freeze`](TcpProxy::freeze): every connection stays open but no byte moves, as when a
//! network path is lost without a reset (the peer learns nothing until its own timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    running: Arc<Mutex<Option<JoinSet<()>>>>,
    accepted: Arc<AtomicUsize>,
    frozen: Arc<watch::Sender<bool>>,
}

impl TcpProxy {
    /// A proxy to `target` on a free loopback port, initially closed (connections are refused).
    pub fn closed(target: SocketAddr) -> TcpProxy {
        TcpProxy {
            port: crate::free_port(),
            target,
            running: Arc::new(Mutex::new(None)),
            accepted: Arc::new(AtomicUsize::new(0)),
            frozen: Arc::new(watch::channel(false).0),
        }
    }

    /// A proxy that forwards from the start.
    pub async fn open(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let proxy = TcpProxy::closed(target);
        proxy.resume().await?;
        Ok(proxy)
    }

    /// A forwarding proxy on a port below the ephemeral range ([`crate::stable_port`]): while it
    /// is cut, no outgoing connection can take its port, so `resume` binds it again however
    /// long the cut lasts and however busy the machine is.
    pub async fn open_stable(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let proxy = TcpProxy {
            port: crate::stable_port(),
            ..TcpProxy::closed(target)
        };
        proxy.resume().await?;
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted since the proxy was created (over every `resume`).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Starts accepting and forwarding.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("bind proxy port {}", self.port))?;
        let target = self.target;
        let accepted = Arc::clone(&self.accepted);
        let frozen = Arc::clone(&self.frozen);
        frozen.send_replace(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut frozen = frozen.subscribe();
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            // Frozen: both sockets stay open and silent until `cut`.
                            () = until_frozen(&mut frozen) => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        *running = Some(tasks);
        Ok(())
    }

    /// Stops moving bytes on every connection, open and new, while keeping them open; `cut`
    /// closes them, `resume` after a `cut` forwards again.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Stops listening and cuts every forwarded connection, as a network failure would.
    pub async fn cut(&self) {
        if let Some(mut tasks) = self.running.lock().await.take() {
            // Aborting the accept task drops its JoinSet, which aborts every connection task.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}

async fn until_frozen(frozen: &mut watch::Receiver<bool>) {
    let _ = frozen.wait_for(|f| *f).await.is_ok();
}
