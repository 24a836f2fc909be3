//! Free mode on a shard: agents are fed as messages arrive, each step reported as it ends.
//!
//! A shard whose agents run on several threads reads for them on each of those threads (one
//! [`Feeding`] per thread, each with the agents living there), so that a step is sent to an
//! actor on its own thread: the runtime's free mode makes a step per agent for every few
//! messages (W1: ten thousand), and waking another thread for each cost more than the
//! second core gave. The memory backend's one lock keeps the readers' views consistent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::{AgentThreads, Hosted, IDLE_WAIT, READ_COUNT, Shard, StepFuture, WINDOW, free_steps_in_flight};
use crate::backend::{Backend, GroupRead};
use crate::message::EntryId;
use crate::runtime::RunError;
use crate::runtime::agent::{StepKind, StepReport};

/// What a free-mode shard tells the coordinator.
pub(crate) enum ShardEvent {
    Step(StepReport),
    /// Every group the reader reads is read to the end and none of its steps is running.
    Idle,
}

/// A [`ShardEvent`] with the reader it comes from: 0 for the shard's own thread, then one
/// number for each further thread with agents ([`Shard::feeders`] readers in all).
pub(crate) type FeederEvent = (usize, ShardEvent);

/// What a reader on another thread gives back when it stops: its agents, with their places in
/// the shard, and how it ended.
type FarDone<B> = (Vec<usize>, Vec<Hosted<B>>, Result<(), RunError>);

/// The steps in flight in free mode, and where their reports go.
struct Feeding {
    /// Steps queued or running, by agent.
    in_flight: Vec<usize>,
    steps: FuturesUnordered<StepFuture>,
    events: mpsc::UnboundedSender<FeederEvent>,
    /// Which reader this is.
    feeder: usize,
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
        self.tell(ShardEvent::Step(result?));
        Ok(())
    }

    fn tell(&self, event: ShardEvent) {
        let _ = self.events.send((self.feeder, event));
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
    /// How many readers free mode runs: one per thread the agents run on.
    pub fn feeders(&self) -> usize {
        let far: std::collections::BTreeSet<usize> =
            self.agents.iter().map(|a| a.thread).filter(|&t| t > 0).collect();
        1 + far.len()
    }

    /// Free mode: feeds agents as messages arrive until `stop` turns true (or a reader
    /// fails), reporting every step (and every moment of idleness) on `events`.
    pub async fn run_free(
        &mut self,
        events: mpsc::UnboundedSender<FeederEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        // Every reader stops on `halt`: when the coordinator asks, or when one of them fails.
        let (halt, halted) = watch::channel(false);
        let halt = Arc::new(halt);
        let (near_places, far) = self.start_far_feeders(&events, &halted, &halt);
        let forward = {
            let halt = halt.clone();
            actix::spawn(async move {
                // Asked to stop, or nobody left to ask: either way the readers stop.
                while !*stop.borrow_and_update() && stop.changed().await.is_ok() {}
                let _ = halt.send(true);
            })
        };
        let mut result = self.feed_here(0, events, halted).await;
        let _ = halt.send(true);
        forward.abort();
        let mut placed: Vec<(usize, Hosted<B>)> = near_places
            .into_iter()
            .zip(std::mem::take(&mut self.agents))
            .collect();
        for done in far {
            match done.await {
                Ok((places, agents, ended)) => {
                    placed.extend(places.into_iter().zip(agents));
                    if let Err(e) = ended {
                        result = result.and(Err(e));
                    }
                }
                Err(_) => {
                    result = result.and(Err(RunError::Internal(
                        "a reader thread of the shard stopped without its agents".into(),
                    )));
                }
            }
        }
        placed.sort_by_key(|(place, _)| *place);
        self.agents = placed.into_iter().map(|(_, agent)| agent).collect();
        result
    }

    /// Moves the agents that run on other threads into readers of their own there; returns
    /// the places of the agents left here, and how to wait for each other reader.
    fn start_far_feeders(
        &mut self,
        events: &mpsc::UnboundedSender<FeederEvent>,
        halted: &watch::Receiver<bool>,
        halt: &Arc<watch::Sender<bool>>,
    ) -> (Vec<usize>, Vec<oneshot::Receiver<FarDone<B>>>) {
        let mut near_places = Vec::new();
        let mut near = Vec::new();
        let mut far: BTreeMap<usize, (Vec<usize>, Vec<Hosted<B>>)> = BTreeMap::new();
        for (place, agent) in std::mem::take(&mut self.agents).into_iter().enumerate() {
            if agent.thread == 0 {
                near_places.push(place);
                near.push(agent);
            } else {
                let (places, agents) = far.entry(agent.thread).or_default();
                places.push(place);
                agents.push(agent);
            }
        }
        self.agents = near;
        let mut waits = Vec::new();
        for (k, (thread, (places, agents))) in far.into_iter().enumerate() {
            let feeder = k + 1;
            let mut reader = Shard {
                backend: self.backend.clone(),
                agents,
                _threads: AgentThreads::none(),
                read_pending: self.read_pending,
                reconnect: self.reconnect.clone(),
                claim_idle: self.claim_idle,
                network: self.network.clone(),
            };
            let (done, wait) = oneshot::channel();
            let (events, halted, halt) = (events.clone(), halted.clone(), halt.clone());
            // The reader is built here and runs there: the future that feeds is not `Send`.
            self._threads.arbiters[thread - 1].spawn_fn(move || {
                actix::spawn(async move {
                    let ended = reader.feed_here(feeder, events, halted).await;
                    if ended.is_err() {
                        let _ = halt.send(true);
                    }
                    let _ = done.send((places, reader.agents, ended));
                });
            });
            waits.push(wait);
        }
        (near_places, waits)
    }

    /// Feeds this reader's agents until `stop` turns true, then lets their running steps
    /// finish, so that everything they did is reported.
    async fn feed_here(
        &mut self,
        feeder: usize,
        events: mpsc::UnboundedSender<FeederEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let mut feeding = Feeding {
            in_flight: vec![0; self.agents.len()],
            steps: FuturesUnordered::new(),
            events,
            feeder,
        };
        let result = self.feed(&mut feeding, &mut stop).await;
        while let Some((_, step)) = feeding.steps.next().await {
            if let Ok(report) = step {
                feeding.tell(ShardEvent::Step(report));
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
        // The stream's last entry, noted before the round that follows: a wait for entries
        // after it misses none of those the round's reads did not see (another reader, or
        // another process, may append between a round's reads and the wait).
        let mut noted: Option<EntryId> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if last_claim.elapsed() >= claim_every {
                // Entries another process read and then died with.
                pending |= self.claim_stranded(&feeding.in_flight).await?;
                last_claim = tokio::time::Instant::now();
            }
            let noted_before = noted.take();
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
                    match noted_before {
                        Some(last) => {
                            feeding.tell(ShardEvent::Idle);
                            self.wait_for_entries(last, stop).await;
                        }
                        None => {
                            noted = Some(
                                self.reconnect
                                    .retry(&self.backend, || self.backend.last_id())
                                    .await?,
                            );
                        }
                    }
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

    /// Waits a little for entries after `last` (or for `stop`).
    async fn wait_for_entries(&self, last: EntryId, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            waited = self.backend.wait_for_entries(last, IDLE_WAIT) => {
                if let Err(e) = waited {
                    tracing::debug!("the wake-up read failed: {e}");
                }
            }
            _ = stop.changed() => {}
        }
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
