//! The `agora` command line. Parsing and printing only: every command calls the library.
//!
//! - `args`: the commands and their arguments.
//! - `commands`: `run`, `worker`, `check`, `behaviours`.
//! - `admin`: `cleanup` and `inspect`, on a run's keys in Redis.

mod admin;
mod args;
mod commands;
mod sweep;

use std::process::ExitCode;

use clap::Parser;

use self::args::{Cli, Command};
use crate::behaviour::Registry;
use crate::error::{Error, exit};

pub use self::commands::behaviours_text;

/// Runs the command line with `registry`'s behaviours; returns the process's exit code.
/// A program with behaviours of its own calls this from its `main`.
pub fn main(registry: Registry) -> ExitCode {
    install_panic_hook();
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli, &registry)));
    let result = match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = crate::runtime::panic_text(&*panic);
            if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
                // `agora run ... | head`: the reader has gone, as `head` does. Like other
                // Unix tools, stop quietly; the run's files are written by then. 141 is
                // what a shell reports for a process ended by SIGPIPE.
                return ExitCode::from(141);
            }
            if let Some(cause) = message.strip_prefix("failed printing to stdout: ") {
                // A full disk, or a closed descriptor: not agora's fault, and not a bug.
                eprintln!("error: cannot write to standard output: {cause}");
                eprintln!("hint: check where the output goes (a full disk? a closed pipe?)");
                return ExitCode::from(exit::RUN_FAILED);
            }
            eprintln!("error: internal error: {message}");
            eprintln!("hint: this is a bug in agora; please report it with the scenario file");
            return ExitCode::from(exit::RUN_FAILED);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

pub(super) fn report_error(e: &Error) {
    eprintln!("error: {}", one_line(&e.to_string()));
    if let Some(hint) = e.hint() {
        eprintln!("hint: {}", one_line(&hint));
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// clap's errors as one `error:` line and a `hint:`; help and version as clap prints them.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // The commands as clap knows them, so that the list cannot fall behind.
            let commands: Vec<String> = <Cli as clap::CommandFactory>::command()
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(|c| c.get_name().to_string())
                .collect();
            eprintln!("error: no command given: {}", commands.join(", "));
            eprintln!("hint: agora run scenarios/gossip.toml runs a scenario; agora --help says more");
            ExitCode::from(exit::BAD_INPUT)
        }
        _ => {
            let rendered = e.render().to_string();
            // clap writes the message, sometimes continued on indented lines, then a blank
            // line and the usage.
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {}", one_line(message));
            let usage = rendered.lines().find(|l| l.starts_with("Usage:"));
            match usage {
                Some(u) => eprintln!("hint: {} (see --help)", u.trim()),
                None => eprintln!("hint: see agora --help"),
            }
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

fn dispatch(cli: Cli, registry: &Registry) -> Result<u8, Error> {
    match cli.command {
        Command::Run(args) => commands::run(args, registry),
        Command::Check(args) => commands::check(args, registry),
        Command::Behaviours(args) => commands::behaviours(args, registry),
        Command::Worker(args) => commands::worker(args, registry),
        Command::Cleanup(args) => admin::cleanup(args),
        Command::Inspect(args) => admin::inspect(args),
        Command::Plot(args) => commands::plot(args),
        Command::Sweep(args) => sweep::sweep(args, registry),
    }
}
/// Warnings go to stderr as `warning: ...` lines, in the style of the `error:` line a failed
/// command ends with. `RUST_LOG` asks for more, in tracing's full format with timestamps.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let colour = colour_on_stderr();
    match EnvFilter::try_from_default_env() {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(crate::report::progress::LogWriter)
                .with_ansi(colour)
                .with_target(false)
                .try_init();
        }
        Err(_) => {
            let _ = tracing_subscriber::fmt()
                // The cluster client logs each failed reconnection to a node as a warning;
                // agora says what a lost node means itself, once.
                .with_env_filter(EnvFilter::new("warn,redis=error"))
                .with_writer(crate::report::progress::LogWriter)
                .with_ansi(colour)
                .event_format(crate::report::progress::PlainLines)
                .try_init();
        }
    }
}

/// Terminal colours only on a terminal, and never when `NO_COLOR` is set (no-color.org): a
/// log file or a program reading stderr gets plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Panics are caught (behaviours are retried; anything else becomes one `error:` line), so
/// the default hook's message and backtrace are never printed.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::debug!("panic{location}: {}", crate::runtime::panic_text(info.payload()));
    }));
}
