//! `discussion`: the old project's social-media debate, with templates instead of an LLM.
//!
//! Each agent has a fixed stance in `[-1, 1]`, the first draw of its own random stream, so
//! every agent can know every other agent's stance without a message. The first discussion
//! agent opens; the agent a post is addressed to replies with a post shaped by its stance, the
//! post it answers and its feed (the last `feed` posts overall, read from the cache), and
//! addresses the next speaker by the turn-taking policy (`random`, `round_robin`, `echo` or
//! `contrast`, with `fairness` and `explore_epsilon`: see [`crate::behaviour::turns`]).
//!
//! One post per tick: only the agent addressed speaks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::behaviour::ParamError;
use crate::behaviour::turns::{Heard, Stance, Turn, TurnPolicy, TurnTaking};
use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, Registry, Setup};
use crate::message::Message;
use crate::random;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscussionParams {
    pub topic: String,
    pub policy: TurnPolicy,
    pub echo_probability: f64,
    pub fairness: f64,
    pub explore_epsilon: f64,
    pub feed: u64,
}

impl Default for DiscussionParams {
    fn default() -> Self {
        DiscussionParams {
            topic: "a four-day work week".to_string(),
            policy: TurnPolicy::Random,
            echo_probability: 0.6,
            fairness: 0.0,
            explore_epsilon: 0.0,
            feed: 5,
        }
    }
}

pub struct Discussion {
    topic: String,
    turns: TurnTaking,
    feed: usize,
    /// Every discussion agent's stance, by peer index.
    stances: Vec<Stance>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiscussionState {
    pub stance: f64,
    pub posts: u64,
    /// Posts heard from each agent, for the fairness term.
    #[serde(default, skip_serializing_if = "Heard::is_empty")]
    pub heard: Heard,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "discussion",
        "a templated social-media debate: the agent addressed replies and picks the next speaker",
        &[
            ("topic", "what the agents debate"),
            (
                "policy",
                "who speaks next: \"random\" (not the one answered), \"round_robin\", \"echo\" or \"contrast\"",
            ),
            (
                "echo_probability",
                "echo: probability of picking a like-minded agent; contrast: an opposed one",
            ),
            (
                "fairness",
                "weigh the next speaker by 1 / (1 + fairness x posts heard from it); 0: off",
            ),
            (
                "explore_epsilon",
                "probability of picking any other agent instead, whatever the policy",
            ),
            (
                "feed",
                "how many recent posts (from the cache) a speaker reads before replying",
            ),
        ],
        |p: DiscussionParams, setup: &Setup<'_>| {
            let turns = TurnTaking::new(p.policy, p.echo_probability, p.fairness, p.explore_epsilon)?;
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
                .map(|a| Stance::Number(stance_from(&mut random::agent_rng(setup.seed, a.index))))
                .collect();
            Ok(Discussion {
                topic: p.topic,
                turns,
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
    fn post(
        &self,
        state: &mut DiscussionState,
        text: String,
        replying_to: Option<&str>,
        ctx: &mut Context<'_>,
    ) -> Effects {
        let peers: Arc<[Arc<str>]> = ctx.peers().into();
        let turn = Turn {
            agents: &peers,
            me: ctx.peer_index(),
            last_speaker: replying_to.and_then(|r| peers.iter().position(|p| &**p == r)),
            stances: &self.stances,
            heard: &state.heard,
        };
        let next = self.turns.next(&turn, ctx);
        let next_name: Arc<str> = peers[next].clone();
        state.posts += 1;
        let data = json!({
            "stance": state.stance,
            "replying_to": replying_to,
            "post": state.posts,
        });
        Effects::new()
            .remember(json!({ "author": ctx.agent(), "stance": state.stance, "text": text }))
            .publish(Outgoing::to(next_name, text).with_data(data))
            .report("stance", state.stance)
    }
}

impl Behaviour for Discussion {
    type State = DiscussionState;

    fn init(&self, ctx: &mut Context<'_>) -> Result<DiscussionState, BehaviourError> {
        Ok(DiscussionState {
            stance: stance_from(ctx.rng()),
            posts: 0,
            heard: Heard::default(),
        })
    }

    /// `mean_stance`: the mean stance of the tick's speakers (each speaker reports its stance
    /// when it posts).
    fn model_reporters(&self, values: &std::collections::BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        match values.get("stance").filter(|s| !s.is_empty()) {
            Some(stances) => vec![(
                "mean_stance".to_string(),
                stances.iter().sum::<f64>() / stances.len() as f64,
            )],
            None => Vec::new(),
        }
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
        self.turns.hear(&mut state.heard, &msg.sender_id);
        if !msg.is_addressed_to(ctx.agent()) {
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
