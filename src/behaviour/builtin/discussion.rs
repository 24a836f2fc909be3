//! `discussion`: the old project's social-media debate, with templates instead of an LLM.
//!
//! Each agent has a fixed stance in `[-1, 1]`, the first draw of its own random stream, so
//! every agent can know every other agent's stance without a message. The first discussion
//! agent opens; the agent a post is addressed to replies with a post shaped by its stance, the
//! post it answers and its feed (the last `feed` posts overall, read from the cache), and
//! addresses the next speaker by the policy:
//!
//! - `random`: any other agent;
//! - `round_robin`: the next agent in declaration order;
//! - `echo`: with probability `echo_probability`, one of the half of the others whose stance is
//!   closest to its own; otherwise the agent whose stance is most different.
//!
//! One post per tick: only the agent addressed speaks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::check_probability;
use crate::behaviour::ParamError;
use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, Registry, Setup};
use crate::message::Message;
use crate::random;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscussionParams {
    pub topic: String,
    pub policy: Policy,
    pub echo_probability: f64,
    pub feed: u64,
}

impl Default for DiscussionParams {
    fn default() -> Self {
        DiscussionParams {
            topic: "a four-day work week".to_string(),
            policy: Policy::Random,
            echo_probability: 0.6,
            feed: 5,
        }
    }
}

/// How the speaker picks who speaks next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Random,
    RoundRobin,
    Echo,
}

pub struct Discussion {
    topic: String,
    policy: Policy,
    echo_probability: f64,
    feed: usize,
    /// Every discussion agent's stance, by peer index.
    stances: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiscussionState {
    pub stance: f64,
    pub posts: u64,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "discussion",
        "a templated social-media debate: the agent addressed replies and picks the next speaker",
        &[
            ("topic", "what the agents debate"),
            (
                "policy",
                "who speaks next: \"random\", \"round_robin\" or \"echo\"",
            ),
            (
                "echo_probability",
                "echo policy: probability of picking a like-minded agent",
            ),
            (
                "feed",
                "how many recent posts (from the cache) a speaker reads before replying",
            ),
        ],
        |p: DiscussionParams, setup: &Setup<'_>| {
            check_probability("echo_probability", p.echo_probability)?;
            if p.feed > 1000 {
                return Err(ParamError::at(
                    "feed",
                    format!("`feed` is limited to 1000 posts, got {}", p.feed),
                ));
            }
            if p.topic.len() > 4096 {
                return Err(ParamError::at("topic", "`topic` is limited to 4 KiB"));
            }
            let stances = setup
                .peers
                .iter()
                .map(|a| stance_from(&mut random::agent_rng(setup.seed, a.index)))
                .collect();
            Ok(Discussion {
                topic: p.topic,
                policy: p.policy,
                echo_probability: p.echo_probability,
                feed: p.feed as usize,
                stances,
            })
        },
    );
}

fn stance_from(rng: &mut random::ChaCha8Rng) -> f64 {
    2.0 * random::unit(rng) - 1.0
}

fn position(stance: f64) -> &'static str {
    match stance {
        s if s > 0.5 => "strongly support",
        s if s > 0.0 => "lean towards",
        s if s > -0.5 => "have doubts about",
        _ => "oppose",
    }
}

impl Discussion {
    /// The peer index of the next speaker.
    fn next_speaker(&self, me: usize, ctx: &mut Context<'_>) -> usize {
        let n = self.stances.len();
        if n < 2 {
            return me;
        }
        let others = || (0..n).filter(move |&i| i != me);
        match self.policy {
            Policy::RoundRobin => (me + 1) % n,
            Policy::Random => {
                let pick = ctx.below(n as u64 - 1) as usize;
                if pick >= me { pick + 1 } else { pick }
            }
            Policy::Echo => {
                let mine = self.stances[me];
                let distance = |i: usize| (self.stances[i] - mine).abs();
                let mut by_distance: Vec<usize> = others().collect();
                // Ties keep declaration order: the sort is stable.
                by_distance.sort_by(|&a, &b| distance(a).total_cmp(&distance(b)));
                if ctx.chance(self.echo_probability) {
                    let half = by_distance.len().div_ceil(2);
                    by_distance[ctx.below(half as u64) as usize]
                } else {
                    by_distance[by_distance.len() - 1]
                }
            }
        }
    }

    fn post(
        &self,
        state: &mut DiscussionState,
        text: String,
        replying_to: Option<&str>,
        ctx: &mut Context<'_>,
    ) -> Effects {
        let me = ctx.peer_index();
        let next = self.next_speaker(me, ctx);
        let next_name: Arc<str> = ctx.peers()[next].clone();
        state.posts += 1;
        let data = json!({
            "stance": state.stance,
            "replying_to": replying_to,
            "post": state.posts,
        });
        Effects::new()
            .remember(json!({ "author": ctx.agent(), "stance": state.stance, "text": text }))
            .publish(Outgoing::to(next_name.to_string(), text).with_data(data))
    }
}

impl Behaviour for Discussion {
    type State = DiscussionState;

    fn init(&self, ctx: &mut Context<'_>) -> Result<DiscussionState, BehaviourError> {
        Ok(DiscussionState {
            stance: stance_from(ctx.rng()),
            posts: 0,
        })
    }

    fn on_start(
        &self,
        state: &mut DiscussionState,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if ctx.peer_index() != 0 {
            return Ok(Effects::none());
        }
        let text = format!(
            "Let's talk about {}. I {} it.",
            self.topic,
            position(state.stance)
        );
        Ok(self.post(state, text, None, ctx))
    }

    fn on_message(
        &self,
        state: &mut DiscussionState,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if msg.to.as_deref() != Some(ctx.agent()) {
            return Ok(Effects::none());
        }
        let feed = ctx.last(self.feed)?;
        let in_favour = feed
            .iter()
            .filter(|e| e.value.get("stance").and_then(|s| s.as_f64()).unwrap_or(0.0) > 0.0)
            .count();
        let their = msg.data_f64("stance").unwrap_or(0.0);
        let verdict = if (their > 0.0) == (state.stance > 0.0) {
            "I agree with"
        } else {
            "I disagree with"
        };
        let mood = match (feed.len(), in_favour) {
            (0, _) => String::new(),
            (1, 1) => " The last post was in favour.".to_string(),
            (1, _) => " The last post was against.".to_string(),
            (n, k) => format!(" Of the last {n} posts, {k} were in favour."),
        };
        let text = format!(
            "@{} {verdict} you on {}: I {} it.{mood}",
            msg.sender_id,
            self.topic,
            position(state.stance),
        );
        Ok(self.post(state, text, Some(&msg.sender_id), ctx))
    }
}
