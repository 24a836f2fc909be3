//! A network read from a CSV edge list: a header `follower,followee`, then one follow a line,
//! both agent names.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// What is wrong with an edge list, and on which line (1 is the header).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeListError {
    pub line: Option<u64>,
    pub message: String,
}

impl EdgeListError {
    fn at(line: Option<u64>, message: impl Into<String>) -> Self {
        EdgeListError {
            line,
            message: message.into(),
        }
    }
}

/// A line of the file that was read but left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub line: u64,
    pub reason: String,
}

/// What an edge list holds: its follows, as agent indices in the file's order, each once;
/// and the lines left out (an agent following itself, a follow given before).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EdgeList {
    pub follows: Vec<(u32, u32)>,
    pub dropped: Vec<Dropped>,
}

/// The follows of the file at `path`; `index_of` maps a name to its agent.
///
/// # Errors
///
/// The file cannot be read, its header is not `follower,followee`, a line does not have two
/// fields, or names an agent the scenario does not have.
pub fn read(path: &Path, index_of: impl Fn(&str) -> Option<u32>) -> Result<EdgeList, EdgeListError> {
    let bytes = std::fs::read(path).map_err(|e| EdgeListError::at(None, format!("cannot read it: {e}")))?;
    // The file's own line numbers: the csv reader's count leaves out blank and comment lines.
    let newlines: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b'\n').then_some(i))
        .collect();
    let line_at = |position: Option<&csv::Position>| {
        position.map(|p| {
            let at = record_start(&bytes, p.byte() as usize);
            newlines.partition_point(|&newline| newline < at) as u64 + 1
        })
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        // Field counts are checked below, to say what a line should hold in our words.
        .flexible(true)
        .from_reader(bytes.as_slice());
    check_header(&mut reader)?;
    let mut list = EdgeList::default();
    // Where each follow was first given, to name it when it comes again.
    let mut first_given: HashMap<(u32, u32), u64> = HashMap::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| EdgeListError::at(line_at(e.position()), format!("unreadable: {e}")))?;
        let line = line_at(record.position());
        // A line of spaces is as blank as an empty one.
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != 2 {
            return Err(EdgeListError::at(
                line,
                format!(
                    "{} field{} where a line holds two, the follower's name and the followee's (follower,followee)",
                    record.len(),
                    if record.len() == 1 { "" } else { "s" }
                ),
            ));
        }
        let name = |i: usize| -> Result<u32, EdgeListError> {
            let name = &record[i];
            index_of(name).ok_or_else(|| {
                EdgeListError::at(line, format!("no agent is called {name:?} in this scenario"))
            })
        };
        let follow = (name(0)?, name(1)?);
        let line = line.unwrap_or(0);
        if follow.0 == follow.1 {
            list.dropped.push(Dropped {
                line,
                reason: format!("{} follows itself", &record[0]),
            });
            continue;
        }
        match first_given.entry(follow) {
            Entry::Occupied(first) => list.dropped.push(Dropped {
                line,
                reason: format!(
                    "{} -> {} was given on line {} already",
                    &record[0],
                    &record[1],
                    first.get()
                ),
            }),
            Entry::Vacant(place) => {
                place.insert(line);
                list.follows.push(follow);
            }
        }
    }
    Ok(list)
}

/// Refuses an empty file, or a header other than `follower,followee`.
fn check_header(reader: &mut csv::Reader<&[u8]>) -> Result<(), EdgeListError> {
    let headers = reader
        .headers()
        .map_err(|e| EdgeListError::at(Some(1), e.to_string()))?
        .clone();
    if headers.is_empty() {
        return Err(EdgeListError::at(
            None,
            "the file is empty; it must start with the header \"follower,followee\", then one follow a line"
                .to_string(),
        ));
    }
    if headers.len() != 2 || &headers[0] != "follower" || &headers[1] != "followee" {
        return Err(EdgeListError::at(
            Some(1),
            format!(
                "the header is {:?}; it must be \"follower,followee\"",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    Ok(())
}

/// Where the record the csv reader places at `at` begins: its position is where it started
/// looking, before the blank and comment lines it skipped.
fn record_start(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&b) = bytes.get(at) {
        let line_start = at == 0 || bytes[at - 1] == b'\n';
        if b == b'\n' || b == b'\r' {
            at += 1;
        } else if b == b'#' && line_start {
            at = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |end| at + end + 1);
        } else {
            break;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(name: &str) -> Option<u32> {
        name.strip_prefix('a').and_then(|n| n.parse().ok())
    }

    fn read_text(text: &str) -> Result<EdgeList, EdgeListError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("follows.csv");
        std::fs::write(&path, text).unwrap();
        read(&path, index_of)
    }

    #[test]
    fn reads_follows_and_names_the_line_of_a_bad_one() {
        assert_eq!(
            read_text("follower,followee\na1,a2\n a2 , a1\n").unwrap().follows,
            [(1, 2), (2, 1)]
        );
        let bad = read_text("follower,followee\na1,a2\na1,bob\n").unwrap_err();
        assert_eq!(bad.line, Some(3));
        assert!(bad.message.contains("\"bob\""), "{}", bad.message);
        // The file's line, blank and comment lines counted.
        let later = read_text("follower,followee\na1,a2\n\n# x\r\na1,bob\n").unwrap_err();
        assert_eq!(later.line, Some(5));
        let header = read_text("from,to\na1,a2\n").unwrap_err();
        assert_eq!(header.line, Some(1));
        let short = read_text("follower,followee\na1\n").unwrap_err();
        assert_eq!(short.line, Some(2), "{}", short.message);
        assert!(
            short.message.starts_with("1 field where a line holds two"),
            "{}",
            short.message
        );
        let long = read_text("follower,followee\na1,a2,a3\n").unwrap_err();
        assert_eq!(long.line, Some(2), "{}", long.message);
        assert!(long.message.starts_with("3 fields"), "{}", long.message);
        // A line of spaces is skipped as a blank one is.
        let spaces = read_text("follower,followee\na1,a2\n   \na2,a1\n").unwrap();
        assert_eq!(spaces.follows, [(1, 2), (2, 1)]);
        let empty = read_text("").unwrap_err();
        assert!(empty.message.contains("the file is empty"), "{}", empty.message);
    }

    #[test]
    fn a_follow_given_twice_or_of_oneself_is_left_out_with_its_line() {
        let list = read_text("follower,followee\na1,a2\na3,a3\na2,a1\n\n# again\na1,a2\n").unwrap();
        assert_eq!(list.follows, [(1, 2), (2, 1)]);
        assert_eq!(
            list.dropped,
            [
                Dropped {
                    line: 3,
                    reason: "a3 follows itself".to_string()
                },
                Dropped {
                    line: 7,
                    reason: "a1 -> a2 was given on line 2 already".to_string()
                },
            ]
        );
    }
}
