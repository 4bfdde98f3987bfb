//! A TCP forwarder on a loopback port that a test can cut and restore: a real network outage
//! between a service and RabbitMQ or PostgreSQL, without stopping the shared servers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    running: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl TcpProxy {
    /// A proxy to `target` on a free loopback port, initially closed (connections are refused).
    pub fn closed(target: SocketAddr) -> TcpProxy {
        TcpProxy {
            port: crate::free_port(),
            target,
            running: Arc::new(Mutex::new(None)),
        }
    }

    /// A proxy that forwards from the start.
    pub async fn open(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let proxy = TcpProxy::closed(target);
        proxy.resume().await?;
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.port
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
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *running = Some(tasks);
        Ok(())
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
