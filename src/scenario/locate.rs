//! Where things are in a scenario file: from a key path to a line, and from a byte offset (as
//! the TOML parser reports it) back to the key path, so every error can name both.

use std::fmt;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// A path to a value in the document, such as `agents[1].params.fanout`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }

    pub fn parse_dotted(dotted: &str) -> Self {
        KeyPath(
            dotted
                .split('.')
                .map(|s| match s.parse() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(s.to_string()),
                })
                .collect(),
        )
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line of a byte offset.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line where `path` is written in `text`: the line of its key, or of the closest
/// enclosing key that is written (a default that was never written has no line of its own).
pub fn line_of_path(text: &str, path: &KeyPath) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in &path.0 {
        let next = match (seg, value.map(|v| v.get_ref())) {
            (Segment::Key(k), None) => find_key(table, k),
            (Segment::Key(k), Some(DeValue::Table(t))) => find_key(t, k),
            (Segment::Index(i), Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((span, v)) = next else { break };
        best = Some(span.start);
        if let DeValue::Table(t) = v.get_ref() {
            table = t;
        }
        value = Some(v);
    }
    best.map(|offset| line_of_offset(text, offset))
}

fn find_key<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
) -> Option<(std::ops::Range<usize>, &'a Spanned<DeValue<'i>>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, v)| (k.span(), v))
}

/// The deepest key path whose key or value contains `offset`. Tables are searched whole:
/// the parser's span of a table covers only its header.
pub fn path_at_offset(text: &str, offset: usize) -> KeyPath {
    let Ok(root) = DeTable::parse(text) else {
        return KeyPath::default();
    };
    let mut path = KeyPath::default();
    search_table(root.get_ref(), offset, &mut path);
    path
}

fn search_table(table: &DeTable<'_>, offset: usize, path: &mut KeyPath) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Segment::Key(key.get_ref().to_string()));
        if key.span().contains(&offset) || search_value(value, offset, path) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn search_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut KeyPath) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => search_table(t, offset, path) || value.span().contains(&offset),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.0.push(Segment::Index(i));
                if search_value(item, offset, path) {
                    return true;
                }
                path.0.pop();
            }
            value.span().contains(&offset)
        }
        _ => value.span().contains(&offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[scenario]\nname = \"x\"\nseed = 4\n\n[[agents]]\nid = \"a\"\n\n[[agents]]\nid = \"b\"\ncount = 0\nparams = { fanout = 2 }\n";

    #[test]
    fn finds_lines_of_paths() {
        assert_eq!(
            line_of_path(DOC, &KeyPath::parse_dotted("scenario.seed")),
            Some(3)
        );
        assert_eq!(
            line_of_path(DOC, &KeyPath::parse_dotted("agents.1.count")),
            Some(10)
        );
        assert_eq!(
            line_of_path(DOC, &KeyPath::parse_dotted("agents.1.params.fanout")),
            Some(11)
        );
        // Not written: the closest enclosing key that is.
        assert_eq!(
            line_of_path(DOC, &KeyPath::parse_dotted("agents.0.count")),
            Some(5)
        );
        assert_eq!(line_of_path(DOC, &KeyPath::parse_dotted("backend.url")), None);
    }

    #[test]
    fn finds_paths_at_offsets() {
        let offset = DOC.find("count = 0").unwrap() + 8;
        assert_eq!(path_at_offset(DOC, offset).to_string(), "agents[1].count");
        let offset = DOC.find("fanout").unwrap();
        assert_eq!(path_at_offset(DOC, offset).to_string(), "agents[1].params.fanout");
    }
}
