//! Lockstep: tick 0 runs every agent's `on_start`; tick `t` hands every agent what tick
//! `t - 1` published. The coordinator is the barrier: tick `t + 1` starts when every agent
//! has committed tick `t`, and the tick's messages, sorted, go to the transcript.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::Coordinator;
use super::record::Checkpoint;
use crate::backend::Backend;
use crate::message::{EntryId, Message};
use crate::network::Routes;
use crate::report::{StopReason, TranscriptWriter};
use crate::runtime::RunError;
use crate::runtime::agent::StepReport;
use crate::runtime::hosting::Hosting;
use crate::runtime::shard::Expected;
use crate::scenario::Mode;

impl<B: Backend> Coordinator<'_, B> {
    pub(super) async fn lockstep<H: Hosting>(
        &mut self,
        hosting: &mut H,
        checkpoint: Option<Checkpoint>,
        transcript: &mut TranscriptWriter,
        stopping: &watch::Receiver<bool>,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let ticks = scenario.ticks.unwrap_or(0);
        let resumed = checkpoint.unwrap_or_default();
        self.tick_start = resumed.last_id;
        let mut expect = resumed.expected.clone();
        // After a resume, agents that finished the cut tick before the crash are not run
        // again: that tick's messages are only all on the stream.
        let cut_tick = self.options.resume.then(|| resumed.tick.map_or(0, |t| t + 1));
        let first_tick = match resumed.tick {
            Some(t) => t + 1,
            None => {
                let started = Instant::now();
                let report = hosting.start_agents(Mode::Lockstep).await?;
                let from_stream = cut_tick == Some(0);
                expect = self
                    .end_tick(hosting, 0, report, from_stream, transcript, started)
                    .await?;
                1
            }
        };
        for tick in first_tick..=ticks {
            if expect.messages == 0 && !self.options.run_all_ticks && !scenario.acts_unprompted() {
                return Ok(StopReason::Quiescent);
            }
            let tick_started = Instant::now();
            if self.totals.tally.published >= scenario.max_messages {
                return Ok(StopReason::Budget);
            }
            if *stopping.borrow() {
                return Ok(StopReason::Interrupted);
            }
            let report = hosting.run_tick(tick, &expect).await?;
            let from_stream = cut_tick == Some(tick);
            expect = self
                .end_tick(hosting, tick, report, from_stream, transcript, tick_started)
                .await?;
            self.trim().await?;
        }
        Ok(StopReason::Ticks)
    }

    /// Completes tick `tick`: its messages (from the report, or from the stream when the
    /// report does not carry them all: `from_stream`, or workers, which report counts only),
    /// the transcript, the checkpoint. Returns how many messages the tick published.
    async fn end_tick<H: Hosting>(
        &mut self,
        hosting: &H,
        tick: u64,
        mut report: StepReport,
        from_stream: bool,
        transcript: &mut TranscriptWriter,
        started: Instant,
    ) -> Result<Expected, RunError> {
        if from_stream || !hosting.reports_messages() {
            report.published = self
                .published_on_stream(self.tick_start, |m| m.tick == Some(tick))
                .await?;
        }
        let expect = self.record_tick(tick, report, transcript, started).await?;
        self.report_progress(Some(tick));
        Ok(expect)
    }

    /// Adds a tick's results to the totals and its messages, sorted, to the transcript, and
    /// records the checkpoint. Returns what the tick published, for the next to read.
    async fn record_tick(
        &mut self,
        tick: u64,
        report: StepReport,
        transcript: &mut TranscriptWriter,
        started: Instant,
    ) -> Result<Expected, RunError> {
        if let Some(displaced) = self.displaced() {
            // The run's record (and perhaps its folder) is another run's now.
            return Err(displaced);
        }
        let mut report = report;
        self.add_model_reporters(&mut report.tally);
        self.totals.add(&report.tally, Some(tick));
        self.last_tick = Some(tick);
        let mut published: Vec<Arc<Message>> = report.published.into_iter().map(|(_, m)| m).collect();
        published.sort_by(|a, b| a.lockstep_key().cmp(&b.lockstep_key()));
        published.dedup_by(|b, a| a.lockstep_key() == b.lockstep_key());
        let path = self.transcript_path();
        transcript
            .write(&published)
            .map_err(|e| RunError::output(&path, e))?;
        transcript.flush().map_err(|e| RunError::output(&path, e))?;
        let seconds = started.elapsed().as_secs_f64();
        self.totals.tick_took(tick, seconds);
        self.write_tidy(tick, published.len() as u64, &report.tally, Some(seconds))?;
        let last_id = self
            .reconnect
            .retry(&self.backend, || self.backend.last_id())
            .await?;
        self.tick_start = last_id;
        let expected = Expected {
            messages: published.len() as u64,
            routes: self.routes(&published),
        };
        let checkpoint = Checkpoint {
            tick: Some(tick),
            expected: expected.clone(),
            last_id,
            transcript_bytes: transcript.bytes(),
            transcript_lines: transcript.lines(),
            totals: self.totals.clone(),
        };
        let fields = checkpoint.fields(self.elapsed()).map_err(RunError::Internal)?;
        if let Some(displaced) = self.displaced() {
            return Err(displaced);
        }
        self.reconnect
            .retry(&self.backend, || self.backend.update_record(&fields))
            .await?;
        Ok(expected)
    }

    /// Where a tick's messages went, when the scenario has a sparse network.
    pub(super) fn routes<'m>(&self, published: impl IntoIterator<Item = &'m Arc<Message>>) -> Routes {
        let Some(network) = self.scenario.network() else {
            return Routes::default();
        };
        Routes(
            published
                .into_iter()
                .filter_map(|m| network.route(&m.sender_id, m.to.as_deref()))
                .collect(),
        )
    }

    /// Agora messages on the stream after `after` that `keep` accepts, in stream order.
    pub(super) async fn published_on_stream(
        &self,
        after: EntryId,
        keep: impl Fn(&Message) -> bool,
    ) -> Result<Vec<(EntryId, Arc<Message>)>, RunError> {
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let batch = self
                .reconnect
                .retry(&self.backend, || self.backend.range(from, 10_000))
                .await?;
            let Some(last) = batch.last() else { break };
            from = last.id;
            for d in batch {
                if let Some(m) = d.message()
                    && m.seq.is_some()
                    && keep(m)
                {
                    out.push((d.id, m.clone()));
                }
            }
        }
        Ok(out)
    }
}
