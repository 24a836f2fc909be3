//! The actix actor around an agent: it owns the agent and runs one step at a time.

use actix::prelude::*;

use super::StepInput;
use super::StepReport;
use super::step::AgentCore;
use crate::backend::Backend;
use crate::runtime::RunError;

/// The actor around an [`AgentCore`].
pub(crate) struct AgentActor<B> {
    core: Option<AgentCore<B>>,
}

impl<B: Backend> AgentActor<B> {
    pub fn new(core: AgentCore<B>) -> Self {
        AgentActor { core: Some(core) }
    }
}

/// The largest number of steps waiting in an agent's mailbox: a full mailbox makes the
/// sender wait (DESIGN.md invariant 6).
const MAILBOX: usize = 4;

impl<B: Backend> Actor for AgentActor<B> {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

#[derive(actix::Message)]
#[rtype(result = "Result<StepReport, RunError>")]
pub(crate) struct Step(pub StepInput);

impl<B: Backend> Handler<Step> for AgentActor<B> {
    type Result = AtomicResponse<Self, Result<StepReport, RunError>>;

    fn handle(&mut self, msg: Step, _ctx: &mut Self::Context) -> Self::Result {
        // The core leaves the actor for the step and comes back when it is done; the atomic
        // response guarantees that no other step starts meanwhile.
        let core = self.core.take();
        let step = async move {
            match core {
                Some(mut core) => {
                    let result = core.step(msg.0).await;
                    (Some(core), result)
                }
                None => (
                    None,
                    Err(RunError::Internal("agent step while another was running".into())),
                ),
            }
        };
        AtomicResponse::new(Box::pin(step.into_actor(self).map(
            |(core, result), act, _ctx| {
                if core.is_some() {
                    act.core = core;
                }
                result
            },
        )))
    }
}
