//! What a run leaves behind: `transcript.jsonl` (opened fresh, or continued on resume),
//! `summary.json`, `dead_letters.jsonl`, and its end recorded in its keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;
use super::record::{Checkpoint, RunStatus};
use crate::backend::{Backend, BackendError, CacheAnswer, CacheQuery};
use crate::llm::ModelUse;
use crate::message::{EntryId, Message};
use crate::network::NetworkSummary;
use crate::report::tidy::{self, Number, TickRows};
use crate::report::{LlmLatency, LlmTokens, StopReason, Summary, TidyWriter, TranscriptWriter};
use crate::runtime::liveness::{self, Heartbeat};
use crate::runtime::model;
use crate::runtime::{RunError, RunOutcome};
use crate::scenario::Mode;
use crate::tally::Tally;

/// Where a run records its exchanges with a model.
pub(crate) const LLM_FILE: &str = "llm.jsonl";

/// The most follows `network.csv` lists for a complete network (about 1,000 agents, 20 MB):
/// past that the file says nothing the scenario does not.
const MAX_COMPLETE_CSV: u64 = 1_000_000;

impl<B: Backend> Coordinator<'_, B> {
    pub(super) fn transcript_path(&self) -> PathBuf {
        self.scenario.run_dir().join(crate::report::transcript::FILE_NAME)
    }

    /// The transcript to write to: a fresh one, or on resume the interrupted one, cut back to
    /// what the checkpoint covers (or rebuilt from the stream when the file is gone).
    pub(super) async fn open_transcript(
        &mut self,
        run_dir: &Path,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<TranscriptWriter, RunError> {
        let fresh = || TranscriptWriter::create(run_dir).map_err(|e| RunError::output(run_dir, e));
        if !self.options.resume {
            return fresh();
        }
        let Some(c) = checkpoint else {
            // Free mode: the transcript is rebuilt from the stream.
            self.free_published = self.published_on_stream(EntryId::ZERO, |_| true).await?;
            if self.scenario.backend.maxlen > 0 {
                tracing::warn!(
                    "the stream is trimmed (backend.maxlen), so the transcript keeps only what it still holds"
                );
            }
            return fresh();
        };
        if let Some(w) = TranscriptWriter::resume(run_dir, c.transcript_bytes, c.transcript_lines)
            .map_err(|e| RunError::output(run_dir, e))?
        {
            return Ok(w);
        }
        // The interrupted run's transcript is not here: rebuild it from the stream, if the
        // stream still holds everything.
        let Some(done) = c.tick else { return fresh() };
        let mut messages: Vec<Arc<Message>> = self
            .published_on_stream(EntryId::ZERO, |m| m.tick.is_some_and(|t| t <= done))
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        if messages.len() as u64 != c.transcript_lines {
            return Err(RunError::Refused {
                message: format!(
                    "cannot resume: {} is missing, and the stream no longer holds every message to rebuild it",
                    self.transcript_path().display()
                ),
                hint: "resume from the folder the run was started in, or start afresh".to_string(),
            });
        }
        messages.sort_by(|a, b| a.lockstep_key().cmp(&b.lockstep_key()));
        let mut w = fresh()?;
        w.write(&messages).map_err(|e| RunError::output(run_dir, e))?;
        Ok(w)
    }

    /// `metrics.csv` and `agents.csv`: fresh, or on resume cut back to what the checkpoint
    /// covers (free mode: continued after the last second written).
    pub(super) fn open_tidy(
        &mut self,
        run_dir: &Path,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), RunError> {
        let tidy = if self.options.resume {
            let from = match self.scenario.mode {
                Mode::Lockstep => checkpoint.and_then(|c| c.tick).map_or(0, |t| t + 1),
                Mode::Free => u64::MAX,
            };
            TidyWriter::resume(run_dir, from)
        } else {
            TidyWriter::create(run_dir)
        }
        .map_err(|e| RunError::output(run_dir.join(tidy::METRICS_FILE), e))?;
        self.free_offset = tidy.next_tick();
        self.free_second = self.free_offset;
        self.tidy = Some(tidy);
        Ok(())
    }

    /// `network.csv`: who follows whom, when the scenario has a `[network]`.
    pub(super) fn write_network(&self, run_dir: &Path) -> Result<(), RunError> {
        if self.scenario.network_section.is_none() {
            return Ok(());
        }
        let path = run_dir.join(crate::network::NETWORK_FILE);
        let written = match self.scenario.network() {
            Some(network) => network.write_csv(&path),
            None => {
                let n = self.scenario.agents.len() as u64;
                if n * n.saturating_sub(1) > MAX_COMPLETE_CSV {
                    tracing::warn!(
                        "network.csv is not written: a complete network of {n} agents has {} follows (everyone follows everyone)",
                        n * (n - 1)
                    );
                    return Ok(());
                }
                let names: Vec<Arc<str>> = self.scenario.agents.iter().map(|a| a.name.clone()).collect();
                crate::network::write_complete_csv(&names, &path)
            }
        };
        written.map_err(|e| RunError::output(&path, e))
    }

    /// Sets the levels the behaviours work out from their agents' reported values
    /// ([`Behaviour::model_reporters`](crate::Behaviour::model_reporters)): a Rust
    /// behaviour's table by table (each table has its own parameters), a program's over
    /// every table that uses it (its reporters are the program's, the same for all).
    pub(super) fn add_model_reporters(&mut self, tally: &mut Tally) {
        if tally.agents.is_empty() {
            return;
        }
        for (t, table) in self.scenario.tables.iter().enumerate() {
            let program = table.behaviour.as_program().map(|p| p.name.as_str());
            let same = |u: usize| match program {
                Some(name) => self.scenario.tables[u]
                    .behaviour
                    .as_program()
                    .is_some_and(|p| p.name == name),
                None => u == t,
            };
            if (0..t).any(same) {
                // Worked out with the first table of its program.
                continue;
            }
            let mut values: std::collections::BTreeMap<String, Vec<f64>> = std::collections::BTreeMap::new();
            for agent in self.scenario.agents.iter().filter(|a| same(a.table)) {
                if let Some(reported) = tally.agents.get(&*agent.name) {
                    for (name, value) in reported {
                        values.entry(name.to_string()).or_default().push(*value);
                    }
                }
            }
            if values.is_empty() {
                continue;
            }
            for (name, value) in table.behaviour.model_reporters(&values) {
                if crate::runtime::agent::RUN_METRICS.contains(&name.as_str()) {
                    if self.shadowing.insert(name.clone()) {
                        tracing::warn!(
                            "table {:?}: its behaviour's model reporter {name:?} is named like a metric every run records itself, and is left out: give it another name",
                            table.id
                        );
                    }
                    continue;
                }
                tally.set_level(&name, value);
            }
        }
        self.add_degree_classes(tally);
    }

    /// With a sparse network: the mean of each value agents report (opinion, informed, ...)
    /// over the agents of each degree class (how many they follow, binned by powers of two),
    /// as levels `{value}_degree_{low}_{high}`: does an agent's place in the graph shape it?
    /// An agent counts with its last reported value.
    fn add_degree_classes(&mut self, tally: &mut Tally) {
        let Some(network) = self.scenario.network() else {
            return;
        };
        for (agent, reported) in &tally.agents {
            for (name, value) in reported {
                self.last_values.report(agent, name, *value);
            }
        }
        let mut sums: std::collections::BTreeMap<(String, usize, usize), (f64, u64)> =
            std::collections::BTreeMap::new();
        for (agent, reported) in &self.last_values.agents {
            let Some(i) = network.index_of(agent) else {
                continue;
            };
            let (low, high) = crate::network::degree_class(network.following(i).len());
            for (name, value) in reported {
                let sum = sums.entry((name.to_string(), low, high)).or_default();
                sum.0 += value;
                sum.1 += 1;
            }
        }
        for ((name, low, high), (sum, count)) in sums {
            tally.set_level(&format!("{name}_degree_{low}_{high}"), sum / count as f64);
        }
    }

    /// Writes one tick's rows: what every run records, then what behaviours reported.
    pub(super) fn write_tidy(
        &mut self,
        tick: u64,
        messages: u64,
        tally: &Tally,
        seconds: Option<f64>,
    ) -> Result<(), RunError> {
        let Some(tidy) = self.tidy.as_mut() else {
            return Ok(());
        };
        let mut rows = TickRows::default();
        rows.model.push(("messages", Number::Whole(messages as i64)));
        rows.model
            .push(("deliveries", Number::Whole(tally.deliveries as i64)));
        if let Some(seconds) = seconds {
            rows.model.push(("seconds", Number::Real(seconds)));
        }
        // Every counter known so far gets a row, 0 in a tick nobody counted it.
        for name in self.totals.metrics.keys() {
            let value = tally.metrics.get(name).copied().unwrap_or(0);
            rows.model.push((name, Number::Whole(value)));
        }
        for (name, value) in &tally.levels {
            rows.model.push((name, Number::Real(*value)));
        }
        if !tally.agents.is_empty() {
            rows.agents.reserve(tally.agents.len());
            for agent in &self.scenario.agents {
                if let Some(values) = tally.agents.get(&*agent.name) {
                    for (name, value) in values {
                        rows.agents.push((&agent.name, name, *value));
                    }
                }
            }
        }
        let [path, _] = tidy.paths();
        tidy.write_tick(tick, &rows)
            .map_err(|e| RunError::output(&path, e))
    }

    /// Free mode: adds a report to the current second's, writing the second before when a
    /// new one has begun, and everything left when `last`.
    pub(super) fn tidy_free(&mut self, tally: &Tally, last: bool) -> Result<(), RunError> {
        let second = self.free_offset + self.started.elapsed().as_secs();
        if second > self.free_second {
            self.write_free_second()?;
            self.free_second = second;
        }
        self.free_bucket += tally;
        if last {
            self.write_free_second()?;
        }
        Ok(())
    }

    fn write_free_second(&mut self) -> Result<(), RunError> {
        let bucket = std::mem::take(&mut self.free_bucket);
        if bucket.is_empty() {
            return Ok(());
        }
        self.write_tidy(self.free_second, bucket.published, &bucket, None)
    }

    /// Free mode: the transcript in publication order, which is stream order.
    pub(super) fn write_free_transcript(
        &mut self,
        transcript: &mut TranscriptWriter,
    ) -> Result<(), RunError> {
        let mut published = std::mem::take(&mut self.free_published);
        published.sort_by_key(|(id, _)| *id);
        published.dedup_by_key(|(id, _)| *id);
        transcript
            .write(published.iter().map(|(_, m)| m))
            .map_err(|e| RunError::output(self.transcript_path(), e))
    }

    /// Writes the outputs, records the end and gives the lease back.
    pub(super) async fn finish(
        mut self,
        run_dir: PathBuf,
        transcript: TranscriptWriter,
        stop_reason: StopReason,
        error: Option<RunError>,
        elapsed: Duration,
        heartbeat: Heartbeat,
    ) -> Result<RunOutcome, RunError> {
        if let Some(displaced) = self.displaced() {
            // Another run has the stream's keys, and may be writing into the same folder:
            // leave everything to it.
            transcript.abandon();
            return Err(displaced);
        }
        let (transcript_path, sha) = transcript
            .finish()
            .map_err(|e| RunError::output(self.transcript_path(), e))?;
        let dead_letters_path = self.write_dead_letters(&run_dir).await?;
        self.write_memory(&run_dir).await;
        let used = self.write_exchanges(&run_dir).await?;
        let mut summary = self.summary(stop_reason, error.as_ref(), elapsed, sha);
        summary.set_model_use(&used);
        let summary_path = run_dir.join("summary.json");
        let json = serde_json::to_string_pretty(&summary).map_err(|e| RunError::Internal(e.to_string()))?;
        std::fs::write(&summary_path, json + "\n").map_err(|e| RunError::output(&summary_path, e))?;

        // The lease is held (renewed) until the end is recorded and the keys perhaps deleted;
        // a run displaced meanwhile leaves them alone. Renewed once more first: the heartbeat
        // beats once a second, and a run that met its keys deleted (by `agora cleanup`) may
        // get here before it; recording its end would bring back the record of a run that is
        // gone, and the next run would be refused. (Not when the backend is what failed: the
        // renewal would only wait for it in vain.)
        let holder = self.holder.to_value();
        let lost_backend = error.as_ref().is_some_and(RunError::backend_unavailable);
        if self.displaced().is_none()
            && (lost_backend || liveness::renew(&self.backend, &holder, &self.lost_to).await)
        {
            self.record_end(stop_reason, error.as_ref()).await?;
            drop(heartbeat);
            self.give_up_lease().await;
        }
        Ok(RunOutcome {
            summary,
            run_dir,
            transcript: transcript_path,
            summary_path,
            dead_letters_path,
            error,
        })
    }

    fn summary(
        &mut self,
        stop_reason: StopReason,
        error: Option<&RunError>,
        elapsed: Duration,
        sha: String,
    ) -> Summary {
        let scenario = self.scenario;
        let ticks = match scenario.mode {
            Mode::Lockstep => self.last_tick,
            Mode::Free => None,
        };
        let mut metrics = std::mem::take(&mut self.totals.metrics);
        for series in metrics.values_mut() {
            series.finish_ticks(ticks);
        }
        let tally = &self.totals.tally;
        let elapsed_s = elapsed.as_secs_f64();
        Summary {
            scenario: scenario.name.clone(),
            agora_version: env!("CARGO_PKG_VERSION").to_string(),
            fingerprint: scenario.fingerprint(),
            parameters: scenario.to_json(),
            seed: scenario.seed,
            mode: scenario.mode,
            backend: self.backend.kind(),
            on_cluster: self.backend.keys().cluster,
            agents: scenario.agents.len() as u64,
            ticks,
            messages: tally.published,
            deliveries: tally.deliveries,
            handled: tally.handled,
            dead_letters: tally.dead_letters,
            behaviour_failures: tally.failures,
            elapsed_s,
            deliveries_per_s: tally.deliveries as f64 / elapsed_s.max(1e-9),
            stop_reason,
            error: error.map(ToString::to_string),
            transcript_sha256: sha,
            metrics,
            levels: std::mem::take(&mut self.totals.levels),
            tick_seconds: std::mem::take(&mut self.totals.tick_seconds),
            llm_calls: 0,
            llm_tokens: LlmTokens::default(),
            llm_latency_ms: LlmLatency::default(),
            replayed_from: self.options.replay.as_deref().map(|path| {
                std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.to_path_buf())
                    .display()
                    .to_string()
            }),
            network: scenario
                .network_section
                .as_ref()
                .map(|section| match scenario.network() {
                    Some(network) => NetworkSummary::of(section.kind.as_str(), network),
                    None => NetworkSummary::complete(scenario.agents.len() as u64),
                }),
        }
    }

    /// `llm.jsonl`, every exchange with a model, when the scenario has `[llm]`; returns what
    /// they add up to.
    async fn write_exchanges(&self, run_dir: &Path) -> Result<ModelUse, RunError> {
        if self.scenario.llm.is_none() {
            return Ok(ModelUse::default());
        }
        let exchanges = match model::exchanges(&self.backend, &self.reconnect).await {
            Ok(exchanges) => exchanges,
            Err(e) => {
                tracing::warn!("could not read the model's answers back for llm.jsonl: {e}");
                return Ok(ModelUse::default());
            }
        };
        let path = run_dir.join(LLM_FILE);
        write_records(&path, &exchanges).map_err(|e| RunError::output(&path, e))?;
        Ok(ModelUse::of(&exchanges))
    }

    /// `cache.jsonl` (everything the agents remembered, in the cache's order) and
    /// `states.jsonl` (each agent's last saved state): on the memory backend they are gone
    /// when the process exits. What cannot be read back is a warning: the run is over.
    async fn write_memory(&self, run_dir: &Path) {
        let read = async {
            let all = crate::backend::ScoreBound::ALL;
            let count = match self
                .backend
                .cache_read(&[CacheQuery::Count { bound: all }])
                .await?
                .pop()
            {
                Some(CacheAnswer::Count(n)) => n as usize,
                _ => 0,
            };
            let members = match self
                .backend
                .cache_read(&[CacheQuery::Last { n: count, bound: all }])
                .await?
                .pop()
            {
                Some(CacheAnswer::Members(members)) => members,
                _ => Vec::new(),
            };
            let names: Vec<Arc<str>> = self.scenario.agents.iter().map(|a| a.name.clone()).collect();
            let saved = self.backend.load_states(&names).await?;
            Ok::<_, BackendError>((members, names, saved))
        };
        let (members, names, saved) = match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return tracing::warn!("could not read the cache and the states back: {e}"),
            Err(_) => return tracing::warn!("could not read the cache and the states back: timed out"),
        };
        let cache_path = run_dir.join("cache.jsonl");
        let lines = members.iter().map(String::as_str);
        if let Err(e) = write_lines(&cache_path, lines) {
            tracing::warn!("cannot write {}: {e}", cache_path.display());
        }
        let states: Vec<String> = names
            .iter()
            .zip(&saved)
            .filter_map(|(name, record)| {
                let record: serde_json::Value = serde_json::from_str(record.as_deref()?).ok()?;
                Some(
                    serde_json::json!({ "agent": &**name, "tick": record["tick"], "state": record["state"] })
                        .to_string(),
                )
            })
            .collect();
        let states_path = run_dir.join("states.jsonl");
        if let Err(e) = write_lines(&states_path, states.iter().map(String::as_str)) {
            tracing::warn!("cannot write {}: {e}", states_path.display());
        }
    }

    /// `dead_letters.jsonl`, when some messages were dead-lettered.
    async fn write_dead_letters(&self, run_dir: &Path) -> Result<Option<PathBuf>, RunError> {
        if self.totals.tally.dead_letters == 0 {
            return Ok(None);
        }
        let path = run_dir.join("dead_letters.jsonl");
        let read = tokio::time::timeout(Duration::from_secs(5), self.backend.dead_letters()).await;
        match read.unwrap_or_else(|_| Err(BackendError::command("timed out"))) {
            Ok(entries) => {
                write_jsonl(&path, &entries).map_err(|e| RunError::output(&path, e))?;
                Ok(Some(path))
            }
            Err(e) => {
                tracing::warn!("could not read the dead letters back: {e}");
                Ok(None)
            }
        }
    }

    /// Marks the run's end in its keys and deletes them if the scenario says so.
    async fn record_end(&self, stop_reason: StopReason, error: Option<&RunError>) -> Result<(), RunError> {
        let [status] = RunStatus::after(stop_reason).field();
        let fields = [status, super::record::elapsed_field(self.elapsed())];
        if let Err(e) = self.backend.update_record(&fields).await {
            // After losing the backend, or the run's keys, this is expected, and the run's
            // error says it all.
            if error.is_some() {
                tracing::debug!("could not record the run's end: {e}");
            } else {
                tracing::warn!("could not record the run's end: {e}");
            }
        }
        if self.scenario.backend.cleanup.after() {
            if stop_reason.finished() {
                self.backend.delete_run().await?;
            } else {
                tracing::warn!(
                    "the run did not finish, so its keys were kept for --resume (cleanup = \"after\" applies to finished runs)"
                );
            }
        }
        Ok(())
    }
}

/// Dead letters as JSON lines: the stream entry's fields, with `seq` and `tick` as numbers
/// and `data` as the object it holds, as the transcript has them (the stream keeps text).
fn write_jsonl(path: &Path, entries: &[Vec<(String, String)>]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for fields in entries {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| {
                let typed = match k.as_str() {
                    "seq" | "tick" => v.parse::<u64>().ok().map(serde_json::Value::from),
                    "data" => serde_json::from_str::<serde_json::Value>(v)
                        .ok()
                        .filter(serde_json::Value::is_object),
                    _ => None,
                };
                (
                    k.clone(),
                    typed.unwrap_or_else(|| serde_json::Value::String(v.clone())),
                )
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(object))?;
    }
    out.flush()
}

/// Lines as they are, each ended by a newline.
fn write_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// One JSON object a line.
fn write_records<T: serde::Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
