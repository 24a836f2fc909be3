//! The registry: behaviour names, as scenario files write them, mapped to constructors.
//!
//! A constructor reads its behaviour's `params` table into a typed parameter struct (unknown
//! or ill-typed keys are errors that name the key) and builds the behaviour for one
//! `[[agents]]` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::erased::Erased;
use super::{Behaviour, DynBehaviour, Setup};

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
    /// The default as TOML.
    pub default: String,
    pub doc: String,
}

/// Why a behaviour could not be built from its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildError {
    /// The parameter at fault, when one is.
    pub key: Option<String>,
    pub message: String,
}

impl Registry {
    /// A registry with nothing in it.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in behaviours: relay, gossip, opinion and discussion.
    pub fn builtin() -> Self {
        let mut registry = Registry::empty();
        super::builtin::register_all(&mut registry);
        registry
    }

    /// Registers a behaviour under `name`, replacing any behaviour of that name.
    ///
    /// `P` is its parameter struct: give it `#[serde(deny_unknown_fields, default)]` and a
    /// `Default` with the documented defaults. `docs` describes each parameter. `build` makes
    /// the behaviour for one `[[agents]]` table, or says why the parameters do not work.
    pub fn register<P, B, F>(&mut self, name: &str, summary: &str, docs: &[(&str, &str)], build: F)
    where
        P: DeserializeOwned + Serialize + Default + 'static,
        B: Behaviour,
        F: Fn(P, &Setup<'_>) -> Result<B, String> + Send + Sync + 'static,
    {
        let defaults = toml::Table::try_from(P::default()).unwrap_or_default();
        let params = defaults
            .iter()
            .map(|(key, value)| ParamDoc {
                name: key.clone(),
                default: value.to_string(),
                doc: docs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default(),
            })
            .collect();
        let build = move |table: &toml::Table, setup: &Setup<'_>| {
            let params: P = parse_params(table)?;
            let resolved = toml::Table::try_from(&params).unwrap_or_default();
            let inner = build(params, setup).map_err(|message| BuildError { key: None, message })?;
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
        let entry = self.entries.get(name).ok_or_else(|| BuildError {
            key: None,
            message: format!("unknown behaviour {name:?}; known: {}", self.names().join(", ")),
        })?;
        (entry.build)(params, setup)
    }
}

fn parse_params<P: DeserializeOwned>(table: &toml::Table) -> Result<P, BuildError> {
    serde_path_to_error::deserialize(table.clone()).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().to_string();
        let key = if path != "." && !path.is_empty() {
            Some(path)
        } else {
            // serde reports an unknown key at the table, not at the key: name it anyway.
            message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string)
        };
        BuildError { key, message }
    })
}
