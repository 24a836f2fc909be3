//! Free mode: agents handle messages as fast as they arrive, wherever they live, until the
//! duration, the budget, quiescence or a stop request ends the run.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Coordinator;
use crate::backend::Backend;
use crate::message::EntryId;
use crate::report::StopReason;
use crate::runtime::RunError;
use crate::runtime::agent::{StepReport, saved_total};
use crate::runtime::hosting::Hosting;
use crate::tally::Tally;

/// How often a free-mode run trims its stream (when `backend.maxlen` is set).
const TRIM_EVERY: Duration = Duration::from_millis(500);
/// How long the coordinator waits for news before it looks at the clock again.
const LOOK_EVERY: Duration = Duration::from_millis(100);

impl<B: Backend> Coordinator<'_, B> {
    pub(super) async fn free<H: Hosting>(
        &mut self,
        hosting: &mut H,
        stopping: &watch::Receiver<bool>,
    ) -> Result<StopReason, RunError> {
        if self.options.resume {
            self.add_saved_totals().await?;
        }
        let start = hosting.start_free().await?;
        self.add_free(hosting, start)?;
        let reason = self.run_free(hosting, stopping).await;
        // Stopped for whatever reason: what the agents did until they stopped still counts.
        let last = hosting.stop_free().await;
        let reason = reason?;
        let mut last = last?;
        self.add_model_reporters(&mut last.tally);
        self.totals.add(&last.tally, None);
        self.tidy_free(&last.tally, true)?;
        if hosting.reports_messages() {
            self.free_published.extend(last.published);
        }
        if !hosting.reports_messages() {
            // Workers report counts; the messages come from the stream, in its order.
            self.free_published = self.published_on_stream(EntryId::ZERO, |_| true).await?;
            self.totals.tally.published = self.free_published.len() as u64;
        }
        if reason == StopReason::Quiescent {
            self.check_nothing_lost().await?;
        }
        Ok(reason)
    }

    /// A resumed run's totals so far: what every agent's committed steps counted, from the
    /// saved records (each committed with its step, so nothing is counted twice or missed).
    async fn add_saved_totals(&mut self) -> Result<(), RunError> {
        let names: Vec<std::sync::Arc<str>> = self.scenario.agents.iter().map(|a| a.name.clone()).collect();
        let saved = self
            .reconnect
            .retry(&self.backend, || self.backend.load_states(&names))
            .await?;
        let mut tally = Tally::default();
        for total in saved.iter().flatten().filter_map(|s| saved_total(s)) {
            tally += total;
        }
        self.totals.add(&tally, None);
        Ok(())
    }

    /// With nothing left in flight, every group has read every entry the stream ever had,
    /// unless some were deleted or trimmed first: then the run is not complete.
    async fn check_nothing_lost(&self) -> Result<(), RunError> {
        if let Some(network) = self.scenario.network() {
            return self.check_nothing_lost_on(network).await;
        }
        let added = self
            .reconnect
            .retry(&self.backend, || self.backend.entries_added())
            .await?;
        let groups = self.scenario.agents.len() as u64;
        let expected = added.saturating_mul(groups);
        let delivered = self.totals.tally.deliveries;
        if delivered < expected {
            return Err(RunError::Lost(format!(
                "stream {:?} had {added} entries, but its {groups} agents read {delivered} in all where each should have read every one: {} entries were deleted or trimmed before some agent read them",
                self.scenario.backend.keys.stream,
                expected - delivered
            )));
        }
        Ok(())
    }

    /// [`check_nothing_lost`](Self::check_nothing_lost) with a sparse network: each of the
    /// run's messages on the stream should have been read by each of its recipients. (Entries
    /// other programs wrote, and messages trimmed off the stream, are not counted: the check
    /// may miss a loss among them, but never reports one that did not happen.)
    async fn check_nothing_lost_on(&self, network: &crate::network::Network) -> Result<(), RunError> {
        let published = self.published_on_stream(EntryId::ZERO, |_| true).await?;
        let routes = self.routes(published.iter().map(|(_, m)| m));
        let expected: u64 = network.expected(&routes).iter().sum();
        let delivered = self.totals.tally.deliveries;
        if delivered < expected {
            return Err(RunError::Lost(format!(
                "the agents' inboxes of stream {:?} should have held {expected} deliveries of the run's {} messages, but {delivered} were read: {} entries were deleted before their agent read them",
                self.scenario.backend.keys.stream,
                published.len(),
                expected - delivered
            )));
        }
        Ok(())
    }

    async fn run_free<H: Hosting>(
        &mut self,
        hosting: &mut H,
        stopping: &watch::Receiver<bool>,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let deadline = scenario.duration.map(|d| Instant::now() + d);
        let groups: Vec<String> = scenario
            .agents
            .iter()
            .map(|a| scenario.backend.keys.group(&a.name))
            .collect();
        let mut last_trim = Instant::now();
        loop {
            if self.totals.tally.published >= scenario.max_messages {
                return Ok(StopReason::Budget);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(StopReason::Duration);
            }
            if *stopping.borrow() {
                return Ok(StopReason::Interrupted);
            }
            let wait = deadline.map_or(LOOK_EVERY, |d| (d - now).min(LOOK_EVERY));
            let progress = hosting.free_progress(wait).await?;
            self.add_free(hosting, progress.report)?;
            self.report_progress(None);
            if self.totals.tally.published >= scenario.max_messages {
                return Ok(StopReason::Budget);
            }
            // Every host was idle at its last word; the backend says whether anything it
            // published before is still unread.
            if progress.idle && self.nothing_in_flight(&groups).await? {
                return Ok(StopReason::Quiescent);
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                self.trim().await?;
                last_trim = Instant::now();
            }
        }
    }

    fn add_free<H: Hosting>(&mut self, hosting: &H, mut report: StepReport) -> Result<(), RunError> {
        self.add_model_reporters(&mut report.tally);
        self.totals.add(&report.tally, None);
        self.tidy_free(&report.tally, false)?;
        if hosting.reports_messages() {
            self.free_published.extend(report.published);
        }
        Ok(())
    }

    /// Trims the stream towards `backend.maxlen` (when set), sparing what some group has not
    /// read and acknowledged.
    pub(super) async fn trim(&self) -> Result<(), RunError> {
        let maxlen = self.scenario.backend.maxlen;
        if maxlen > 0 {
            let removed = self
                .reconnect
                .retry(&self.backend, || self.backend.trim(maxlen))
                .await?;
            tracing::debug!(removed, maxlen, "trimmed the stream");
        }
        Ok(())
    }

    /// Whether every agent's group has read and acknowledged everything on the stream.
    async fn nothing_in_flight(&self, groups: &[String]) -> Result<bool, RunError> {
        let infos = self
            .reconnect
            .retry(&self.backend, || self.backend.groups())
            .await?;
        Ok(groups.iter().all(|g| {
            infos
                .iter()
                .find(|i| &i.name == g)
                .is_some_and(|i| i.pending == 0 && i.lag.is_none_or(|lag| lag == 0))
        }))
    }
}
