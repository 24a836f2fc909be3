//! `metrics.csv` and `agents.csv`: the run's numbers tick by tick in the tidy (long) form, one
//! observation a row, so that `pandas.read_csv` is all an analysis needs (CONTRACT.md,
//! "Metrics, plots and sweeps").
//!
//! - `metrics.csv`, header `tick,name,value`: model-level numbers. Every run records
//!   `messages` (published in the tick), `deliveries` (entries read and acknowledged) and
//!   `seconds` (the tick's wall time); then what behaviours counted (summed over agents, for
//!   that tick alone) and set.
//! - `agents.csv`, header `tick,agent,name,value`: agent-level numbers, one row per agent and
//!   name per tick, agents in declaration order.
//!
//! Both are written as the run goes, a tick at a time and flushed, so a crashed run keeps
//! what it had; a resumed run cuts them back to the ticks its checkpoint covers and goes on.
//! In free mode `tick` is the number of whole seconds since the start.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.csv";
pub const AGENTS_FILE: &str = "agents.csv";

const METRICS_HEADER: [&str; 3] = ["tick", "name", "value"];
const AGENTS_HEADER: [&str; 4] = ["tick", "agent", "name", "value"];

/// A number as the CSV shows it: counts as whole numbers, levels and values as the shortest
/// decimal that reads back as the same `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Whole(i64),
    Real(f64),
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Whole(n) => write!(f, "{n}"),
            Number::Real(x) => write!(f, "{x}"),
        }
    }
}

/// One tick's rows.
#[derive(Debug, Default)]
pub struct TickRows<'a> {
    /// `(name, value)` for `metrics.csv`.
    pub model: Vec<(&'a str, Number)>,
    /// `(agent, name, value)` for `agents.csv`.
    pub agents: Vec<(&'a str, &'a str, f64)>,
}

/// Writes a run's `metrics.csv` and `agents.csv`.
pub struct TidyWriter {
    metrics: csv::Writer<BufWriter<File>>,
    agents: csv::Writer<BufWriter<File>>,
    dir: PathBuf,
    /// The first tick this writer has not written (free mode continues after it on resume).
    next_tick: u64,
}

impl TidyWriter {
    /// Fresh files in `run_dir`, headers written.
    ///
    /// # Errors
    ///
    /// A file that cannot be created or written.
    pub fn create(run_dir: &Path) -> io::Result<Self> {
        let mut metrics = writer(&run_dir.join(METRICS_FILE), false)?;
        metrics.write_record(METRICS_HEADER)?;
        let mut agents = writer(&run_dir.join(AGENTS_FILE), false)?;
        agents.write_record(AGENTS_HEADER)?;
        let mut w = TidyWriter {
            metrics,
            agents,
            dir: run_dir.to_path_buf(),
            next_tick: 0,
        };
        w.flush()?;
        Ok(w)
    }

    /// The files of an interrupted run, cut back to the ticks before `from` (those after may
    /// be partly written, and run again); fresh files when they are missing.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, rewritten or appended to, or is not agora's CSV.
    pub fn resume(run_dir: &Path, from: u64) -> io::Result<Self> {
        let metrics_path = run_dir.join(METRICS_FILE);
        let agents_path = run_dir.join(AGENTS_FILE);
        if !metrics_path.exists() || !agents_path.exists() {
            return Self::create(run_dir);
        }
        let kept_metrics = cut_back(&metrics_path, &METRICS_HEADER, from)?;
        let kept_agents = cut_back(&agents_path, &AGENTS_HEADER, from)?;
        Ok(TidyWriter {
            metrics: writer(&metrics_path, true)?,
            agents: writer(&agents_path, true)?,
            dir: run_dir.to_path_buf(),
            next_tick: kept_metrics.max(kept_agents).map_or(0, |t| t + 1),
        })
    }

    /// The first tick not written yet.
    pub fn next_tick(&self) -> u64 {
        self.next_tick
    }

    /// Appends tick `tick`'s rows and flushes them.
    ///
    /// # Errors
    ///
    /// A write that failed.
    pub fn write_tick(&mut self, tick: u64, rows: &TickRows<'_>) -> io::Result<()> {
        let tick_text = tick.to_string();
        for (name, value) in &rows.model {
            self.metrics
                .write_record([tick_text.as_str(), name, &value.to_string()])?;
        }
        for (agent, name, value) in &rows.agents {
            self.agents
                .write_record([tick_text.as_str(), agent, name, &Number::Real(*value).to_string()])?;
        }
        self.next_tick = self.next_tick.max(tick + 1);
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.metrics.flush()?;
        self.agents.flush()
    }

    /// Where the files are.
    pub fn paths(&self) -> [PathBuf; 2] {
        [self.dir.join(METRICS_FILE), self.dir.join(AGENTS_FILE)]
    }
}

fn writer(path: &Path, append: bool) -> io::Result<csv::Writer<BufWriter<File>>> {
    let file = if append {
        std::fs::OpenOptions::new().append(true).open(path)?
    } else {
        File::create(path)?
    };
    Ok(csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(BufWriter::new(file)))
}

/// Rewrites `path` with only the rows of ticks before `from`; returns the last tick kept.
fn cut_back(path: &Path, header: &[&str], from: u64) -> io::Result<Option<u64>> {
    let bad =
        |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(io::Error::other)?;
    let found = reader.headers().map_err(io::Error::other)?.clone();
    if found.iter().ne(header.iter().copied()) {
        return Err(bad(format!("its header is not {}", header.join(","))));
    }
    let mut kept = Vec::new();
    let mut last = None;
    for record in reader.records() {
        // A row cut short by a crash ends the file: what follows it was never written.
        let Ok(record) = record else { break };
        let Some(tick) = record.get(0).and_then(|t| t.parse::<u64>().ok()) else {
            break;
        };
        if tick < from && record.len() == header.len() {
            last = Some(last.map_or(tick, |l: u64| l.max(tick)));
            kept.push(record);
        }
    }
    let partial = path.with_extension("csv.partial");
    {
        let mut w = writer(&partial, false)?;
        w.write_record(header)?;
        for record in &kept {
            w.write_record(record)?;
        }
        w.flush()?;
    }
    std::fs::rename(&partial, path)?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(tick: u64) -> TickRows<'static> {
        TickRows {
            model: vec![
                ("messages", Number::Whole(tick as i64)),
                ("clusters", Number::Real(0.5)),
            ],
            agents: vec![("a", "opinion", 0.1 + tick as f64), ("b", "opinion", 1.0 / 3.0)],
        }
    }

    #[test]
    fn ticks_are_written_tidy_and_a_resume_cuts_back_what_it_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TidyWriter::create(dir.path()).unwrap();
        for tick in 0..3 {
            w.write_tick(tick, &rows(tick)).unwrap();
        }
        drop(w);
        let metrics = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert!(
            metrics.starts_with("tick,name,value\n0,messages,0\n0,clusters,0.5\n"),
            "{metrics}"
        );
        let agents = std::fs::read_to_string(dir.path().join(AGENTS_FILE)).unwrap();
        assert!(
            agents.starts_with("tick,agent,name,value\n0,a,opinion,0.1\n0,b,opinion,0.3333333333333333\n"),
            "{agents}"
        );
        // A crash in the middle of a row of tick 3.
        std::fs::write(dir.path().join(AGENTS_FILE), agents.clone() + "3,a,opin").unwrap();
        let mut w = TidyWriter::resume(dir.path(), 2).unwrap();
        assert_eq!(w.next_tick(), 2);
        w.write_tick(2, &rows(2)).unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap(),
            metrics
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(AGENTS_FILE)).unwrap(),
            agents
        );
        // Free mode keeps every second written and goes on after the last.
        assert_eq!(TidyWriter::resume(dir.path(), u64::MAX).unwrap().next_tick(), 3);
    }

    #[test]
    fn a_file_that_is_not_ours_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        TidyWriter::create(dir.path()).unwrap();
        std::fs::write(dir.path().join(METRICS_FILE), "a,b\n1,2\n").unwrap();
        let err = TidyWriter::resume(dir.path(), 1).err().unwrap();
        assert!(err.to_string().contains("header"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap(),
            "a,b\n1,2\n"
        );
    }
}
