//! A RabbitMQ cluster of the test's own: several [`RabbitNode`]s (each on loopback ports of its
//! own, with its own name, data and logs) joined into one cluster with `join_cluster`, for tests
//! that stop nodes under quorum queues. The shared server on 127.0.0.1:5672 is never touched.
//!
//! Booting three nodes takes 10–30 s on 2 cores (they boot in parallel, then two of them join
//! the first). A node can be stopped and started again through [`RabbitCluster::node_mut`]; it
//! rejoins the cluster by itself. Dropping the cluster stops every node and removes its data.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::time::Instant;

use crate::rabbit_node::RabbitNode;

/// Nodes of one cluster; the first is the one the others joined.
#[derive(Debug)]
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
}

/// One member of a quorum queue, as `rabbitmq-queues quorum_status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumMember {
    pub node: String,
    /// `leader`, `follower`, or what RabbitMQ says of a member that does not answer.
    pub raft_state: String,
    pub commit_index: u64,
}

impl RabbitCluster {
    /// Boots `size` nodes and joins every other node to the first; returns once
    /// `cluster_status` of the first lists all of them running.
    pub async fn start(size: usize) -> anyhow::Result<RabbitCluster> {
        if size == 0 {
            bail!("a cluster needs at least one node");
        }
        let boots = (0..size).map(|_| RabbitNode::start());
        let nodes: Vec<RabbitNode> = futures_join_all(boots).await?;
        let cluster = RabbitCluster { nodes };
        if let Some((seed, others)) = cluster.nodes.split_first() {
            for node in others {
                node.join_cluster(seed)
                    .await
                    .with_context(|| format!("{} joining {}", node.name(), seed.name()))?;
            }
        }
        let running = cluster.running_members().await?;
        if running.len() != size {
            bail!("cluster formed with {running:?}, expected {size} running nodes");
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// Node `index`, to stop and start again.
    pub fn node_mut(&mut self, index: usize) -> Option<&mut RabbitNode> {
        self.nodes.get_mut(index)
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// Every node's URL (default vhost, guest) in `order`, separated by `;`: a `BROKER_URL`
    /// listing the cluster.
    pub fn broker_url(&self, order: &[usize]) -> String {
        order
            .iter()
            .filter_map(|i| self.nodes.get(*i))
            .map(RabbitNode::url)
            .collect::<Vec<_>>()
            .join(";")
    }

    /// A node that runs, to ask the cluster questions.
    fn any_running(&self) -> anyhow::Result<&RabbitNode> {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .context("no node of the cluster runs")
    }

    /// The running members (`cluster_status`), by node name.
    pub async fn running_members(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .any_running()?
            .ctl(
                "rabbitmqctl",
                &["-q", "cluster_status", "--formatter", "json"],
            )
            .await?;
        let status: Value = serde_json::from_str(&out)
            .with_context(|| format!("cluster_status is not JSON: {out}"))?;
        Ok(status["running_nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The node that holds the leader of quorum queue `queue` (default vhost).
    pub async fn queue_leader(&self, queue: &str) -> anyhow::Result<String> {
        let members = self.quorum_status(queue).await?;
        members
            .into_iter()
            .find(|m| m.raft_state == "leader")
            .map(|m| m.node)
            .with_context(|| format!("quorum queue {queue} has no leader now"))
    }

    /// `rabbitmq-queues quorum_status <queue>`, asked of a running node.
    pub async fn quorum_status(&self, queue: &str) -> anyhow::Result<Vec<QuorumMember>> {
        let out = self
            .any_running()?
            .ctl(
                "rabbitmq-queues",
                &["-q", "quorum_status", queue, "--formatter", "json"],
            )
            .await?;
        let rows: Value = serde_json::from_str(&out)
            .with_context(|| format!("quorum_status is not JSON: {out}"))?;
        let rows = rows
            .as_array()
            .with_context(|| format!("quorum_status: not a list: {out}"))?;
        Ok(rows
            .iter()
            .map(|row| QuorumMember {
                node: row["Node Name"].as_str().unwrap_or_default().to_owned(),
                raft_state: row["Raft State"]
                    .as_str()
                    .map_or_else(|| row["Raft State"].to_string(), str::to_owned),
                commit_index: row["Commit Index"].as_u64().unwrap_or(0),
            })
            .collect())
    }

    /// Waits until every member of quorum queue `queue` is a leader or follower and has
    /// committed at least what the leader had committed when the wait began: a member that
    /// was down holds the queue again, and another node can be lost.
    pub async fn wait_replicated(&self, queue: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut target = None;
        loop {
            let status = self.quorum_status(queue).await;
            if let Ok(members) = &status {
                let leader = members.iter().find(|m| m.raft_state == "leader");
                if target.is_none() {
                    target = leader.map(|l| l.commit_index);
                }
                let all_up = members.len() == self.nodes.len()
                    && members
                        .iter()
                        .all(|m| matches!(m.raft_state.as_str(), "leader" | "follower"));
                if let Some(target) = target
                    && all_up
                    && members.iter().all(|m| m.commit_index >= target)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("quorum queue {queue} not replicated within {timeout:?}: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs the boots together (each waits on its own node; on 2 cores they overlap well).
async fn futures_join_all<F>(boots: impl Iterator<Item = F>) -> anyhow::Result<Vec<RabbitNode>>
where
    F: std::future::Future<Output = anyhow::Result<RabbitNode>> + Send + 'static,
{
    let handles: Vec<_> = boots.map(tokio::spawn).collect();
    let mut nodes = Vec::new();
    let mut first_error = None;
    for handle in handles {
        match handle.await.context("node boot task") {
            Ok(Ok(node)) => nodes.push(node),
            Ok(Err(e)) | Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        // The nodes that did boot are dropped (stopped) here.
        Some(e) => Err(e),
        None => Ok(nodes),
    }
}
