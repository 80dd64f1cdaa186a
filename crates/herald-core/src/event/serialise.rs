//! Writing an event back as the JSON Flagger would have sent, for the `webhook` receiver's
//! default body and for the controller's events, which Flagger never sent.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::FlaggerEvent;

impl FlaggerEvent {
    /// The JSON Flagger would have sent: field order `name, namespace, phase, checksum,
    /// metadata` (as Go marshals its struct), metadata keys sorted (as Go marshals maps).
    ///
    /// Written directly, keys as literal text (see [`crate::receivers::json`]): the bytes are
    /// those of `serde_json` over the [`Serialize`] impl below, which the tests check.
    pub fn to_json(&self) -> Vec<u8> {
        use crate::receivers::json::push_str;
        // Sized for a typical event, so the buffer is not grown a few bytes at a time.
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"name\":");
        push_str(&mut out, &self.name);
        out.extend_from_slice(b",\"namespace\":");
        push_str(&mut out, &self.namespace);
        out.extend_from_slice(b",\"phase\":");
        push_str(&mut out, &self.phase);
        if let Some(checksum) = &self.checksum {
            out.extend_from_slice(b",\"checksum\":");
            push_str(&mut out, checksum);
        }
        out.extend_from_slice(b",\"metadata\":{");
        for (i, (key, value)) in self.metadata.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, key);
            out.push(b':');
            push_str(&mut out, value);
        }
        out.push(b'}');
        for (key, value) in &self.extra {
            out.push(b',');
            push_str(&mut out, key);
            out.push(b':');
            serde_json::to_writer(&mut out, value).expect("a JSON value always serialises");
        }
        out.push(b'}');
        out
    }
}

impl Serialize for FlaggerEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("namespace", &self.namespace)?;
        map.serialize_entry("phase", &self.phase)?;
        if let Some(checksum) = &self.checksum {
            map.serialize_entry("checksum", checksum)?;
        }
        map.serialize_entry("metadata", &self.metadata)?;
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
