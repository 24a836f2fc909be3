//! `transcript.jsonl`: every published message, one JSON object a line, hashed as written.
//!
//! The file is written as `transcript.jsonl.partial` and renamed when the run ends, so a run
//! that fails early never replaces the transcript of an earlier, complete run.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
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
    bytes: u64,
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
            bytes: 0,
        })
    }

    /// Reopens the transcript of an interrupted run, keeping its first `bytes` bytes (the
    /// ticks its checkpoint covers) if they are there and hold `lines` lines. `None` if the
    /// file is missing or shorter.
    pub fn resume(dir: &Path, bytes: u64, lines: u64) -> std::io::Result<Option<Self>> {
        let path = dir.join(FILE_NAME);
        let partial = dir.join(format!("{FILE_NAME}.partial"));
        // An interrupted run moved its transcript into place when it stopped; take it back.
        if !partial.exists() && path.exists() {
            std::fs::rename(&path, &partial)?;
        }
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(&partial) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() < bytes {
            return Ok(None);
        }
        file.set_len(bytes)?;
        let mut hasher = Sha256::new();
        let mut counted = 0;
        let mut reader = BufReader::new((&mut file).take(bytes));
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line)? > 0 {
            hasher.update(&line);
            counted += 1;
            line.clear();
        }
        if counted != lines {
            return Ok(None);
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Some(TranscriptWriter {
            out: BufWriter::with_capacity(1 << 16, file),
            hasher,
            partial,
            path,
            lines,
            bytes,
        }))
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Pushes what was written to the file, so that a checkpoint can count on it.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Appends messages in the order given.
    pub fn write<'a>(&mut self, messages: impl IntoIterator<Item = &'a Arc<Message>>) -> std::io::Result<()> {
        let mut line = Vec::new();
        for m in messages {
            line.clear();
            // Written in place, as `Message::transcript_line` does, without a string of its
            // own per message.
            m.write_json(&mut line);
            line.push(b'\n');
            self.out.write_all(&line)?;
            self.hasher.update(&line);
            self.lines += 1;
            self.bytes += line.len() as u64;
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

impl TranscriptWriter {
    /// Lets the file go as it is, without writing what is still buffered or moving it into
    /// place: for a run whose stream (and perhaps folder) another run has taken over.
    pub fn abandon(self) {
        let (_file, _unwritten) = self.out.into_parts();
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
