//! Parameter sweeps (`agora sweep`, CONTRACT.md "Metrics, plots and sweeps"): a scenario run
//! for every combination of some keys' values and some seeds, each run in its own folder
//! under `{out}/{name}-sweep/`, summed up in `sweep.csv` and plotted.
//!
//! - [`plan`]: the combinations, numbered.
//! - [`table`]: `sweep.csv`, and telling a completed run from one cut short.
//! - [`stats`]: means and 95% intervals over seeds, for the sweep's plots.
//!
//! The runs themselves are `agora run` processes (`cli::sweep` starts them, `--jobs` at a
//! time): each is as independent as a run started by hand, a failed one cannot take the
//! others with it, and its transcript cannot depend on how many ran beside it.

pub mod plan;
pub mod relocate;
pub mod stats;
pub mod table;

pub use plan::{PlannedRun, Varied, parse_seeds, plan};
pub use table::RunResult;

/// The sweep's file, in its folder.
pub const SWEEP_FILE: &str = "sweep.csv";
