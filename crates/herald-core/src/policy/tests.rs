use super::json::{check_json, minify_json};
use super::names::Wildcard;
use globset::Glob;

/// Plain wildcards are matched as globset matches them.
#[test]
fn wildcards_match_like_globset() {
    let patterns = [
        "team-*-api",
        "team-*",
        "*-api",
        "*",
        "?",
        "??",
        "a?c",
        "*a*",
        "a*b*c",
        "*a*a",
        "app-1-*",
        "svc-1-?",
        "pay*",
        "*é*",
        "p?ay",
        "é?",
        "x*",
        "*x",
        "-*-",
    ];
    let names = [
        "",
        "a",
        "ac",
        "abc",
        "abbc",
        "aXbYc",
        "aa",
        "aaa",
        "team-payments-api",
        "team-api",
        "team--api",
        "team-a-api-x",
        "x-api",
        "api",
        "app-1-",
        "app-1-x",
        "app-10",
        "svc-1-a",
        "svc-1-ab",
        "payments",
        "pay",
        "é",
        "éa",
        "aé",
        "p\u{e9}ay",
        "pxay",
        "a\nb",
        "x\ny",
        "-a-",
        "--",
        "---",
    ];
    for pattern in patterns {
        let wildcard = Wildcard::new(pattern).expect("a plain wildcard");
        let glob = Glob::new(pattern).unwrap().compile_matcher();
        for name in names {
            assert_eq!(
                wildcard.is_match(name),
                glob.is_match(name),
                "{pattern:?} on {name:?}"
            );
        }
    }
    for complex in ["[ab]*", "{a,b}*", "a\\*", "a/**", "**", "a**"] {
        assert!(Wildcard::new(complex).is_none(), "{complex}");
    }
    let w = Wildcard::new("team-*-api").unwrap();
    assert_eq!((w.prefix(), w.suffix()), ("team-", "-api"));
    let w = Wildcard::new("*x?").unwrap();
    assert_eq!((w.prefix(), w.suffix()), ("", ""));
}

/// The JSON check accepts and rejects what parsing into a `Value` does, with the same
/// error.
#[test]
fn json_check_is_value_parsing() {
    for text in [
        "{}",
        "[]",
        "1",
        "-1.5e3",
        "1e400",
        "18446744073709551616",
        "\"x\"",
        "null",
        "true",
        "{\"a\": [1, {\"b\": null}], \"b\": 2}",
        "{\"a\" 1}",
        "{\"a\": 1,}",
        "[1 2]",
        "",
        " ",
        "{\"a\": 1} x",
        "\"\\q\"",
        "\"\u{1}\"",
        "{1: 2}",
        "[",
        "nul",
        "{\"$serde_json::private::RawValue\": \"1\"}",
        "{\"$serde_json::private::RawValue\": \"x\"}",
    ] {
        let by_value = serde_json::from_str::<serde_json::Value>(text)
            .map(drop)
            .map_err(|e| e.to_string());
        assert_eq!(
            check_json(text).map_err(|e| e.to_string()),
            by_value,
            "{text:?}"
        );
    }
    // Unlike `Value` (where the last one wins), a key twice in one object is refused, at
    // any depth, however it is escaped; the same key in different objects is not.
    for text in [
        "{\"a\": [1, {\"b\": null}], \"a\": 2}",
        "[{\"x\": {\"k\": 1, \"k\": 2}}]",
        "{\"\\u0061\": 1, \"a\": 2}",
    ] {
        let err = check_json(text).unwrap_err().to_string();
        assert!(err.starts_with(super::json::DUPLICATE_KEY), "{text}: {err}");
    }
    assert_eq!(
        check_json("{\"a\": {\"a\": {\"a\": 1}}, \"b\": [{\"a\": 1}, {\"a\": 2}]}")
            .map_err(|e| e.to_string()),
        Ok(())
    );
    // Many keys: compared through a set, and a duplicate far in is still found.
    let many: Vec<String> = (0..1000).map(|i| format!("\"k{i}\": {i}")).collect();
    let object = format!("{{{}}}", many.join(","));
    assert!(check_json(&object).is_ok());
    let object = format!("{{{}, \"k500\": 0}}", many.join(","));
    assert!(check_json(&object)
        .unwrap_err()
        .to_string()
        .starts_with("duplicate key \"k500\""));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        check_json(&deep).map_err(|e| e.to_string()),
        serde_json::from_str::<serde_json::Value>(&deep)
            .map(drop)
            .map_err(|e| e.to_string())
    );
}

/// The first, char-by-char minifier: the faster one must give the same output.
fn reference_minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[test]
fn minify_is_the_reference_minify() {
    for json in [
        "",
        " { \"a\" : [ 1 ,\t2 ] ,\r\n \"b\\\"c\" : \"x y\" } ",
        "{\"é\": \"\\é ü \",\u{a0}\"k\":\u{2003}1\u{3000}}",
        "\"unterminated \\",
        "\"ends in escape\\",
        "[\"a\\\\\", \"b\"]\u{b}\u{c}\u{85}x",
    ] {
        assert_eq!(minify_json(json), reference_minify(json), "{json:?}");
    }
}

/// Long strings (passed over eight bytes at a time) with quotes, escapes and multi-byte
/// characters at every position.
#[test]
fn minify_is_the_reference_minify_for_long_strings() {
    for special in [
        "\\\"", "\\\\", "\\n", "\\u00e9", "é", "\\é", " ", "\u{3000}",
    ] {
        for len in 0..20 {
            for at in 0..=len {
                let mut text = "x".repeat(len);
                text.insert_str(at, special);
                for json in [
                    format!("{{ \"{text}\" : [ \"{text}\" ,\n\"{text}\" ] }}"),
                    format!("\"{text}"),
                    format!("[ \"{text}\\"),
                ] {
                    assert_eq!(minify_json(&json), reference_minify(&json), "{json:?}");
                }
            }
        }
    }
}

#[test]
fn minify_keeps_strings_and_key_order() {
    assert_eq!(
        minify_json("{\"z\": 1,\n \"a\": \"x y \\\" {\\n}\" , \"b\" : [ 1 , 2 ] }"),
        r#"{"z":1,"a":"x y \" {\n}","b":[1,2]}"#
    );
}
