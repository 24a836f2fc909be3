//! A run's folder (`{output.dir}/{name}-{seed}/`) belongs to one run at a time, and to one
//! resolved scenario.
//!
//! A running run holds `.agora.lock` (naming its machine and process): a second run that
//! would write into the same folder is refused instead of interleaving its transcript with
//! the first's. `.agora.run` records the scenario's fingerprint: a run of another scenario,
//! or of the same one with other parameters, moves the folder's earlier run to
//! `{name}-{seed}.previous-N` beside it instead of writing over it, unless asked to replace
//! it (`--overwrite`). A run refused before it started leaves no folder behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunError;
use super::liveness::{self, Holder};

const LOCK: &str = ".agora.lock";
const MARK: &str = ".agora.run";

/// Files a run writes only sometimes: a fresh run removes an earlier run's, so that none is
/// taken for this run's.
const OCCASIONAL_OUTPUTS: [&str; 1] = ["dead_letters.jsonl"];

/// Whether the run in `dir` finished: its summary says it stopped for a reason of its own
/// (not `interrupted`, as a run stopped by Ctrl-C or an error is; a crashed run has none).
fn finished(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|s| {
            s["stop_reason"]
                .as_str()
                .is_some_and(crate::report::StopReason::names_an_end)
        })
}

/// Who is writing into the run folder `dir`, when a run still going holds its lock.
pub(crate) fn written_by(dir: &Path) -> Option<String> {
    let holder = std::fs::read_to_string(dir.join(LOCK)).ok()?;
    serde_json::from_str::<Holder>(&holder)
        .is_ok_and(|h| !h.is_gone())
        .then(|| liveness::describe(&holder))
}

/// What `.agora.run` holds.
#[derive(Serialize, Deserialize)]
struct Mark {
    scenario: String,
    fingerprint: String,
    /// The run's backend keeps its state (Redis): if it did not finish, `--resume` may
    /// still continue it, in this folder.
    #[serde(default)]
    resumable: bool,
}

/// A run's hold on its folder, given back when dropped.
pub(crate) struct RunFolder {
    dir: PathBuf,
    /// The folders this claim made, the run's own first and then its parents (`runs/` on a
    /// first run): a run refused before it started removes them again.
    created: Vec<PathBuf>,
    /// Set once the run has started: the folder then keeps what it wrote.
    kept: bool,
    /// Whether this run took `.agora.lock`: a claim refused because another run holds it
    /// must leave that run's lock alone.
    locked: bool,
    /// The folder holds a run with other settings, which [`take_over`](Self::take_over) moves
    /// aside.
    set_aside: bool,
    /// This run's record, written by [`take_over`](Self::take_over).
    mark: Mark,
}

/// How a run claims its folder.
pub(crate) struct Claim<'a> {
    pub scenario: &'a str,
    pub fingerprint: String,
    /// Replace the outputs of a run of another scenario, instead of setting them aside.
    pub overwrite: bool,
    /// `--resume`: the folder should hold this very run.
    pub resume: bool,
    /// The run's backend keeps its state (Redis), so that an unfinished run may be resumed.
    pub resumable: bool,
}

/// What to do about a `--resume` with other settings than the run's.
pub(crate) const RESUME_THE_SAME: &str = "resume with the scenario (and --set, --seed, environment) the run started with, or start afresh without --resume";

fn refused(message: String, hint: &str) -> RunError {
    RunError::Refused {
        message,
        hint: hint.to_string(),
    }
}

impl RunFolder {
    /// Claims `dir` for a run: makes it if needed, refuses it while another run writes there,
    /// and to a `--resume` when it holds a run with other settings. Nothing in it changes
    /// until [`take_over`](Self::take_over).
    ///
    /// # Errors
    ///
    /// `RunError::Refused` (exit code 2): the folder cannot be made, another run holds it, or
    /// a `--resume` finds a run with other settings in it.
    pub fn claim(dir: &Path, claim: &Claim<'_>) -> Result<RunFolder, RunError> {
        let created: Vec<PathBuf> = dir
            .ancestors()
            .filter(|d| !d.as_os_str().is_empty())
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).map_err(|e| {
            refused(
                format!("cannot create the run's directory {}: {e}", dir.display()),
                "choose a directory this user can write with --out DIR (or output.dir)",
            )
        })?;
        let mut folder = RunFolder {
            dir: dir.to_path_buf(),
            created,
            kept: false,
            locked: false,
            set_aside: false,
            mark: Mark {
                scenario: claim.scenario.to_string(),
                fingerprint: claim.fingerprint.clone(),
                resumable: claim.resumable,
            },
        };
        folder.lock()?;
        folder.check_mark(claim)?;
        Ok(folder)
    }

    /// Takes `.agora.lock`, over a holder on this machine whose process has exited.
    fn lock(&mut self) -> Result<(), RunError> {
        let path = self.dir.join(LOCK);
        let me = Holder::me().to_value();
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    self.locked = true;
                    return file
                        .write_all(me.as_bytes())
                        .map_err(|e| RunError::output(&path, e));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(holder) = written_by(&self.dir) {
                        return Err(refused(
                            format!(
                                "the folder {} is being written by another run ({holder})",
                                self.dir.display(),
                            ),
                            "wait for it to end, or give this run its own folder with --out DIR",
                        ));
                    }
                    // Left by a run that is gone.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(RunError::output(&path, e)),
            }
        }
        Err(refused(
            format!(
                "cannot take the folder {}: its lock keeps coming back",
                self.dir.display()
            ),
            "give this run its own folder with --out DIR",
        ))
    }

    /// Refuses a `--resume` into a folder that holds a run with other settings; notes a fresh
    /// run's need to set such a run aside (unless asked to overwrite it).
    fn check_mark(&mut self, claim: &Claim<'_>) -> Result<(), RunError> {
        let path = self.dir.join(MARK);
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(mark) = serde_json::from_str::<Mark>(&text)
            && mark.fingerprint != claim.fingerprint
            && !claim.overwrite
        {
            if claim.resume {
                return Err(refused(
                    format!(
                        "--resume: the folder {} holds a run with other settings than these (another scenario, --set or seed): this is not the run that was interrupted",
                        self.dir.display()
                    ),
                    RESUME_THE_SAME,
                ));
            }
            if mark.resumable && !finished(&self.dir) {
                // Its `--resume` looks for it here: moved aside, it could not be continued.
                return Err(refused(
                    format!(
                        "the folder {} holds a Redis run with other settings (another scenario, --set or seed) that did not finish, which --resume can still continue here",
                        self.dir.display()
                    ),
                    "give this run its own folder with --out DIR; or continue that run first (--resume, with its own settings), or pass --overwrite to replace its outputs",
                ));
            }
            self.set_aside = true;
        }
        Ok(())
    }

    /// Makes the folder this run's, just before it writes anything: an earlier run with other
    /// settings moves, whole, to `{name}-{seed}.previous-N` beside it (the first N free), so
    /// that nothing it wrote is lost and the run still writes where it is expected to; then the
    /// folder records this run's scenario. Left until now so that a run refused before it
    /// starts (a backend that cannot be used) leaves the earlier run where it was.
    ///
    /// # Errors
    ///
    /// The earlier run cannot be moved, or the record cannot be written.
    pub fn take_over(&mut self) -> Result<(), RunError> {
        if self.set_aside {
            let aside = self.move_earlier_run()?;
            tracing::warn!(
                "the folder {} held a run with other settings (another scenario, --set or seed); it is now in {} (--overwrite replaces such a run instead)",
                self.dir.display(),
                aside.display()
            );
            self.set_aside = false;
        }
        let path = self.dir.join(MARK);
        let text = serde_json::to_string(&self.mark).map_err(|e| RunError::Internal(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| RunError::output(&path, e))
    }

    /// Moves the folder, whole, to a new `.previous-N` beside it (one rename: the earlier run
    /// is never split), then makes the folder again and brings this run's lock back into it;
    /// returns where the earlier run went.
    fn move_earlier_run(&mut self) -> Result<PathBuf, RunError> {
        let name = self
            .dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        let cannot = |why: String| {
            refused(
                format!(
                    "cannot set aside the earlier run in {}: {why}",
                    self.dir.display()
                ),
                "give this run its own folder with --out DIR, or pass --overwrite to replace that run's outputs",
            )
        };
        let aside = (1..)
            .map(|n| parent.join(format!("{name}.previous-{n}")))
            .find(|candidate| !candidate.exists())
            .unwrap_or_default();
        // `rename` onto an existing folder would fail (or, empty, be replaced): none exists
        // at `aside` a moment ago, and another run setting aside beside this one takes the
        // next number or fails here, moving nothing.
        std::fs::rename(&self.dir, &aside)
            .map_err(|e| cannot(format!("{} -> {}: {e}", self.dir.display(), aside.display())))?;
        if let Err(e) = std::fs::create_dir(&self.dir) {
            // Another run made the folder in the moment it was gone: it is that run's now,
            // lock and all. This run's lock went with the earlier run.
            self.locked = false;
            let _ = std::fs::remove_file(aside.join(LOCK));
            return Err(cannot(format!(
                "another run took {} while it moved ({e}); the earlier run is in {}",
                self.dir.display(),
                aside.display()
            )));
        }
        let lock = self.dir.join(LOCK);
        std::fs::rename(aside.join(LOCK), &lock).map_err(|e| RunError::output(&lock, e))?;
        Ok(aside)
    }

    /// The run has started: the folder keeps what it writes. A fresh run first removes the
    /// occasional outputs an earlier run left.
    pub fn keep(&mut self, fresh: bool) {
        self.kept = true;
        if fresh {
            for name in OCCASIONAL_OUTPUTS {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
        }
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if self.locked {
            let _ = std::fs::remove_file(self.dir.join(LOCK));
        }
        if !self.kept && !self.created.is_empty() {
            let _ = std::fs::remove_file(self.dir.join(MARK));
            // Only if empty: never anything but what this claim made (another run may have
            // put its folder beside this one meanwhile).
            for dir in &self.created {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(fingerprint: &str, overwrite: bool) -> Claim<'static> {
        Claim {
            scenario: "s",
            fingerprint: fingerprint.to_string(),
            overwrite,
            resume: false,
            resumable: false,
        }
    }

    #[test]
    fn one_run_at_a_time_and_one_scenario_unless_asked() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("s-1");
        let mut first = RunFolder::claim(&dir, &claim("a", false)).unwrap();
        let busy = RunFolder::claim(&dir, &claim("a", false)).err().unwrap();
        assert!(
            busy.to_string().contains("being written by another run"),
            "{busy}"
        );
        // The refused claim left the first run's lock in place: a third is refused too.
        assert!(RunFolder::claim(&dir, &claim("a", false)).is_err());
        first.take_over().unwrap();
        std::fs::write(dir.join("transcript.jsonl"), "a's\n").unwrap();
        first.keep(true);
        drop(first);
        let resumed = RunFolder::claim(
            &dir,
            &Claim {
                resume: true,
                ..claim("b", false)
            },
        )
        .err()
        .unwrap();
        assert!(
            resumed.to_string().contains("not the run that was interrupted"),
            "{resumed}"
        );
        assert!(
            resumed.hint().unwrap().contains("the scenario (and --set"),
            "{resumed:?}"
        );
        // Another scenario's run: a's moves aside, whole, when b takes the folder over.
        let mut other = RunFolder::claim(&dir, &claim("b", false)).unwrap();
        assert!(
            dir.join("transcript.jsonl").exists(),
            "nothing moves before take_over"
        );
        other.take_over().unwrap();
        let aside = out.path().join("s-1.previous-1");
        assert_eq!(
            std::fs::read_to_string(aside.join("transcript.jsonl")).unwrap(),
            "a's\n"
        );
        assert!(
            std::fs::read_to_string(aside.join(MARK))
                .unwrap()
                .contains("\"a\"")
        );
        assert!(!aside.join(LOCK).exists() && dir.join(LOCK).exists());
        assert!(!dir.join("transcript.jsonl").exists());
        std::fs::write(dir.join("transcript.jsonl"), "b's\n").unwrap();
        other.keep(true);
        drop(other);
        // Asked to overwrite: a's replaces b's, nothing more is set aside.
        let mut asked = RunFolder::claim(&dir, &claim("a", true)).unwrap();
        asked.take_over().unwrap();
        asked.keep(true);
        drop(asked);
        assert!(dir.join("transcript.jsonl").exists() && !out.path().join("s-1.previous-2").exists());
        assert!(std::fs::read_to_string(dir.join(MARK)).unwrap().contains("\"a\""));
        // A refused run leaves no folder of its own behind.
        let fresh = out.path().join("s-2");
        drop(RunFolder::claim(&fresh, &claim("a", false)).unwrap());
        assert!(!fresh.exists());
        // Nor the output folder it made for itself, unless something else is in it now.
        let runs = out.path().join("runs");
        drop(RunFolder::claim(&runs.join("s-1"), &claim("a", false)).unwrap());
        assert!(!runs.exists());
        let refused = RunFolder::claim(&runs.join("s-1"), &claim("a", false)).unwrap();
        std::fs::create_dir(runs.join("s-2")).unwrap();
        drop(refused);
        assert!(!runs.join("s-1").exists() && runs.join("s-2").exists());
    }

    #[test]
    fn an_unfinished_redis_run_stays_where_resume_looks_for_it() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("s-1");
        let on_redis = |fingerprint: &str| Claim {
            resumable: true,
            ..claim(fingerprint, false)
        };
        let mut first = RunFolder::claim(&dir, &on_redis("a")).unwrap();
        first.take_over().unwrap();
        first.keep(true);
        drop(first);
        // Crashed (no summary) or interrupted: another run does not move it.
        for summary in [None, Some(r#"{"stop_reason":"interrupted"}"#)] {
            if let Some(summary) = summary {
                std::fs::write(dir.join("summary.json"), summary).unwrap();
            }
            let refused = RunFolder::claim(&dir, &claim("b", false)).err().unwrap();
            assert!(refused.to_string().contains("did not finish"), "{refused}");
            assert!(refused.hint().unwrap().contains("--out DIR"), "{refused:?}");
        }
        // Its own --resume still finds it.
        let resumed = Claim {
            resume: true,
            ..on_redis("a")
        };
        drop(RunFolder::claim(&dir, &resumed).unwrap());
        // Finished, it moves aside like any other.
        std::fs::write(dir.join("summary.json"), r#"{"stop_reason":"ticks"}"#).unwrap();
        let mut other = RunFolder::claim(&dir, &claim("b", false)).unwrap();
        other.take_over().unwrap();
        assert!(out.path().join("s-1.previous-1").join("summary.json").exists());
        assert!(dir.join(LOCK).exists() && !out.path().join("s-1.previous-1").join(LOCK).exists());
    }
}
