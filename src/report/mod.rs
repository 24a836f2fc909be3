//! What a run shows and leaves behind: the progress line while it runs, then
//! `transcript.jsonl`, `summary.json`, `metrics.csv` and `agents.csv` and the summary table (CONTRACT.md, "What a run
//! writes").

pub mod progress;
pub mod summary;
pub mod tidy;
pub mod transcript;

pub use progress::Progress;
pub use summary::{LevelSeries, LlmLatency, LlmTokens, MetricSeries, StopReason, Summary};
pub use tidy::TidyWriter;
pub use transcript::TranscriptWriter;
