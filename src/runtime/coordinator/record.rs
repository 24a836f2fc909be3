//! The run's record on the backend (`{stream}:run`): what `--resume` needs to continue a run
//! and to refuse one it cannot continue, read and written as types in this one place.
//!
//! Fields: `status` (running, finished, interrupted, failed), `scenario`, `fingerprint` (of
//! what decides the transcript), `mode`, `seed`, `holder` (the run that holds the stream's
//! lease), and after every lockstep tick `tick` and `checkpoint` (JSON: the tick, what the
//! next tick reads, how much of the transcript is written, the totals so far).

use crate::runtime::shard::Expected;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::LEASE_HOLDER;
use crate::message::EntryId;
use crate::report::{LevelSeries, MetricSeries, StopReason};
use crate::scenario::Scenario;
use crate::tally::Tally;

/// Where a run stands, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunStatus {
    Running,
    Finished,
    Interrupted,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Finished,
            RunStatus::Interrupted,
            RunStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The status a run that stopped for `reason` leaves: only a finished run is marked so;
    /// an interrupted or failed one stays resumable.
    pub fn after(reason: StopReason) -> Self {
        match reason {
            StopReason::Failed => RunStatus::Failed,
            StopReason::Interrupted => RunStatus::Interrupted,
            _ => RunStatus::Finished,
        }
    }

    /// The record's field for this status.
    pub fn field(self) -> [(&'static str, String); 1] {
        [("status", self.as_str().to_string())]
    }
}

/// Counts over the whole run, and the behaviours' counters and levels tick by tick.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct RunTotals {
    pub tally: Tally,
    pub metrics: BTreeMap<String, MetricSeries>,
    #[serde(default)]
    pub levels: BTreeMap<String, LevelSeries>,
    /// Lockstep: how long each tick took, from tick 0 (kept across a resume).
    #[serde(default)]
    pub tick_seconds: Vec<f64>,
}

impl RunTotals {
    /// Adds what steps counted, in lockstep tick `tick` (or in free mode, without one).
    pub fn add(&mut self, tally: &Tally, tick: Option<u64>) {
        self.tally.add_counts(tally);
        for (name, delta) in &tally.metrics {
            let series = self.metrics.entry(name.clone()).or_default();
            match tick {
                Some(t) => series.record_tick(t, *delta),
                None => series.total += delta,
            }
        }
        for (name, value) in &tally.levels {
            self.levels.entry(name.clone()).or_default().record(tick, *value);
        }
    }

    /// Records how long lockstep tick `tick` took.
    pub fn tick_took(&mut self, tick: u64, seconds: f64) {
        let tick = tick as usize;
        if self.tick_seconds.len() <= tick {
            self.tick_seconds.resize(tick + 1, 0.0);
        }
        self.tick_seconds[tick] = seconds;
    }
}

/// Where a lockstep run is, as the record keeps it after every tick.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The last tick completed.
    pub tick: Option<u64>,
    /// What that tick published: what the agents read in the next tick.
    #[serde(flatten)]
    pub expected: Expected,
    /// The stream's newest entry when that tick ended.
    #[serde(with = "entry_id_text")]
    pub last_id: EntryId,
    /// How much of the transcript covers the completed ticks.
    pub transcript_bytes: u64,
    pub transcript_lines: u64,
    pub totals: RunTotals,
}

mod entry_id_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::message::EntryId;

    pub fn serialize<S: Serializer>(id: &EntryId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EntryId, D::Error> {
        let text = String::deserialize(d)?;
        // An empty id is a run checkpointed before its first tick.
        if text.is_empty() {
            return Ok(EntryId::ZERO);
        }
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Checkpoint {
    /// The record's fields for this checkpoint, taken `elapsed` into the run.
    pub fn fields(&self, elapsed: std::time::Duration) -> Result<[(&'static str, String); 3], String> {
        let json = serde_json::to_string(self).map_err(|e| e.to_string())?;
        Ok([
            ("tick", self.tick.map_or_else(String::new, |t| t.to_string())),
            ("checkpoint", json),
            elapsed_field(elapsed),
        ])
    }
}

/// The record's field for how long the run has run, across resumes.
pub(crate) fn elapsed_field(elapsed: std::time::Duration) -> (&'static str, String) {
    ("elapsed_s", format!("{:.6}", elapsed.as_secs_f64()))
}

/// A run's record, as read back.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunRecord {
    /// `None` when the record has no status agora knows.
    pub status: Option<RunStatus>,
    pub fingerprint: Option<String>,
    /// The checkpoint's JSON, read as a [`Checkpoint`] by [`RunRecord::checkpoint`].
    checkpoint: Option<String>,
    /// Whether there is a record at all.
    pub exists: bool,
    /// The status as written, for messages.
    pub status_text: Option<String>,
    /// How long the run has run, in seconds, across resumes: at its last checkpoint or end.
    pub elapsed_s: Option<f64>,
}

impl RunRecord {
    pub fn from_fields(fields: Vec<(String, String)>) -> Self {
        let mut record = RunRecord {
            exists: !fields.is_empty(),
            ..RunRecord::default()
        };
        for (key, value) in fields {
            match key.as_str() {
                "status" => {
                    record.status = RunStatus::parse(&value);
                    record.status_text = Some(value);
                }
                "fingerprint" => record.fingerprint = Some(value),
                "checkpoint" => record.checkpoint = Some(value),
                "elapsed_s" => {
                    record.elapsed_s = value.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0)
                }
                _ => {}
            }
        }
        record
    }

    /// Whether `--resume` could continue this run: it started (it has a fingerprint) and did
    /// not finish.
    pub fn is_resumable(&self) -> bool {
        self.fingerprint.is_some() && self.status != Some(RunStatus::Finished)
    }

    /// The last checkpoint; a run without one has not completed a tick.
    ///
    /// # Errors
    ///
    /// A checkpoint that is not one: its JSON error.
    pub fn checkpoint(&self) -> Result<Checkpoint, String> {
        match &self.checkpoint {
            Some(json) => serde_json::from_str(json).map_err(|e| e.to_string()),
            None => Ok(Checkpoint::default()),
        }
    }

    /// The fields a run writes when it starts: running, what it runs, and who holds the
    /// stream's lease (so that the run can take its lease back after a long outage, as long
    /// as no other run has started since).
    pub fn start_fields(scenario: &Scenario, holder: &str) -> [(&'static str, String); 6] {
        [
            ("status", RunStatus::Running.as_str().to_string()),
            ("scenario", scenario.name.clone()),
            ("fingerprint", scenario.fingerprint()),
            ("mode", scenario.mode.as_str().to_string()),
            ("seed", scenario.seed.to_string()),
            (LEASE_HOLDER, holder.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_checkpoints_read_back() {
        let checkpoint = Checkpoint {
            tick: Some(4),
            expected: Expected {
                messages: 7,
                routes: crate::network::Routes(vec![(2, None), (0, Some(5))]),
            },
            last_id: EntryId::new(17, 2),
            transcript_bytes: 100,
            transcript_lines: 3,
            totals: RunTotals::default(),
        };
        let fields: Vec<(String, String)> = checkpoint
            .fields(std::time::Duration::from_millis(2500))
            .unwrap()
            .into_iter()
            .chain(RunStatus::Interrupted.field())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let record = RunRecord::from_fields(fields);
        assert!(record.exists);
        assert_eq!(record.status, Some(RunStatus::Interrupted));
        let back = record.checkpoint().unwrap();
        assert_eq!(
            (back.tick, back.expected.messages, back.last_id),
            (Some(4), 7, EntryId::new(17, 2))
        );
        assert_eq!(back.expected, checkpoint.expected);
        assert_eq!(record.elapsed_s, Some(2.5));
        let garbled = RunRecord::from_fields(vec![
            ("status".into(), "sideways".into()),
            ("checkpoint".into(), "{".into()),
        ]);
        assert_eq!(garbled.status, None);
        assert!(garbled.checkpoint().is_err());
        assert!(!RunRecord::from_fields(Vec::new()).exists);
    }
}
