//! A raw TCP client for the HTTP edge tests: it sends a request head as slowly as a Slowloris
//! attacker would, or leaves a keep-alive connection idle, and reports whether (and how) the
//! server ended the connection. A normal HTTP client cannot be made to misbehave this way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One client connection and everything the server has sent on it.
pub struct RawHttp {
    stream: TcpStream,
    received: Vec<u8>,
    closed: bool,
}

impl RawHttp {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawHttp> {
        Ok(RawHttp {
            stream: TcpStream::connect(addr).await?,
            received: Vec::new(),
            closed: false,
        })
    }

    /// Writes `bytes` at once.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes `bytes` one at a time, listening `pause` for the server after each, and stops
    /// early once the server has closed the connection. Returns whether it is still open.
    pub async fn trickle(&mut self, bytes: &[u8], pause: Duration) -> bool {
        for byte in bytes {
            if self.stream.write_all(&[*byte]).await.is_err() {
                self.closed = true;
                return false;
            }
            if !self.listen(pause).await {
                return false;
            }
        }
        true
    }

    /// Reads until the server closes the connection or `limit` passes; returns whether it
    /// closed. What it sent meanwhile is kept in [`received`](Self::received).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.listen(left).await;
        }
        true
    }

    /// Everything the server sent so far, as text (lossy).
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// Reads what arrives within `wait`; returns false once the connection is closed (EOF or
    /// reset).
    async fn listen(&mut self, wait: Duration) -> bool {
        if self.closed {
            return false;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Err(_) => true,
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = true;
                false
            }
            Ok(Ok(n)) => {
                self.received
                    .extend_from_slice(buf.get(..n).unwrap_or_default());
                true
            }
        }
    }
}
