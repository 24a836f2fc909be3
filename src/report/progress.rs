//! The live progress line, and a log writer that keeps logs from tearing it.
//!
//! The line goes to stderr and only when stderr is a terminal (elsewhere, what the run waits
//! for is said once, as a line); `--quiet` drops it. Log lines
//! (`tracing`, filtered by `RUST_LOG`) are written through [`LogWriter`], which hides the
//! line, writes, and redraws it.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::human;
use crate::runtime::{RunObserver, RunProgress};

/// The bar on screen now, if any, for [`LogWriter`]: logging is one per process, and so is
/// the terminal it draws on.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The progress line of one run, as its [`RunObserver`].
pub struct Progress {
    bar: Option<ProgressBar>,
    /// What the run is waiting for, shown instead of the counts while it lasts.
    waiting: Mutex<Option<String>>,
}

impl Progress {
    /// No progress display at all.
    pub fn hidden() -> Self {
        Progress {
            bar: None,
            waiting: Mutex::new(None),
        }
    }

    /// A bar over `ticks` ticks.
    pub fn lockstep(ticks: u64, quiet: bool) -> Self {
        Self::with(quiet, || {
            let bar = ProgressBar::with_draw_target(Some(ticks), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} tick {pos}/{len} [{bar:30}] {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        })
    }

    /// A spinner with counts, for free mode.
    pub fn free(quiet: bool) -> Self {
        Self::with(quiet, || {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        })
    }

    fn with(quiet: bool, make: impl FnOnce() -> ProgressBar) -> Self {
        if quiet {
            return Progress::hidden();
        }
        let bar = make();
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        Progress {
            bar: Some(bar),
            waiting: Mutex::new(None),
        }
    }

    /// Removes the line before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
    }
}

impl RunObserver for Progress {
    fn progress(&self, p: &RunProgress) {
        let Some(bar) = &self.bar else { return };
        if let Some(t) = p.tick {
            bar.set_position(t);
        }
        if let Some(what) = self.waiting.lock().ok().and_then(|w| w.clone()) {
            bar.set_message(format!("waiting: {what}"));
            return;
        }
        let rate = p.deliveries as f64 / p.elapsed.as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} messages, {} deliveries ({}/s)",
            p.messages,
            p.deliveries,
            human(rate)
        ));
    }

    fn waiting(&self, what: Option<&str>) {
        let changed = match self.waiting.lock() {
            Ok(mut waiting) => {
                let changed = waiting.as_deref() != what;
                *waiting = what.map(str::to_string);
                changed
            }
            Err(_) => false,
        };
        let (Some(what), Some(bar)) = (what, &self.bar) else {
            return;
        };
        if bar.is_hidden() {
            // No terminal to draw on (a log file, CI): say it once, as a line.
            if changed {
                eprintln!("waiting: {what}");
            }
        } else {
            bar.set_message(format!("waiting: {what}"));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A `tracing` writer that writes each log line to stderr around the progress line.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many times one warning, word for word, is written; then once more with a note, and
/// no more. A failure that repeats on every step (a program answering garbage, a server
/// refusing every request) is said three times, not a thousand. `RUST_LOG` shows them all:
/// its lines carry the time, so no two are the same.
const SAME_WARNING_SHOWN: u32 = 3;

/// How often each warning has been written, by its text; at most 10 000 distinct warnings
/// are counted, so that a long run's memory does not grow with them.
static WARNINGS_SEEN: Mutex<Option<std::collections::HashMap<Vec<u8>, u32>>> = Mutex::new(None);

/// A warning's words without the agent and entry it names (the fields a dead letter's
/// warning ends with), and whether it named them: a behaviour that fails on every message
/// dead-letters thousands, each with its own agent and entry, and is said three times, not a
/// thousand (`dead_letters.jsonl` has every one).
fn apart_from_whose(line: &[u8]) -> (&[u8], bool) {
    const WHOSE: &[u8] = b" agent=";
    match line.windows(WHOSE.len()).rposition(|w| w == WHOSE) {
        Some(at) => (&line[..at], true),
        None => (line, false),
    }
}

/// `bytes` as it is to be written: itself, with a note on its last showing, or nothing.
fn held_back(mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    if !bytes.starts_with(b"warning: ") {
        return Some(bytes);
    }
    let Ok(mut seen) = WARNINGS_SEEN.lock() else {
        return Some(bytes);
    };
    let seen = seen.get_or_insert_with(Default::default);
    let (said, whose) = apart_from_whose(&bytes);
    if seen.len() >= 10_000 && !seen.contains_key(said) {
        return Some(bytes);
    }
    let times = seen.entry(said.to_vec()).or_default();
    *times += 1;
    match (*times).cmp(&SAME_WARNING_SHOWN) {
        std::cmp::Ordering::Less => Some(bytes),
        std::cmp::Ordering::Equal => {
            let end = bytes.len() - usize::from(bytes.ends_with(b"\n"));
            bytes.truncate(end);
            let by_any = if whose { ", for any agent" } else { "" };
            let note = format!(
                " (said {SAME_WARNING_SHOWN} times{by_any}: not shown again; RUST_LOG=warn shows every one)\n"
            );
            bytes.extend_from_slice(note.as_bytes());
            Some(bytes)
        }
        std::cmp::Ordering::Greater => None,
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let Some(bytes) = held_back(std::mem::take(&mut self.0)) else {
            return;
        };
        let write = || {
            let _ = std::io::stderr().write_all(&bytes);
        };
        let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::new())
    }
}

/// Log events as `warning: <message> key=value ...`, one line each, without time or target.
pub struct PlainLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prefix = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        write!(writer, "{prefix}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_said_word_for_word_again_is_held_back_after_three_times() {
        let warning = b"warning: the same failure, on every step (progress.rs test)\n".to_vec();
        let shown: Vec<Option<Vec<u8>>> = (0..5).map(|_| held_back(warning.clone())).collect();
        assert_eq!(shown[0].as_deref(), Some(warning.as_slice()));
        assert_eq!(shown[1].as_deref(), Some(warning.as_slice()));
        let last = String::from_utf8(shown[2].clone().unwrap()).unwrap();
        assert!(
            last.starts_with("warning: the same failure, on every step (progress.rs test) (said 3 times"),
            "{last}"
        );
        assert!(last.ends_with(")\n"), "{last:?}");
        assert_eq!(shown[3..], [None, None]);
        // The same words for another agent and entry count as the same warning.
        let dead = |agent: &str| {
            format!("warning: behaviour failed 3 times on a message (progress.rs test) agent={agent} entry=0-{agent}\n")
                .into_bytes()
        };
        let shown: Vec<Option<Vec<u8>>> = ["a_1", "a_2", "a_3", "a_4"]
            .map(dead)
            .into_iter()
            .map(held_back)
            .collect();
        assert_eq!(shown[0].as_deref(), Some(dead("a_1").as_slice()));
        let last = String::from_utf8(shown[2].clone().unwrap()).unwrap();
        assert!(
            last.contains("agent=a_3 entry=0-a_3 (said 3 times, for any agent"),
            "{last}"
        );
        assert_eq!(shown[3], None);
        // Errors, and anything but plain warnings, are always written.
        let error = b"error: once (progress.rs test)\n".to_vec();
        assert!((0..5).all(|_| held_back(error.clone()).is_some()));
    }
}
