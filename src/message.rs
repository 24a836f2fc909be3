//! Messages: what agents publish, and how they travel as stream entries.
//!
//! On the wire (CONTRACT.md, "Wire format on Redis") an entry is a list of string fields:
//! `sender_id` and `content` (the seed project's two fields), plus `seq`, `tick`, `to` and
//! `data` (a JSON object) when the message has them. [`Message::to_fields`] writes that layout
//! and [`parse_fields`] reads it back; an entry without the two required fields, or with
//! fields that do not parse, is [`Malformed`] and goes to the dead-letter stream.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::json;

/// A stream entry id, `ms-seq` as Redis writes it. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        EntryId { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(format!("not a stream entry id: {s:?}")),
        }
    }
}

/// Whether two agent names are the same. Most different names are told apart by their
/// length or last byte, without a call to compare them whole: names are usually numbered
/// (`agent_1`, `agent_2`), and every reader compares each message's sender or addressee
/// with its own name (W1: two million comparisons, 5% of the run in `memcmp` calls).
#[inline]
pub fn same_agent(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().last() == b.as_bytes().last() && a == b
}

/// A message as a behaviour sees it, and as the transcript records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The lockstep tick in which it was published; `None` in free mode and for entries
    /// written by other programs.
    pub tick: Option<u64>,
    /// The agent (or outside program) that published it.
    pub sender_id: Arc<str>,
    /// The sender's own counter, from 1. `None` for entries written by other programs.
    pub seq: Option<u64>,
    /// The agent the message is addressed to; `None` for a broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Arc<str>>,
    pub content: String,
    /// Structured payload: always a JSON object when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// `data` decoded into a behaviour's own type, once however many agents read the
    /// message ([`Message::payload`]). Build messages with `DecodedData::default()`.
    #[serde(skip)]
    pub decoded: DecodedData,
}

/// A message's `data` decoded into one type, kept with the message (shared, behind its
/// `Arc`, by every agent that reads it). Cloning a message does not clone it; it takes no
/// part in comparisons.
#[derive(Default)]
pub struct DecodedData(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl Clone for DecodedData {
    fn clone(&self) -> Self {
        DecodedData::default()
    }
}

impl PartialEq for DecodedData {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl fmt::Debug for DecodedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "DecodedData(..)"
        } else {
            "DecodedData"
        })
    }
}

impl Message {
    /// The stream fields of this message, in the order the wire format lists them.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::with_capacity(6);
        fields.push((field::SENDER_ID, self.sender_id.to_string()));
        fields.push((field::CONTENT, self.content.clone()));
        if let Some(seq) = self.seq {
            fields.push((field::SEQ, seq.to_string()));
        }
        if let Some(tick) = self.tick {
            fields.push((field::TICK, tick.to_string()));
        }
        if let Some(to) = &self.to {
            fields.push((field::TO, to.to_string()));
        }
        if let Some(data) = &self.data {
            fields.push((field::DATA, Value::Object(data.clone()).to_string()));
        }
        fields
    }

    /// `data` as `T`, a type of the behaviour's own with the fields it reads (serde ignores
    /// the others): decoded once per message, however many agents read it, instead of a
    /// lookup by key per reader. `None` when the message has no `data` or it does not decode
    /// as `T`.
    ///
    /// The first type asked for is kept with the message; another type (two behaviours
    /// reading the same messages their own way) is decoded each time it is asked for, and
    /// comes back owned.
    pub fn payload<T>(&self) -> Option<std::borrow::Cow<'_, T>>
    where
        T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        // The kept value's own type tells which type it is (no `TypeId` beside it: every
        // message carries this cell, and W1 keeps 100,000 of them).
        let kept = self.decoded.0.get_or_init(|| Box::new(self.decode_data::<T>()));
        match kept.downcast_ref::<Option<T>>() {
            Some(value) => value.as_ref().map(std::borrow::Cow::Borrowed),
            None => self.decode_data::<T>().map(std::borrow::Cow::Owned),
        }
    }

    /// `data` decoded as `T`, afresh: `None` without `data` or when it does not fit `T`.
    pub(crate) fn decode_data<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let data = self.data.as_ref()?;
        // Straight from the map, with no copy of it, for the structs and maps payloads
        // usually are; a type the map cannot drive directly (an `Option`, a newtype) from
        // the map made a JSON value.
        if let Ok(decoded) = T::deserialize(data) {
            return Some(decoded);
        }
        match serde_json::from_value(Value::Object(data.clone())) {
            Ok(decoded) => Some(decoded),
            Err(e) => {
                self.said_undecodable(std::any::type_name::<T>(), &e);
                None
            }
        }
    }

    /// Says, once a process, that a message's `data` did not fit the type a behaviour read
    /// it as: `payload` gives `None` for it, which a behaviour usually skips without a word,
    /// and a misspelt field would otherwise leave every count at zero and nothing said.
    fn said_undecodable(&self, type_name: &str, e: &serde_json::Error) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "the data of a message from {} did not decode as {type_name}: {e}; `payload` and `payloads` give None for such messages (said once; if other messages carry other data, this may be expected)",
                self.sender_id
            );
        });
    }

    /// `data[key]` as a number, for behaviours that read their own payloads.
    pub fn data_f64(&self, key: &str) -> Option<f64> {
        self.data.as_ref()?.get(key)?.as_f64()
    }

    pub fn data_u64(&self, key: &str) -> Option<u64> {
        self.data.as_ref()?.get(key)?.as_u64()
    }

    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.as_ref()?.get(key)?.as_str()
    }

    /// Whether the message is for `agent`: addressed to it, or broadcast.
    pub fn is_for(&self, agent: &str) -> bool {
        self.to.as_deref().is_none_or(|to| same_agent(to, agent))
    }

    /// Whether the message is addressed to `agent` (not broadcast).
    pub fn is_addressed_to(&self, agent: &str) -> bool {
        self.to.as_deref().is_some_and(|to| same_agent(to, agent))
    }

    /// One line of `transcript.jsonl`.
    pub fn transcript_line(&self) -> String {
        let mut line = Vec::with_capacity(64 + self.content.len());
        self.write_json(&mut line);
        // Only serde_json's escaped strings and ASCII went in.
        String::from_utf8(line).unwrap_or_default()
    }

    /// Appends the message's JSON (its transcript line, without the newline) to `out`: the
    /// bytes its `Serialize` writes, field by field. The transcript writes one line per
    /// message, and serde's struct path escaped every field name of every line again.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"tick\":");
        json::optional_u64(out, self.tick);
        out.extend_from_slice(b",\"sender_id\":");
        json::string(out, &self.sender_id);
        out.extend_from_slice(b",\"seq\":");
        json::optional_u64(out, self.seq);
        if let Some(to) = &self.to {
            out.extend_from_slice(b",\"to\":");
            json::string(out, to);
        }
        out.extend_from_slice(b",\"content\":");
        json::string(out, &self.content);
        if let Some(data) = &self.data {
            out.extend_from_slice(b",\"data\":");
            json::value(out, data);
        }
        out.push(b'}');
    }

    /// The order of messages within a lockstep tick: by sender, then by the sender's counter
    /// (DESIGN.md invariant 3), never by stream id or arrival.
    pub fn lockstep_key(&self) -> (Option<u64>, &str, Option<u64>) {
        (self.tick, &self.sender_id, self.seq)
    }
}

/// The names of the stream fields.
pub mod field {
    pub const SENDER_ID: &str = "sender_id";
    pub const CONTENT: &str = "content";
    pub const SEQ: &str = "seq";
    pub const TICK: &str = "tick";
    pub const TO: &str = "to";
    pub const DATA: &str = "data";
}

/// An entry that is not a valid message, with the reason and what it held.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub reason: String,
    pub fields: Vec<(String, String)>,
}

/// The reason of a pending entry whose contents were deleted from the stream.
const DELETED: &str = "the entry was deleted from the stream";

impl Malformed {
    /// Whether this is a pending entry that was deleted from the stream before it was
    /// acknowledged: a message lost, not a malformed one.
    pub fn is_deleted(&self) -> bool {
        self.reason == DELETED && self.fields.is_empty()
    }
}

/// What a stream entry turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Message(Arc<Message>),
    Malformed(Arc<Malformed>),
}

/// One entry as a consumer group delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: EntryId,
    pub entry: Entry,
}

/// What one read brings a group, in stream order. Groups that read the same entries at once
/// share one batch: in a lockstep tick a thousand agents read the same messages, and copying
/// (and counting references to) each message once per agent was a fifth of the tick.
pub type Batch = Arc<[Delivery]>;

/// `batches` as [`Batch`]es, the ones with the same entries as the one before sharing it.
pub fn share_equal(batches: Vec<Vec<Delivery>>) -> Vec<Batch> {
    let mut shared: Vec<Batch> = Vec::with_capacity(batches.len());
    for batch in batches {
        let same = shared
            .last()
            .filter(|last| !batch.is_empty() && same_entries(last, &batch));
        let batch = match same {
            Some(last) => last.clone(),
            None => batch.into(),
        };
        shared.push(batch);
    }
    shared
}

/// Whether two batches hold the same entries, in the same order. An id names an entry within
/// one stream; inboxes on a Redis Cluster number their entries each for itself, so a message
/// is also told by its sender and sequence number.
pub fn same_entries(a: &[Delivery], b: &[Delivery]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.entry.same_as(&y.entry))
}

impl Delivery {
    pub fn message(&self) -> Option<&Arc<Message>> {
        match &self.entry {
            Entry::Message(m) => Some(m),
            Entry::Malformed(_) => None,
        }
    }
}

impl Entry {
    /// Whether two entries with the same id are the same entry.
    fn same_as(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Message(a), Entry::Message(b)) => {
                Arc::ptr_eq(a, b) || (a.seq == b.seq && a.sender_id == b.sender_id)
            }
            (Entry::Malformed(a), Entry::Malformed(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }

    /// A pending entry that was deleted from the stream after it was read.
    pub fn deleted() -> Self {
        Entry::Malformed(Arc::new(Malformed {
            reason: DELETED.to_string(),
            fields: Vec::new(),
        }))
    }

    /// An entry from its fields as text: `not_text` names the first field whose name or
    /// value was not UTF-8 (decoded with U+FFFD for the bytes that are not), which makes it
    /// malformed, the field kept.
    pub fn from_text_fields(pairs: Vec<(String, String)>, not_text: Option<String>) -> Self {
        if let Some(field) = not_text {
            return Entry::Malformed(Arc::new(Malformed {
                reason: format!(
                    "field {field:?} is not UTF-8 text (kept here with U+FFFD for the bytes that are not)"
                ),
                fields: pairs,
            }));
        }
        parse_fields(&pairs)
    }
}

/// Reads an entry's fields. Unknown fields are ignored, so other programs may add their own.
pub fn parse_fields<K, V>(fields: &[(K, V)]) -> Entry
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    match try_parse_fields(fields) {
        Ok(message) => Entry::Message(Arc::new(message)),
        Err(reason) => Entry::Malformed(Arc::new(Malformed {
            reason,
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
                .collect(),
        })),
    }
}

fn try_parse_fields<K, V>(fields: &[(K, V)]) -> Result<Message, String>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut sender_id = None;
    let mut content = None;
    let mut seq = None;
    let mut tick = None;
    let mut to = None;
    let mut data = None;
    for (key, value) in fields {
        let value = value.as_ref();
        match key.as_ref() {
            field::SENDER_ID => sender_id = Some(value),
            field::CONTENT => content = Some(value),
            field::SEQ => seq = Some(parse_counter(field::SEQ, value)?),
            field::TICK => tick = Some(parse_counter(field::TICK, value)?),
            field::TO => to = Some(Arc::from(value)),
            field::DATA => match serde_json::from_str::<Value>(value) {
                Ok(Value::Object(map)) => data = Some(map),
                Ok(_) => return Err("field `data` is not a JSON object".to_string()),
                Err(e) => return Err(format!("field `data` is not valid JSON: {e}")),
            },
            _ => {}
        }
    }
    let sender_id = sender_id.ok_or("no `sender_id` field")?;
    if sender_id.is_empty() {
        return Err("field `sender_id` is empty".to_string());
    }
    let content = content.ok_or("no `content` field")?;
    Ok(Message {
        tick,
        sender_id: Arc::from(sender_id),
        seq,
        to,
        content: content.to_string(),
        data,
        decoded: DecodedData::default(),
    })
}

fn parse_counter(name: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("field `{name}` is not a non-negative integer: {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_compare_whole() {
        for (a, b) in [("agent_1", "agent_1"), ("", ""), ("é", "é")] {
            assert!(same_agent(a, b), "{a} {b}");
        }
        // Same length and last byte, different elsewhere; and the usual differences.
        for (a, b) in [
            ("xgent_1", "agent_1"),
            ("agent_1", "agent_2"),
            ("agent_1", "agent_10"),
            ("a", ""),
        ] {
            assert!(!same_agent(a, b), "{a} {b}");
        }
        let mut m = Message {
            to: None,
            ..message()
        };
        assert!(!m.is_addressed_to("b") && m.is_for("b"), "a broadcast");
        m.to = Some("b".into());
        assert!(m.is_addressed_to("b") && m.is_for("b"));
        assert!(!m.is_addressed_to("c") && !m.is_for("c"));
    }

    #[test]
    fn a_payload_is_decoded_once_and_shared() {
        #[derive(Clone, serde::Deserialize)]
        struct X {
            x: f64,
        }
        #[derive(Clone, serde::Deserialize)]
        struct Y {
            #[allow(dead_code)]
            y: String,
        }
        let m = Arc::new(message());
        let first = m.payload::<X>().unwrap();
        assert!(matches!(first, std::borrow::Cow::Borrowed(_)));
        assert_eq!(first.x, 0.1);
        let again = m.payload::<X>().unwrap();
        assert!(
            std::ptr::eq(&*first, &*again),
            "decoded once, kept with the message"
        );
        // Another type: decoded each time, and a type the data does not fit: None.
        #[derive(Clone, serde::Deserialize)]
        struct AlsoX {
            x: f64,
        }
        assert!(matches!(m.payload::<AlsoX>(), Some(std::borrow::Cow::Owned(AlsoX { x })) if x == 0.1));
        assert!(m.payload::<Y>().is_none());
        // A clone starts without it, and compares equal.
        let copy = (*m).clone();
        assert_eq!(copy, *m);
        assert!(copy.payload::<Y>().is_none());
        // Y's failure is what the clone keeps; X is still decoded, each time.
        assert!(matches!(copy.payload::<X>(), Some(std::borrow::Cow::Owned(X { x })) if x == 0.1));
        // Types the map cannot drive directly decode as from a JSON object.
        #[derive(Clone, serde::Deserialize)]
        struct Wrapped(X);
        assert_eq!(message().payload::<Wrapped>().map(|w| w.0.x), Some(0.1));
        assert_eq!(
            message()
                .payload::<Option<X>>()
                .map(|o| o.as_ref().as_ref().map(|x| x.x)),
            Some(Some(0.1))
        );
    }

    fn message() -> Message {
        let mut data = Map::new();
        data.insert("x".into(), Value::from(0.1));
        Message {
            tick: Some(3),
            sender_id: "a_1".into(),
            seq: Some(7),
            to: Some("a_2".into()),
            content: "hello".into(),
            data: Some(data),
            decoded: DecodedData::default(),
        }
    }

    #[test]
    fn fields_round_trip() {
        let m = message();
        let fields = m.to_fields();
        assert_eq!(parse_fields(&fields), Entry::Message(Arc::new(m)));
    }

    #[test]
    fn seed_style_entry_is_a_message() {
        let entry = parse_fields(&[("sender_id", "alice"), ("content", "hi")]);
        let Entry::Message(m) = entry else {
            panic!("expected a message, got {entry:?}")
        };
        assert_eq!((&*m.sender_id, m.content.as_str()), ("alice", "hi"));
        assert_eq!(
            (m.seq, m.tick, m.to.clone(), m.data.clone()),
            (None, None, None, None)
        );
    }

    #[test]
    fn malformed_entries_say_why() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("content", "x")], "sender_id"),
            (&[("sender_id", "a")], "content"),
            (
                &[("sender_id", "a"), ("content", "x"), ("data", "{")],
                "not valid JSON",
            ),
            (
                &[("sender_id", "a"), ("content", "x"), ("data", "[1]")],
                "not a JSON object",
            ),
            (&[("sender_id", "a"), ("content", "x"), ("seq", "-1")], "seq"),
        ];
        for (fields, why) in cases {
            match parse_fields(fields) {
                Entry::Malformed(m) => assert!(m.reason.contains(why), "{:?}", m.reason),
                other => panic!("{fields:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn transcript_line_has_the_contract_fields() {
        let line = message().transcript_line();
        assert_eq!(
            line,
            r#"{"tick":3,"sender_id":"a_1","seq":7,"to":"a_2","content":"hello","data":{"x":0.1}}"#
        );
        let free = Message {
            tick: None,
            to: None,
            data: None,
            decoded: DecodedData::default(),
            ..message()
        };
        assert_eq!(
            free.transcript_line(),
            r#"{"tick":null,"sender_id":"a_1","seq":7,"content":"hello"}"#
        );
    }

    #[test]
    fn entry_ids_parse_and_order() {
        let a: EntryId = "1700000000000-5".parse().unwrap();
        let b: EntryId = "1700000000001-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert!("x-1".parse::<EntryId>().is_err());
    }

    #[test]
    fn only_batches_with_the_same_entries_are_shared() {
        let delivery = |seq| Delivery {
            id: EntryId { ms: 0, seq },
            entry: Entry::Message(Arc::new(message())),
        };
        let batches = share_equal(vec![
            vec![delivery(1), delivery(2)],
            vec![delivery(1), delivery(2)],
            vec![delivery(1)],
            vec![],
            vec![],
            vec![delivery(1), delivery(2)],
        ]);
        assert!(Arc::ptr_eq(&batches[0], &batches[1]));
        assert!(!Arc::ptr_eq(&batches[1], &batches[2]));
        assert!(batches[3].is_empty() && batches[4].is_empty());
        assert_eq!(batches[5].len(), 2);
        assert!(!Arc::ptr_eq(&batches[0], &batches[5]));
    }
}
