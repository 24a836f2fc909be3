//! `transcript.jsonl`: every published message, one JSON object a line, hashed as written.
//!
//! The file is written as `transcript.jsonl.partial` and renamed when the run ends, so a run
//! that fails early never replaces the transcript of an earlier, complete run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::message::Message;

pub const FILE_NAME: &str = "transcript.jsonl";

pub struct TranscriptWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    partial: PathBuf,
    path: PathBuf,
    lines: u64,
}

impl TranscriptWriter {
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let partial = dir.join(format!("{FILE_NAME}.partial"));
        let out = BufWriter::with_capacity(1 << 16, File::create(&partial)?);
        Ok(TranscriptWriter {
            out,
            hasher: Sha256::new(),
            partial,
            path,
            lines: 0,
        })
    }

    /// Appends messages in the order given.
    pub fn write<'a>(&mut self, messages: impl IntoIterator<Item = &'a Arc<Message>>) -> std::io::Result<()> {
        let mut line = String::new();
        for m in messages {
            line.clear();
            line.push_str(&m.transcript_line());
            line.push('\n');
            self.out.write_all(line.as_bytes())?;
            self.hasher.update(line.as_bytes());
            self.lines += 1;
        }
        Ok(())
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes, moves the file into place and returns its SHA-256 as hex.
    pub fn finish(mut self) -> std::io::Result<(PathBuf, String)> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        Ok((self.path, hex(&self.hasher.finalize())))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
