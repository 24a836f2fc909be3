//! The running copies of behaviour programs in one agora process (`[behaviours.NAME]`,
//! `processes` copies each), and one step's exchange with one of them.
//!
//! A copy is started when a step first needs one, greeted (the hello of the protocol), and
//! then serves one step at a time: any agent's, since a request carries everything the step
//! needs. A copy that exits, hangs past `timeout`, writes a line that is not the protocol or
//! longer than the limit is killed; the step fails (and is retried by the agent, as any failing
//! step), and the next step starts a fresh copy. Each copy's standard error is passed on line
//! by line, prefixed with the behaviour's name and the agent it was serving.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

use super::RunError;
use crate::program::process::{self, ProgramError};
use crate::program::protocol::{Greeting, Hello, HelloTable, StepReply, ToProgram, VERSION};
use crate::scenario::{ProgramSpec, Scenario};

/// Every program of a run, as this process runs them.
pub(crate) struct Programs {
    pools: BTreeMap<String, Pool>,
}

/// The copies of one program.
struct Pool {
    spec: Arc<ProgramSpec>,
    /// The hello line every copy gets first.
    hello: String,
    /// One place per copy.
    places: Semaphore,
    /// Copies between steps.
    idle: Mutex<Vec<Copy>>,
    /// What the copies have written to standard error, shared by them all.
    said: Arc<Mutex<Said>>,
}

/// The standard-error lines a behaviour's copies have written: each is passed on once, as a
/// warning; its repeats (the same traceback for every agent and every retry) only at debug
/// level, so that one failing step does not bury the terminal.
#[derive(Default)]
struct Said {
    lines: std::collections::HashSet<String>,
    /// Whether the user has been told that repeats are held back.
    told: bool,
}

impl Said {
    /// At most this many distinct lines are remembered: a program that writes a new line for
    /// every step has everything passed on, without agora's memory growing with the run.
    const REMEMBERED: usize = 10_000;

    /// Whether `line` is new (and is to be shown); remembers it.
    fn is_new(&mut self, line: &str) -> bool {
        if self.lines.contains(line) {
            return false;
        }
        if self.lines.len() < Self::REMEMBERED {
            self.lines.insert(line.to_string());
        }
        true
    }
}

/// One running copy.
struct Copy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The agent it serves now, for its standard error's prefix.
    serving: Arc<Mutex<String>>,
}

impl Programs {
    /// The programs of `scenario`'s behaviours, none started yet.
    ///
    /// # Errors
    ///
    /// A hello that cannot be written (never, in practice).
    pub fn new(scenario: &Scenario) -> Result<Self, RunError> {
        let mut pools = BTreeMap::new();
        for (name, spec) in &scenario.programs {
            let hello = ToProgram::Hello(hello(scenario, name));
            let line = serde_json::to_string(&hello).map_err(|e| RunError::Internal(e.to_string()))?;
            pools.insert(
                name.clone(),
                Pool {
                    spec: spec.clone(),
                    hello: line,
                    places: Semaphore::new(spec.processes as usize),
                    idle: Mutex::new(Vec::new()),
                    said: Arc::default(),
                },
            );
        }
        Ok(Programs { pools })
    }

    /// One step's exchange with a copy of program `name`: `line` (a step request) out, its
    /// reply in.
    ///
    /// # Errors
    ///
    /// What failed, in words for the step's failure (and the dead letter): the copy could not
    /// start, exited, hung, or did not answer as the protocol says. The copy is gone then.
    pub async fn step(&self, name: &str, agent: &str, line: &str) -> Result<StepReply, String> {
        let Some(pool) = self.pools.get(name) else {
            return Err(format!("no program for behaviour {name:?}"));
        };
        let _place = pool
            .places
            .acquire()
            .await
            .map_err(|_| "the program pool was shut down".to_string())?;
        let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut copy = match idle {
            Some(copy) => copy,
            None => pool.start().await.map_err(|e| e.0)?,
        };
        *copy.serving.lock().unwrap_or_else(|e| e.into_inner()) = agent.to_string();
        let timeout = pool.spec.timeout;
        let reply = match tokio::time::timeout(timeout, copy.exchange(line)).await {
            Ok(reply) => reply,
            Err(_) => Err(ProgramError(format!(
                "the program did not answer within {} (timeout)",
                crate::scenario::format_duration(timeout)
            ))),
        };
        match reply {
            Ok(reply) => {
                pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(copy);
                Ok(reply)
            }
            Err(e) => {
                // Whatever state it is in, it is not to be trusted with another step.
                let _ = copy.child.start_kill();
                tracing::warn!("behaviour {name:?}: {}; restarting its program", e.0);
                Err(format!("behaviour {name:?}'s program failed: {}", e.0))
            }
        }
    }
}

impl Pool {
    /// Starts a copy and greets it.
    async fn start(&self) -> Result<Copy, ProgramError> {
        let spec = &self.spec;
        let mut command = tokio::process::Command::from(process::command(spec));
        command.kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| process::start_failure(spec, &e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ProgramError(
                "the program's standard streams were not piped".into(),
            ));
        };
        let serving = Arc::new(Mutex::new(String::from("(starting)")));
        pass_on(spec.name.clone(), stderr, serving.clone(), self.said.clone());
        let mut copy = Copy {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            serving,
        };
        let greeting = tokio::time::timeout(spec.timeout, copy.greet(&self.hello))
            .await
            .map_err(|_| ProgramError("the program did not answer the hello in time".into()))??;
        match greeting {
            Greeting::Ready { protocol, .. } if protocol == VERSION => Ok(copy),
            Greeting::Ready { protocol, .. } => Err(ProgramError(format!(
                "the program speaks version {protocol} of the protocol, and this agora speaks version {VERSION}"
            ))),
            Greeting::Refused { table, message, .. } => Err(ProgramError(format!(
                "the program refused table {table:?}: {message}"
            ))),
        }
    }
}

impl Copy {
    async fn greet(&mut self, hello: &str) -> Result<Greeting, ProgramError> {
        let line = self.send_and_read(hello).await?;
        serde_json::from_slice(&line).map_err(|e| {
            ProgramError(format!(
                "it answered the hello with {}, which is not a greeting ({e})",
                process::excerpt(&line)
            ))
        })
    }

    async fn exchange(&mut self, request: &str) -> Result<StepReply, ProgramError> {
        // Output no request asked for (a second reply to the last request, a stray print)
        // would be taken as this request's reply, and every later reply as the one before's.
        // Found when it has come by the time of the next request, as it nearly always has.
        if let Some(Ok(unasked)) = self.stdout.fill_buf().now_or_never()
            && !unasked.is_empty()
        {
            return Err(ProgramError(format!(
                "it wrote {} after its last reply, unasked (one request gets one reply; diagnostics go to standard error)",
                process::excerpt(unasked)
            )));
        }
        let line = self.send_and_read(request).await?;
        serde_json::from_slice(&line).map_err(|e| {
            ProgramError(format!(
                "it answered {}, which is not a reply of the protocol ({e})",
                process::excerpt(&line)
            ))
        })
    }

    async fn send_and_read(&mut self, line: &str) -> Result<Vec<u8>, ProgramError> {
        let gone = |e: std::io::Error| ProgramError(format!("the program is gone ({e})"));
        self.stdin.write_all(line.as_bytes()).await.map_err(gone)?;
        self.stdin.write_all(b"\n").await.map_err(gone)?;
        self.stdin.flush().await.map_err(gone)?;
        let mut answer = Vec::new();
        if !read_line(&mut self.stdout, &mut answer).await? {
            let status = self.child.wait().await.map(|s| s.to_string()).unwrap_or_default();
            return Err(ProgramError(format!(
                "the program exited ({status}) without answering"
            )));
        }
        Ok(answer)
    }
}

/// The async twin of [`process::read_line`]: a line, bounded by [`MAX_LINE`](crate::program::protocol::MAX_LINE).
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> Result<bool, ProgramError> {
    loop {
        let buffer = reader.fill_buf().await.map_err(process::read_error)?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let (taken, whole) = process::take_line(buffer, line)?;
        reader.consume(taken);
        if whole {
            return Ok(true);
        }
    }
}

/// Passes a copy's standard error on, line by line, prefixed with the behaviour and the
/// agent it was serving; a line any copy wrote before goes to the debug log only.
fn pass_on(
    name: String,
    stderr: tokio::process::ChildStderr,
    serving: Arc<Mutex<String>>,
    said: Arc<Mutex<Said>>,
) {
    actix::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let agent = serving.lock().map(|a| a.clone()).unwrap_or_default();
            let (new, tell) = said.lock().map_or((true, false), |mut said| {
                let new = said.is_new(&line);
                let tell = !new && !std::mem::replace(&mut said.told, true);
                (new, tell)
            });
            if new {
                tracing::warn!(target: "agora::program", "{name} {agent}: {line}");
            } else {
                if tell {
                    tracing::warn!(
                        target: "agora::program",
                        "{name}: lines its program wrote before are not shown again (RUST_LOG=warn,agora::program=debug shows them)"
                    );
                }
                tracing::debug!(target: "agora::program", "{name} {agent}: {line}");
            }
        }
    });
}

/// The hello for program `name`: the tables that use it, with their params as the program
/// resolved them, and every agent that runs it.
pub(crate) fn hello(scenario: &Scenario, name: &str) -> Hello {
    let using: Vec<usize> = (0..scenario.tables.len())
        .filter(|&t| scenario.tables[t].behaviour_name == name)
        .collect();
    let agents_of = |t: usize| -> Vec<String> {
        scenario
            .agents
            .iter()
            .filter(|a| a.table == t)
            .map(|a| a.name.to_string())
            .collect()
    };
    Hello {
        protocol: VERSION,
        behaviour: name.to_string(),
        mode: scenario.mode.as_str().to_string(),
        seed: scenario.seed,
        tables: using
            .iter()
            .map(|&t| HelloTable {
                id: scenario.tables[t].id.clone(),
                params: serde_json::to_value(&scenario.tables[t].params).unwrap_or_default(),
                agents: agents_of(t),
            })
            .collect(),
        peers: using.iter().flat_map(|&t| agents_of(t)).collect(),
    }
}
