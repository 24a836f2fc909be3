//! `gossip`: a rumor spreads from a few seeds to random peers.
//!
//! The first `seeds` gossip agents (declaration order) know the rumor at the start and send
//! it to `fanout` random peers. An agent hearing it for the first time (a rumor addressed to
//! it) decides, with probability `p_forward`, to pass it on once: at the end of the tick in
//! which it heard it (lockstep), or at once (free mode), to `fanout` random peers. Each agent
//! counts itself in the `informed` metric the tick it learns the rumor, so the summary shows
//! how many agents are informed tick by tick; each agent reports its own `informed` flag
//! (0 or 1) at the start and when it learns the rumor.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::check_probability;
use crate::behaviour::ParamError;
use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, Registry, Setup};
use crate::message::Message;

/// The metric gossip agents report: agents newly informed, per tick.
pub const INFORMED: &str = "informed";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipParams {
    pub fanout: u64,
    pub p_forward: f64,
    pub seeds: u64,
    pub rumor: String,
}

impl Default for GossipParams {
    fn default() -> Self {
        GossipParams {
            fanout: 2,
            p_forward: 1.0,
            seeds: 1,
            rumor: "the bridge is closed".to_string(),
        }
    }
}

pub struct Gossip {
    fanout: usize,
    p_forward: f64,
    seeds: u64,
    rumor: String,
    lockstep: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GossipState {
    pub informed: bool,
    /// Heard this tick and decided to pass it on at the end of the tick.
    pub forward_pending: bool,
    /// How many hands the rumor went through to reach this agent.
    pub hop: u64,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "gossip",
        "a rumor spreads: seeds tell `fanout` random peers; first-time hearers pass it on once",
        &[
            ("fanout", "how many random peers each teller sends the rumor to"),
            ("p_forward", "probability that an agent passes the rumor on"),
            (
                "seeds",
                "how many agents (the first ones declared) know it at the start",
            ),
            ("rumor", "the text that spreads"),
        ],
        |p: GossipParams, setup: &Setup<'_>| {
            if p.fanout < 1 {
                return Err(ParamError::at("fanout", "`fanout` must be at least 1"));
            }
            check_probability("p_forward", p.p_forward)?;
            if p.seeds > setup.peers.len() as u64 {
                return Err(ParamError::at(
                    "seeds",
                    format!(
                        "`seeds` = {} but there are only {} gossip agents",
                        p.seeds,
                        setup.peers.len()
                    ),
                ));
            }
            if p.rumor.len() > 64 * 1024 {
                return Err(ParamError::at("rumor", "`rumor` is limited to 64 KiB"));
            }
            Ok(Gossip {
                fanout: p.fanout.min(1 << 20) as usize,
                p_forward: p.p_forward,
                seeds: p.seeds,
                rumor: p.rumor,
                lockstep: setup.mode == crate::scenario::Mode::Lockstep,
            })
        },
    );
}

impl Gossip {
    fn tell(&self, hop: u64, ctx: &mut Context<'_>) -> Effects {
        let mut effects = Effects::none();
        for peer in ctx.random_peers(self.fanout) {
            effects =
                effects.publish(Outgoing::to(peer, self.rumor.clone()).with_data(json!({ "hop": hop + 1 })));
        }
        effects
    }
}

impl Behaviour for Gossip {
    type State = GossipState;

    /// Most of what an agent hears is not addressed to it: taken a batch at a time (the
    /// default `on_messages`, each message in turn), a lockstep tick's messages are not
    /// listed again for each of its agents. Gossip never fails, so failing as a batch costs
    /// nothing.
    const HANDLES_BATCHES: bool = true;

    fn init(&self, ctx: &mut Context<'_>) -> Result<GossipState, BehaviourError> {
        Ok(GossipState {
            informed: (ctx.peer_index() as u64) < self.seeds,
            ..GossipState::default()
        })
    }

    fn on_start(&self, state: &mut GossipState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        // Each agent's flag is reported at the start and when it changes (not every tick, so
        // that an agent with nothing to do still commits nothing): agents.csv holds the
        // events, and a plot steps from one to the next.
        if !state.informed {
            return Ok(Effects::new().report(INFORMED, 0.0));
        }
        Ok(self.tell(0, ctx).count(INFORMED, 1).report(INFORMED, 1.0))
    }

    fn on_message(
        &self,
        state: &mut GossipState,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if state.informed || !msg.is_addressed_to(ctx.agent()) || msg.content != self.rumor {
            return Ok(Effects::none());
        }
        state.informed = true;
        state.hop = msg.data_u64("hop").unwrap_or(1);
        let effects = Effects::new().count(INFORMED, 1).report(INFORMED, 1.0);
        if !ctx.chance(self.p_forward) {
            return Ok(effects);
        }
        if self.lockstep {
            state.forward_pending = true;
            return Ok(effects);
        }
        let mut told = self.tell(state.hop, ctx);
        told.extend(effects);
        Ok(told)
    }

    fn on_tick(&self, state: &mut GossipState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        if !state.forward_pending {
            return Ok(Effects::none());
        }
        state.forward_pending = false;
        Ok(self.tell(state.hop, ctx))
    }
}
