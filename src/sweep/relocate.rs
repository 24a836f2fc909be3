//! A sweep run again with more (or other) values or seeds numbers its runs anew, in plan
//! order: a run that completed under an old number is moved to its new number's folder
//! instead of being run again, and run folders that are none of the plan's runs are set aside
//! in `unplanned/`, so that `run-*/*/` holds this plan's runs and nothing else.
//!
//! A run is recognised by its scenario's fingerprint (what decides its transcript: the
//! scenario, the `--set` and varied values, the seed), which `summary.json` keeps.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::table;

/// Where the run folders that are none of a plan's runs go, under the sweep's folder.
pub const UNPLANNED: &str = "unplanned";

/// What [`relocate`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relocated {
    /// Completed runs moved to their new number's folder.
    pub moved: usize,
    /// Run folders moved into `unplanned/`.
    pub set_aside: usize,
}

/// Why runs could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum RelocateError {
    /// A run still going writes into one of the folders: nothing was moved.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One planned run: its scenario's fingerprint and the folder it is to be in
/// (`{sweep}/run-NNN/{name}-{seed}`).
pub struct PlannedFolder {
    pub fingerprint: String,
    pub run_dir: PathBuf,
}

/// Moves completed runs to the folders `planned` gives them, and sets aside the run folders
/// under `sweep_dir/run-*/` that are none of them.
///
/// # Errors
///
/// A folder that cannot be read or renamed, or a run folder a run still going writes into.
pub fn relocate(sweep_dir: &Path, planned: &[PlannedFolder]) -> Result<Relocated, RelocateError> {
    let existing = run_folders(sweep_dir)?;
    refuse_live_runs(&existing)?;
    let done: HashMap<&PathBuf, String> = existing
        .iter()
        .filter_map(|dir| completed_fingerprint(dir).map(|fp| (dir, fp)))
        .collect();
    let targets: HashSet<&PathBuf> = planned.iter().map(|p| &p.run_dir).collect();
    let in_place: HashSet<&PathBuf> = planned
        .iter()
        .filter(|p| done.get(&p.run_dir) == Some(&p.fingerprint))
        .map(|p| &p.run_dir)
        .collect();
    // Completed runs that are not where the plan wants them, by fingerprint (one of two
    // alike, either).
    let mut movable: HashMap<&str, &PathBuf> = HashMap::new();
    for (dir, fingerprint) in &done {
        if !in_place.contains(dir) {
            movable.entry(fingerprint.as_str()).or_insert(dir);
        }
    }
    let moves: Vec<(&PathBuf, &PathBuf)> = planned
        .iter()
        .filter(|p| !in_place.contains(&p.run_dir))
        .filter_map(|p| {
            movable
                .remove(p.fingerprint.as_str())
                .map(|from| (from, &p.run_dir))
        })
        .collect();
    let arriving: HashSet<&PathBuf> = moves.iter().map(|(_, to)| *to).collect();
    // Not planned; or planned for another run, which arrives or which will run here over a
    // completed run of other values (an unfinished one is only run again).
    let out_of_plan = |dir: &PathBuf| {
        !targets.contains(dir)
            || arriving.contains(dir)
            || (done.contains_key(dir) && !in_place.contains(dir))
    };
    let mut report = Relocated::default();
    if moves.is_empty() && !existing.iter().any(out_of_plan) {
        return Ok(report);
    }
    // First out of the way, then into place: a run may move into a folder another leaves.
    // A relocation cut short leaves its staging folder, whose runs the next one finds (see
    // `run_folders`); each uses its own.
    let staging = sweep_dir.join(format!("{STAGING}{}", std::process::id()));
    std::fs::create_dir_all(&staging)?;
    let mut staged = Vec::new();
    for (i, (from, to)) in moves.iter().enumerate() {
        // Under its own name, so that a relocation cut short leaves runs one can recognise.
        let held = staging.join(i.to_string());
        std::fs::create_dir_all(&held)?;
        let held = held.join(from.file_name().unwrap_or_default());
        std::fs::rename(from, &held)?;
        staged.push((held, *to));
    }
    for dir in &existing {
        // The runs being moved are out of the way already.
        if dir.exists() && out_of_plan(dir) {
            set_aside(sweep_dir, dir)?;
            report.set_aside += 1;
        }
    }
    for (held, to) in staged {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(held, to)?;
        report.moved += 1;
    }
    remove_emptied(sweep_dir, &existing, &staging);
    Ok(report)
}

/// A run still going (the same sweep in another terminal) keeps its folder where it is: the
/// error says which.
fn refuse_live_runs(existing: &[PathBuf]) -> Result<(), RelocateError> {
    match existing
        .iter()
        .find_map(|dir| crate::runtime::folder::written_by(dir).map(|h| (dir, h)))
    {
        Some((dir, holder)) => Err(RelocateError::Busy(format!(
            "{} is being written by a run still going ({holder}): wait for it (another agora sweep into this folder?), or give this sweep --out ANOTHER_DIR",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Removes what the moves left empty: run-NNN folders, staging folders and their slots.
fn remove_emptied(sweep_dir: &Path, existing: &[PathBuf], staging: &Path) {
    let mut emptied: Vec<PathBuf> = existing
        .iter()
        .filter_map(|d| d.parent())
        .map(Path::to_path_buf)
        .collect();
    emptied.extend(staged_slots(sweep_dir));
    for dir in emptied {
        // Only if empty.
        let _ = std::fs::remove_dir(&dir);
        if let Some(parent) = dir.parent().filter(|p| is_staging(p)) {
            let _ = std::fs::remove_dir(parent);
        }
    }
    let _ = std::fs::remove_dir(staging);
}

/// Where a relocation holds the runs it moves (`.relocating-{pid}/{k}/{run}`).
const STAGING: &str = ".relocating-";

fn is_staging(dir: &Path) -> bool {
    dir.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(STAGING))
}

/// The slots of every staging folder (`.relocating-{pid}/{k}`).
fn staged_slots(sweep_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sweep_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_staging(p) && p.is_dir())
        .flat_map(|p| {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// Every run folder under `sweep_dir/run-*/`, and any a relocation cut short left staged.
fn run_folders(sweep_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(sweep_dir) else {
        return Ok(found);
    };
    let mut holders = staged_slots(sweep_dir);
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("run-") && entry.path().is_dir() {
            holders.push(entry.path());
        }
    }
    for holder in holders {
        for run in std::fs::read_dir(holder)? {
            let run = run?.path();
            if run.is_dir() {
                found.push(run);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The fingerprint of the run in `dir`, when it completed.
fn completed_fingerprint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let summary: serde_json::Value = serde_json::from_str(&text).ok()?;
    let fingerprint = summary["fingerprint"].as_str()?.to_string();
    table::completed(&summary, &fingerprint).then_some(fingerprint)
}

/// Moves `dir` (`run-NNN/{name}-{seed}`) to `unplanned/run-NNN/{name}-{seed}` (with `-2`,
/// `-3`... when an earlier one is there).
fn set_aside(sweep_dir: &Path, dir: &Path) -> std::io::Result<()> {
    let number = dir.parent().and_then(Path::file_name).unwrap_or_default();
    let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let under = sweep_dir.join(UNPLANNED).join(number);
    std::fs::create_dir_all(&under)?;
    let mut to = under.join(&name);
    let mut k = 2;
    while to.exists() {
        to = under.join(format!("{name}-{k}"));
        k += 1;
    }
    std::fs::rename(dir, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed_run(dir: &Path, fingerprint: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let summary = serde_json::json!({ "fingerprint": fingerprint, "stop_reason": "ticks" });
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    }

    #[test]
    fn completed_runs_follow_their_new_numbers_and_the_rest_is_set_aside() {
        let sweep = tempfile::tempdir().unwrap();
        let s = sweep.path();
        // The first sweep: a (run-001), b (run-002), c (run-003, cut short), d (run-004),
        // f (run-005); and h, staged by a relocation that was cut short.
        completed_run(&s.join("run-001/m-1"), "a");
        completed_run(&s.join("run-002/m-2"), "b");
        std::fs::create_dir_all(s.join("run-003/m-1")).unwrap();
        completed_run(&s.join("run-004/m-2"), "d");
        completed_run(&s.join("run-005/m-1"), "f");
        completed_run(&s.join(".relocating-99/0/m-9"), "h");
        // The second: b, a, a new one where c was, h, and a new one where f is; d and f are
        // no longer planned.
        let plan = |fingerprint: &str, dir: &str| PlannedFolder {
            fingerprint: fingerprint.into(),
            run_dir: s.join(dir),
        };
        let planned = [
            plan("b", "run-001/m-2"),
            plan("a", "run-002/m-1"),
            plan("e", "run-003/m-1"),
            plan("h", "run-004/m-9"),
            plan("g", "run-005/m-1"),
        ];
        let report = relocate(s, &planned).unwrap();
        assert_eq!(
            report,
            Relocated {
                moved: 3,
                set_aside: 2
            }
        );
        let at = |dir: &str| completed_fingerprint(&s.join(dir));
        assert_eq!(at("run-001/m-2").as_deref(), Some("b"));
        assert_eq!(at("run-002/m-1").as_deref(), Some("a"));
        assert_eq!(at("run-004/m-9").as_deref(), Some("h"));
        // c's unfinished folder stays where e will run (and overwrite it); d is set aside,
        // and so is f, which g would have overwritten.
        assert!(s.join("run-003/m-1").is_dir());
        assert_eq!(at("unplanned/run-004/m-2").as_deref(), Some("d"));
        assert_eq!(at("unplanned/run-005/m-1").as_deref(), Some("f"));
        assert!(!s.join("run-005/m-1").exists());
        assert!(!s.join("run-001/m-1").exists() && !s.join("run-002/m-2").exists());
        let left: Vec<String> = std::fs::read_dir(s)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "staging folders left: {left:?}");
        // Run again with the same plan: nothing moves.
        assert_eq!(relocate(s, &planned).unwrap(), Relocated::default());
        // A run still going in one of the folders (this process holds its lock): nothing
        // is touched.
        let lock = serde_json::to_string(&crate::runtime::liveness::Holder::me()).unwrap();
        std::fs::write(s.join("run-003/m-1/.agora.lock"), lock).unwrap();
        let busy = relocate(s, &[plan("e", "run-009/m-1")]).unwrap_err();
        assert!(
            busy.to_string().contains("being written by a run still going"),
            "{busy}"
        );
        assert!(s.join("run-001/m-2").is_dir());
    }
}
