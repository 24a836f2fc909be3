//! Unit-testing a behaviour without a runtime.
//!
//! A [`Harness`] plays the runtime for one agent: it gives the behaviour a name, peers, the
//! agent's own random stream and a cache that remembers what the behaviour remembers, and
//! hands it messages as the runtime would. A behaviour that asks a language model gets its
//! answers from a function of the request ([`Harness::model`]), and the harness keeps every
//! request ([`Harness::requests`]).
//!
//! ```
//! use agora::behaviour::testing::Harness;
//! use agora::{Behaviour, BehaviourError, Context, Effects, Message, Outgoing};
//!
//! struct Echo;
//!
//! impl Behaviour for Echo {
//!     type State = u32;
//!     fn init(&self, _ctx: &mut Context<'_>) -> Result<u32, BehaviourError> {
//!         Ok(0)
//!     }
//!     fn on_message(&self, heard: &mut u32, msg: &Message, _ctx: &mut Context<'_>)
//!         -> Result<Effects, BehaviourError>
//!     {
//!         *heard += 1;
//!         Ok(Effects::new().publish(Outgoing::to(&*msg.sender_id, msg.content.clone())))
//!     }
//! }
//!
//! let mut harness = Harness::new(Echo).peers(&["a", "b"]).agent("a");
//! let (mut state, _) = harness.start().unwrap();
//! let effects = harness.handle(&mut state, &Harness::<Echo>::message_from("b", "hi")).unwrap();
//! assert_eq!(state, 1);
//! assert_eq!(effects.published()[0].to.as_deref(), Some("b"));
//! ```

use std::sync::Arc;

use super::{Behaviour, BehaviourError, CacheReads, Completions, Context, Effects, Messages};
use crate::backend::CacheEntry;
use crate::llm::{Completion, CompletionRequest, Usage};
use crate::message::Message;
use crate::random::{self, ChaCha8Rng};
use crate::scenario::AgentSpec;

/// One agent of a behaviour, run by hand.
pub struct Harness<B: Behaviour> {
    behaviour: B,
    agent: AgentSpec,
    peers: Vec<Arc<str>>,
    seed: u64,
    rng: ChaCha8Rng,
    tick: Option<u64>,
    cache: Remembered,
    model: FakeModel,
}

type Answer = Box<dyn FnMut(&CompletionRequest) -> String>;

/// Answers completions with a function of the request, and keeps the requests.
#[derive(Default)]
struct FakeModel {
    answer: Option<Answer>,
    requests: Vec<CompletionRequest>,
}

impl Completions for FakeModel {
    fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, BehaviourError> {
        let Some(answer) = self.answer.as_mut() else {
            return super::NoModel.complete(request);
        };
        self.requests.push(request.clone());
        Ok(Completion {
            text: answer(request),
            usage: Usage::default(),
        })
    }
}

/// What the behaviour remembered, as its cache reads see it.
#[derive(Default)]
struct Remembered {
    agent: String,
    entries: Vec<CacheEntry>,
}

impl CacheReads for Remembered {
    fn own_last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        let own: Vec<CacheEntry> = self
            .entries
            .iter()
            .filter(|e| e.agent == self.agent)
            .cloned()
            .collect();
        Ok(own[own.len().saturating_sub(n)..].to_vec())
    }

    fn last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        Ok(self.entries[self.entries.len().saturating_sub(n)..].to_vec())
    }

    fn count(&mut self) -> Result<u64, BehaviourError> {
        Ok(self.entries.len() as u64)
    }

    fn at_ranks(&mut self, ranks: &[u64]) -> Result<Vec<CacheEntry>, BehaviourError> {
        Ok(ranks
            .iter()
            .filter_map(|&r| self.entries.get(r as usize).cloned())
            .collect())
    }
}

impl<B: Behaviour> Harness<B> {
    /// Agent `agent` (the only peer), seed 0, lockstep tick 0.
    pub fn new(behaviour: B) -> Self {
        let name: Arc<str> = Arc::from("agent");
        Harness {
            behaviour,
            agent: AgentSpec {
                name: name.clone(),
                index: 0,
                table: 0,
                peer_index: 0,
                table_index: 0,
            },
            peers: vec![name],
            seed: 0,
            rng: random::agent_rng(0, 0),
            tick: Some(0),
            cache: Remembered {
                agent: "agent".to_string(),
                entries: Vec::new(),
            },
            model: FakeModel::default(),
        }
    }

    /// Answers the behaviour's completions ([`Context::complete`]) with `answer(request)`.
    /// Without it, a completion fails as in a scenario without `[llm]`.
    pub fn model(mut self, answer: impl FnMut(&CompletionRequest) -> String + 'static) -> Self {
        self.model.answer = Some(Box::new(answer));
        self
    }

    /// Every completion the behaviour asked for so far, in order (seeds filled in).
    pub fn requests(&self) -> &[CompletionRequest] {
        &self.model.requests
    }

    /// The agents that run this behaviour, in declaration order; the agent is the first
    /// unless [`agent`](Harness::agent) names another.
    pub fn peers(mut self, names: &[&str]) -> Self {
        self.peers = names.iter().map(|n| Arc::from(*n)).collect();
        let first = self.peers.first().map_or("agent", |p| &**p).to_string();
        self.agent(&first)
    }

    /// Which of the peers the agent is (added to them if it is not one), with its random
    /// stream as in a scenario that declares the peers in this order.
    pub fn agent(mut self, name: &str) -> Self {
        let place = match self.peers.iter().position(|p| &**p == name) {
            Some(place) => place,
            None => {
                self.peers.push(Arc::from(name));
                self.peers.len() - 1
            }
        };
        self.agent = AgentSpec {
            name: self.peers[place].clone(),
            index: place,
            table: 0,
            peer_index: place,
            table_index: place,
        };
        self.cache.agent = name.to_string();
        self.rng = random::agent_rng(self.seed, place);
        self
    }

    /// The scenario seed the agent's random stream comes from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.rng = random::agent_rng(seed, self.agent.index);
        self
    }

    /// The lockstep tick the next calls see (`None`: free mode).
    pub fn at_tick(&mut self, tick: Option<u64>) {
        self.tick = tick;
    }

    /// What the agent remembered so far, oldest first.
    pub fn remembered(&self) -> &[CacheEntry] {
        &self.cache.entries
    }

    /// `init` and `on_start`: the agent's first state and what it does first.
    ///
    /// # Errors
    ///
    /// What the behaviour fails with.
    pub fn start(&mut self) -> Result<(B::State, Effects), BehaviourError> {
        let mut state = self.call(|b, ctx| b.init(ctx))?;
        let effects = self.effects(|b, ctx| b.on_start(&mut state, ctx))?;
        Ok((state, effects))
    }

    /// `on_message`: what the agent does with `msg`.
    ///
    /// # Errors
    ///
    /// What the behaviour fails with.
    pub fn handle(&mut self, state: &mut B::State, msg: &Message) -> Result<Effects, BehaviourError> {
        self.effects(|b, ctx| b.on_message(state, msg, ctx))
    }

    /// What the agent does with `messages` as one step's batch: `on_messages` (whose default
    /// hands each to `on_message`), as the runtime calls it for a behaviour that handles
    /// batches.
    ///
    /// # Errors
    ///
    /// What the behaviour fails with.
    pub fn handle_all(
        &mut self,
        state: &mut B::State,
        messages: &[Message],
    ) -> Result<Effects, BehaviourError> {
        let list: Vec<&Message> = messages.iter().collect();
        self.effects(|b, ctx| b.on_messages(state, &Messages::new(&list), ctx))
    }

    /// `on_tick`: what the agent does at the end of the tick.
    ///
    /// # Errors
    ///
    /// What the behaviour fails with.
    pub fn end_tick(&mut self, state: &mut B::State) -> Result<Effects, BehaviourError> {
        self.effects(|b, ctx| b.on_tick(state, ctx))
    }

    /// A broadcast from `sender`, as the runtime hands it over (the sender's first message).
    pub fn message_from(sender: &str, content: &str) -> Message {
        Message {
            tick: None,
            sender_id: Arc::from(sender),
            seq: Some(1),
            to: None,
            content: content.to_string(),
            data: None,
            decoded: crate::message::DecodedData::default(),
        }
    }

    /// A message from `sender` carrying `data`, as `Outgoing::with_data` would publish it (an
    /// object as it is; anything else as `{"value": ...}`): for behaviours that read
    /// `msg.payload::<T>()`.
    pub fn message_with_data(sender: &str, content: &str, data: serde_json::Value) -> Message {
        Message {
            data: crate::behaviour::Outgoing::broadcast(content)
                .with_data(data)
                .data,
            ..Self::message_from(sender, content)
        }
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&B, &mut Context<'_>) -> Result<T, BehaviourError>,
    ) -> Result<T, BehaviourError> {
        let mut ctx = Context::new(
            &self.agent,
            &self.peers,
            self.tick,
            &mut self.rng,
            &mut self.cache,
        )
        .with_completions(&mut self.model);
        f(&self.behaviour, &mut ctx)
    }

    /// Calls the behaviour and keeps what its effects remembered, as the runtime would.
    fn effects(
        &mut self,
        f: impl FnOnce(&B, &mut Context<'_>) -> Result<Effects, BehaviourError>,
    ) -> Result<Effects, BehaviourError> {
        let effects = self.call(f)?;
        if let Some(error) = effects.unwritable() {
            return Err(BehaviourError::new(error));
        }
        for value in effects.remembered() {
            let own = self
                .cache
                .entries
                .iter()
                .filter(|e| e.agent == self.cache.agent)
                .count();
            self.cache.entries.push(CacheEntry {
                agent: self.cache.agent.clone(),
                n: own as u64 + 1,
                tick: self.tick,
                value,
            });
        }
        Ok(effects)
    }
}
