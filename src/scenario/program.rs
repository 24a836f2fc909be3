//! `[behaviours.NAME]`, validated: how to start a behaviour's program.

use std::collections::BTreeMap;
use std::path::PathBuf;
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

/// The most copies of one program an agora process starts.
pub const MAX_PROCESSES: i64 = 256;

/// `[behaviours.{name}]`; `at(key, message)` makes an error at one of its keys.
pub(crate) fn validate(
    name: &str,
    section: &ProgramSection,
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
    let cwd = section.cwd.as_ref().map(PathBuf::from);
    if let Some(dir) = &cwd
        && !dir.is_dir()
    {
        return Err(at(key("cwd"), format!("{} is not a directory", dir.display())));
    }
    Ok(ProgramSpec {
        name: name.to_string(),
        command: section.command.clone(),
        processes: section.processes as u32,
        timeout,
        env: section.env.clone(),
        cwd,
    })
}
