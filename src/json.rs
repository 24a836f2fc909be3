//! Writing JSON by hand where one record per message or step is written: the transcript's
//! lines, the cache's entries and the agents' records. Each function appends exactly what
//! `serde_json` writes for the same value, so the files do not change; what it saves is
//! serde's struct path, which escapes every field name of every record again (a tenth of
//! W1's run).

use serde::Serialize;

/// A string, quoted and escaped as `serde_json` escapes it.
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    value(out, text);
}

/// A whole number.
pub(crate) fn integer(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A whole number, or `null`.
pub(crate) fn optional_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => integer(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// A map with text keys, as an object: each value written by `value`.
pub(crate) fn object<K: AsRef<str>, V>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (K, V)>,
    mut value: impl FnMut(&mut Vec<u8>, V),
) {
    out.push(b'{');
    for (i, (key, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, key.as_ref());
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}

/// Any value, compact, as `serde_json::to_writer` writes it.
pub(crate) fn value(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    // Writing into a Vec cannot fail, and strings, numbers and JSON values always serialise.
    let _ = serde_json::to_writer(out, value);
}
