//! The protocol between agora and a behaviour program, version 1: JSON lines on the
//! program's standard input (agora's lines) and standard output (the program's), one object
//! a line, each with a `type`. `docs/protocol.md` is its description for program authors;
//! these types are its definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::llm::{CompletionRequest, Usage};

/// The protocol version agora speaks.
pub const VERSION: u32 = 1;

/// The longest line agora reads from a program: a longer one is an error, and the program
/// is restarted, so that a runaway program cannot take agora's memory with it.
pub const MAX_LINE: usize = 16 << 20;

/// A line from agora to a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToProgram {
    Hello(Hello),
    Step(StepRequest),
}

/// agora's first line to a program: what it is, and the tables of agents it will serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The name agents use for it (`behaviour = "NAME"`).
    pub behaviour: String,
    /// `lockstep` or `free`.
    pub mode: String,
    pub seed: u64,
    pub tables: Vec<HelloTable>,
    /// Every agent that runs this behaviour, in declaration order (`peers` of the context).
    pub peers: Vec<String>,
}

/// One `[[agents]]` table using the behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloTable {
    pub id: String,
    /// The table's `params`, as written.
    pub params: Value,
    /// Its agents, `_1` first.
    pub agents: Vec<String>,
}

/// A parameter a program declares, for `agora behaviours` and `agora check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub doc: String,
}

/// The program's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Greeting {
    /// Ready to serve: the protocol it speaks, each table's params with its defaults filled
    /// in (by table id), and optionally what it is and which parameters it takes.
    Ready {
        protocol: u32,
        #[serde(default)]
        params: Map<String, Value>,
        #[serde(default)]
        summary: String,
        #[serde(default)]
        declares: Vec<ParamDeclaration>,
        /// Whether its `on_tick` may publish after a tick that published nothing (then a
        /// quiet lockstep tick does not end the run).
        #[serde(default)]
        acts_unprompted: bool,
        /// Model-level numbers worked out each tick from its agents' values, by name:
        /// `{"yes_share": ["mean", "yes"]}`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        model_reporters: BTreeMap<String, (Statistic, String)>,
    },
    /// A table's params are not right: bad input, reported with these words.
    Refused {
        table: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        message: String,
    },
}

/// What a program's model reporter works out from the values its agents reported in a tick
/// (`Effects.report`), over the agents of the table that reported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    Mean,
    Sum,
    Min,
    Max,
    Median,
    /// The population standard deviation (divided by n, as numpy's `std`).
    Std,
    /// How many agents reported the value.
    Count,
}

impl Statistic {
    /// The statistic of `values`; `None` for none.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = || values.iter().sum::<f64>() / n;
        Some(match self {
            Statistic::Mean => mean(),
            Statistic::Sum => values.iter().sum(),
            Statistic::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Statistic::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Statistic::Median => {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                let middle = sorted.len() / 2;
                if sorted.len() % 2 == 1 {
                    sorted[middle]
                } else {
                    f64::midpoint(sorted[middle - 1], sorted[middle])
                }
            }
            Statistic::Std => {
                let mean = mean();
                (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
            }
            Statistic::Count => n,
        })
    }
}

/// Which step of the agent: `init` and `on_start`; a lockstep tick (its messages, then
/// `on_tick`); or a free-mode batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Start,
    Tick,
    Free,
}

/// A message as a program sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// A cache read a program asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Read {
    /// The agent's own last `n` entries, oldest first.
    OwnLast(usize),
    /// The last `n` entries of everyone, oldest first.
    Last(usize),
    /// `n` distinct entries of everyone, at random (drawn from the step's seed).
    Sample(usize),
}

/// A cache entry as a program sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEntry {
    pub agent: String,
    pub tick: Option<u64>,
    pub value: Value,
}

/// A read, answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadAnswer {
    pub read: Read,
    pub entries: Vec<WireEntry>,
}

/// A completion, answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionAnswer {
    pub request: CompletionRequest,
    pub text: String,
    pub usage: Usage,
}

/// One step of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRequest {
    pub agent: String,
    /// Its table's id.
    pub table: String,
    /// Its position in its table, from 0.
    pub index: usize,
    /// Its position among the behaviour's peers.
    pub peer_index: usize,
    pub tick: Option<u64>,
    pub kind: StepKind,
    /// The state the program returned last (null before the start).
    pub state: Value,
    pub messages: Vec<WireMessage>,
    /// The step's random numbers come from this seed (below 2^53), drawn from the agent's
    /// own stream: the same step always gets the same seed.
    pub seed: u64,
    /// Reads asked for before in this step, answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<ReadAnswer>,
    /// Completions asked for before in this step, answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completions: Vec<CompletionAnswer>,
    /// With a sparse `[network]`: the agents that hear this one (its followers) and run this
    /// behaviour, in declaration order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<String>>,
    /// With a sparse `[network]`: the agents this one follows, in declaration order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<Vec<String>>,
}

/// A message a program publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireOutgoing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// The program's answer to a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepReply {
    /// The step is done: the new state and the effects.
    Done {
        state: Value,
        #[serde(default)]
        publish: Vec<WireOutgoing>,
        #[serde(default)]
        remember: Vec<Value>,
        #[serde(default)]
        metrics: Map<String, Value>,
        /// Model-level numbers set for this tick.
        #[serde(default)]
        levels: Map<String, Value>,
        /// The agent's own numbers for this tick.
        #[serde(default)]
        values: Map<String, Value>,
    },
    /// The step needs inputs first: agora answers them and sends the step again, with the
    /// same state and seed and the answers, and the program runs it again from the start.
    Need {
        #[serde(default)]
        reads: Vec<Read>,
        #[serde(default)]
        completions: Vec<CompletionRequest>,
    },
    /// The step failed, on message `at` (its position in `messages`) if that is known, in
    /// the behaviour's `hook` if the program says (`init`, `on_start`, `on_message`,
    /// `on_tick`; other words are ignored).
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
    },
}

/// Whether a failure in `hook` is the step's own, no message's: `init`, `on_start` and
/// `on_tick` run apart from the messages.
pub fn is_step_hook(hook: &str) -> bool {
    matches!(hook, "init" | "on_start" | "on_tick")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_documented() {
        let done: StepReply = serde_json::from_str(
            r#"{"type":"done","state":{"n":1},"publish":[{"to":"b","content":"hi"}],"metrics":{"x":2}}"#,
        )
        .unwrap();
        assert!(matches!(done, StepReply::Done { ref publish, .. } if publish[0].to.as_deref() == Some("b")));
        let need: StepReply =
            serde_json::from_str(r#"{"type":"need","reads":[{"last":8},{"own_last":2},{"sample":3}]}"#)
                .unwrap();
        assert_eq!(
            need,
            StepReply::Need {
                reads: vec![Read::Last(8), Read::OwnLast(2), Read::Sample(3)],
                completions: Vec::new()
            }
        );
        let error: StepReply = serde_json::from_str(r#"{"type":"error","message":"boom","at":1}"#).unwrap();
        assert_eq!(
            error,
            StepReply::Error {
                message: "boom".into(),
                at: Some(1),
                hook: None
            }
        );
        assert!(serde_json::from_str::<StepReply>(r#"{"type":"dance"}"#).is_err());
    }

    #[test]
    fn model_reporters_read_and_work_out_as_documented() {
        let ready: Greeting = serde_json::from_str(
            r#"{"type":"ready","protocol":1,"model_reporters":{"share":["mean","yes"],"spread":["std","x"]}}"#,
        )
        .unwrap();
        let Greeting::Ready { model_reporters, .. } = ready else {
            panic!("not ready")
        };
        assert_eq!(model_reporters["share"], (Statistic::Mean, "yes".to_string()));
        let unknown = serde_json::from_str::<Greeting>(
            r#"{"type":"ready","protocol":1,"model_reporters":{"share":["avg","yes"]}}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("unknown variant `avg`"));
        let values = [1.0, 0.0, 1.0, 1.0];
        let of = |s: Statistic| s.of(&values).unwrap();
        assert_eq!(
            [
                Statistic::Mean,
                Statistic::Sum,
                Statistic::Min,
                Statistic::Max,
                Statistic::Count
            ]
            .map(of),
            [0.75, 3.0, 0.0, 1.0, 4.0]
        );
        assert_eq!(Statistic::Median.of(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(Statistic::Median.of(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        // numpy.std([1, 0, 1, 1]) = sqrt(3/16)
        assert!((of(Statistic::Std) - (3.0f64 / 16.0).sqrt()).abs() < 1e-15);
        assert_eq!(Statistic::Mean.of(&[]), None);
    }
}
