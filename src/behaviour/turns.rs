//! Turn-taking: who speaks next. The old project's turn controller, as a policy any behaviour
//! can use; `discussion` and `llm` do.
//!
//! The speaker picks the next one and addresses its post to it (the message's `to`), so the
//! choice is part of the transcript, and every draw comes from the speaker's own random
//! stream, so it is reproducible.
//!
//! - `random`: any other agent but the last speaker (the one being answered), uniformly;
//! - `round_robin`: the next agent in declaration order;
//! - `echo`: with probability `echo_probability`, one of the half of the others whose stance
//!   is closest to the speaker's; otherwise the one whose stance is farthest;
//! - `contrast`: the mirror image: with probability `echo_probability`, one of the half whose
//!   stance is farthest; otherwise the closest.
//!
//! Two terms change any policy's draw: `fairness > 0` weighs each candidate by
//! `1 / (1 + fairness × posts heard from it)`, so that agents who spoke little are picked
//! more; `explore_epsilon > 0` makes the speaker, with that probability, pick any other agent
//! uniformly instead. Each is drawn only when set, so a scenario without them keeps its
//! transcript.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Context, ParamError};

/// Which policy picks the next speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnPolicy {
    Random,
    RoundRobin,
    Echo,
    Contrast,
}

impl TurnPolicy {
    /// Whether the policy needs every agent's stance.
    pub fn uses_stances(self) -> bool {
        matches!(self, TurnPolicy::Echo | TurnPolicy::Contrast)
    }
}

/// An agent's stance: a number (closeness is the difference) or a label (the same label is
/// close, another is far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stance {
    Number(f64),
    Label(String),
}

impl Stance {
    /// How far apart two stances are: `|a - b|` for numbers, 0 or 1 for labels (and 1 between
    /// a number and a label).
    pub fn distance(&self, other: &Stance) -> f64 {
        match (self, other) {
            (Stance::Number(a), Stance::Number(b)) => (a - b).abs(),
            (Stance::Label(a), Stance::Label(b)) if a == b => 0.0,
            _ => 1.0,
        }
    }
}

/// How many posts an agent heard from each other agent: the fairness term's memory, kept in
/// the agent's state. Empty unless `fairness > 0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard(BTreeMap<String, u64>);

impl Heard {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn from(&self, agent: &str) -> u64 {
        self.0.get(agent).copied().unwrap_or(0)
    }
}

/// A turn-taking policy with its terms.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnTaking {
    pub policy: TurnPolicy,
    pub echo_probability: f64,
    pub fairness: f64,
    pub explore_epsilon: f64,
}

/// What the speaker knows when it picks.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// The agents that take turns, in declaration order (the behaviour's peers).
    pub agents: &'a [Arc<str>],
    /// The speaker's position among them.
    pub me: usize,
    /// The position of the agent being answered, if any.
    pub last_speaker: Option<usize>,
    /// Every agent's stance, by position; used by `echo` and `contrast`.
    pub stances: &'a [Stance],
    pub heard: &'a Heard,
}

impl TurnTaking {
    /// A policy with its terms checked.
    ///
    /// # Errors
    ///
    /// A probability outside `[0, 1]` or a negative fairness, naming the parameter.
    pub fn new(
        policy: TurnPolicy,
        echo_probability: f64,
        fairness: f64,
        explore_epsilon: f64,
    ) -> Result<Self, ParamError> {
        for (name, p) in [
            ("echo_probability", echo_probability),
            ("explore_epsilon", explore_epsilon),
        ] {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return Err(ParamError::at(
                    name,
                    format!("`{name}` must be a number between 0 and 1, got {p}"),
                ));
            }
        }
        if !(fairness.is_finite() && fairness >= 0.0) {
            return Err(ParamError::at(
                "fairness",
                format!("`fairness` must be 0 or more, got {fairness}"),
            ));
        }
        Ok(TurnTaking {
            policy,
            echo_probability,
            fairness,
            explore_epsilon,
        })
    }

    /// Counts a post by `sender`, when the fairness term needs it.
    pub fn hear(&self, heard: &mut Heard, sender: &str) {
        if self.fairness > 0.0 {
            *heard.0.entry(sender.to_string()).or_insert(0) += 1;
        }
    }

    /// The position of the next speaker (the speaker itself when it is alone).
    pub fn next(&self, turn: &Turn<'_>, ctx: &mut Context<'_>) -> usize {
        let n = turn.agents.len();
        let me = turn.me;
        if n < 2 {
            return me;
        }
        let others: Vec<usize> = (0..n).filter(|&i| i != me).collect();
        if self.explore_epsilon > 0.0 && ctx.chance(self.explore_epsilon) {
            return others[ctx.below(others.len() as u64) as usize];
        }
        match self.policy {
            TurnPolicy::RoundRobin => (me + 1) % n,
            TurnPolicy::Random => {
                let candidates: Vec<usize> = match turn.last_speaker {
                    // Answering someone: anyone but them, when there is anyone else.
                    Some(last) if last != me && n > 2 => others.into_iter().filter(|&i| i != last).collect(),
                    _ => others,
                };
                self.draw(&candidates, turn, ctx)
            }
            TurnPolicy::Echo | TurnPolicy::Contrast => {
                let mine = turn.stances.get(me);
                let distance = |i: usize| match (mine, turn.stances.get(i)) {
                    (Some(a), Some(b)) => a.distance(b),
                    _ => 1.0,
                };
                let mut ranked = others;
                // Ties keep declaration order: the sort is stable.
                if self.policy == TurnPolicy::Echo {
                    ranked.sort_by(|&a, &b| distance(a).total_cmp(&distance(b)));
                } else {
                    ranked.sort_by(|&a, &b| distance(b).total_cmp(&distance(a)));
                }
                if ctx.chance(self.echo_probability) {
                    let half = ranked.len().div_ceil(2);
                    self.draw(&ranked[..half], turn, ctx)
                } else {
                    ranked[ranked.len() - 1]
                }
            }
        }
    }

    /// One of `candidates` (not empty): uniformly, or weighted by the fairness term.
    fn draw(&self, candidates: &[usize], turn: &Turn<'_>, ctx: &mut Context<'_>) -> usize {
        if self.fairness <= 0.0 {
            return candidates[ctx.below(candidates.len() as u64) as usize];
        }
        let weight = |i: usize| 1.0 / (1.0 + self.fairness * turn.heard.from(&turn.agents[i]) as f64);
        let total: f64 = candidates.iter().map(|&i| weight(i)).sum();
        let mut point = ctx.unit() * total;
        for &i in candidates {
            point -= weight(i);
            if point < 0.0 {
                return i;
            }
        }
        candidates[candidates.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::EmptyCache;
    use crate::random;
    use crate::scenario::AgentSpec;

    fn names(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("a{i}"))).collect()
    }

    /// How often each agent is picked by agent 0 over `rounds` turns.
    fn picks(
        policy: &TurnTaking,
        agents: &[Arc<str>],
        last: Option<usize>,
        stances: &[Stance],
        heard: &Heard,
    ) -> Vec<u32> {
        let spec = AgentSpec {
            name: agents[0].clone(),
            index: 0,
            table: 0,
            peer_index: 0,
            table_index: 0,
        };
        let mut rng = random::agent_rng(7, 0);
        let mut cache = EmptyCache;
        let mut ctx = Context::new(&spec, agents, Some(1), &mut rng, &mut cache);
        let mut counts = vec![0; agents.len()];
        let turn = Turn {
            agents,
            me: 0,
            last_speaker: last,
            stances,
            heard,
        };
        for _ in 0..2000 {
            counts[policy.next(&turn, &mut ctx)] += 1;
        }
        counts
    }

    fn policy(p: TurnPolicy, echo: f64, fairness: f64, epsilon: f64) -> TurnTaking {
        TurnTaking::new(p, echo, fairness, epsilon).unwrap()
    }

    #[test]
    fn random_never_picks_the_speaker_or_the_one_it_answers() {
        let agents = names(4);
        let counts = picks(
            &policy(TurnPolicy::Random, 0.5, 0.0, 0.0),
            &agents,
            Some(2),
            &[],
            &Heard::default(),
        );
        assert_eq!((counts[0], counts[2]), (0, 0), "{counts:?}");
        assert!(counts[1] > 800 && counts[3] > 800, "{counts:?}");
    }

    #[test]
    fn echo_prefers_the_like_minded_and_contrast_the_others() {
        let agents = names(5);
        let stances: Vec<Stance> = ["for", "for", "against", "for", "against"]
            .iter()
            .map(|s| Stance::Label(s.to_string()))
            .collect();
        let echo = picks(
            &policy(TurnPolicy::Echo, 0.9, 0.0, 0.0),
            &agents,
            None,
            &stances,
            &Heard::default(),
        );
        assert!(echo[1] + echo[3] > 1600, "{echo:?}");
        let contrast = picks(
            &policy(TurnPolicy::Contrast, 0.9, 0.0, 0.0),
            &agents,
            None,
            &stances,
            &Heard::default(),
        );
        assert!(contrast[2] + contrast[4] > 1600, "{contrast:?}");
    }

    #[test]
    fn fairness_favours_the_quiet_and_exploration_reaches_everyone() {
        let agents = names(3);
        let mut heard = Heard::default();
        let fair = policy(TurnPolicy::Random, 0.5, 1.0, 0.0);
        for _ in 0..9 {
            fair.hear(&mut heard, "a1");
        }
        let counts = picks(&fair, &agents, None, &[], &heard);
        // Weights 1/10 and 1: a2 about ten times as often.
        assert!(counts[2] > 6 * counts[1], "{counts:?}");

        let stances = vec![Stance::Number(0.0), Stance::Number(0.1), Stance::Number(1.0)];
        let strict = picks(
            &policy(TurnPolicy::Echo, 1.0, 0.0, 0.0),
            &agents,
            None,
            &stances,
            &Heard::default(),
        );
        assert_eq!(strict[2], 0, "{strict:?}");
        let exploring = picks(
            &policy(TurnPolicy::Echo, 1.0, 0.0, 0.3),
            &agents,
            None,
            &stances,
            &Heard::default(),
        );
        assert!(exploring[2] > 100, "{exploring:?}");
    }

    #[test]
    fn terms_are_checked() {
        assert_eq!(
            TurnTaking::new(TurnPolicy::Echo, 1.5, 0.0, 0.0)
                .unwrap_err()
                .key
                .as_deref(),
            Some("echo_probability")
        );
        assert_eq!(
            TurnTaking::new(TurnPolicy::Echo, 0.5, -1.0, 0.0)
                .unwrap_err()
                .key
                .as_deref(),
            Some("fairness")
        );
        assert_eq!(
            TurnTaking::new(TurnPolicy::Echo, 0.5, 0.0, f64::NAN)
                .unwrap_err()
                .key
                .as_deref(),
            Some("explore_epsilon")
        );
    }
}
