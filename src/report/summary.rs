//! `summary.json` and the summary table printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize, Serializer};

use crate::scenario::{BackendKind, Mode};

/// Why a run stopped (`stop_reason` in `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Lockstep: all `ticks` ran.
    Ticks,
    /// Free mode: `duration` elapsed.
    Duration,
    /// `max_messages` were published.
    Budget,
    /// Nothing left to do: a tick published nothing (lockstep), or nothing is in flight (free).
    Quiescent,
    /// Asked to stop (Ctrl-C).
    Interrupted,
    /// An error stopped the run.
    Failed,
}

impl StopReason {
    /// `stop_reason` in `summary.json`, one of CONTRACT.md's five: a run an error stopped
    /// was interrupted too (and can be resumed); the summary's `error` says what happened.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Ticks => "ticks",
            StopReason::Duration => "duration",
            StopReason::Budget => "budget",
            StopReason::Quiescent => "quiescent",
            StopReason::Interrupted | StopReason::Failed => "interrupted",
        }
    }

    /// Whether `stop_reason`, as `summary.json` has it, is that of a run that came to its end
    /// (a sweep's completed run; a run folder's that no `--resume` is waiting for).
    pub fn names_an_end(stop_reason: &str) -> bool {
        use StopReason::{Budget, Duration, Failed, Interrupted, Quiescent, Ticks};
        [Ticks, Duration, Budget, Quiescent, Interrupted, Failed]
            .into_iter()
            .any(|r| r.finished() && r.as_str() == stop_reason)
    }

    /// Whether the run came to its end, rather than being stopped.
    pub fn finished(self) -> bool {
        matches!(
            self,
            StopReason::Ticks | StopReason::Duration | StopReason::Budget | StopReason::Quiescent
        )
    }
}

/// A stop reason equals the word `summary.json` writes for it.
impl PartialEq<&str> for StopReason {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl Serialize for StopReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What `summary.json` holds (CONTRACT.md lists the required keys; the rest are extras).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    /// The version of agora that ran it.
    pub agora_version: String,
    /// A digest of everything in the scenario that decides the transcript.
    pub fingerprint: String,
    /// The resolved scenario it ran: every key, defaults filled in, the password hidden.
    pub parameters: serde_json::Value,
    pub seed: u64,
    pub mode: Mode,
    pub backend: BackendKind,
    /// The Redis backend ran on a Redis Cluster (`backend.cluster`; also in `parameters`).
    #[serde(skip)]
    pub on_cluster: bool,
    pub agents: u64,
    /// Lockstep: the last tick completed. Free mode: null.
    pub ticks: Option<u64>,
    /// Messages published.
    pub messages: u64,
    /// Stream entries read and acknowledged, summed over all groups.
    pub deliveries: u64,
    /// Messages handed to behaviours and handled.
    pub handled: u64,
    pub dead_letters: u64,
    /// Of the dead letters, messages a behaviour kept failing on.
    pub behaviour_failures: u64,
    pub elapsed_s: f64,
    pub deliveries_per_s: f64,
    /// `ticks`, `duration`, `budget`, `quiescent` or `interrupted` (Ctrl-C, or an error).
    pub stop_reason: StopReason,
    /// Why the run failed, when an error stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub transcript_sha256: String,
    /// Counters behaviours reported, such as gossip's `informed`.
    pub metrics: BTreeMap<String, MetricSeries>,
    /// Numbers behaviours set for the whole model, such as opinion's `clusters`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub levels: BTreeMap<String, LevelSeries>,
    /// Lockstep: how long each tick from 1 on took (in this process, after a resume).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tick_seconds: Vec<f64>,
    /// Completions the agents got from a model (a replayed run: the recording's).
    pub llm_calls: u64,
    pub llm_tokens: LlmTokens,
    /// How long the server took per call, retries included: the recorded figures on replay.
    pub llm_latency_ms: LlmLatency,
    /// A replayed run: the recording its model answers came from (no server was asked, so
    /// `parameters.llm.base_url` is not one the run used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<String>,
    /// Who followed whom, when the scenario has a `[network]`: its degree distributions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkSummary>,
}

/// Tokens the run's completions used, as the servers counted them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LlmTokens {
    pub prompt: u64,
    pub completion: u64,
}

/// Percentiles of the completions' latency, in milliseconds (nearest rank; 0 without calls).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LlmLatency {
    pub p50: u64,
    pub p95: u64,
}

/// A level for the table: whole numbers as they are, others to 4 significant digits
/// (`summary.json` keeps every digit).
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v}");
    }
    if !v.is_finite() || v.abs() < 1e-4 {
        return format!("{v:.3e}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    let text = format!("{v:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Summary {
    /// Fills the `llm_*` figures in.
    pub fn set_model_use(&mut self, used: &crate::llm::ModelUse) {
        self.llm_calls = used.calls;
        self.llm_tokens = LlmTokens {
            prompt: used.prompt_tokens,
            completion: used.completion_tokens,
        };
        self.llm_latency_ms = LlmLatency {
            p50: used.latency_p50_ms,
            p95: used.latency_p95_ms,
        };
    }
}

/// A behaviour counter: its total and, in lockstep, its value tick by tick.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricSeries {
    pub total: i64,
    /// Lockstep: the counter's sum in each tick, from tick 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_tick: Vec<i64>,
    /// Lockstep: the running total at the end of each tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cumulative: Vec<i64>,
}

/// A model-level number behaviours set (such as opinion's `clusters`): its last value and,
/// in lockstep, its value tick by tick (null in a tick that did not set it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LevelSeries {
    pub last: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_tick: Vec<Option<f64>>,
}

impl LevelSeries {
    /// Records the value set in lockstep tick `tick` (or, in free mode, without one).
    pub fn record(&mut self, tick: Option<u64>, value: f64) {
        self.last = value;
        if let Some(t) = tick {
            let t = t as usize;
            if self.per_tick.len() <= t {
                self.per_tick.resize(t + 1, None);
            }
            self.per_tick[t] = Some(value);
        }
    }
}

impl MetricSeries {
    /// Records this counter's sum for tick `tick` (ticks may be skipped: they count 0).
    pub fn record_tick(&mut self, tick: u64, delta: i64) {
        let tick = tick as usize;
        if self.per_tick.len() <= tick {
            self.per_tick.resize(tick + 1, 0);
        }
        self.per_tick[tick] += delta;
        self.total += delta;
    }

    /// Completes the series of a run that ended after `ticks` lockstep ticks: one entry per
    /// tick from 0 (a counter nobody reported in the last ticks counts 0 there), and the
    /// running totals.
    pub fn finish_ticks(&mut self, ticks: Option<u64>) {
        if let Some(last) = ticks
            && !self.per_tick.is_empty()
        {
            self.per_tick.resize(last as usize + 1, 0);
        }
        self.finish();
    }

    pub fn finish(&mut self) {
        let mut running = 0;
        self.cumulative = self
            .per_tick
            .iter()
            .map(|d| {
                running += d;
                running
            })
            .collect();
    }
}

impl Summary {
    /// The table printed at the end of a run, with `files` (what the run wrote: name, path)
    /// as its last rows, all in one column.
    pub fn table<'a>(&'a self, files: &[(&'a str, String)]) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} (seed {})", self.scenario, self.seed)),
            (
                "mode",
                format!(
                    "{} on {}",
                    self.mode.as_str(),
                    if self.on_cluster {
                        "a Redis Cluster"
                    } else {
                        self.backend.as_str()
                    }
                ),
            ),
            ("agents", self.agents.to_string()),
        ];
        if let Some(ticks) = self.ticks {
            rows.push(("ticks", ticks.to_string()));
        }
        rows.extend([
            ("messages", self.messages.to_string()),
            ("deliveries", self.deliveries.to_string()),
            ("handled", self.handled.to_string()),
            ("dead letters", self.dead_letters.to_string()),
            ("elapsed", format!("{:.3} s", self.elapsed_s)),
            ("rate", format!("{} deliveries/s", human(self.deliveries_per_s))),
        ]);
        if !self.tick_seconds.is_empty() {
            let mean = self.tick_seconds.iter().sum::<f64>() / self.tick_seconds.len() as f64;
            let max = self.tick_seconds.iter().copied().fold(0.0, f64::max);
            rows.push((
                "per tick",
                format!("{:.1} ms on average, {:.1} ms at most", mean * 1e3, max * 1e3),
            ));
        }
        if self.llm_calls > 0 {
            rows.push((
                "llm calls",
                format!(
                    "{} ({} prompt + {} completion tokens; latency p50 {} ms, p95 {} ms)",
                    self.llm_calls,
                    self.llm_tokens.prompt,
                    self.llm_tokens.completion,
                    self.llm_latency_ms.p50,
                    self.llm_latency_ms.p95
                ),
            ));
        }
        rows.push(("stop reason", self.stop_reason.as_str().to_string()));
        for (name, series) in &self.metrics {
            let shown = if series.cumulative.is_empty() {
                series.total.to_string()
            } else {
                format!(
                    "{} (running total by tick: {})",
                    series.total,
                    abbreviate(&series.cumulative)
                )
            };
            rows.push((name.as_str(), shown));
        }
        for (name, series) in &self.levels {
            // A level is shown as what it is: its last value, not a sum.
            let shown = if series.per_tick.is_empty() {
                format!("{} (last)", short(series.last))
            } else {
                let by_tick: Vec<String> = series
                    .per_tick
                    .iter()
                    .map(|v| v.map_or_else(|| "-".to_string(), short))
                    .collect();
                format!(
                    "{} at the end (by tick: {})",
                    short(series.last),
                    abbreviate_text(&by_tick)
                )
            };
            rows.push((name.as_str(), shown));
        }
        rows.extend_from_slice(files);
        aligned(&rows)
    }
}

/// `rows` as lines of `  key  value`, the values in one column.
fn aligned(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    out
}

/// A series as `1 3 7 ... 40 40`, at most a dozen numbers.
fn abbreviate(series: &[i64]) -> String {
    let show = |s: &[i64]| s.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
    if series.len() <= 12 {
        show(series)
    } else {
        format!("{} ... {}", show(&series[..6]), show(&series[series.len() - 5..]))
    }
}

/// Values as `a b c ... y z`, at most a dozen.
fn abbreviate_text(series: &[String]) -> String {
    if series.len() <= 12 {
        series.join(" ")
    } else {
        format!(
            "{} ... {}",
            series[..6].join(" "),
            series[series.len() - 5..].join(" ")
        )
    }
}

/// 1234567.0 as "1.23M".
pub fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_shown_to_four_significant_digits() {
        let shown: Vec<String> = [3.0, 0.428571, 0.5, 12.34567, -0.0482601, 1234.5678, 0.00001]
            .map(short)
            .to_vec();
        assert_eq!(
            shown,
            ["3", "0.4286", "0.5", "12.35", "-0.04826", "1235", "1.000e-5"]
        );
    }

    #[test]
    fn series_accumulate() {
        let mut s = MetricSeries::default();
        s.record_tick(0, 1);
        s.record_tick(2, 4);
        s.record_tick(2, 1);
        s.finish();
        assert_eq!(s.per_tick, [1, 0, 5]);
        assert_eq!(s.cumulative, [1, 1, 6]);
        assert_eq!(s.total, 6);
    }

    #[test]
    fn long_series_are_abbreviated() {
        let s: Vec<i64> = (1..=20).collect();
        assert_eq!(abbreviate(&s), "1 2 3 4 5 6 ... 16 17 18 19 20");
        assert_eq!(human(2_500_000.0), "2.50M");
    }
}
