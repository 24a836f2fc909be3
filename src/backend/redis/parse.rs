//! Reading Redis replies straight from `redis::Value`, without a map per entry.

use redis::Value;

use super::resp::EntryCache;

/// An entry's fields as text, uninterpreted.
pub(crate) type RawFields = Vec<(String, String)>;
use crate::backend::{BackendError, GroupInfo};
use crate::message::{Delivery, Entry, EntryId};

fn unexpected(what: &str, v: &Value) -> BackendError {
    let mut shown = format!("{v:?}");
    shown.truncate(120);
    BackendError::command(format!("unexpected reply to {what}: {shown}"))
}

/// A string-like value as text.
pub(crate) fn text(v: Value) -> Result<String, Value> {
    match v {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| Value::BulkString(e.into_bytes())),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".to_string()),
        other => Err(other),
    }
}

/// A string-like value as text, and whether it was text: bytes that are not UTF-8 are
/// replaced with U+FFFD.
fn lossy(v: Value) -> (String, bool) {
    match text(v) {
        Ok(t) => (t, true),
        Err(Value::BulkString(bytes)) => (String::from_utf8_lossy(&bytes).into_owned(), false),
        Err(other) => (format!("{other:?}"), false),
    }
}

/// A number of `XINFO STREAM`'s reply (a flat list or, in RESP3, a map), by name.
pub(crate) fn stream_counter(v: Value, name: &str) -> Result<u64, BackendError> {
    let flat: Vec<Value> = match v {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => array(other, "XINFO STREAM")?,
    };
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if text(k).as_deref() == Ok(name) {
            return match v {
                Value::Int(n) => Ok(n.max(0) as u64),
                other => text(other)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| BackendError::command(format!("XINFO STREAM's {name} is not a number"))),
            };
        }
    }
    Err(BackendError::command(format!(
        "XINFO STREAM has no {name}: Redis 7 or newer is needed"
    )))
}

pub(crate) fn entry_id(v: Value) -> Result<EntryId, BackendError> {
    let s = text(v).map_err(|v| unexpected("an entry id", &v))?;
    s.parse().map_err(BackendError::command)
}

pub(crate) fn array(v: Value, what: &str) -> Result<Vec<Value>, BackendError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(what, &other)),
    }
}

/// One `[id, [field, value, ...]]` entry. Entries already parsed in this reply (every group
/// of a read gets the same ones) are shared instead of parsed again.
fn entry(v: Value, seen: &mut EntryCache) -> Result<Delivery, BackendError> {
    let mut parts = array(v, "a stream entry")?.into_iter();
    let id = entry_id(parts.next().unwrap_or(Value::Nil))?;
    if let Some(known) = seen.get(&id) {
        return Ok(Delivery {
            id,
            entry: known.clone(),
        });
    }
    let entry = match parts.next().unwrap_or(Value::Nil) {
        // A pending entry that was deleted from the stream since it was read.
        Value::Nil => Entry::deleted(),
        fields => {
            let flat = match fields {
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                other => array(other, "an entry's fields")?,
            };
            let mut pairs: Vec<(String, String)> = Vec::with_capacity(flat.len() / 2);
            let mut not_text = None;
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let ((k, k_text), (v, v_text)) = (lossy(k), lossy(v));
                if not_text.is_none() && !(k_text && v_text) {
                    not_text = Some(k.clone());
                }
                pairs.push((k, v));
            }
            Entry::from_text_fields(pairs, not_text)
        }
    };
    seen.insert(id, entry.clone());
    Ok(Delivery { id, entry })
}

/// A list of entries, as XRANGE returns it.
pub(crate) fn entries(v: Value, seen: &mut EntryCache) -> Result<Vec<Delivery>, BackendError> {
    array(v, "XRANGE")?.into_iter().map(|e| entry(e, seen)).collect()
}

/// The entries of each stream in an XREAD or XREADGROUP reply: nil, `[[key, entries]]`, or
/// (RESP3) a map from key to entries.
fn streams_of(v: Value, what: &str) -> Result<Vec<Value>, BackendError> {
    match v {
        Value::Map(pairs) => Ok(pairs.into_iter().map(|(_, entries)| entries).collect()),
        other => array(other, what)?
            .into_iter()
            .map(|s| array(s, what).map(|mut kv| kv.pop().unwrap_or(Value::Nil)))
            .collect(),
    }
}

/// An XREAD/XREADGROUP reply for one stream: nil, or `[[key, entries]]`.
pub(crate) fn read_reply(v: Value, seen: &mut EntryCache) -> Result<Vec<Delivery>, BackendError> {
    let mut out = Vec::new();
    for stream in streams_of(v, "XREADGROUP")? {
        out.extend(entries(stream, seen)?);
    }
    Ok(out)
}

/// Flat `[key, value, key, value, ...]` (RESP2) or a map (RESP3), as XINFO writes them.
fn fields(v: Value, what: &str) -> Result<Vec<(String, Value)>, BackendError> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        other => {
            let mut it = array(other, what)?.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| text(k).map(|k| (k, v)).map_err(|k| unexpected(what, &k)))
        .collect()
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// XINFO GROUPS.
pub(crate) fn groups(v: Value) -> Result<Vec<GroupInfo>, BackendError> {
    let mut out = Vec::new();
    for group in array(v, "XINFO GROUPS")? {
        let mut info = GroupInfo {
            name: String::new(),
            consumers: 0,
            pending: 0,
            lag: None,
            last_delivered: EntryId::ZERO,
        };
        for (key, value) in fields(group, "XINFO GROUPS")? {
            match key.as_str() {
                "name" => info.name = text(value).unwrap_or_default(),
                "consumers" => info.consumers = int(&value).unwrap_or(0),
                "pending" => info.pending = int(&value).unwrap_or(0),
                "lag" => info.lag = int(&value),
                "last-delivered-id" => info.last_delivered = entry_id(value).unwrap_or(EntryId::ZERO),
                _ => {}
            }
        }
        out.push(info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The smallest id in an XPENDING summary (`[count, min, max, consumers]`), if any.
pub(crate) fn pending_min(v: Value) -> Result<Option<EntryId>, BackendError> {
    let mut parts = array(v, "XPENDING")?.into_iter();
    let count = parts.next().as_ref().and_then(int).unwrap_or(0);
    if count == 0 {
        return Ok(None);
    }
    parts.next().map(entry_id).transpose()
}

/// One `[id, [field, value, ...]]` entry as text, uninterpreted.
fn raw_entry(v: Value) -> Result<(EntryId, RawFields), BackendError> {
    let mut parts = array(v, "a stream entry")?.into_iter();
    let id = entry_id(parts.next().unwrap_or(Value::Nil))?;
    let flat = array(parts.next().unwrap_or(Value::Nil), "an entry's fields")?;
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = text(k).unwrap_or_else(|v| format!("{v:?}"));
        let v = text(v).unwrap_or_else(|v| format!("{v:?}"));
        fields.push((k, v));
    }
    Ok((id, fields))
}

/// An XREAD reply for one stream as (id, fields) pairs, without interpreting the fields.
pub(crate) fn raw_stream_entries(v: Value) -> Result<Vec<(EntryId, RawFields)>, BackendError> {
    let mut out = Vec::new();
    for stream in streams_of(v, "XREAD")? {
        for e in array(stream, "XREAD")? {
            out.push(raw_entry(e)?);
        }
    }
    Ok(out)
}

/// The fields of each entry of an XRANGE reply, as text.
pub(crate) fn raw_entries(v: Value) -> Result<Vec<RawFields>, BackendError> {
    Ok(raw_range(v)?.into_iter().map(|(_, fields)| fields).collect())
}

/// An XRANGE reply as (id, fields) pairs, the fields as text.
pub(crate) fn raw_range(v: Value) -> Result<Vec<(EntryId, RawFields)>, BackendError> {
    array(v, "XRANGE")?.into_iter().map(raw_entry).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_share_entries_across_groups() {
        let reply = || {
            Value::Array(vec![Value::Array(vec![
                bulk("s"),
                Value::Array(vec![Value::Array(vec![
                    bulk("5-1"),
                    Value::Array(vec![bulk("sender_id"), bulk("a"), bulk("content"), bulk("hi")]),
                ])]),
            ])])
        };
        let mut seen = EntryCache::new(100);
        let first = read_reply(reply(), &mut seen).unwrap();
        let second = read_reply(reply(), &mut seen).unwrap();
        assert_eq!(first[0].id, EntryId::new(5, 1));
        match (&first[0].entry, &second[0].entry) {
            (Entry::Message(a), Entry::Message(b)) => assert!(Arc::ptr_eq(a, b)),
            other => panic!("{other:?}"),
        }
        assert!(read_reply(Value::Nil, &mut seen).unwrap().is_empty());
    }

    #[test]
    fn deleted_and_binary_entries_are_malformed() {
        let mut seen = EntryCache::new(100);
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Nil]),
            Value::Array(vec![
                bulk("2-0"),
                Value::Array(vec![
                    bulk("sender_id"),
                    Value::BulkString(vec![0xff]),
                    bulk("content"),
                    bulk("x"),
                ]),
            ]),
        ]);
        let got = entries(reply, &mut seen).unwrap();
        assert!(got.iter().all(|d| matches!(d.entry, Entry::Malformed(_))));
        // The field that is not text is named, and kept.
        let Entry::Malformed(binary) = &got[1].entry else {
            unreachable!()
        };
        assert!(
            binary.reason.contains("field \"sender_id\" is not UTF-8"),
            "{}",
            binary.reason
        );
        assert!(
            binary
                .fields
                .iter()
                .any(|(k, v)| k == "sender_id" && v == "\u{fffd}")
        );
    }

    #[test]
    fn group_info_from_flat_fields() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("group_a"),
            bulk("consumers"),
            Value::Int(1),
            bulk("pending"),
            Value::Int(2),
            bulk("last-delivered-id"),
            bulk("7-0"),
            bulk("entries-read"),
            Value::Int(9),
            bulk("lag"),
            Value::Nil,
        ])]);
        let g = &groups(reply).unwrap()[0];
        assert_eq!(
            (g.name.as_str(), g.consumers, g.pending, g.lag),
            ("group_a", 1, 2, None)
        );
        assert_eq!(g.last_delivered, EntryId::new(7, 0));
    }
}
