//! What a run shows and leaves behind: the progress line while it runs, then
//! `transcript.jsonl`, `summary.json` and the summary table (CONTRACT.md, "What a run
//! writes").

pub mod progress;
pub mod summary;
pub mod transcript;

pub use progress::Progress;
pub use summary::{LlmLatency, LlmTokens, MetricSeries, StopReason, Summary};
pub use transcript::TranscriptWriter;
