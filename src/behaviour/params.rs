//! A behaviour's parameters: their names (read from the parameter struct itself), and the
//! error a constructor gives when a value does not work.

use serde::de::{self, Deserializer, Visitor};

/// Why a behaviour cannot be built from its parameters, blaming one parameter where one is
/// at fault (the error then points at that key's line in the scenario).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    /// The parameter at fault, when one is.
    pub key: Option<String>,
    pub message: String,
    /// What to do about it, when the behaviour knows better than the usual hint (`agora
    /// behaviours` lists the parameters).
    pub hint: Option<String>,
}

impl ParamError {
    /// `key`'s value does not work, because `message`.
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            key: Some(key.into()),
            message: message.into(),
            hint: None,
        }
    }

    /// The parameters do not work together, because `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ParamError {
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    /// The same error, with what to do about it.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<String> for ParamError {
    fn from(message: String) -> Self {
        ParamError::new(message)
    }
}

impl From<&str> for ParamError {
    fn from(message: &str) -> Self {
        ParamError::new(message)
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The field names of the struct `P` deserializes into, as its `Deserialize` declares them
/// (every field, `Option`s included), or `None` when `P` is not a plain struct.
pub(crate) fn field_names<'de, P: de::Deserialize<'de>>() -> Option<&'static [&'static str]> {
    match P::deserialize(FieldNames) {
        Err(Found(Some(fields))) => Some(fields),
        _ => None,
    }
}

/// A deserializer that only asks for the struct's field names, and fails with them.
struct FieldNames;

#[derive(Debug)]
struct Found(Option<&'static [&'static str]>);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names")
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Found(None)
    }
}

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Found> {
        Err(Found(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Found> {
        Err(Found(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Params {
        a: u64,
        #[serde(rename = "b_renamed")]
        b: Option<String>,
    }

    #[test]
    fn struct_fields_are_found_options_included() {
        assert_eq!(field_names::<Params>(), Some(&["a", "b_renamed"][..]));
        assert_eq!(field_names::<u64>(), None);
        assert_eq!(ParamError::at("mu", "too big").to_string(), "mu: too big");
    }
}
