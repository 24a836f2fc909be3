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

impl Drop for LogLine {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
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
