//! Flagger's body read straight into its fields, without a `serde_json::Value` in between:
//! the known keys are matched without allocating, metadata goes directly into its
//! `BTreeMap`, and only unknown fields are kept as `Value`s. This is the intake's hot path.
//!
//! It answers exactly as reading a `Value` (`unique_keys::parse`) and then checking it
//! (`Parts::from_value`) did: the whole body is read first (so a syntax error or a duplicate
//! key anywhere wins over a field error, as before), every value goes through
//! `deserialize_any` (the same serde_json code reports the same syntax errors at the same
//! place), nested values go through the same duplicate-refusing `Seed`, and the fields are
//! checked afterwards in the same order by [`Parts::check`](super::parse). The tests compare
//! the two readings on many bodies.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::parse::{Parts, Raw, RawMeta};
use super::unique_keys::{self, refuse, Duplicate, Seed};
use super::EventError;

/// The body's fields, or `None` if it is valid JSON but not an object.
pub(super) fn parse(body: &[u8]) -> Result<Option<Parts>, EventError> {
    unique_keys::read(body, |de, duplicate| {
        de::Deserializer::deserialize_any(de, Top { duplicate })
    })
}

/// `parent.key`, or `key` at the top: the path a duplicate key is named by.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

enum Key {
    Name,
    Namespace,
    Phase,
    Checksum,
    Metadata,
    Other(String),
}

/// A top-level key: the known ones matched on the borrowed text, no `String`.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "name" => Key::Name,
            "namespace" => Key::Namespace,
            "phase" => Key::Phase,
            "checksum" => Key::Checksum,
            "metadata" => Key::Metadata,
            other => Key::Other(other.to_owned()),
        })
    }
}

/// Visits every kind of value the way `Seed` does (same visitor methods, same `expecting`),
/// so serde_json treats each exactly as before; the maps and arrays that are not wanted are
/// still read through `Seed` for their duplicate keys.
macro_rules! kinds {
    ($out:ty, $other:expr) => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<$out, E> {
            Ok($other("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<$out, E> {
            Ok($other("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<$out, E> {
            Ok($other("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<$out, E> {
            Ok($other("a number"))
        }
        fn visit_unit<E>(self) -> Result<$out, E> {
            Ok($other("null"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$out, A::Error> {
            self.seed().visit_seq(seq)?;
            Ok($other("an array"))
        }
    };
}

/// The whole body.
struct Top<'a> {
    duplicate: &'a Duplicate,
}

impl Top<'_> {
    fn seed(&self) -> Seed<'_> {
        Seed {
            path: String::new(),
            duplicate: self.duplicate,
        }
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Option<Parts>;
    kinds!(Option<Parts>, |_| None);
    fn visit_str<E>(self, _: &str) -> Result<Option<Parts>, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Parts>, A::Error> {
        let duplicate = self.duplicate;
        let mut parts = Parts::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let field = |slot: &Option<Raw>, name: &'static str| match slot {
                Some(_) => Err(refuse(duplicate, name.to_owned())),
                None => Ok(Field {
                    parent: "",
                    key: name,
                    duplicate,
                }),
            };
            match key {
                Key::Name => parts.name = Some(map.next_value_seed(field(&parts.name, "name")?)?),
                Key::Namespace => {
                    let seed = field(&parts.namespace, "namespace")?;
                    parts.namespace = Some(map.next_value_seed(seed)?);
                }
                Key::Phase => {
                    parts.phase = Some(map.next_value_seed(field(&parts.phase, "phase")?)?)
                }
                Key::Checksum => {
                    let seed = field(&parts.checksum, "checksum")?;
                    parts.checksum = Some(map.next_value_seed(seed)?);
                }
                Key::Metadata => {
                    if parts.metadata.is_some() {
                        return Err(refuse(duplicate, "metadata".to_owned()));
                    }
                    parts.metadata = Some(map.next_value_seed(Meta { duplicate })?);
                }
                Key::Other(key) => {
                    if parts.extra.contains_key(&key) {
                        return Err(refuse(duplicate, key));
                    }
                    let value = map.next_value_seed(Seed {
                        path: key.clone(),
                        duplicate,
                    })?;
                    parts.extra.insert(key, value);
                }
            }
        }
        Ok(Some(parts))
    }
}

/// `name`, `namespace`, `phase`, `checksum`, and each metadata value: a string, or the kind
/// of what was found instead.
struct Field<'a> {
    /// Where the value sits, `parent.key`: formatted only if it holds keys of its own.
    parent: &'static str,
    key: &'a str,
    duplicate: &'a Duplicate,
}

impl Field<'_> {
    fn seed(&self) -> Seed<'_> {
        Seed {
            path: join(self.parent, self.key),
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Raw;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Raw;
    kinds!(Raw, Raw::Other);
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw, A::Error> {
        self.seed().visit_map(map)?;
        Ok(Raw::Other("an object"))
    }
}

/// `metadata`: an object of strings, read into its map directly.
struct Meta<'a> {
    duplicate: &'a Duplicate,
}

impl Meta<'_> {
    fn seed(&self) -> Seed<'_> {
        Seed {
            path: "metadata".to_owned(),
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Meta<'_> {
    type Value = RawMeta;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RawMeta, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Meta<'_> {
    type Value = RawMeta;
    kinds!(RawMeta, RawMeta::Other);
    fn visit_str<E>(self, _: &str) -> Result<RawMeta, E> {
        Ok(RawMeta::Other("a string"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMeta, A::Error> {
        let mut strings = BTreeMap::new();
        // Values that are not strings, by key: only the first in key order is reported,
        // but all are needed to refuse a duplicate.
        let mut others: BTreeMap<String, &'static str> = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if strings.contains_key(&key) || others.contains_key(&key) {
                return Err(refuse(self.duplicate, join("metadata", &key)));
            }
            match map.next_value_seed(Field {
                parent: "metadata",
                key: &key,
                duplicate: self.duplicate,
            })? {
                Raw::Str(value) => {
                    strings.insert(key, value);
                }
                Raw::Other(kind) => {
                    others.insert(key, kind);
                }
            }
        }
        Ok(RawMeta::Object {
            strings,
            first_other: others.into_iter().next(),
        })
    }
}
