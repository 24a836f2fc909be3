//! Behaviours with their state type erased, so that agents of different behaviours can live
//! side by side in one runtime.

use std::any::Any;
use std::ops::ControlFlow;

use serde_json::value::RawValue;

use super::{Behaviour, BehaviourError, Context, Effects, Messages};
use crate::message::Message;

/// An agent's state, whatever its behaviour's `State` type is.
pub type StateBox = Box<dyn Any + Send>;

/// The form of a [`Behaviour`] the runtime works with. Implement [`Behaviour`] instead;
/// the registry wraps it.
pub trait DynBehaviour: Send + Sync {
    fn init(&self, ctx: &mut Context<'_>) -> Result<StateBox, BehaviourError>;
    fn on_start(&self, state: &mut StateBox, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError>;
    /// [`Behaviour::on_message`] for each of `messages` in order, handing each result to
    /// `each` until it says to stop: one call for a whole batch, where a call per message
    /// would cost more than many behaviours' work. Errs only when the state is not this
    /// behaviour's.
    fn on_messages(
        &self,
        state: &mut StateBox,
        messages: &[&Message],
        ctx: &mut Context<'_>,
        each: &mut dyn FnMut(Result<Effects, BehaviourError>) -> ControlFlow<()>,
    ) -> Result<(), BehaviourError>;
    /// [`Behaviour::HANDLES_BATCHES`].
    fn handles_batches(&self) -> bool {
        false
    }
    /// [`Behaviour::on_messages`].
    fn on_batch(
        &self,
        state: &mut StateBox,
        messages: &Messages<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError>;
    fn on_tick(&self, state: &mut StateBox, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError>;
    /// The state as JSON, for checkpoints. Serialised straight into a `RawValue`: written by
    /// serde_json, it needs no second parse to be known as JSON (every agent saves every step).
    fn save(&self, state: &StateBox) -> Result<Box<RawValue>, BehaviourError>;
    /// The state back from [`save`](DynBehaviour::save)'s JSON.
    fn restore(&self, json: &str) -> Result<StateBox, BehaviourError>;
    /// The parameters as the behaviour was built with them, defaults included.
    fn resolved_params(&self) -> toml::Table;
    /// [`Behaviour::acts_unprompted`].
    fn acts_unprompted(&self) -> bool;
    /// [`Behaviour::model_reporters`].
    fn model_reporters(&self, _values: &std::collections::BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// The program behind this behaviour, when it is one (`[behaviours.NAME]`).
    fn as_program(&self) -> Option<&crate::program::ProgramBehaviour> {
        None
    }
}

pub(crate) struct Erased<B> {
    pub inner: B,
    pub params: toml::Table,
}

fn typed<S: 'static>(state: &mut StateBox) -> Result<&mut S, BehaviourError> {
    state.downcast_mut::<S>().ok_or_else(wrong_type)
}

fn wrong_type() -> BehaviourError {
    BehaviourError::new("internal error: agent state of the wrong type")
}

impl<B: Behaviour> DynBehaviour for Erased<B> {
    fn init(&self, ctx: &mut Context<'_>) -> Result<StateBox, BehaviourError> {
        Ok(Box::new(self.inner.init(ctx)?))
    }

    fn on_start(&self, state: &mut StateBox, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        self.inner.on_start(typed(state)?, ctx)
    }

    fn on_messages(
        &self,
        state: &mut StateBox,
        messages: &[&Message],
        ctx: &mut Context<'_>,
        each: &mut dyn FnMut(Result<Effects, BehaviourError>) -> ControlFlow<()>,
    ) -> Result<(), BehaviourError> {
        // One downcast for the batch; the behaviour's own `on_message` can be inlined here.
        let state = typed::<B::State>(state)?;
        for msg in messages {
            if each(self.inner.on_message(state, msg, ctx)).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn handles_batches(&self) -> bool {
        B::HANDLES_BATCHES
    }

    fn on_batch(
        &self,
        state: &mut StateBox,
        messages: &Messages<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        self.inner.on_messages(typed(state)?, messages, ctx)
    }

    fn on_tick(&self, state: &mut StateBox, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        self.inner.on_tick(typed(state)?, ctx)
    }

    fn save(&self, state: &StateBox) -> Result<Box<RawValue>, BehaviourError> {
        let state = state.downcast_ref::<B::State>().ok_or_else(wrong_type)?;
        serde_json::value::to_raw_value(state)
            .map_err(|e| BehaviourError::new(format!("cannot save the agent's state: {e}")))
    }

    fn restore(&self, json: &str) -> Result<StateBox, BehaviourError> {
        let state: B::State = serde_json::from_str(json)
            .map_err(|e| BehaviourError::new(format!("cannot restore the agent's state: {e}")))?;
        Ok(Box::new(state))
    }

    fn resolved_params(&self) -> toml::Table {
        self.params.clone()
    }

    fn acts_unprompted(&self) -> bool {
        self.inner.acts_unprompted()
    }

    fn model_reporters(&self, values: &std::collections::BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        self.inner.model_reporters(values)
    }
}
