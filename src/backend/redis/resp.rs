//! RESP as the group reader needs it: replies parsed from a buffer that may not hold all of
//! them yet, entries already seen skipped by their lengths and shared, and commands encoded.

use std::collections::{HashMap, VecDeque};

use crate::message::{Delivery, Entry, EntryId};

/// Entries parsed lately, by id, so that the other groups' copies cost a lookup.
pub(crate) struct EntryCache {
    map: HashMap<EntryId, Entry>,
    order: VecDeque<EntryId>,
    capacity: usize,
}

impl EntryCache {
    pub fn new(capacity: usize) -> Self {
        EntryCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn get(&self, id: &EntryId) -> Option<&Entry> {
        self.map.get(id)
    }

    pub fn insert(&mut self, id: EntryId, entry: Entry) {
        if self.map.insert(id, entry).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// Forgets everything (after a cleanup, ids may be reused with other contents).
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Why parsing stopped.
pub(super) enum Stop {
    /// The reply is not all here yet.
    Incomplete,
    /// The server answered with an error.
    Server(String),
    /// The bytes are not RESP as expected.
    Protocol(String),
}

pub(super) type Parsed<T> = Result<T, Stop>;

pub(super) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

/// A decimal number, maybe negative, from ASCII digits.
fn number(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

/// A stream entry id, `ms-seq`, from its bytes.
fn entry_id(bytes: &[u8]) -> Option<EntryId> {
    let dash = bytes.iter().position(|&b| b == b'-')?;
    let ms = number(&bytes[..dash])?;
    let seq = number(&bytes[dash + 1..])?;
    (ms >= 0 && seq >= 0).then(|| EntryId::new(ms as u64, seq as u64))
}

impl<'a> Cursor<'a> {
    pub(super) fn line(&mut self) -> Parsed<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        // Lines are short (a type byte and a number): a plain scan beats anything clever.
        let Some(at) = rest.iter().position(|&b| b == b'\r') else {
            return Err(Stop::Incomplete);
        };
        if rest.len() < at + 2 {
            return Err(Stop::Incomplete);
        }
        self.pos += at + 2;
        Ok(&rest[..at])
    }

    /// A type byte and the number after it (`*3`, `$5`, `:1`).
    pub(super) fn header(&mut self) -> Parsed<(u8, i64)> {
        let line = self.line()?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(Stop::Protocol("an empty line".into()));
        };
        match kind {
            b'-' => Err(Stop::Server(String::from_utf8_lossy(rest).into_owned())),
            b'+' => Ok((kind, 0)),
            _ => number(rest).map(|n| (kind, n)).ok_or_else(|| {
                Stop::Protocol(format!("a bad length in {:?}", String::from_utf8_lossy(line)))
            }),
        }
    }

    pub(super) fn array(&mut self) -> Parsed<i64> {
        match self.header()? {
            (b'*', n) => Ok(n),
            (kind, _) => Err(Stop::Protocol(format!(
                "expected an array, got {:?}",
                kind as char
            ))),
        }
    }

    /// A bulk string (`None` for a null one).
    pub(super) fn bulk(&mut self) -> Parsed<Option<&'a [u8]>> {
        match self.header()? {
            (b'$', -1) => Ok(None),
            (b'$', n) if n >= 0 => {
                let n = n as usize;
                if self.buf.len() < self.pos + n + 2 {
                    return Err(Stop::Incomplete);
                }
                let bytes = &self.buf[self.pos..self.pos + n];
                self.pos += n + 2;
                Ok(Some(bytes))
            }
            (kind, _) => Err(Stop::Protocol(format!(
                "expected a bulk string, got {:?}",
                kind as char
            ))),
        }
    }

    /// Skips one value of any kind.
    pub(super) fn skip(&mut self) -> Parsed<()> {
        match self.header()? {
            (b'$', n) if n >= 0 => {
                let n = n as usize;
                if self.buf.len() < self.pos + n + 2 {
                    return Err(Stop::Incomplete);
                }
                self.pos += n + 2;
            }
            (b'*', n) if n > 0 => {
                for _ in 0..n {
                    self.skip()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// One `[id, [field, value, ...]]` entry.
    pub(super) fn entry(&mut self, cache: &mut EntryCache) -> Parsed<Delivery> {
        if self.array()? != 2 {
            return Err(Stop::Protocol("a stream entry is not [id, fields]".into()));
        }
        let id_bytes = self
            .bulk()?
            .ok_or_else(|| Stop::Protocol("a null entry id".into()))?;
        let id = entry_id(id_bytes).ok_or_else(|| Stop::Protocol("a bad entry id".into()))?;
        let fields = self.header()?;
        if let Some(known) = cache.get(&id) {
            let entry = known.clone();
            if let (b'*', n) = fields {
                for _ in 0..n.max(0) {
                    self.skip()?;
                }
            }
            return Ok(Delivery { id, entry });
        }
        let entry = match fields {
            (b'*', n) if n >= 0 => {
                let mut pairs = Vec::with_capacity(n as usize / 2);
                let mut not_text = None;
                for _ in 0..n / 2 {
                    let k = self.bulk()?.unwrap_or_default();
                    let v = self.bulk()?.unwrap_or_default();
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    if not_text.is_none()
                        && (std::str::from_utf8(k).is_err() || std::str::from_utf8(v).is_err())
                    {
                        not_text = Some(text(k));
                    }
                    pairs.push((text(k), text(v)));
                }
                if n % 2 == 1 {
                    self.skip()?;
                }
                Entry::from_text_fields(pairs, not_text)
            }
            // A pending entry deleted from the stream since it was read.
            _ => Entry::deleted(),
        };
        cache.insert(id, entry.clone());
        Ok(Delivery { id, entry })
    }

    /// An XREADGROUP reply for one stream: null, or `[[key, [entry, ...]]]`.
    pub(super) fn read_reply(&mut self, cache: &mut EntryCache) -> Parsed<Vec<Delivery>> {
        let streams = self.array()?;
        let mut out = Vec::new();
        for _ in 0..streams.max(0) {
            if self.array()? != 2 {
                return Err(Stop::Protocol("a stream is not [key, entries]".into()));
            }
            self.bulk()?;
            let entries = self.array()?;
            out.reserve(entries.max(0) as usize);
            for _ in 0..entries.max(0) {
                out.push(self.entry(cache)?);
            }
        }
        Ok(out)
    }
}

pub(super) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Malformed;

    fn parse(bytes: &[u8], cache: &mut EntryCache) -> Parsed<Vec<Delivery>> {
        Cursor { buf: bytes, pos: 0 }.read_reply(cache)
    }

    const REPLY: &[u8] = b"*1\r\n*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$9\r\nsender_id\r\n$1\r\na\r\n$7\r\ncontent\r\n$2\r\nhi\r\n*2\r\n$3\r\n2-0\r\n*-1\r\n";

    #[test]
    fn parses_and_shares_entries() {
        let mut cache = EntryCache::new(10);
        let Ok(first) = parse(REPLY, &mut cache) else {
            panic!("parse failed")
        };
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].id, EntryId::new(1, 0));
        assert!(matches!(&first[0].entry, Entry::Message(m) if m.content == "hi"));
        assert!(matches!(&first[1].entry, Entry::Malformed(_)));
        let Ok(again) = parse(REPLY, &mut cache) else {
            panic!("parse failed")
        };
        match (&first[0].entry, &again[0].entry) {
            (Entry::Message(a), Entry::Message(b)) => assert!(Arc::ptr_eq(a, b)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_replies_ask_for_more() {
        for cut in [1, 5, 20, 60, REPLY.len() - 1] {
            let mut cache = EntryCache::new(10);
            assert!(
                matches!(parse(&REPLY[..cut], &mut cache), Err(Stop::Incomplete)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn nulls_and_errors() {
        let mut cache = EntryCache::new(10);
        assert!(matches!(parse(b"*-1\r\n", &mut cache), Ok(v) if v.is_empty()));
        assert!(
            matches!(parse(b"-NOGROUP no such group\r\n", &mut cache), Err(Stop::Server(m)) if m.starts_with("NOGROUP"))
        );
    }

    #[test]
    fn numbers_and_ids() {
        assert_eq!(number(b"123"), Some(123));
        assert_eq!(number(b"-1"), Some(-1));
        assert_eq!(number(b""), None);
        assert_eq!(number(b"1x"), None);
        assert_eq!(
            entry_id(b"1700000000000-7"),
            Some(EntryId::new(1_700_000_000_000, 7))
        );
        assert_eq!(entry_id(b"17"), None);
    }

    #[test]
    fn the_cache_forgets_the_oldest() {
        let mut cache = EntryCache::new(2);
        let e = Entry::Malformed(Arc::new(Malformed {
            reason: String::new(),
            fields: Vec::new(),
        }));
        for i in 0..3 {
            cache.insert(EntryId::new(i, 0), e.clone());
        }
        assert!(cache.get(&EntryId::new(0, 0)).is_none());
        assert!(cache.get(&EntryId::new(2, 0)).is_some());
    }
}
