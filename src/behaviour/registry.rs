//! The registry: behaviour names, as scenario files write them, mapped to constructors.
//!
//! A constructor reads its behaviour's `params` table into a typed parameter struct (unknown
//! or ill-typed keys are errors that name the key) and builds the behaviour for one
//! `[[agents]]` table. The parameters `agora behaviours` lists are the struct's own fields,
//! so the list cannot drift from the struct.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::erased::Erased;
use super::params::field_names;
use super::{Behaviour, DynBehaviour, ParamError, Setup};

type Build = dyn Fn(&toml::Table, &Setup<'_>) -> Result<Arc<dyn DynBehaviour>, BuildError> + Send + Sync;

/// Behaviours by name.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, RegistryEntry>,
}

/// One registered behaviour.
#[derive(Clone)]
pub struct RegistryEntry {
    pub name: String,
    pub summary: String,
    pub params: Vec<ParamDoc>,
    build: Arc<Build>,
}

/// A parameter, its default and what it means, for `agora behaviours`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDoc {
    pub name: String,
    /// The default as TOML; `None` for an optional parameter that is unset by default.
    pub default: Option<String>,
    pub doc: String,
}

/// Why a behaviour could not be built from its parameters.
pub type BuildError = ParamError;

impl Registry {
    /// A registry with nothing in it.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in behaviours: relay, gossip, opinion, discussion and llm.
    pub fn builtin() -> Self {
        let mut registry = Registry::empty();
        super::builtin::register_all(&mut registry);
        registry
    }

    /// Registers a behaviour under `name`, replacing any behaviour of that name.
    ///
    /// `P` is its parameter struct: a `Default` with the documented defaults, usually with
    /// `#[serde(default)]`. Whatever `P` says, a scenario key that is not one of its fields
    /// is refused. `docs` describes each field, one entry per field. `build` makes the
    /// behaviour for one `[[agents]]` table, or says why the parameters do not work: a
    /// [`ParamError::at`] blames one parameter (the error then points at its line),
    /// [`ParamError::new`] the table; `?` turns a `String` error into the latter.
    ///
    /// # Panics
    ///
    /// When `docs` and `P`'s fields differ (a field without a doc, a doc for no field): the
    /// documentation `agora behaviours` prints would not match the parameters.
    pub fn register<P, B, F>(&mut self, name: &str, summary: &str, docs: &[(&str, &str)], build: F)
    where
        P: DeserializeOwned + Serialize + Default + 'static,
        B: Behaviour,
        F: Fn(P, &Setup<'_>) -> Result<B, ParamError> + Send + Sync + 'static,
    {
        let defaults = toml::Table::try_from(P::default()).unwrap_or_default();
        let fields: &'static [&'static str] = field_names::<P>().unwrap_or_default();
        let params = param_docs(name, fields, &defaults, docs);
        let build = move |table: &toml::Table, setup: &Setup<'_>| {
            refuse_unknown(table, fields)?;
            let params: P = parse_params(table)?;
            let resolved = toml::Table::try_from(&params).unwrap_or_default();
            let inner = build(params, setup)?;
            Ok(Arc::new(Erased {
                inner,
                params: resolved,
            }) as Arc<dyn DynBehaviour>)
        };
        self.entries.insert(
            name.to_string(),
            RegistryEntry {
                name: name.to_string(),
                summary: summary.to_string(),
                params,
                build: Arc::new(build),
            },
        );
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = &RegistryEntry> {
        self.entries.values()
    }

    /// Builds the behaviour `name` from a `params` table.
    pub fn build(
        &self,
        name: &str,
        params: &toml::Table,
        setup: &Setup<'_>,
    ) -> Result<Arc<dyn DynBehaviour>, BuildError> {
        let entry = self.entries.get(name).ok_or_else(|| {
            ParamError::new(format!(
                "unknown behaviour {name:?}; known: {}",
                self.names().join(", ")
            ))
        })?;
        (entry.build)(params, setup)
    }
}

/// The documentation of each of `fields`, with its default.
fn param_docs(
    behaviour: &str,
    fields: &[&str],
    defaults: &toml::Table,
    docs: &[(&str, &str)],
) -> Vec<ParamDoc> {
    if let Some((name, _)) = docs.iter().find(|(name, _)| !fields.contains(name)) {
        panic!("behaviour {behaviour:?}: its parameter docs name {name:?}, which its parameters do not have");
    }
    fields
        .iter()
        .map(|field| {
            let Some((_, doc)) = docs.iter().find(|(name, _)| name == field) else {
                panic!("behaviour {behaviour:?}: parameter {field:?} has no doc");
            };
            ParamDoc {
                name: field.to_string(),
                default: defaults.get(*field).map(ToString::to_string),
                doc: doc.to_string(),
            }
        })
        .collect()
}

/// Refuses keys that are not parameters, even when the parameter struct would ignore them.
fn refuse_unknown(table: &toml::Table, fields: &'static [&'static str]) -> Result<(), BuildError> {
    if fields.is_empty() {
        return Ok(());
    }
    match table.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(key) => {
            let message = <serde::de::value::Error as serde::de::Error>::unknown_field(key, fields);
            Err(ParamError::at(key.clone(), message.to_string()))
        }
        None => Ok(()),
    }
}

fn parse_params<P: DeserializeOwned>(table: &toml::Table) -> Result<P, BuildError> {
    serde_path_to_error::deserialize(table.clone()).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.inner().message().to_string();
        if message == "invalid type: unit variant, expected string only" {
            // The toml crate's words for a number or table where one of an enum's names goes.
            message = "expected one of its names, as a string in quotes".to_string();
        }
        let key = if path != "." && !path.is_empty() {
            Some(path)
        } else {
            // serde reports an unknown key at the table, not at the key: name it anyway.
            message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string)
        };
        ParamError {
            key,
            message,
            hint: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::behaviour::{BehaviourError, Context, Effects};
    use crate::message::Message;
    use crate::scenario::Mode;

    struct Quiet;

    impl Behaviour for Quiet {
        type State = ();
        fn init(&self, _: &mut Context<'_>) -> Result<(), BehaviourError> {
            Ok(())
        }
        fn on_message(
            &self,
            _: &mut (),
            _: &Message,
            _: &mut Context<'_>,
        ) -> Result<Effects, BehaviourError> {
            Ok(Effects::none())
        }
    }

    /// No `deny_unknown_fields`: the registry refuses unknown keys all the same.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Lenient {
        level: u64,
        label: Option<String>,
    }

    fn setup() -> Setup<'static> {
        Setup {
            seed: 0,
            mode: Mode::Lockstep,
            table_id: "t",
            agents: &[],
            peers: &[],
            all: &[],
            table_params: &[],
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::empty();
        registry.register(
            "quiet",
            "says nothing",
            &[("level", "how quiet"), ("label", "a name, if any")],
            |p: Lenient, _: &Setup<'_>| match p.level {
                0..=9 => Ok(Quiet),
                _ => Err(ParamError::at("level", "must be below 10")),
            },
        );
        registry
    }

    #[test]
    fn keys_the_parameters_lack_are_refused_whatever_the_struct_says() {
        let table: toml::Table = toml::from_str("levle = 3").unwrap();
        let e = registry().build("quiet", &table, &setup()).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("levle"));
        assert!(
            e.message
                .contains("unknown field `levle`, expected `level` or `label`"),
            "{e}"
        );
    }

    #[test]
    fn optional_parameters_are_listed_and_errors_blame_one_parameter() {
        let registry = registry();
        let entry = registry.entries().next().unwrap();
        let listed: Vec<(&str, Option<&str>)> = entry
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default.as_deref()))
            .collect();
        assert_eq!(listed, [("level", Some("0")), ("label", None)]);
        let table: toml::Table = toml::from_str("level = 12").unwrap();
        let e = registry.build("quiet", &table, &setup()).err().unwrap();
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("level"), "must be below 10")
        );
    }

    #[test]
    #[should_panic(expected = "parameter \"label\" has no doc")]
    fn docs_cannot_drift_from_the_parameters() {
        Registry::empty().register(
            "quiet",
            "says nothing",
            &[("level", "how quiet")],
            |_: Lenient, _| Ok(Quiet),
        );
    }
}
