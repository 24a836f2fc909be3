//! The hello at load time: agora starts the program once, tells it the tables of agents that
//! use it, and learns whether it takes their params (and which params it declares), before any
//! run starts. `agora check` does the same, so a refused table is bad input before a run.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::sync::mpsc;
use std::time::Duration;

use super::process::{self, ProgramError};
use super::protocol::{Greeting, Hello, ParamDeclaration, Statistic, ToProgram, VERSION};
use crate::scenario::ProgramSpec;

/// What a program said of itself and of its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeted {
    /// Each table's params, defaults filled in, by table id.
    pub params: BTreeMap<String, toml::Table>,
    pub summary: String,
    pub declares: Vec<ParamDeclaration>,
    pub acts_unprompted: bool,
    /// Model-level numbers from its agents' values, by name: the statistic and the value.
    pub model_reporters: BTreeMap<String, (Statistic, String)>,
}

/// Why the hello failed.
#[derive(Debug, Clone, PartialEq)]
pub enum HelloFailure {
    /// The program could not be started, or did not answer as the protocol says.
    Program(ProgramError),
    /// It refused a table's params.
    Refused {
        table: String,
        key: Option<String>,
        message: String,
    },
}

/// Starts `spec`'s program, says `hello`, and reads its greeting.
///
/// # Errors
///
/// The program cannot be started, exits or says something else than a greeting within
/// `spec.timeout`, speaks another protocol version, or refuses a table.
pub fn greet(spec: &ProgramSpec, hello: &Hello) -> Result<Greeted, HelloFailure> {
    let mut child = process::command(spec)
        .spawn()
        .map_err(|e| HelloFailure::Program(process::start_failure(spec, &e)))?;
    let line = serde_json::to_string(&ToProgram::Hello(hello.clone()))
        .map_err(|e| HelloFailure::Program(ProgramError(e.to_string())))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // Read the answer and the standard error on threads of their own, so that a program
    // that says nothing runs into the timeout instead of blocking agora.
    let (answer_tx, answer_rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let read = process::read_line(&mut BufReader::new(stdout), &mut line);
            let _ = answer_tx.send(read.map(|_| line));
        });
    }
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    });
    if let Some(mut stdin) = stdin {
        // A program that exits at once closes its input: what it wrote to stderr says why.
        let _ = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
        // Dropped here: the closed input tells the program to exit once it has answered.
    }
    let answer = answer_rx.recv_timeout(spec.timeout.max(Duration::from_secs(1)));
    let _ = child.kill();
    let _ = child.wait();
    let said = last_lines(&errors.join().unwrap_or_default());
    let failed = |what: String| {
        HelloFailure::Program(ProgramError(format!(
            "behaviour {:?}'s program `{}` {what}{said}",
            spec.name,
            spec.shown()
        )))
    };
    let line = match answer {
        Err(_) => {
            return Err(failed(format!(
                "did not answer the hello within {}",
                crate::scenario::format_duration(spec.timeout)
            )));
        }
        Ok(Err(e)) => return Err(HelloFailure::Program(e)),
        Ok(Ok(line)) if line.iter().all(u8::is_ascii_whitespace) => {
            return Err(failed("exited without answering the hello".into()));
        }
        Ok(Ok(line)) => line,
    };
    let greeting: Greeting = serde_json::from_slice(&line).map_err(|e| {
        failed(format!(
            "answered the hello with {}, which is not a greeting of the protocol ({e})",
            process::excerpt(&line)
        ))
    })?;
    greeted(spec, greeting)
}

fn greeted(spec: &ProgramSpec, greeting: Greeting) -> Result<Greeted, HelloFailure> {
    match greeting {
        Greeting::Refused { table, key, message } => Err(HelloFailure::Refused { table, key, message }),
        Greeting::Ready { protocol, .. } if protocol != VERSION => {
            Err(HelloFailure::Program(ProgramError(format!(
                "behaviour {:?}'s program `{}` speaks version {protocol} of the protocol, and this agora speaks version {VERSION}",
                spec.name,
                spec.shown()
            ))))
        }
        Greeting::Ready {
            params,
            summary,
            declares,
            acts_unprompted,
            model_reporters,
            ..
        } => {
            let mut tables = BTreeMap::new();
            for (table, value) in params {
                let table_params = match toml::Value::try_from(&value) {
                    Ok(toml::Value::Table(t)) => t,
                    _ => {
                        let null = value
                            .as_object()
                            .and_then(|o| o.iter().find(|(_, v)| v.is_null()).map(|(k, _)| k.clone()));
                        let why = match null {
                            Some(key) => format!(
                                "its parameter {key:?} is None (null), which a scenario cannot hold: give it a default such as \"\" or 0"
                            ),
                            None => "they are not a table TOML can hold (no nulls)".to_string(),
                        };
                        return Err(HelloFailure::Program(ProgramError(format!(
                            "behaviour {:?}'s program gave params for table {table:?} that agora cannot take: {why}",
                            spec.name
                        ))));
                    }
                };
                tables.insert(table, table_params);
            }
            Ok(Greeted {
                params: tables,
                summary,
                declares,
                acts_unprompted,
                model_reporters,
            })
        }
    }
}

/// The end of what a program wrote to its standard error, for an error line.
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => String::new(),
        n => format!("; it said: {}", lines[n.saturating_sub(3)..].join(" / ")),
    }
}
