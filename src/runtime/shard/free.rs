//! Free mode on a shard: agents are fed as messages arrive, each step reported as it ends.

use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{IDLE_WAIT, READ_COUNT, Shard, StepFuture, WINDOW, free_steps_in_flight};
use crate::backend::{Backend, GroupRead};
use crate::runtime::RunError;
use crate::runtime::agent::{StepKind, StepReport};

/// What a free-mode shard tells the coordinator.
pub(crate) enum ShardEvent {
    Step(StepReport),
    /// Every hosted group is read to the end and no step is running.
    Idle,
}

/// The steps in flight in free mode, and where their reports go.
struct Feeding {
    /// Steps queued or running, by agent.
    in_flight: Vec<usize>,
    steps: FuturesUnordered<StepFuture>,
    events: mpsc::UnboundedSender<ShardEvent>,
}

/// What one round of reads did.
struct Round {
    /// Some agent got a batch.
    dispatched: bool,
    /// The backend was lost during the reads.
    lost: bool,
}

impl Feeding {
    /// Reports a finished step.
    fn done(&mut self, (i, result): (usize, Result<StepReport, RunError>)) -> Result<(), RunError> {
        self.in_flight[i] -= 1;
        let _ = self.events.send(ShardEvent::Step(result?));
        Ok(())
    }

    /// Lets every running step finish and reports it.
    async fn drain(&mut self) -> Result<(), RunError> {
        while let Some(done) = self.steps.next().await {
            self.done(done)?;
        }
        Ok(())
    }
}

impl<B: Backend> Shard<B> {
    /// Free mode: feeds agents as messages arrive until `stop` turns true, reporting every
    /// step (and every moment of idleness) on `events`.
    pub async fn run_free(
        &mut self,
        events: mpsc::UnboundedSender<ShardEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let mut feeding = Feeding {
            in_flight: vec![0; self.agents.len()],
            steps: FuturesUnordered::new(),
            events,
        };
        let result = self.feed(&mut feeding, &mut stop).await;
        // Let running steps finish, so that everything they did is reported.
        while let Some((_, step)) = feeding.steps.next().await {
            if let Ok(report) = step {
                let _ = feeding.events.send(ShardEvent::Step(report));
            }
        }
        self.read_pending = false;
        result
    }

    async fn feed(
        &mut self,
        feeding: &mut Feeding,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let mut pending = self.read_pending;
        let claim_every = (self.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if last_claim.elapsed() >= claim_every {
                // Entries another process read and then died with.
                pending |= self.claim_stranded(&feeding.in_flight).await?;
                last_claim = tokio::time::Instant::now();
            }
            let round = self.dispatch(feeding, pending).await?;
            if round.lost {
                // Let every running step finish (they ride out the outage themselves), then
                // read what is pending: it includes what the lost read delivered.
                feeding.drain().await?;
                self.reconnect.wait(&self.backend).await?;
                pending = true;
                continue;
            }
            if pending {
                // Pending entries first, then new ones on the next round.
                pending = false;
                if !round.dispatched {
                    continue;
                }
            }
            if feeding.steps.is_empty() {
                if !round.dispatched {
                    let _ = feeding.events.send(ShardEvent::Idle);
                    self.wait_for_entries(stop).await?;
                }
                continue;
            }
            tokio::select! {
                Some(done) = feeding.steps.next() => {
                    feeding.done(done)?;
                    // Every other step that has finished too, before the next round of
                    // reads: a round per finished step read ten groups for one new message
                    // each (W1), and a step's fixed costs went to a delivery or two.
                    while let Some(Some(done)) = feeding.steps.next().now_or_never() {
                        feeding.done(done)?;
                    }
                }
                _ = stop.changed() => {}
            }
        }
    }

    /// Reads the groups of the agents with room for another step and hands each its batch.
    async fn dispatch(&self, feeding: &mut Feeding, pending: bool) -> Result<Round, RunError> {
        let room = free_steps_in_flight(self.backend.kind());
        let ready: Vec<usize> = (0..self.agents.len())
            .filter(|&i| feeding.in_flight[i] < room)
            .collect();
        let mut dispatched = false;
        for window in ready.chunks(WINDOW) {
            let reads: Vec<GroupRead> = window
                .iter()
                // Pending entries only for agents with nothing in flight, so that nothing
                // already handed to an agent is handed over again.
                .map(|&i| self.group_read(i, READ_COUNT, pending && feeding.in_flight[i] == 0))
                .collect();
            let results = match self.backend.read(&reads).await {
                Ok(results) => results,
                Err(e) if e.is_unavailable() => {
                    tracing::debug!("{e}; waiting for the backend to come back");
                    return Ok(Round {
                        dispatched,
                        lost: true,
                    });
                }
                Err(e) => return Err(e.into()),
            };
            for (&i, deliveries) in window.iter().zip(results) {
                if !deliveries.is_empty() {
                    feeding.steps.push(self.send(i, StepKind::Free, deliveries, None));
                    feeding.in_flight[i] += 1;
                    dispatched = true;
                }
            }
        }
        Ok(Round {
            dispatched,
            lost: false,
        })
    }

    /// Waits a little for new entries (or for `stop`).
    async fn wait_for_entries(&self, stop: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let last = self
            .reconnect
            .retry(&self.backend, || self.backend.last_id())
            .await?;
        tokio::select! {
            waited = self.backend.wait_for_entries(last, IDLE_WAIT) => {
                if let Err(e) = waited {
                    tracing::debug!("the wake-up read failed: {e}");
                }
            }
            _ = stop.changed() => {}
        }
        Ok(())
    }

    /// Takes over entries left pending by consumers idle for `claim_idle` (another process
    /// that died), for agents with nothing in flight. Returns whether any were taken.
    async fn claim_stranded(&self, in_flight: &[usize]) -> Result<bool, RunError> {
        let mut claimed = 0;
        for (i, agent) in self.agents.iter().enumerate() {
            if in_flight[i] > 0 {
                continue;
            }
            let report = self
                .reconnect
                .retry(&self.backend, || {
                    self.backend.claim(&agent.group, &agent.consumer, self.claim_idle)
                })
                .await?;
            claimed += report.claimed;
        }
        if claimed > 0 {
            tracing::info!(
                claimed,
                "took over entries left pending by a consumer that is gone"
            );
        }
        Ok(claimed > 0)
    }
}
