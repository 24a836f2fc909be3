//! A network read from a CSV edge list: a header `follower,followee`, then one follow a line,
//! both agent names.

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

/// The follows of the file at `path`, as agent indices; `index_of` maps a name to its agent.
///
/// # Errors
///
/// The file cannot be read, its header is not `follower,followee`, a line does not have two
/// fields, or names an agent the scenario does not have.
pub fn read(path: &Path, index_of: impl Fn(&str) -> Option<u32>) -> Result<Vec<(u32, u32)>, EdgeListError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| EdgeListError::at(None, format!("cannot read it: {}", io_reason(&e))))?;
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
    let mut follows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(csv::Position::line);
            EdgeListError::at(line, format!("not two fields: {e}"))
        })?;
        let line = record.position().map(csv::Position::line);
        let name = |i: usize| -> Result<u32, EdgeListError> {
            let name = &record[i];
            index_of(name).ok_or_else(|| {
                EdgeListError::at(line, format!("no agent is called {name:?} in this scenario"))
            })
        };
        follows.push((name(0)?, name(1)?));
    }
    Ok(follows)
}

fn io_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(name: &str) -> Option<u32> {
        name.strip_prefix('a').and_then(|n| n.parse().ok())
    }

    fn read_text(text: &str) -> Result<Vec<(u32, u32)>, EdgeListError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("follows.csv");
        std::fs::write(&path, text).unwrap();
        read(&path, index_of)
    }

    #[test]
    fn reads_follows_and_names_the_line_of_a_bad_one() {
        assert_eq!(
            read_text("follower,followee\na1,a2\n a2 , a1\n").unwrap(),
            [(1, 2), (2, 1)]
        );
        let bad = read_text("follower,followee\na1,a2\na1,bob\n").unwrap_err();
        assert_eq!(bad.line, Some(3));
        assert!(bad.message.contains("\"bob\""), "{}", bad.message);
        let header = read_text("from,to\na1,a2\n").unwrap_err();
        assert_eq!(header.line, Some(1));
        let short = read_text("follower,followee\na1\n").unwrap_err();
        assert_eq!(short.line, Some(2), "{}", short.message);
        let empty = read_text("").unwrap_err();
        assert!(empty.message.contains("the file is empty"), "{}", empty.message);
    }
}
