//! `[behaviours.NAME]`, validated: how to start a behaviour's program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::ProgramSection;
use super::locate::KeyPath;
use super::{ScenarioError, duration};

/// How to start and talk to one behaviour's program.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramSpec {
    /// The name agents use (`behaviour = "NAME"`).
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Copies per agora process.
    pub processes: u32,
    /// The longest one step (or the hello) may take.
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

impl ProgramSpec {
    /// The command as a user reads it: `python3 examples/python/opinion.py`.
    pub fn shown(&self) -> String {
        self.command
            .iter()
            .map(|part| {
                if part.is_empty() || part.contains(char::is_whitespace) {
                    format!("{part:?}")
                } else {
                    part.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// As the scenario file writes it, every default filled in.
    pub fn to_section(&self) -> ProgramSection {
        ProgramSection {
            command: self.command.clone(),
            processes: i64::from(self.processes),
            timeout: duration::format(self.timeout),
            env: self.env.clone(),
            cwd: self.cwd.as_ref().map(|c| c.display().to_string()),
        }
    }
}

/// A command's part, as the program is to be given it. A part that names no file from the
/// folder the program runs in (`runs_in`, relative to agora's) but a file in the scenario's
/// folder (`beside`) becomes that file's absolute path: a scenario and the script beside it
/// then run from any folder, as an edge list does. Anything else (`python3`, `-u`, a file
/// found where the program runs) is left as written.
fn beside_the_scenario(part: &str, runs_in: &Path, beside: &Path) -> String {
    let given = Path::new(part);
    if part.is_empty() || part.starts_with('-') || given.is_absolute() || runs_in.join(given).exists() {
        return part.to_string();
    }
    let found = beside.join(given);
    if found.is_file() {
        // Always in full: the program may run in another folder (`cwd`), or in a worker
        // that loads the scenario from elsewhere.
        real(found).display().to_string()
    } else {
        part.to_string()
    }
}

/// `found` (which exists) as the system names it: absolute, without `..`, so that messages
/// show `/home/me/agora/examples/x.py`, not `/home/me/agora/scenarios/../examples/x.py`.
fn real(found: PathBuf) -> PathBuf {
    std::fs::canonicalize(&found).unwrap_or(found)
}

/// The most copies of one program an agora process starts.
pub const MAX_PROCESSES: i64 = 256;

/// `[behaviours.{name}]`; `at(key, message)` makes an error at one of its keys. Relative
/// paths are the program's working directory's, else the scenario's folder's (`beside`):
/// see [`beside_the_scenario`].
pub(crate) fn validate(
    name: &str,
    section: &ProgramSection,
    beside: &Path,
    at: impl Fn(KeyPath, String) -> ScenarioError,
) -> Result<ProgramSpec, ScenarioError> {
    let key = |k: &str| KeyPath::default().key("behaviours").key(name).key(k);
    if section
        .command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(at(
            key("command"),
            "names no program: give the program and its arguments, as in [\"python3\", \"my_agent.py\"]"
                .into(),
        ));
    }
    if !(1..=MAX_PROCESSES).contains(&section.processes) {
        return Err(at(
            key("processes"),
            format!("must be between 1 and {MAX_PROCESSES}, got {}", section.processes),
        ));
    }
    let timeout = duration::parse(&section.timeout).map_err(|m| at(key("timeout"), m))?;
    if timeout.is_zero() {
        return Err(at(key("timeout"), "must be longer than zero".into()));
    }
    let cwd = match &section.cwd {
        None => None,
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let found = [dir.clone(), beside.join(&dir)].into_iter().find(|d| d.is_dir());
            let Some(found) = found else {
                return Err(at(
                    key("cwd"),
                    format!(
                        "{} is not a directory (nor is {})",
                        dir.display(),
                        beside.join(&dir).display()
                    ),
                ));
            };
            // As given when found from agora's folder; in full when found beside the scenario.
            Some(if found == dir { found } else { real(found) })
        }
    };
    let runs_in = cwd.clone().unwrap_or_default();
    let command = section
        .command
        .iter()
        .map(|part| beside_the_scenario(part, &runs_in, beside))
        .collect();
    Ok(ProgramSpec {
        name: name.to_string(),
        command,
        processes: section.processes as u32,
        timeout,
        env: section.env.clone(),
        cwd,
    })
}
