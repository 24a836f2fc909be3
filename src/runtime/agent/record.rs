//! An agent's saved record, and the live state it is restored into.
//!
//! The record is what a step commits besides its effects: the behaviour's state as JSON, the
//! position of the agent's random stream, its counters of messages and cache writes, and
//! what its steps counted. It is everything needed to continue the agent in another process
//! (`--resume`, another worker), and to tell after a lost reply whether a commit went through
//! (every record differs from the one before: `steps` grows).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::behaviour::{DynBehaviour, StateBox};
use crate::random::{self, ChaCha8Rng};
use crate::tally::Tally;

/// The saved form of an agent. `C` is how it holds its counts: owned when read back,
/// borrowed when written (every step writes one: no copy of the agent's counters for it).
#[derive(Serialize, Deserialize)]
struct AgentRecord<C = Tally> {
    /// The last committed step's tick (lockstep).
    tick: Option<u64>,
    /// Committed steps so far: makes every record unique, so that after a lost reply the
    /// agent can tell whether its commit went through.
    steps: u64,
    seq: u64,
    cache_n: u64,
    /// The random stream's word position.
    rng: String,
    state: Box<RawValue>,
    /// What the last committed step counted, for a resumed run's totals.
    #[serde(default)]
    last: C,
    /// What all committed steps counted.
    #[serde(default)]
    total: C,
}

impl AgentRecord<&Tally> {
    /// The record's JSON: the bytes its `Serialize` writes, field by field (written every
    /// step, like the transcript's lines).
    fn to_json(&self) -> String {
        use crate::json;
        let mut out = Vec::with_capacity(192 + self.rng.len() + self.state.get().len());
        out.extend_from_slice(b"{\"tick\":");
        json::optional_u64(&mut out, self.tick);
        out.extend_from_slice(b",\"steps\":");
        json::integer(&mut out, self.steps);
        out.extend_from_slice(b",\"seq\":");
        json::integer(&mut out, self.seq);
        out.extend_from_slice(b",\"cache_n\":");
        json::integer(&mut out, self.cache_n);
        out.extend_from_slice(b",\"rng\":");
        json::string(&mut out, &self.rng);
        out.extend_from_slice(b",\"state\":");
        out.extend_from_slice(self.state.get().as_bytes());
        out.extend_from_slice(b",\"last\":");
        self.last.write_json(&mut out);
        out.extend_from_slice(b",\"total\":");
        self.total.write_json(&mut out);
        out.push(b'}');
        // Only serde_json's escaped strings, a JSON value's text and ASCII went in.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The agent as it is between steps (and, during a step, as the step changes it).
pub(super) struct Live {
    pub state: Option<StateBox>,
    pub rng: ChaCha8Rng,
    /// Messages published so far (the last `seq`).
    pub seq: u64,
    /// Cache entries written so far.
    pub cache_n: u64,
    pub tick: Option<u64>,
    pub steps: u64,
    pub last: Tally,
    pub total: Tally,
}

/// The agent's state caught for its record. Two snapshots are equal when a step between
/// them changed nothing the record keeps of the agent itself (its counts aside).
pub(super) struct Snapshot {
    state: Box<RawValue>,
    rng: String,
    seq: u64,
    cache_n: u64,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        (self.seq, self.cache_n, &self.rng, self.state.get())
            == (other.seq, other.cache_n, &other.rng, other.state.get())
    }
}

impl Live {
    /// An agent that has not started: no state, its random stream at the beginning.
    pub fn fresh(seed: u64, index: usize) -> Self {
        Live {
            state: None,
            rng: random::agent_rng(seed, index),
            seq: 0,
            cache_n: 0,
            tick: None,
            steps: 0,
            last: Tally::default(),
            total: Tally::default(),
        }
    }

    /// The agent as `saved` recorded it.
    ///
    /// # Errors
    ///
    /// What is wrong with the record: not JSON, a random position that is not a number, a
    /// state the behaviour cannot restore.
    pub fn restore(
        saved: &str,
        behaviour: &dyn DynBehaviour,
        seed: u64,
        index: usize,
    ) -> Result<Self, String> {
        let record: AgentRecord =
            serde_json::from_str(saved).map_err(|e| format!("saved record is unreadable: {e}"))?;
        let word_pos: u128 = record
            .rng
            .parse()
            .map_err(|_| format!("saved random position {:?} is not a number", record.rng))?;
        let state = behaviour.restore(record.state.get()).map_err(|e| e.to_string())?;
        let mut rng = random::agent_rng(seed, index);
        rng.set_word_pos(word_pos);
        Ok(Live {
            state: Some(state),
            rng,
            seq: record.seq,
            cache_n: record.cache_n,
            tick: record.tick,
            steps: record.steps,
            last: record.last,
            total: record.total,
        })
    }

    /// The state as JSON and the random stream's position, as the record will hold them.
    ///
    /// # Errors
    ///
    /// The agent has not started, or its behaviour cannot save its state as JSON.
    pub fn snapshot(&self, behaviour: &dyn DynBehaviour) -> Result<Snapshot, String> {
        let state = self
            .state
            .as_ref()
            .ok_or("no state to save before the agent started")?;
        let state = behaviour.save(state).map_err(|e| e.to_string())?;
        Ok(Snapshot {
            state,
            rng: self.rng.get_word_pos().to_string(),
            seq: self.seq,
            cache_n: self.cache_n,
        })
    }

    /// The record to save: the live counters with a snapshot's state. Returns the record and
    /// the snapshot back.
    pub fn record(&self, snapshot: Snapshot) -> (String, Snapshot) {
        let record = AgentRecord {
            tick: self.tick,
            steps: self.steps,
            seq: self.seq,
            cache_n: self.cache_n,
            rng: snapshot.rng,
            state: snapshot.state,
            last: &self.last,
            total: &self.total,
        };
        let json = record.to_json();
        let snapshot = Snapshot {
            state: record.state,
            rng: record.rng,
            ..snapshot
        };
        (json, snapshot)
    }
}

/// What all of an agent's committed steps counted, from its saved record; `None` if the
/// record is unreadable. A resumed free-mode run adds these up for its whole-run totals.
pub(crate) fn saved_total(saved: &str) -> Option<Tally> {
    #[derive(Deserialize)]
    struct Totals {
        #[serde(default)]
        total: Tally,
    }
    serde_json::from_str::<Totals>(saved).ok().map(|t| t.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_by_hand_is_serdes() {
        let mut last = Tally {
            published: 2,
            ..Tally::default()
        };
        last.count("informed", 1);
        last.report(&"a_1".into(), &"opinion".into(), 0.25);
        let total = Tally::default();
        for tick in [None, Some(3)] {
            let record = AgentRecord {
                tick,
                steps: 7,
                seq: 12,
                cache_n: 0,
                rng: "340282366920938463463374607431768211455".to_string(),
                state: RawValue::from_string(r#"{"opinion":0.5,"name":"\"x\""}"#.to_string()).unwrap(),
                last: &last,
                total: &total,
            };
            assert_eq!(record.to_json(), serde_json::to_string(&record).unwrap());
            let back: AgentRecord = serde_json::from_str(&record.to_json()).unwrap();
            assert_eq!((back.last, back.tick), (last.clone(), tick));
        }
    }
}
