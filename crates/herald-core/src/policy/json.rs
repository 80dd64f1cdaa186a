//! JSON checks for webhook body templates: compact output, and a check that the rendered
//! text is one JSON value (refusing duplicate keys) without building it.

use std::fmt;

/// Removes the whitespace between JSON tokens, keeping keys in the template's order (a body
/// template is written for people; receivers and `herald render` lines get it compact).
/// Expects valid JSON.
pub fn minify_json(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            // A string, copied whole through its closing quote (or to the end).
            let start = i;
            i += 1;
            while i < bytes.len() {
                // Eight bytes without a quote or a backslash are passed over at once;
                // otherwise the next eight are looked at one by one.
                if let Some(chunk) = bytes.get(i..i + 8) {
                    let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                    if !crate::receivers::json::may_need_escape(word) {
                        i += 8;
                        continue;
                    }
                }
                let window = i + 8;
                while i < window.min(bytes.len()) {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if bytes.get(i) == Some(&b'"') {
                    i += 1;
                    break;
                }
            }
            out.push_str(&json[start..i.min(bytes.len())]);
        } else if b.is_ascii() {
            if !char::from(b).is_whitespace() {
                out.push(char::from(b));
            }
            i += 1;
        } else {
            let c = json[i..].chars().next().expect("i is on a char boundary");
            if !c.is_whitespace() {
                out.push(c);
            }
            i += c.len_utf8();
        }
    }
    out
}

/// Checks that `text` is one JSON value, accepting and rejecting exactly what parsing it into
/// a `serde_json::Value` does (same parser, same errors), without building the value.
pub(crate) fn check_json(text: &str) -> Result<(), serde_json::Error> {
    // With serde_json's `raw_value` feature a `Value` treats this one object key specially;
    // leave such (odd) bodies to `Value` itself.
    // (Looking for the `$` first is quicker, and a text without one cannot have the key.)
    if text.contains('$') && text.contains("$serde_json::private::") {
        serde_json::from_str::<serde_json::Value>(text)?;
    }
    serde_json::from_str::<AnyJson>(text).map(drop)
}

/// The start of [`check_json`]'s error for an object with a key twice.
pub(crate) const DUPLICATE_KEY: &str = "duplicate key ";

/// An object key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, read and dropped; an object with a key twice is an error (receivers
/// disagree on which one wins, and a value that adds a key can override the template's).
struct AnyJson;

impl<'de> serde::Deserialize<'de> for AnyJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> serde::de::Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        // A few keys are compared one by one; a larger object gets a hash set, so a value
        // that adds thousands of keys costs linear time.
        let mut few: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        let mut many: std::collections::HashSet<std::borrow::Cow<'de, str>> =
            std::collections::HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let duplicate = if many.is_empty() && few.len() < 16 {
                few.contains(&key)
            } else {
                many.extend(few.drain(..));
                many.contains(&key)
            };
            if duplicate {
                return Err(serde::de::Error::custom(format_args!(
                    "{DUPLICATE_KEY}{key:?}"
                )));
            }
            if many.is_empty() {
                few.push(key);
            } else {
                many.insert(key);
            }
            map.next_value::<AnyJson>()?;
        }
        Ok(AnyJson)
    }
}
