//! The unit tests of `examples/custom_behaviour.rs` (a behaviour tested with
//! `agora::testing`). They run from here because cargo builds an example either as a program
//! or as a test, and tests/cli.rs needs the program.

#[allow(dead_code)]
#[path = "../examples/custom_behaviour.rs"]
mod example;
