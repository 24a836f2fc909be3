//! A behaviour that is a program, as the rest of agora sees it: a [`DynBehaviour`] whose
//! state is JSON and whose steps go through the protocol (the runtime's `programs` pool and
//! the agent's step), never through the trait's own calls.

use super::handshake::Greeted;
use super::protocol::{ParamDeclaration, Statistic};
use crate::behaviour::ParamDoc;
use crate::behaviour::{BehaviourError, Context, DynBehaviour, Effects, StateBox};
use crate::message::Message;

/// One table's use of a program.
#[derive(Debug, Clone)]
pub struct ProgramBehaviour {
    /// The behaviour's name (`[behaviours.NAME]`).
    pub name: String,
    /// The table's id.
    pub table: String,
    params: toml::Table,
    acts_unprompted: bool,
    /// What the program says it does.
    pub summary: String,
    /// The parameters it declares.
    pub declares: Vec<ParamDeclaration>,
    /// Model-level numbers from its agents' values, by name: the statistic and the value.
    model_reporters: std::collections::BTreeMap<String, (Statistic, String)>,
}

impl ProgramBehaviour {
    /// Table `table`'s use of behaviour `name`, as its program greeted it (`written`: the
    /// params as the scenario wrote them, when the program did not say them back).
    pub fn new(name: &str, table: &str, written: &toml::Table, greeted: &Greeted) -> Self {
        ProgramBehaviour {
            name: name.to_string(),
            table: table.to_string(),
            params: greeted
                .params
                .get(table)
                .cloned()
                .unwrap_or_else(|| written.clone()),
            acts_unprompted: greeted.acts_unprompted,
            summary: greeted.summary.clone(),
            declares: greeted.declares.clone(),
            model_reporters: greeted.model_reporters.clone(),
        }
    }

    /// The declared parameters as `agora behaviours` lists them.
    pub fn param_docs(&self) -> Vec<ParamDoc> {
        self.declares
            .iter()
            .map(|d| ParamDoc {
                name: d.name.clone(),
                default: d
                    .default
                    .as_ref()
                    .and_then(|v| toml::Value::try_from(v).ok())
                    .map(|v| v.to_string()),
                doc: d.doc.clone(),
            })
            .collect()
    }
}

fn not_here() -> BehaviourError {
    BehaviourError::new("internal error: a program's behaviour is stepped through its protocol")
}

impl DynBehaviour for ProgramBehaviour {
    fn init(&self, _ctx: &mut Context<'_>) -> Result<StateBox, BehaviourError> {
        Err(not_here())
    }

    fn on_start(&self, _state: &mut StateBox, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Err(not_here())
    }

    fn on_messages(
        &self,
        _state: &mut StateBox,
        _messages: &[&Message],
        _ctx: &mut Context<'_>,
        _each: &mut dyn FnMut(Result<Effects, BehaviourError>) -> std::ops::ControlFlow<()>,
    ) -> Result<(), BehaviourError> {
        Err(not_here())
    }

    fn on_batch(
        &self,
        _state: &mut StateBox,
        _messages: &crate::behaviour::Messages<'_>,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        Err(not_here())
    }

    fn on_tick(&self, _state: &mut StateBox, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Err(not_here())
    }

    fn save(&self, state: &StateBox) -> Result<Box<serde_json::value::RawValue>, BehaviourError> {
        let state = state
            .downcast_ref::<serde_json::Value>()
            .ok_or_else(|| BehaviourError::new("internal error: a program's state is not JSON"))?;
        serde_json::value::to_raw_value(state)
            .map_err(|e| BehaviourError::new(format!("cannot save the agent's state: {e}")))
    }

    fn restore(&self, json: &str) -> Result<StateBox, BehaviourError> {
        let state: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| BehaviourError::new(format!("cannot restore the agent's state: {e}")))?;
        Ok(Box::new(state))
    }

    fn resolved_params(&self) -> toml::Table {
        self.params.clone()
    }

    fn acts_unprompted(&self) -> bool {
        self.acts_unprompted
    }

    /// The statistics the program declared (`model_reporters` in its greeting), of the
    /// values reported this tick; a value no agent reported gives no number.
    fn model_reporters(&self, values: &std::collections::BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        self.model_reporters
            .iter()
            .filter_map(|(name, (statistic, of))| {
                let value = statistic.of(values.get(of)?)?;
                Some((name.clone(), value))
            })
            .collect()
    }

    fn as_program(&self) -> Option<&ProgramBehaviour> {
        Some(self)
    }
}
