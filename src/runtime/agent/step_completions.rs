//! Completions during one agent step.
//!
//! The behaviour asks synchronously; the answer is had from the model client, which is not.
//! So a request is answered from what the runtime fetched for this step, or recorded as
//! wanted: the step stops (pending), the runtime asks the model, and the step runs again from
//! the same state and random position, asking the same requests in the same order, now
//! answered. A step that asks several things in turn (the second prompt built on the first
//! answer) goes round once per request.

use std::cell::{Cell, RefCell};

use crate::behaviour::{BehaviourError, Completions};
use crate::llm::{Completion, CompletionRequest};

/// Answers fetched for this step, by request.
#[derive(Debug, Default)]
pub(crate) struct Answered(Vec<(CompletionRequest, Completion)>);

impl Answered {
    fn get(&self, request: &CompletionRequest) -> Option<&Completion> {
        self.0.iter().find(|(r, _)| r == request).map(|(_, c)| c)
    }

    pub fn insert(&mut self, request: CompletionRequest, completion: Completion) {
        self.0.push((request, completion));
    }
}

/// A request the step could not be answered yet: which of the step's requests it is (from
/// 0), for the record's order.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub call: u32,
    pub request: CompletionRequest,
}

pub(crate) struct StepCompletions<'a> {
    pub answered: &'a Answered,
    /// How many requests the step has made so far, over all its behaviour calls.
    pub asked: &'a Cell<u32>,
    pub wanted: &'a RefCell<Vec<Wanted>>,
}

impl Completions for StepCompletions<'_> {
    fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, BehaviourError> {
        let call = self.asked.get();
        self.asked.set(call + 1);
        if let Some(answer) = self.answered.get(request) {
            return Ok(answer.clone());
        }
        self.wanted.borrow_mut().push(Wanted {
            call,
            request: request.clone(),
        });
        Err(BehaviourError::pending())
    }
}
