//! What steps count, added up: one type from an agent's step to the run's summary.
//!
//! An agent's step counts what it did; a shard adds up its agents' steps, a worker reports its
//! shard's sum, the coordinator adds up the workers' (or its own shard's) and the run's
//! summary prints the total. Every one of those is a [`Tally`], added with `+=`.
//!
//! Besides counts, a tally carries what behaviours reported for the run's metrics: counters
//! (whole numbers, summed over agents), levels (numbers set for the whole model; when several
//! agents set one in the same tick, the largest stands, so the result does not depend on the
//! order in which processes add their tallies) and agent values (one number per agent and
//! name; a later report replaces an earlier one).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Counts of what some steps did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Messages published.
    pub published: u64,
    /// Stream entries read and acknowledged.
    pub deliveries: u64,
    /// Messages handed to behaviours and handled.
    pub handled: u64,
    /// Entries sent to the dead-letter stream (malformed ones included).
    pub dead_letters: u64,
    /// Of the dead letters, messages a behaviour kept failing on.
    pub failures: u64,
    /// Counters behaviours reported (such as gossip's `informed`), by name.
    pub metrics: BTreeMap<String, i64>,
    /// Model-level numbers behaviours set (such as opinion's `clusters`), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub levels: BTreeMap<String, f64>,
    /// Agent-level numbers (such as each agent's `opinion`): by agent, `(name, value)` in
    /// the order first reported. Shared names and a short list per agent: a step reports
    /// them for every agent every tick, so they must cost next to nothing.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<Arc<str>, Vec<(Cow<'static, str>, f64)>>,
}

impl Tally {
    /// Adds `delta` to the counter `name`.
    pub fn count(&mut self, name: &str, delta: i64) {
        match self.metrics.get_mut(name) {
            Some(value) => *value += delta,
            None => {
                self.metrics.insert(name.to_string(), delta);
            }
        }
    }

    /// Sets the level `name`; the largest of the values set stands.
    pub fn set_level(&mut self, name: &str, value: f64) {
        match self.levels.get_mut(name) {
            Some(old) => *old = old.max(value),
            None => {
                self.levels.insert(name.to_string(), value);
            }
        }
    }

    /// Records `agent`'s value of `name`, replacing an earlier one.
    // A `Cow` and not a `&str`: a static name is stored by cloning the `Cow`, no allocation.
    #[allow(clippy::ptr_arg)]
    pub fn report(&mut self, agent: &Arc<str>, name: &Cow<'static, str>, value: f64) {
        let values = match self.agents.get_mut(agent) {
            Some(values) => values,
            None => self.agents.entry(agent.clone()).or_default(),
        };
        put_value(values, name, value);
    }

    /// Adds `other`'s counts, counters and levels, leaving out agent values: the running
    /// totals of a run or an agent need no one's last opinion.
    pub fn add_counts(&mut self, other: &Tally) {
        self.published += other.published;
        self.deliveries += other.deliveries;
        self.handled += other.handled;
        self.dead_letters += other.dead_letters;
        self.failures += other.failures;
        for (name, delta) in &other.metrics {
            self.count(name, *delta);
        }
        for (name, value) in &other.levels {
            self.set_level(name, *value);
        }
    }

    /// Whether behaviours reported anything for the metrics.
    pub fn has_reports(&self) -> bool {
        !(self.metrics.is_empty() && self.levels.is_empty() && self.agents.is_empty())
    }

    /// Whether nothing at all was counted.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

impl Tally {
    /// Appends the tally's JSON to `out`: the bytes its `Serialize` writes. Every step's
    /// record carries two tallies, and serde's struct path (every field name escaped again)
    /// was a twentieth of a lockstep run.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json;
        for (name, n) in [
            ("{\"published\":", self.published),
            (",\"deliveries\":", self.deliveries),
            (",\"handled\":", self.handled),
            (",\"dead_letters\":", self.dead_letters),
            (",\"failures\":", self.failures),
        ] {
            out.extend_from_slice(name.as_bytes());
            json::integer(out, n);
        }
        out.extend_from_slice(b",\"metrics\":");
        json::object(out, &self.metrics, |out, n| json::integer(out, *n));
        if !self.levels.is_empty() {
            out.extend_from_slice(b",\"levels\":");
            json::object(out, &self.levels, json::value);
        }
        if !self.agents.is_empty() {
            out.extend_from_slice(b",\"agents\":");
            json::object(out, &self.agents, |out, values| {
                // `[["opinion",0.5],...]`: serde writes a pair as an array.
                out.push(b'[');
                for (j, (name, value)) in values.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    json::string(out, name);
                    out.push(b',');
                    json::value(out, value);
                    out.push(b']');
                }
                out.push(b']');
            });
        }
        out.push(b'}');
    }
}

/// Sets `name` in an agent's values, replacing an earlier value.
// A `&Cow` for the reason `Tally::report` takes one: a static name is kept without allocating.
#[allow(clippy::ptr_arg)]
fn put_value(values: &mut Vec<(Cow<'static, str>, f64)>, name: &Cow<'static, str>, value: f64) {
    match values.iter_mut().find(|(n, _)| n == name) {
        Some((_, old)) => *old = value,
        None => values.push((name.clone(), value)),
    }
}

impl AddAssign<&Tally> for Tally {
    fn add_assign(&mut self, other: &Tally) {
        self.add_counts(other);
        for (agent, values) in &other.agents {
            for (name, value) in values {
                self.report(agent, name, *value);
            }
        }
    }
}

impl AddAssign for Tally {
    /// As `+= &other`, moving `other`'s agent values instead of copying them: a tick's tally
    /// gathers one agent's values from each of its thousands of steps.
    fn add_assign(&mut self, other: Tally) {
        self.add_counts(&other);
        for (agent, values) in other.agents {
            match self.agents.entry(agent) {
                std::collections::btree_map::Entry::Vacant(place) => {
                    place.insert(values);
                }
                std::collections::btree_map::Entry::Occupied(mut place) => {
                    for (name, value) in &values {
                        put_value(place.get_mut(), name, *value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_written_by_hand_is_serdes() {
        let (x, odd): (Arc<str>, Arc<str>) = ("x".into(), "a \"quoted\"\n name".into());
        let mut full = Tally {
            published: 1,
            deliveries: u64::MAX,
            handled: 3,
            dead_letters: 0,
            failures: 2,
            metrics: BTreeMap::from([("informed".to_string(), -2), ("é\t".to_string(), i64::MIN)]),
            ..Tally::default()
        };
        full.set_level("clusters", 3.0);
        full.set_level("tiny", 1e-300);
        full.set_level("nan", f64::NAN);
        full.report(&x, &"opinion".into(), 0.1 + 0.2);
        full.report(&x, &"other".into(), -0.0);
        full.report(&odd, &"opinion".into(), f64::INFINITY);
        for tally in [Tally::default(), full] {
            let mut out = Vec::new();
            tally.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&tally).unwrap()
            );
        }
    }

    #[test]
    fn tallies_add_field_by_field_and_counter_by_counter() {
        let mut a = Tally {
            published: 1,
            deliveries: 2,
            handled: 3,
            dead_letters: 4,
            failures: 1,
            metrics: BTreeMap::from([("informed".to_string(), 2)]),
            ..Tally::default()
        };
        let mut b = a.clone();
        b.count("other", -1);
        a += &b;
        assert_eq!(
            (a.published, a.deliveries, a.handled, a.dead_letters, a.failures),
            (2, 4, 6, 8, 2)
        );
        assert_eq!(a.metrics["informed"], 4);
        assert_eq!(a.metrics["other"], -1);
        assert!(Tally::default().is_empty() && !a.is_empty());
    }

    #[test]
    fn levels_keep_the_largest_and_agent_values_the_latest() {
        let mut a = Tally::default();
        a.set_level("clusters", 3.0);
        let (x, y, opinion): (Arc<str>, Arc<str>, Cow<'static, str>) =
            ("x".into(), "y".into(), "opinion".into());
        a.report(&x, &opinion, 0.25);
        let mut b = Tally::default();
        b.set_level("clusters", 2.0);
        b.report(&x, &opinion, 0.5);
        b.report(&y, &opinion, 0.75);
        let mut ab = a.clone();
        ab += &b;
        let mut moved = a.clone();
        moved += b.clone();
        assert_eq!(moved, ab, "adding by value and by reference agree");
        let mut ba = b.clone();
        ba += &a;
        assert_eq!(ab.levels, ba.levels, "the order of adding does not matter");
        assert_eq!(ab.levels["clusters"], 3.0);
        assert_eq!(ab.agents["x"], [(opinion.clone(), 0.5)]);
        assert_eq!(ab.agents["y"], [(opinion, 0.75)]);
        assert!(ab.has_reports() && !Tally::default().has_reports());
    }
}
