//! What a behaviour returns: messages to publish, values to remember, numbers to report.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// A message a behaviour wants published. The runtime adds the sender, the sender's counter
/// and the tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub to: Option<String>,
    pub content: String,
    pub data: Option<Map<String, Value>>,
}

impl Outgoing {
    /// A message for every agent.
    pub fn broadcast(content: impl Into<String>) -> Self {
        Outgoing {
            to: None,
            content: content.into(),
            data: None,
        }
    }

    /// A message addressed to one agent (every agent still reads it, as on the old project's
    /// stream; the `to` field says whom it is for).
    pub fn to(agent: impl Into<String>, content: impl Into<String>) -> Self {
        Outgoing {
            to: Some(agent.into()),
            content: content.into(),
            data: None,
        }
    }

    /// Attaches a JSON object as the message's `data`. Anything but an object is wrapped as
    /// `{"value": ...}`, because the wire format's `data` is always an object.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(match data {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("value".to_string(), other);
                map
            }
        });
        self
    }
}

/// Everything one call of a behaviour produced. Discarded whole if the call fails.
///
/// The builder methods return the effects: a call that drops them did nothing.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "effects do nothing unless the behaviour returns them"]
pub struct Effects {
    pub(crate) publish: Vec<Outgoing>,
    pub(crate) remember: Vec<Value>,
    pub(crate) metrics: Vec<(Cow<'static, str>, Report)>,
}

/// A number a behaviour reports for the run's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Report {
    /// Added to a model-level counter, summed over agents.
    Count(i64),
    /// A model-level level, set.
    Level(f64),
    /// The reporting agent's own value.
    Value(f64),
}

impl Effects {
    /// Nothing to do. Does not allocate.
    pub fn none() -> Self {
        Effects::default()
    }

    pub fn new() -> Self {
        Effects::default()
    }

    /// Publishes a message on the scenario's stream.
    pub fn publish(mut self, message: Outgoing) -> Self {
        self.publish.push(message);
        self
    }

    /// Appends a value to the cache: to this agent's list and to the global sorted set.
    pub fn remember(mut self, value: impl Into<Value>) -> Self {
        self.remember.push(value.into());
        self
    }

    /// Adds `delta` to a per-tick counter that the summary reports (for example gossip's
    /// `informed`). Counters are summed over agents, tick by tick.
    pub fn count(mut self, metric: impl Into<Cow<'static, str>>, delta: i64) -> Self {
        self.metrics.push((metric.into(), Report::Count(delta)));
        self
    }

    /// Sets a model-level number for this tick (for example opinion's `clusters`): written
    /// to `metrics.csv` and plotted. When several agents set the same one in a tick, the
    /// largest stands; usually one agent sets it.
    pub fn set(mut self, metric: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.metrics.push((metric.into(), Report::Level(value)));
        self
    }

    /// Reports this agent's value of `name` for this tick (for example its `opinion`): one
    /// row of `agents.csv`, one point of its line in the plot. A later report in the same
    /// tick replaces an earlier one.
    pub fn report(mut self, name: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.metrics.push((name.into(), Report::Value(value)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.remember.is_empty() && self.metrics.is_empty()
    }

    /// Adds everything `other` holds to `self`.
    pub fn extend(&mut self, other: Effects) {
        self.publish.extend(other.publish);
        self.remember.extend(other.remember);
        self.metrics.extend(other.metrics);
    }

    pub fn published(&self) -> &[Outgoing] {
        &self.publish
    }

    pub fn remembered(&self) -> &[Value] {
        &self.remember
    }
}
