//! How a coordinator and its worker processes talk: through Redis only.
//!
//! The coordinator writes commands to `{stream}:control`; every worker reads them all and
//! answers on `{stream}:reports`. Workers register, and show they are alive, in the hash
//! `{stream}:workers` (field `I/N`, a heartbeat every half second). Every command and report
//! carries the id of the coordinator's run, so that leftovers of an earlier one are ignored.
//! Each message, registration and shard number is encoded and checked here, in one place.

use serde::{Deserialize, Serialize};

use crate::runtime::shard::Expected;
use crate::tally::Tally;

/// How often workers refresh their registration.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);
/// A worker whose heartbeat is older than this is taken for dead.
pub(crate) const WORKER_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// From the coordinator to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Host your share of the agents of this run.
    Run {
        run: String,
        fingerprint: String,
        shards: u32,
        resume: bool,
        /// Answer completions from the recording at this path (`--replay`), which every
        /// worker reads, as it reads the scenario file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay: Option<std::path::PathBuf>,
        /// The registered worker instances this run is for: a worker started later, or one
        /// left from another run, is not among them.
        workers: Vec<String>,
    },
    /// `init` and `on_start` for your agents.
    Start { run: String },
    /// Lockstep tick `tick`: read what the previous one published.
    Tick {
        run: String,
        tick: u64,
        expected: Expected,
    },
    /// Free mode: run until told to stop.
    Free { run: String },
    /// Free mode: stop.
    Stop { run: String },
    /// The run is over: exit.
    Exit { run: String },
}

impl Command {
    pub fn run(&self) -> &str {
        match self {
            Command::Run { run, .. }
            | Command::Start { run }
            | Command::Tick { run, .. }
            | Command::Free { run }
            | Command::Stop { run }
            | Command::Exit { run } => run,
        }
    }
}

/// From a worker to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub(crate) enum Report {
    /// Hosting `agents` agents, ready for commands.
    Ready { run: String, shard: u32, agents: u64 },
    /// Done with a `Start` (tick 0) or a `Tick`.
    Done {
        run: String,
        shard: u32,
        tick: Option<u64>,
        counts: Tally,
    },
    /// Free mode, every so often: what was done since the last report, and whether the worker
    /// has nothing to do.
    Progress {
        run: String,
        shard: u32,
        counts: Tally,
        idle: bool,
    },
    /// Free mode: stopped; the last counts.
    Stopped { run: String, shard: u32, counts: Tally },
    /// The worker cannot go on.
    Failed { run: String, shard: u32, error: String },
}

impl Report {
    /// The shard it is from, as the worker wrote it (the reader checks it).
    pub fn shard(&self) -> u32 {
        match self {
            Report::Ready { shard, .. }
            | Report::Done { shard, .. }
            | Report::Progress { shard, .. }
            | Report::Stopped { shard, .. }
            | Report::Failed { shard, .. } => *shard,
        }
    }

    pub fn run(&self) -> &str {
        match self {
            Report::Ready { run, .. }
            | Report::Done { run, .. }
            | Report::Progress { run, .. }
            | Report::Stopped { run, .. }
            | Report::Failed { run, .. } => run,
        }
    }
}

/// A worker's registration in `{stream}:workers`: the value of field `I/N` is the worker's
/// instance name, a space, and this as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Registration {
    /// `{host}-{pid}`: also names the worker's consumers.
    #[serde(skip)]
    pub instance: String,
    pub host: String,
    pub pid: u32,
    /// Milliseconds since the Unix epoch of the last heartbeat.
    pub heartbeat_ms: u64,
}

impl Registration {
    /// This process's registration as `instance`, with a heartbeat now.
    pub fn now(instance: &str) -> Self {
        let host = instance.rsplit_once('-').map_or(instance, |(h, _)| h);
        Registration {
            instance: instance.to_string(),
            host: host.to_string(),
            pid: std::process::id(),
            heartbeat_ms: now_ms(),
        }
    }

    /// The hash field's value.
    pub fn encode(&self) -> String {
        // A struct of strings and numbers always serialises.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{} {json}", self.instance)
    }

    /// A hash field's value, or `None` if it is not a registration.
    pub fn decode(value: &str) -> Option<Self> {
        let (instance, json) = value.split_once(' ')?;
        let mut registration: Registration = serde_json::from_str(json).ok()?;
        registration.instance = instance.to_string();
        Some(registration)
    }

    /// Whether the heartbeat is older than [`WORKER_SILENCE`] at `now_ms`.
    pub fn is_silent(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) >= WORKER_SILENCE.as_millis() as u64
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Which share of the agents a worker hosts: shard `index` of `count`, from 1/N to N/N. A
/// number that is not one of the run's shards cannot be made, so a bad report cannot index
/// past the run's shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardId {
    index: u32,
    count: u32,
}

/// The most worker processes a run may have.
const MAX_SHARDS: u32 = 1024;

impl ShardId {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    ///
    /// `index` is 0 or above `count`, or `count` is 0 or above 1024.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if index == 0 || index > count || count > MAX_SHARDS {
            return Err(format!(
                "shard {index} of {count}: shards are numbered 1 to N, with N at most {MAX_SHARDS}"
            ));
        }
        Ok(ShardId { index, count })
    }

    /// Whether `--workers N` can share out `agents` agents: at most [`MAX_SHARDS`] processes,
    /// each hosting one agent or more.
    ///
    /// # Errors
    ///
    /// A message saying how many workers may be asked for.
    pub fn check_workers(workers: u32, agents: usize) -> Result<(), String> {
        if workers as usize > agents {
            return Err(format!(
                "--workers {workers}: the scenario has {agents} agent{}, and every worker hosts one or more: ask for {agents} at most",
                if agents == 1 { "" } else { "s" }
            ));
        }
        if workers > MAX_SHARDS {
            return Err(format!(
                "--workers {workers}: a run is shared out over at most {MAX_SHARDS} worker processes"
            ));
        }
        Ok(())
    }

    /// `I/N`, as `--shard` and the workers' hash write it.
    ///
    /// # Errors
    ///
    /// Not two numbers with 1 <= I <= N: a message saying how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("--shard {text:?}: write it as I/N with 1 <= I <= N, such as 2/3");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (i, n): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        ShardId::new(i, n).map_err(|_| bad())
    }

    /// From 1.
    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The place of this shard in a list of all of them (from 0).
    pub fn slot(self) -> usize {
        self.index as usize - 1
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which shard (1..=N) hosts an agent: by the agent's place among all agent names sorted, so
/// that the assignment depends on names only, never on timing, and shares are even.
pub(crate) fn shard_of(sorted_names: &[&str], name: &str, shards: u32) -> u32 {
    let rank = sorted_names.binary_search(&name).unwrap_or(0);
    (rank as u32 % shards) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse() {
        let shard = ShardId::parse("2/3").unwrap();
        assert_eq!((shard.index(), shard.count(), shard.slot()), (2, 3, 1));
        assert_eq!(shard.to_string(), "2/3");
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", "1/2000"] {
            assert!(ShardId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_are_even_and_fixed() {
        let names = ["a_1", "a_10", "a_2", "b", "c_1", "c_2", "c_3"];
        let mut sorted = names.to_vec();
        sorted.sort();
        let counts = (1..=3).map(|s| names.iter().filter(|n| shard_of(&sorted, n, 3) == s).count());
        assert_eq!(counts.collect::<Vec<_>>(), [3, 2, 2]);
        assert_eq!(shard_of(&sorted, "b", 3), shard_of(&sorted, "b", 3));
    }

    #[test]
    fn commands_and_reports_round_trip() {
        let c = Command::Tick {
            run: "r".into(),
            tick: 3,
            expected: Expected {
                messages: 9,
                routes: crate::network::Routes(vec![(0, None), (3, Some(1))]),
            },
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        let r = Report::Done {
            run: "r".into(),
            shard: 1,
            tick: Some(3),
            counts: Tally::default(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
    }
}

#[cfg(test)]
mod registration_tests {
    use super::*;

    #[test]
    fn registrations_round_trip_and_refuse_garbage() {
        let r = Registration::now("host-a-42");
        assert_eq!(r.host, "host-a");
        let decoded = Registration::decode(&r.encode()).unwrap();
        assert_eq!(decoded, r);
        assert!(Registration::decode("no-json-here").is_none());
        assert!(Registration::decode("x {\"pid\": \"seven\"}").is_none());
        assert!(!r.is_silent(r.heartbeat_ms + 1000));
        assert!(r.is_silent(r.heartbeat_ms + 6000));
    }
}
