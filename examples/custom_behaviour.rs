//! A behaviour written outside agora, registered next to the built-ins and run through the
//! same command line:
//!
//! ```text
//! cargo run --example custom_behaviour -- run scenarios/custom.toml
//! cargo run --example custom_behaviour -- behaviours
//! ```
//!
//! `echo`: agents repeat what they hear. The first agent says `opening` at the start; an agent
//! that hears a message from someone else repeats it, with probability `p_echo`, until it has
//! spoken `limit` times. It never repeats the same words twice: it remembers what it said in
//! the cache and checks its own last words before speaking.

use std::process::ExitCode;

use agora::{Behaviour, BehaviourError, Context, Effects, Message, Outgoing, ParamError, Registry, Setup};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The `params` table of an `[[agents]]` table running `echo`. Keys it does not have are an
/// error that names them; `agora behaviours` lists these fields with the docs given below.
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct EchoParams {
    opening: String,
    p_echo: f64,
    limit: u64,
}

impl Default for EchoParams {
    fn default() -> Self {
        EchoParams {
            opening: "hello?".to_string(),
            p_echo: 0.5,
            limit: 3,
        }
    }
}

/// The behaviour: shared by every agent of a table, never changed while the run goes on.
struct Echo {
    opening: String,
    p_echo: f64,
    limit: u64,
}

/// One agent's state: saved after every step, restored on `--resume`.
#[derive(Default, Serialize, Deserialize)]
struct EchoState {
    spoken: u64,
}

impl Behaviour for Echo {
    type State = EchoState;

    fn init(&self, _ctx: &mut Context<'_>) -> Result<EchoState, BehaviourError> {
        Ok(EchoState::default())
    }

    fn on_start(&self, state: &mut EchoState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        if ctx.peer_index() != 0 {
            return Ok(Effects::none());
        }
        state.spoken += 1;
        Ok(Effects::new()
            .publish(Outgoing::broadcast(self.opening.clone()))
            .remember(json!({ "said": self.opening })))
    }

    fn on_message(
        &self,
        state: &mut EchoState,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        // Draw first, so that every message moves the random stream the same way.
        let speak = ctx.chance(self.p_echo);
        if !speak || state.spoken >= self.limit {
            return Ok(Effects::none());
        }
        let words = format!(
            "{} (as {} said)",
            msg.content.split(" (as ").next().unwrap_or(""),
            msg.sender_id
        );
        // Cache reads may be answered later: propagate them with `?`.
        let last = ctx.own_last(1)?;
        if last.iter().any(|e| e.value["said"] == json!(words)) {
            return Ok(Effects::none());
        }
        state.spoken += 1;
        Ok(Effects::new()
            .publish(Outgoing::broadcast(words.clone()))
            .remember(json!({ "said": words }))
            .count("echoes", 1))
    }
}

fn main() -> ExitCode {
    let mut registry = Registry::builtin();
    registry.register(
        "echo",
        "repeats what others say, with probability p_echo, up to `limit` times",
        &[
            ("opening", "what the first echo agent says at the start"),
            ("p_echo", "probability of repeating a message"),
            ("limit", "how many times an agent speaks at most"),
        ],
        |p: EchoParams, _setup: &Setup<'_>| {
            if !(0.0..=1.0).contains(&p.p_echo) {
                // Blames the one parameter: the error points at its line in the scenario.
                let message = format!("`p_echo` must be between 0 and 1, got {}", p.p_echo);
                return Err(ParamError::at("p_echo", message));
            }
            Ok(Echo {
                opening: p.opening,
                p_echo: p.p_echo,
                limit: p.limit,
            })
        },
    );
    agora::cli::main(registry)
}

#[cfg(test)]
mod tests {
    use agora::testing::Harness;

    use super::*;

    #[test]
    fn the_first_agent_opens_and_others_echo_until_their_limit() {
        let echo = || Echo {
            opening: "hi".into(),
            p_echo: 1.0,
            limit: 1,
        };
        let mut first = Harness::new(echo()).peers(&["a", "b"]);
        let (_, opening) = first.start().unwrap();
        assert_eq!(opening.published()[0].content, "hi");
        let mut second = Harness::new(echo()).peers(&["a", "b"]).agent("b");
        let (mut state, quiet) = second.start().unwrap();
        assert!(quiet.published().is_empty());
        let heard = Harness::<Echo>::message_from("a", "hi");
        let said = second.handle(&mut state, &heard).unwrap();
        assert_eq!(said.published()[0].content, "hi (as a said)");
        assert_eq!(second.remembered().len(), 1);
        let again = second.handle(&mut state, &heard).unwrap();
        assert!(again.published().is_empty(), "its limit is one");
    }
}
