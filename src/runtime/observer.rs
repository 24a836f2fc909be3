//! What a run tells whoever watches it: how far it has got, and what it is waiting for.
//!
//! The library prints nothing of its own while a run goes: the command line passes an
//! observer that draws the progress line, a test passes [`Unobserved`] or one that records.

use std::time::Duration;

/// How far a run has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunProgress {
    /// Lockstep: the last tick completed. Free mode: `None`.
    pub tick: Option<u64>,
    /// Messages published so far.
    pub messages: u64,
    /// Entries read and acknowledged so far, summed over all groups.
    pub deliveries: u64,
    /// Since the agents started.
    pub elapsed: Duration,
}

/// Watches a run. Every method has a default that ignores the event.
pub trait RunObserver: Send + Sync {
    /// The run moved on: after every lockstep tick, and every tenth of a second in free mode.
    fn progress(&self, _progress: &RunProgress) {}

    /// The run waits for something (a lost backend, worker processes), said in a few words;
    /// `None` when it no longer waits.
    fn waiting(&self, _what: Option<&str>) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl RunObserver for Unobserved {}
