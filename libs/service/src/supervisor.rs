//! [`Supervisor`]: a process's named parts, stopped together.
//!
//! Every long-running part of a binary (the ops server, the API server, a consumer, the outbox
//! relay) is spawned on the supervisor under a name. When one fails (returns an error or
//! panics) the supervisor cancels the shared token, so every other part begins its orderly stop;
//! when the token is cancelled (a signal, or a failure) it waits for all parts within the grace
//! period, then aborts the ones still running and names them. A part that returns `Ok` before the
//! stop has simply finished (a relay switched off, say).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a part returns: nothing (a loop that only ends when told to), or a `Result`.
pub trait PartOutcome: Send + 'static {
    fn into_result(self) -> anyhow::Result<()>;
}

impl PartOutcome for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error> + Send + 'static> PartOutcome for Result<(), E> {
    fn into_result(self) -> anyhow::Result<()> {
        self.map_err(Into::into)
    }
}

/// The named tasks of one process and the token that stops them.
pub struct Supervisor {
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    names: Vec<(tokio::task::Id, &'static str)>,
}

impl Supervisor {
    /// Parts spawned here stop when `shutdown` is cancelled; the supervisor cancels it on the
    /// first failure.
    pub fn new(shutdown: CancellationToken) -> Self {
        Supervisor {
            shutdown,
            tasks: JoinSet::new(),
            names: Vec::new(),
        }
    }

    /// The token every part must watch.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `part` under `name`. Its error (or panic) is logged with the name and stops the
    /// process.
    pub fn spawn<F>(&mut self, name: &'static str, part: F)
    where
        F: Future + Send + 'static,
        F::Output: PartOutcome,
    {
        let handle = self
            .tasks
            .spawn(async move { (name, part.await.into_result()) });
        self.names.push((handle.id(), name));
    }

    fn name_of(&self, id: tokio::task::Id) -> &'static str {
        self.names
            .iter()
            .find(|(task, _)| *task == id)
            .map_or("unnamed", |(_, name)| name)
    }

    /// Waits until every part has stopped: until the token is cancelled, parts that end are
    /// reported (a failure cancels it); from then on each part has `grace` in all to finish,
    /// after which the rest are aborted and named. Returns the first failure, with its part's
    /// name.
    pub async fn join(mut self, grace: Duration) -> anyhow::Result<()> {
        let mut failure: Option<anyhow::Error> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && self.shutdown.is_cancelled() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            let next = match deadline {
                None => tokio::select! {
                    next = self.tasks.join_next_with_id() => next,
                    _ = self.shutdown.cancelled() => continue,
                },
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let running: Vec<&str> =
                                self.names.iter().map(|(_, name)| *name).collect();
                            tracing::warn!(grace_secs = grace.as_secs(), parts = ?running, "still running after the grace period; stopping them");
                            self.tasks.abort_all();
                            while self.tasks.join_next().await.is_some() {}
                            break;
                        }
                    }
                }
            };
            let Some(joined) = next else { break };
            let (name, outcome) = match joined {
                Ok((id, (name, outcome))) => {
                    self.names.retain(|(task, _)| *task != id);
                    (name, outcome)
                }
                Err(error) => {
                    let name = self.name_of(error.id());
                    self.names.retain(|(task, _)| *task != error.id());
                    let outcome = if error.is_panic() {
                        Err(anyhow::anyhow!("panicked"))
                    } else {
                        Ok(())
                    };
                    (name, outcome)
                }
            };
            match outcome {
                Ok(()) if self.shutdown.is_cancelled() => {
                    tracing::debug!(part = name, "stopped");
                }
                Ok(()) => tracing::info!(part = name, "finished"),
                Err(error) => {
                    tracing::error!(
                        part = name,
                        error = format!("{error:#}"),
                        "failed; stopping the process"
                    );
                    self.shutdown.cancel();
                    if failure.is_none() {
                        failure = Some(error.context(format!("{name} failed")));
                    }
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_stops_every_part_and_is_returned_by_name() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let token = supervisor.token();
        supervisor.spawn("server", async move {
            token.cancelled().await;
            Ok::<_, anyhow::Error>(())
        });
        supervisor.spawn("relay", async {
            Err::<(), _>(anyhow::anyhow!("broker gone"))
        });
        let outcome = supervisor.join(Duration::from_secs(5)).await;
        let error = format!("{:#}", outcome.unwrap_err());
        assert!(
            error.contains("relay failed") && error.contains("broker gone"),
            "{error}"
        );
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor.spawn("worker", async {
            let parts: Vec<u8> = Vec::new();
            // A panic inside a part, as an index out of bounds would.
            if parts.is_empty() {
                panic!("boom");
            }
            Ok::<_, anyhow::Error>(())
        });
        let error = supervisor.join(Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{error:#}").contains("worker failed"), "{error:#}");
    }

    #[tokio::test]
    async fn parts_still_running_after_the_grace_are_aborted() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("stuck", async {
            std::future::pending::<()>().await;
            Ok::<_, anyhow::Error>(())
        });
        supervisor.spawn("finished early", async { Ok::<_, anyhow::Error>(()) });
        shutdown.cancel();
        let joined = tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.join(Duration::from_millis(50)),
        )
        .await;
        assert!(matches!(joined, Ok(Ok(()))), "{joined:?}");
    }
}
