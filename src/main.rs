use std::process::ExitCode;

fn main() -> ExitCode {
    agora::cli::main(agora::Registry::builtin())
}
