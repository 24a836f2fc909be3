//! What steps count, added up: one type from an agent's step to the run's summary.
//!
//! An agent's step counts what it did; a shard adds up its agents' steps, a worker reports its
//! shard's sum, the coordinator adds up the workers' (or its own shard's) and the run's
//! summary prints the total. Every one of those is a [`Tally`], added with `+=`.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Counts of what some steps did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Whether nothing at all was counted.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

impl AddAssign<&Tally> for Tally {
    fn add_assign(&mut self, other: &Tally) {
        self.published += other.published;
        self.deliveries += other.deliveries;
        self.handled += other.handled;
        self.dead_letters += other.dead_letters;
        self.failures += other.failures;
        for (name, delta) in &other.metrics {
            self.count(name, *delta);
        }
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        *self += &other;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_field_by_field_and_counter_by_counter() {
        let mut a = Tally {
            published: 1,
            deliveries: 2,
            handled: 3,
            dead_letters: 4,
            failures: 1,
            metrics: BTreeMap::from([("informed".to_string(), 2)]),
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
}
