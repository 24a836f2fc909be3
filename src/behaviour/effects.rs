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
    pub remember: Vec<CacheValue>,
    pub metrics: Vec<(Cow<'static, str>, Report)>,
}

impl EffectLists {
    /// Why a value given to [`Effects::remember_as`] could not be written, if one could not:
    /// the call that gave it fails with this.
    pub fn unwritable(&self) -> Option<&str> {
        self.remember.iter().find_map(CacheValue::unwritable)
    }
}

/// A value for the cache as a behaviour gave it.
#[derive(Debug, Clone)]
pub(crate) enum CacheValue {
    /// Given as a JSON value ([`Effects::remember`]).
    Value(Value),
    /// Given as the behaviour's own type and written as JSON at once
    /// ([`Effects::remember_as`]): serde_json's output, so valid JSON.
    Written(String),
    /// Given as the behaviour's own type, which could not be written as JSON (a map with keys
    /// that are not strings, say): the call fails with this error.
    Unwritable(String),
}

impl CacheValue {
    /// The value as cache reads see it.
    pub fn to_value(&self) -> Value {
        match self {
            CacheValue::Value(value) => value.clone(),
            // serde_json reads back what it wrote, unless it is nested deeper than its reader
            // allows (128 levels); a value that deep reads as null within its own step.
            CacheValue::Written(json) => serde_json::from_str(json).unwrap_or(Value::Null),
            CacheValue::Unwritable(_) => Value::Null,
        }
    }

    /// Appends the value's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            CacheValue::Value(value) => crate::json::value(out, value),
            CacheValue::Written(json) => out.extend_from_slice(json.as_bytes()),
            CacheValue::Unwritable(_) => out.extend_from_slice(b"null"),
        }
    }

    /// Why the behaviour's value could not be written, if it could not.
    pub fn unwritable(&self) -> Option<&str> {
        match self {
            CacheValue::Unwritable(error) => Some(error),
            _ => None,
        }
    }
}

impl PartialEq for CacheValue {
    /// Equal when they hold the same JSON, however it was given.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CacheValue::Written(a), CacheValue::Written(b)) if a == b => true,
            (CacheValue::Unwritable(a), CacheValue::Unwritable(b)) => a == b,
            (CacheValue::Unwritable(_), _) | (_, CacheValue::Unwritable(_)) => false,
            _ => self.to_value() == other.to_value(),
        }
    }
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
        self.lists().remember.push(CacheValue::Value(value.into()));
        self
    }

    /// Appends a value of the behaviour's own type to the cache, as [`remember`](Self::remember)
    /// does, writing its JSON here: no `serde_json::Value` is built, which for a small
    /// `#[derive(Serialize)]` struct saves most of the work of remembering it (relay
    /// remembers each of W1's 100,000 tokens this way; BENCHMARKS.md).
    ///
    /// The JSON is what `serde_json::to_string(value)` writes: a struct's fields in the order
    /// they are declared, where a `json!` object's keys come out sorted. Declare them in
    /// alphabetical order to write the same bytes as `remember(json!({...}))`. A `HashMap`
    /// inside is written in its own (random) order, which changes `cache.jsonl` from run to
    /// run: use a `BTreeMap`.
    ///
    /// A value serde_json cannot write (a map whose keys are not strings) fails the call,
    /// with serde_json's error.
    pub fn remember_as<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        let written = match serde_json::to_string(value) {
            // serde_json escapes line breaks in strings; only a `RawValue` inside can bring
            // one, and a cache entry is one line of `cache.jsonl`: such a value is kept as a
            // `Value`, written compact.
            Ok(json) if json.bytes().any(|b| b == b'\n' || b == b'\r') => {
                CacheValue::Value(serde_json::from_str(&json).unwrap_or(Value::Null))
            }
            Ok(json) => CacheValue::Written(json),
            Err(e) => {
                CacheValue::Unwritable(format!("remembered a value that cannot be written as JSON: {e}"))
            }
        };
        self.lists().remember.push(written);
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

    /// What the effects append to the cache, oldest first.
    pub fn remembered(&self) -> Vec<Value> {
        self.lists.as_ref().map_or_else(Vec::new, |l| {
            l.remember.iter().map(CacheValue::to_value).collect()
        })
    }

    /// Why a value given to [`remember_as`](Self::remember_as) could not be written, if one
    /// could not: the runtime fails the call with it.
    pub(crate) fn unwritable(&self) -> Option<&str> {
        self.lists.as_ref()?.unwritable()
    }

    /// What the effects hold, taken apart.
    pub(crate) fn into_lists(self) -> EffectLists {
        self.lists.map(|l| *l).unwrap_or_default()
    }

    fn lists(&mut self) -> &mut EffectLists {
        self.lists.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[derive(serde::Serialize)]
    struct Seen {
        hop: u64,
        text: &'static str,
        token: u64,
    }

    fn written(effects: &Effects) -> Vec<String> {
        let lists = effects.lists.as_deref().unwrap();
        lists
            .remember
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                v.write(&mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_struct_with_fields_in_alphabetical_order_is_remembered_as_its_json_object_would_be() {
        let seen = Seen {
            hop: 3,
            text: "a \"quoted\" word",
            token: 7,
        };
        let typed = Effects::new().remember_as(&seen);
        let object = Effects::new().remember(json!({ "token": 7, "text": "a \"quoted\" word", "hop": 3 }));
        assert_eq!(written(&typed), written(&object));
        assert_eq!(
            written(&typed),
            [r#"{"hop":3,"text":"a \"quoted\" word","token":7}"#]
        );
        assert_eq!(typed.remembered(), object.remembered());
        assert_eq!(typed, object);
        assert_ne!(typed, Effects::new().remember(json!({ "hop": 4 })));
        assert!(typed.unwritable().is_none());
    }

    #[test]
    fn a_raw_value_with_line_breaks_is_remembered_compact() {
        #[derive(serde::Serialize)]
        struct Holder {
            raw: Box<serde_json::value::RawValue>,
        }
        let raw = serde_json::value::RawValue::from_string("{\n  \"a\": [1,\r\n 2]\n}".into()).unwrap();
        let effects = Effects::new().remember_as(&Holder { raw });
        assert_eq!(written(&effects), [r#"{"raw":{"a":[1,2]}}"#]);
    }

    #[test]
    fn values_written_with_their_fields_in_another_order_are_equal() {
        #[derive(serde::Serialize)]
        struct Backwards {
            token: u64,
            hop: u64,
        }
        let backwards = Effects::new().remember_as(&Backwards { token: 7, hop: 3 });
        assert_eq!(written(&backwards), [r#"{"token":7,"hop":3}"#]);
        let forwards = Effects::new().remember(json!({ "hop": 3, "token": 7 }));
        assert_eq!(backwards, forwards);
        assert_eq!(backwards.remembered(), forwards.remembered());
    }

    #[test]
    fn a_value_that_cannot_be_written_as_json_is_kept_as_the_error_the_call_fails_with() {
        let mut keyed_by_lists = BTreeMap::new();
        keyed_by_lists.insert(vec![1u8], 2u8);
        let effects = Effects::new().remember_as(&1u8).remember_as(&keyed_by_lists);
        let error = effects.unwritable().expect("the second value is refused");
        assert!(error.contains("cannot be written as JSON"), "{error}");
        assert!(error.contains("key must be a string"), "{error}");
        // Values around it stay as they were given.
        assert_eq!(effects.remembered()[0], json!(1));
    }
}
