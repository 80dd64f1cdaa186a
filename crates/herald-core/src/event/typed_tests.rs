//! The typed reading answers exactly as the `Value` reading it replaced: same event, same
//! error (message, path, syntax position), on Flagger's body and on many broken variants.

use super::unique_keys;
use super::FlaggerEvent;

/// The reading `from_json` did before: a whole `Value` (duplicates refused), then checked.
fn reference(body: &[u8]) -> Result<FlaggerEvent, super::EventError> {
    unique_keys::parse(body).and_then(FlaggerEvent::from_value)
}

fn same(body: &[u8]) {
    assert_eq!(
        FlaggerEvent::from_json(body),
        reference(body),
        "{}",
        String::from_utf8_lossy(body)
    );
}

const FLAGGER: &str = r#"{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"6d8f9b5c7","metadata":{"eventMessage":"New revision detected! Scaling up podinfo.default","eventType":"Normal","timestamp":"1578607635167"}}"#;

/// Values put in place of each field, and of the whole body.
const VALUES: &[&str] = &[
    r#""""#,
    r#""x""#,
    r#""a\"b\u00e9\n""#,
    r#""\ud800""#,
    "null",
    "true",
    "0",
    "-1.5e3",
    "1e999",
    "18446744073709551616",
    "[]",
    "[1,{\"k\":1,\"k\":2}]",
    "{}",
    r#"{"a":1,"a":2}"#,
    r#"{"a":{"b":[{"c":1,"c":1}]}}"#,
    r#"{"eventMessage":"m","eventType":"Warning","timestamp":"7"}"#,
    r#"{"eventMessage":"m","eventType":"Normal","timestamp":"7","eventType":"Normal"}"#,
    r#"{"eventMessage":1,"b":null,"a":[],"eventType":"Normal","timestamp":"7"}"#,
    r#"{"z":{"q":1,"q":1},"eventMessage":"m"}"#,
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{",
    "",
];

const KEYS: &[&str] = &[
    "name",
    "namespace",
    "phase",
    "checksum",
    "metadata",
    "eventMessage",
    "eventType",
    "timestamp",
    "extra",
];

#[test]
fn flagger_body_and_whole_bodies() {
    same(FLAGGER.as_bytes());
    for value in VALUES {
        same(value.as_bytes());
    }
    for body in [
        "",
        " ",
        "{}",
        "[1]",
        "\"s\"",
        "7",
        "null",
        "{} x",
        "{}{}",
        "{\"name\"}",
        "{\"name\":1,}",
        "{1:2}",
        "\u{feff}{}",
    ] {
        same(body.as_bytes());
    }
    same(&FLAGGER.as_bytes()[..FLAGGER.len() - 1]);
    same(b"{\"name\":\"\xff\"}");
}

#[test]
fn every_field_replaced_removed_or_repeated() {
    for key in KEYS {
        let quoted = format!("\"{key}\":");
        let Some(at) = FLAGGER.find(&quoted) else {
            continue;
        };
        let start = at + quoted.len();
        // The field's value ends at the next `,` or `}` at its depth: values here are flat
        // except metadata, which is last but one and ends at the first `}`.
        let end = if *key == "metadata" {
            FLAGGER[start..].find('}').unwrap() + start + 1
        } else {
            start + FLAGGER[start..].find([',', '}']).unwrap()
        };
        for value in VALUES {
            same(format!("{}{value}{}", &FLAGGER[..start], &FLAGGER[end..]).as_bytes());
        }
        // Removed (with its comma), and written twice (same and another value).
        let field = &FLAGGER[at..end];
        let without = FLAGGER.replacen(&format!("{field},"), "", 1);
        let without = without.replacen(&format!(",{field}"), "", 1);
        same(without.as_bytes());
        same(
            FLAGGER
                .replacen(field, &format!("{field},{field}"), 1)
                .as_bytes(),
        );
        same(
            FLAGGER
                .replacen(field, &format!("{quoted}1,{field}"), 1)
                .as_bytes(),
        );
    }
    // Unknown fields: kept, refused twice, in any position.
    for value in VALUES {
        same(
            FLAGGER
                .replacen("{", &format!("{{\"zeta\":{value},"), 1)
                .as_bytes(),
        );
        same(
            FLAGGER
                .replacen("}}", &format!("}},\"zeta\":{value}}}"), 1)
                .as_bytes(),
        );
    }
    same(FLAGGER.replacen("{", "{\"z\":1,\"z\":1,", 1).as_bytes());
    same(FLAGGER.replacen("{", "{\"\":1,", 1).as_bytes());
    same(
        FLAGGER
            .replacen("{\"name\"", "{\"na\\u006de\"", 1)
            .as_bytes(),
    );
}

#[test]
fn every_truncation_and_byte_removed() {
    let body = FLAGGER.replacen("{", "{\"x\":[1,{\"y\":null}],", 1);
    let bytes = body.as_bytes();
    for cut in 0..bytes.len() {
        same(&bytes[..cut]);
        let mut without = bytes.to_vec();
        without.remove(cut);
        same(&without);
    }
}

#[test]
fn name_and_metadata_checks_in_their_order() {
    for (name, namespace) in [("", ""), ("Bad", "ok"), ("ok", "Bad"), ("-a", "b-")] {
        let body = FLAGGER
            .replace("\"podinfo\"", &format!("\"{name}\""))
            .replace("\"default\"", &format!("\"{namespace}\""));
        same(body.as_bytes());
        same(body.replace("\"Normal\"", "\"Info\"").as_bytes());
        same(
            body.replace("\"1578607635167\"", "\"99999999999999999999\"")
                .as_bytes(),
        );
        same(body.replace("\"eventMessage\"", "\"message\"").as_bytes());
    }
}
