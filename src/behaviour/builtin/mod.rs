//! The behaviours that come with agora.
//!
//! - [`relay`]: workload W1 of the old project's benchmark; tokens travel round a ring.
//! - [`gossip`]: a rumor spreads to random peers.
//! - [`opinion`]: bounded-confidence opinion dynamics (Hegselmann-Krause).
//! - [`discussion`]: the old project's social-media debate, with templates instead of an LLM.
//! - [`llm`]: the same debate (or any social simulation) written by a language model.

pub mod discussion;
pub mod gossip;
pub mod llm;
pub mod opinion;
pub mod relay;

use super::{ParamError, Registry};

pub(crate) fn register_all(registry: &mut Registry) {
    relay::register(registry);
    gossip::register(registry);
    opinion::register(registry);
    discussion::register(registry);
    llm::register(registry);
}

/// A probability parameter: a finite number in `[0, 1]`.
fn check_probability(name: &str, p: f64) -> Result<(), ParamError> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(ParamError::at(
            name,
            format!("`{name}` must be a number between 0 and 1, got {p}"),
        ))
    }
}
