//! Behaviours in other languages: a program started by agora and spoken to in JSON lines on
//! its standard input and output (`docs/protocol.md`; CONTRACT.md, "Behaviours in other
//! languages").
//!
//! Each request carries a whole step of one agent (its saved state, its batch of messages, a
//! seed drawn from its own random stream) and the program answers with the new state and the
//! effects, or with the inputs it needs first (cache reads, completions), which agora answers
//! by sending the step again: the program runs it again from the same state and seed, as a
//! Rust behaviour's step runs again after a cache miss. So the determinism and resume promises
//! hold for programs as for built-in behaviours, and any copy of the program can serve any
//! agent.
//!
//! - [`protocol`]: the lines, version 1.
//! - [`process`]: starting a program, reading its lines (bounded).
//! - [`handshake`]: the hello at load time: does the program take its tables' params?
//! - [`behaviour`]: a program's behaviour as the rest of agora sees it.
//!
//! The runtime's `programs` module keeps the running copies; the agent's step speaks to them.

pub mod behaviour;
pub mod handshake;
pub mod process;
pub mod protocol;

pub use behaviour::ProgramBehaviour;
