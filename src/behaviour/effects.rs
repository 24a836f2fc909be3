//! What a behaviour returns: messages to publish, values to remember, numbers to report.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

/// A message a behaviour wants published. The runtime adds the sender, the sender's counter
/// and the tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The addressee; shared text, so that a behaviour addressing a peer by the name its
    /// context holds (`ctx.peers()[i].clone()`) copies no text for each message.
    pub to: Option<Arc<str>>,
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
    pub fn to(agent: impl Into<Arc<str>>, content: impl Into<String>) -> Self {
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
#[derive(Debug, Clone, Default)]
#[must_use = "effects do nothing unless the behaviour returns them"]
pub struct Effects {
    /// `None` for nothing: most messages only change an agent's state, and a step handles
    /// thousands of them, so "nothing" is one null pointer to return, move and drop.
    lists: Option<Box<EffectLists>>,
}

impl PartialEq for Effects {
    /// Equal when they hold the same, however they were built.
    fn eq(&self, other: &Self) -> bool {
        let empty = EffectLists::default();
        let mine = self.lists.as_deref().unwrap_or(&empty);
        let theirs = other.lists.as_deref().unwrap_or(&empty);
        mine == theirs
    }
}

/// What effects hold, once they hold anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EffectLists {
    pub publish: Vec<Outgoing>,
    pub remember: Vec<Value>,
    pub metrics: Vec<(Cow<'static, str>, Report)>,
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
        self.lists().publish.push(message);
        self
    }

    /// Appends a value to the cache: to this agent's list and to the global sorted set.
    pub fn remember(mut self, value: impl Into<Value>) -> Self {
        self.lists().remember.push(value.into());
        self
    }

    /// Adds `delta` to a per-tick counter that the summary reports (for example gossip's
    /// `informed`). Counters are summed over agents, tick by tick. `messages`, `deliveries`
    /// and `seconds` are the run's own: a counter or level of that name fails the call.
    pub fn count(mut self, metric: impl Into<Cow<'static, str>>, delta: i64) -> Self {
        self.lists().metrics.push((metric.into(), Report::Count(delta)));
        self
    }

    /// Sets a model-level number for this tick (for example opinion's `clusters`): written
    /// to `metrics.csv` and plotted. When several agents set the same one in a tick, the
    /// largest stands; usually one agent sets it.
    pub fn set(mut self, metric: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.lists().metrics.push((metric.into(), Report::Level(value)));
        self
    }

    /// Reports this agent's value of `name` for this tick (for example its `opinion`): one
    /// row of `agents.csv`, one point of its line in the plot. A later report in the same
    /// tick replaces an earlier one.
    pub fn report(mut self, name: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.lists().metrics.push((name.into(), Report::Value(value)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.lists
            .as_ref()
            .is_none_or(|l| l.publish.is_empty() && l.remember.is_empty() && l.metrics.is_empty())
    }

    /// Adds everything `other` holds to `self`.
    pub fn extend(&mut self, other: Effects) {
        let Some(other) = other.lists else { return };
        match &mut self.lists {
            None => self.lists = Some(other),
            Some(mine) => {
                mine.publish.extend(other.publish);
                mine.remember.extend(other.remember);
                mine.metrics.extend(other.metrics);
            }
        }
    }

    pub fn published(&self) -> &[Outgoing] {
        self.lists.as_ref().map_or(&[], |l| &l.publish)
    }

    pub fn remembered(&self) -> &[Value] {
        self.lists.as_ref().map_or(&[], |l| &l.remember)
    }

    /// What the effects hold, taken apart.
    pub(crate) fn into_lists(self) -> EffectLists {
        self.lists.map(|l| *l).unwrap_or_default()
    }

    fn lists(&mut self) -> &mut EffectLists {
        self.lists.get_or_insert_with(Box::default)
    }
}
