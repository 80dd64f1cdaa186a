//! JSON parsing that refuses duplicate keys (serde_json's `Value` keeps the last): a body
//! with two `name`s or two `eventType`s is ambiguous, and Herald would notify about the one
//! the sender may not have meant.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{json_error_reason, EventError};

/// The key written twice, by its JSON path, once a visitor has refused it (serde's error
/// type cannot carry it).
pub(super) type Duplicate = RefCell<Option<String>>;

/// Parses `body` into a `Value`, refusing duplicate keys (the reference reading: the typed
/// reader in `typed` must answer exactly as this one does).
#[cfg(test)]
pub(super) fn parse(body: &[u8]) -> Result<Value, EventError> {
    read(body, |de, duplicate| {
        Seed {
            path: String::new(),
            duplicate,
        }
        .deserialize(de)
    })
}

/// Runs `visit` over the whole of `body` (trailing characters refused) and turns its error
/// into an [`EventError`]: the duplicate key by its path, or the syntax error's position.
pub(super) fn read<T>(
    body: &[u8],
    visit: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
        &Duplicate,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, EventError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = visit(&mut de, &duplicate).and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| match duplicate.take() {
        Some(path) => EventError::field(path, "duplicate key"),
        None => EventError::Syntax {
            line: e.line(),
            column: e.column(),
            reason: json_error_reason(&e),
        },
    })
}

/// Refuses `path` as a duplicate key: records it for [`read`] and fails the parse.
pub(super) fn refuse<E: de::Error>(duplicate: &Duplicate, path: String) -> E {
    let message = format!("duplicate key {path:?}");
    *duplicate.borrow_mut() = Some(path);
    E::custom(message)
}

/// Reads any JSON value into a `Value`; `path` is where it sits, for the duplicate's name.
pub(super) struct Seed<'a> {
    pub(super) path: String,
    pub(super) duplicate: &'a Duplicate,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        let mut index = 0usize;
        while let Some(item) = seq.next_element_seed(Seed {
            path: format!("{}[{index}]", self.path),
            duplicate: self.duplicate,
        })? {
            items.push(item);
            index += 1;
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if object.contains_key(&key) {
                return Err(refuse(self.duplicate, path));
            }
            let value = map.next_value_seed(Seed {
                path,
                duplicate: self.duplicate,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
