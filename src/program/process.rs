//! Starting a behaviour's program and reading its lines: what the check at load time and the
//! runtime's pool share.

use std::process::Stdio;

use super::protocol::MAX_LINE;
use crate::scenario::ProgramSpec;

/// Why a program could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProgramError(pub String);

/// The command to start `spec`'s program: directly (no shell), its stdin and stdout piped.
pub fn command(spec: &ProgramSpec) -> std::process::Command {
    let mut cmd = std::process::Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

/// Why `spec`'s program did not start, in words that say what to do.
pub fn start_failure(spec: &ProgramSpec, e: &std::io::Error) -> ProgramError {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such program (is it installed, and on the PATH?)".to_string(),
        std::io::ErrorKind::PermissionDenied if program_is_a_directory(spec) => {
            "it is a directory: command's first part is the program to start, as in [\"python3\", \"voter.py\"]"
                .to_string()
        }
        std::io::ErrorKind::PermissionDenied => "it is not executable (chmod +x?)".to_string(),
        _ => e.to_string(),
    };
    ProgramError(format!(
        "cannot start behaviour {:?}'s program `{}`: {what}",
        spec.name,
        spec.shown()
    ))
}

/// Whether the program named is a folder, which the system refuses to start as it refuses a
/// file without the right to run it.
fn program_is_a_directory(spec: &ProgramSpec) -> bool {
    let program = std::path::Path::new(&spec.command[0]);
    match &spec.cwd {
        Some(dir) if program.is_relative() => dir.join(program).is_dir(),
        _ => program.is_dir(),
    }
}

/// Appends to `line` what `reader` holds up to the next newline; returns whether a whole line
/// was read (false at the end of the output). A line longer than [`MAX_LINE`] is an error,
/// found before it is all read.
pub fn read_line(reader: &mut impl std::io::BufRead, line: &mut Vec<u8>) -> Result<bool, ProgramError> {
    loop {
        let buffer = reader.fill_buf().map_err(read_error)?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let (taken, whole) = take_line(buffer, line)?;
        reader.consume(taken);
        if whole {
            return Ok(true);
        }
    }
}

/// One buffer's share of [`read_line`] (and of its async twin in `runtime::programs`): moves
/// what `buffer` holds up to and including the next newline into `line`; returns how many
/// bytes it took and whether the line is now whole.
pub fn take_line(buffer: &[u8], line: &mut Vec<u8>) -> Result<(usize, bool), ProgramError> {
    let (take, whole) = match buffer.iter().position(|&b| b == b'\n') {
        Some(end) => (end + 1, true),
        None => (buffer.len(), false),
    };
    if line.len() + take > MAX_LINE + 1 {
        return Err(too_long());
    }
    line.extend_from_slice(&buffer[..take]);
    Ok((take, whole))
}

fn too_long() -> ProgramError {
    ProgramError(format!(
        "the program wrote a line longer than {} MiB, which is not the protocol",
        MAX_LINE >> 20
    ))
}

pub fn read_error(e: std::io::Error) -> ProgramError {
    ProgramError(format!("reading the program's output: {e}"))
}

/// A line of the program's output, as an error shows it: the start of it.
pub fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_and_bounded() {
        let mut input = std::io::Cursor::new(b"one\ntwo".to_vec());
        let mut line = Vec::new();
        assert!(read_line(&mut input, &mut line).unwrap());
        assert_eq!(line, b"one\n");
        line.clear();
        assert!(!read_line(&mut input, &mut line).unwrap());
        assert_eq!(line, b"two");
        let mut flood = std::io::BufReader::new(std::io::repeat(b'x'));
        assert_eq!(read_line(&mut flood, &mut Vec::new()).unwrap_err(), too_long());
    }
}
