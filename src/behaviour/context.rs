//! What a behaviour can see while it handles a message: who it is, the tick, its random
//! stream, reads from the cache, and a language model's answers.

use std::sync::Arc;

use super::BehaviourError;
use crate::backend::cache::CacheEntry;
use crate::llm::{Completion, CompletionRequest};
use crate::random::{self, ChaCha8Rng};
use crate::scenario::AgentSpec;

/// Cache reads as the runtime serves them to one agent during one step.
///
/// In lockstep tick `t` they see what was committed by the end of tick `t - 1`, plus the
/// agent's own writes of this step. A read the runtime cannot answer yet returns
/// [`BehaviourError::Pending`]: the runtime fetches the data and runs the step again.
pub trait CacheReads {
    /// The last `n` entries of this agent's own list, oldest first.
    fn own_last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError>;
    /// The last `n` entries of the global sorted set, oldest first.
    fn last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError>;
    /// How many entries of the global sorted set this step may see.
    fn count(&mut self) -> Result<u64, BehaviourError>;
    /// The entries at these ranks (0 = oldest) of the global sorted set.
    fn at_ranks(&mut self, ranks: &[u64]) -> Result<Vec<CacheEntry>, BehaviourError>;
}

/// A cache with nothing in it, for testing behaviours on their own.
#[derive(Debug, Default)]
pub struct EmptyCache;

impl CacheReads for EmptyCache {
    fn own_last(&mut self, _n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        Ok(Vec::new())
    }
    fn last(&mut self, _n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        Ok(Vec::new())
    }
    fn count(&mut self) -> Result<u64, BehaviourError> {
        Ok(0)
    }
    fn at_ranks(&mut self, _ranks: &[u64]) -> Result<Vec<CacheEntry>, BehaviourError> {
        Ok(Vec::new())
    }
}

/// A language model's answers as the runtime serves them to one agent during one step.
///
/// Like a cache read, a completion is an input of the step: one the runtime does not have yet
/// returns [`BehaviourError::Pending`]; the runtime asks the model (concurrently with the
/// other agents) and runs the step again from the same state, so the same request comes
/// again and is answered.
pub trait Completions {
    /// The answer to `request`, whose seed is set.
    fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, BehaviourError>;
}

/// No model: the scenario has no `[llm]` section.
#[derive(Debug, Default)]
pub struct NoModel;

impl Completions for NoModel {
    fn complete(&mut self, _request: &CompletionRequest) -> Result<Completion, BehaviourError> {
        Err(BehaviourError::new(
            "asked a language model, but the scenario has no [llm] section: add one with the server's base_url and model",
        ))
    }
}

/// Where an agent stands in a sparse network (CONTRACT.md, "Networks").
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    /// The agents that hear it (its followers) and run the same behaviour, in declaration
    /// order.
    pub audience: Arc<[Arc<str>]>,
    /// The agents it follows, in declaration order.
    pub following: Arc<[Arc<str>]>,
}

/// The world as one agent sees it during one call of its behaviour.
pub struct Context<'a> {
    agent: &'a AgentSpec,
    peers: &'a [Arc<str>],
    neighbours: Option<&'a Neighbours>,
    tick: Option<u64>,
    rng: &'a mut ChaCha8Rng,
    cache: &'a mut dyn CacheReads,
    completions: Option<&'a mut dyn Completions>,
}

impl<'a> Context<'a> {
    /// The runtime builds contexts; behaviours' own tests can too, with [`EmptyCache`] or a
    /// cache of their own.
    pub fn new(
        agent: &'a AgentSpec,
        peers: &'a [Arc<str>],
        tick: Option<u64>,
        rng: &'a mut ChaCha8Rng,
        cache: &'a mut dyn CacheReads,
    ) -> Self {
        Context {
            agent,
            peers,
            neighbours: None,
            tick,
            rng,
            cache,
            completions: None,
        }
    }

    /// The same context for an agent on a sparse network, standing where `neighbours` say.
    #[must_use]
    pub fn with_neighbours(mut self, neighbours: Option<&'a Neighbours>) -> Self {
        self.neighbours = neighbours;
        self
    }

    /// With a `[network]` that is not complete: the peers that hear this agent (its
    /// followers that run the same behaviour), in declaration order, among whom
    /// [`random_peers`](Context::random_peers) draws. `None`: everyone hears everyone.
    pub fn audience(&self) -> Option<&[Arc<str>]> {
        self.neighbours.map(|n| &*n.audience)
    }

    /// With a `[network]` that is not complete: the agents this one follows (whatever they
    /// run), in declaration order. `None`: everyone hears everyone.
    pub fn following(&self) -> Option<&[Arc<str>]> {
        self.neighbours.map(|n| &*n.following)
    }

    /// The same context, answering [`complete`](Context::complete) from `completions`
    /// (without, every completion fails as [`NoModel`] does).
    #[must_use]
    pub fn with_completions(mut self, completions: &'a mut dyn Completions) -> Self {
        self.completions = Some(completions);
        self
    }

    /// This agent's name.
    pub fn agent(&self) -> &str {
        &self.agent.name
    }

    /// This agent's position in declaration order.
    pub fn agent_index(&self) -> usize {
        self.agent.index
    }

    /// This agent's position in its own `[[agents]]` table (from 0: `_1` is 0).
    pub fn table_index(&self) -> usize {
        self.agent.table_index
    }

    /// This agent's position among [`peers`](Context::peers).
    pub fn peer_index(&self) -> usize {
        self.agent.peer_index
    }

    /// The agents that run the same behaviour, this one included, in declaration order.
    pub fn peers(&self) -> &[Arc<str>] {
        self.peers
    }

    /// The lockstep tick (0 at the start); `None` in free mode.
    pub fn tick(&self) -> Option<u64> {
        self.tick
    }

    /// This agent's own random stream. Draw only from here: it is what makes runs
    /// reproducible. The helpers below use fixed algorithms; `rand`'s methods work too but may
    /// change their results between `rand` releases.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }

    /// A uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        random::below(self.rng, n)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        random::unit(self.rng)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        random::chance(self.rng, p)
    }

    /// Up to `k` distinct peers other than this agent, drawn at random: on a sparse network,
    /// among those that hear it ([`audience`](Context::audience)).
    pub fn random_peers(&mut self, k: usize) -> Vec<Arc<str>> {
        if let Some(neighbours) = self.neighbours {
            let audience = &neighbours.audience;
            return random::distinct(self.rng, audience.len() as u64, k)
                .into_iter()
                .map(|i| audience[i as usize].clone())
                .collect();
        }
        let own = self.agent.peer_index;
        let others = self.peers.len().saturating_sub(1) as u64;
        random::distinct(self.rng, others, k)
            .into_iter()
            .map(|i| {
                let i = i as usize;
                // Skip over this agent's own position.
                self.peers[if i >= own { i + 1 } else { i }].clone()
            })
            .collect()
    }

    /// The last `n` values this agent remembered, oldest first.
    pub fn own_last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        self.cache.own_last(n)
    }

    /// The last `n` values anyone remembered, oldest first.
    pub fn last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        self.cache.last(n)
    }

    /// A language model's answer to `request` (the scenario's `[llm]` server, or the run's
    /// recording with `--replay`). Pass a [`BehaviourError::Pending`] on with `?`: the runtime
    /// asks the model, with other agents' requests in flight at the same time, and calls the
    /// behaviour again with the answer.
    ///
    /// A request without a seed gets one drawn from this agent's random stream, so the
    /// server's sampling is part of the reproducible run, and asking again (for another
    /// answer) sends another seed.
    ///
    /// # Errors
    ///
    /// `Pending` while the answer is fetched; a failure when the scenario has no `[llm]`.
    pub fn complete(&mut self, mut request: CompletionRequest) -> Result<Completion, BehaviourError> {
        if request.seed.is_none() {
            // Below 2^31: every server takes it as an integer seed.
            request.seed = Some(random::below(self.rng, 1 << 31));
        }
        match self.completions.as_deref_mut() {
            Some(completions) => completions.complete(&request),
            None => NoModel.complete(&request),
        }
    }

    /// `n` distinct values anyone remembered, drawn at random from this agent's stream
    /// (fewer if the cache holds fewer).
    pub fn sample(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        let count = self.cache.count()?;
        let ranks = random::distinct(self.rng, count, n);
        self.cache.at_ranks(&ranks)
    }
}
