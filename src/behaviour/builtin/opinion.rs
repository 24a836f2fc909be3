//! `opinion`: bounded-confidence opinion dynamics (Hegselmann-Krause).
//!
//! Each agent starts with an opinion drawn uniformly from `[0, 1]` and publishes it every
//! tick. At the end of a tick it moves `mu` of the way towards the mean of the opinions it
//! heard that tick that lie within `epsilon` of its own (its own opinion included, as in the
//! classic model). Opinions are convex combinations of opinions, so they stay in `[0, 1]`.
//! Lockstep only: the model is defined tick by tick.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::check_probability;
use crate::behaviour::ParamError;
use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Messages, Outgoing, Registry, Setup};
use crate::message::Message;
use crate::scenario::Mode;

/// What an opinion message carries in its `data`, decoded once per message for all readers.
#[derive(Debug, Clone, Deserialize)]
struct Announced {
    opinion: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpinionParams {
    pub epsilon: f64,
    pub mu: f64,
}

impl Default for OpinionParams {
    fn default() -> Self {
        OpinionParams {
            epsilon: 0.2,
            mu: 0.5,
        }
    }
}

pub struct Opinion {
    epsilon: f64,
    mu: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpinionState {
    pub opinion: f64,
    /// The opinions heard this tick that lie within `epsilon`: their sum and count.
    pub near_sum: f64,
    pub near_count: u64,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "opinion",
        "bounded confidence (Hegselmann-Krause): move towards the opinions within epsilon",
        &[
            (
                "epsilon",
                "confidence bound: opinions further away than this are ignored",
            ),
            (
                "mu",
                "how far to move towards the mean of the near opinions, from 0 to 1",
            ),
        ],
        |p: OpinionParams, setup: &Setup<'_>| {
            if !(p.epsilon.is_finite() && p.epsilon >= 0.0) {
                return Err(ParamError::at(
                    "epsilon",
                    format!(
                        "`epsilon` must be a finite number of at least 0, got {}",
                        p.epsilon
                    ),
                ));
            }
            check_probability("mu", p.mu)?;
            if setup.mode != Mode::Lockstep {
                return Err(ParamError::new(
                    "opinion runs in lockstep mode only: set scenario.mode = \"lockstep\"",
                ));
            }
            Ok(Opinion {
                epsilon: p.epsilon,
                mu: p.mu,
            })
        },
    );
}

impl Opinion {
    /// `near` (the sum and count of the near opinions heard so far) with `heard` added when
    /// it lies within `epsilon` of `own`. Without a branch: whether an opinion is near is a
    /// coin toss the processor cannot predict. Adding 0.0 to a sum of opinions in [0, 1]
    /// leaves its bits alone.
    #[inline]
    fn add_if_near(&self, own: f64, (sum, count): (f64, u64), heard: f64) -> (f64, u64) {
        let near = (heard - own).abs() <= self.epsilon;
        (sum + if near { heard } else { 0.0 }, count + u64::from(near))
    }
}

/// Publishes the opinion, and reports it as the agent's value for the tick.
fn announce(opinion: f64) -> Effects {
    Effects::new()
        .publish(Outgoing::broadcast(format!("{opinion:.4}")).with_data(json!({ "opinion": opinion })))
        .report("opinion", opinion)
}

impl Behaviour for Opinion {
    type State = OpinionState;

    /// A tick's opinions are read in one loop over the batch's payloads, decoded once for
    /// every agent: most of a large run's time is this loop.
    const HANDLES_BATCHES: bool = true;

    fn init(&self, ctx: &mut Context<'_>) -> Result<OpinionState, BehaviourError> {
        Ok(OpinionState {
            opinion: ctx.unit(),
            ..OpinionState::default()
        })
    }

    fn on_start(&self, state: &mut OpinionState, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(announce(state.opinion))
    }

    /// `clusters`: groups of the tick's opinions, sorted, split wherever two neighbours are
    /// more than `epsilon` apart (agents in different groups no longer hear each other; at
    /// convergence, the model's opinion clusters).
    fn model_reporters(&self, values: &std::collections::BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        let Some(opinions) = values.get("opinion").filter(|o| !o.is_empty()) else {
            return Vec::new();
        };
        let mut sorted = opinions.clone();
        sorted.sort_by(f64::total_cmp);
        let gaps = sorted.windows(2).filter(|w| w[1] - w[0] > self.epsilon).count();
        vec![("clusters".to_string(), (gaps + 1) as f64)]
    }

    fn on_message(
        &self,
        state: &mut OpinionState,
        msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if let Some(announced) = msg.payload::<Announced>() {
            let near = (state.near_sum, state.near_count);
            (state.near_sum, state.near_count) = self.add_if_near(state.opinion, near, announced.opinion);
        }
        Ok(Effects::none())
    }

    fn on_messages(
        &self,
        state: &mut OpinionState,
        messages: &Messages<'_>,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        let own = state.opinion;
        // Summed in the order `on_message` sums them: the same bits. `fold` runs as a plain
        // loop over the batch's shared payloads.
        let (sum, count) =
            messages
                .payloads::<Announced>()
                .fold(
                    (state.near_sum, state.near_count),
                    |near, announced| match announced {
                        Some(announced) => self.add_if_near(own, near, announced.opinion),
                        None => near,
                    },
                );
        state.near_sum = sum;
        state.near_count = count;
        Ok(Effects::none())
    }

    fn on_tick(&self, state: &mut OpinionState, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        let mean = (state.near_sum + state.opinion) / (state.near_count + 1) as f64;
        state.opinion = (state.opinion + self.mu * (mean - state.opinion)).clamp(0.0, 1.0);
        state.near_sum = 0.0;
        state.near_count = 0;
        Ok(announce(state.opinion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::testing::Harness;

    #[test]
    fn a_batch_moves_the_opinion_as_its_messages_one_by_one_do() {
        let opinion = || Opinion {
            epsilon: 0.2,
            mu: 0.5,
        };
        let heard: Vec<Message> = [0.35, 0.9, 0.5, 0.41, 0.55]
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let mut m = Harness::<Opinion>::message_from(&format!("a{i}"), "x");
                m.data = json!({ "opinion": x }).as_object().cloned();
                m
            })
            .collect();
        let start = OpinionState {
            opinion: 0.4,
            ..OpinionState::default()
        };
        let mut one_by_one = start.clone();
        let mut harness = Harness::new(opinion());
        for m in &heard {
            assert!(harness.handle(&mut one_by_one, m).unwrap().is_empty());
        }
        let mut batched = start;
        let effects = Harness::new(opinion()).handle_all(&mut batched, &heard).unwrap();
        assert!(effects.is_empty());
        // 0.9 is too far away; 0.35, 0.5, 0.41 and 0.55 are near.
        assert_eq!(batched.near_count, 4);
        assert_eq!(batched.near_sum.to_bits(), one_by_one.near_sum.to_bits());
        assert_eq!(batched.near_count, one_by_one.near_count);
    }
}
