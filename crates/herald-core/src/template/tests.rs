//! The template engine against handlebars itself: the direct path gives its output, errors
//! carry their position, the context keeps its shape.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use super::*;
use crate::{CanaryFacts, FlaggerEvent};

fn render(source: &str) -> Result<String, TemplateError> {
    let mut engine = TemplateEngine::new();
    let id = engine.compile(source)?;
    let mut ctx = event_context(&sample_event(), "prod-eu", None);
    set_delivery(&mut ctx, "default/team", "slack");
    engine.render(id, &ctx)
}

#[test]
fn defaults_give_flaggers_message_with_the_cluster() {
    assert_eq!(render(DEFAULT_TITLE).unwrap(), "[prod-eu] podinfo.default");
    assert_eq!(
        render(DEFAULT_TEXT).unwrap(),
        "New revision detected! Scaling up podinfo.default"
    );
}

#[test]
fn every_variable_is_available() {
    let out = render(
        "{{name}}|{{namespace}}|{{target}}|{{phase}}|{{eventType}}|{{timestamp}}|{{time}}|{{checksum}}|{{severity}}|{{cluster}}|{{metadata.eventType}}|{{policy}}|{{receiver}}",
    )
    .unwrap();
    assert_eq!(
        out,
        "podinfo|default|podinfo.default|Progressing|Normal|1578607635167|2020-01-09T22:07:15.167Z|5d8f8f7b9c|info|prod-eu|Normal|default/team|slack"
    );
}

#[test]
fn canary_facts_when_known() {
    let mut engine = TemplateEngine::new();
    let id = engine
        .compile(
            "{{#if canary}}weight {{canary.weight}}, {{canary.labels.app}}{{else}}no canary{{/if}}",
        )
        .unwrap();
    let known = event_context(&sample_event(), "", Some(&sample_canary()));
    assert_eq!(engine.render(id, &known).unwrap(), "weight 10, podinfo");
    let unknown = event_context(&sample_event(), "", None);
    assert_eq!(engine.render(id, &unknown).unwrap(), "no canary");
}

#[test]
fn helpers() {
    assert_eq!(
        render("{{upper name}} {{lower phase}}").unwrap(),
        "PODINFO progressing"
    );
    assert_eq!(render("{{truncate message 12}}").unwrap(), "New revisio…");
    assert_eq!(render("{{truncate name 50}}").unwrap(), "podinfo");
    assert_eq!(
        render("{{json message}}").unwrap(),
        r#""New revision detected! Scaling up podinfo.default""#
    );
    assert_eq!(
        render("{{default metadata.owner \"nobody\"}}").unwrap(),
        "nobody"
    );
    assert_eq!(render("{{default name \"x\"}}").unwrap(), "podinfo");
    assert_eq!(
        render("{{#if (eq phase \"Progressing\")}}yes{{else}}no{{/if}}").unwrap(),
        "yes"
    );
}

#[test]
fn no_html_escaping() {
    assert_eq!(
        render("<{{message}}> & \"{{name}}\"").unwrap(),
        "<New revision detected! Scaling up podinfo.default> & \"podinfo\""
    );
}

#[test]
fn misspelt_variable_is_an_error_with_position() {
    let err = render("Canary {{name}}\n  moved to {{phsae}}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 12: variable \"phsae\" not found"
    );
}

#[test]
fn syntax_error_has_position() {
    let err = render("ok\n{{name").unwrap_err();
    assert_eq!((err.line, err.column), (Some(2), Some(7)));
    assert!(err.to_string().starts_with("line 2, column 7: "), "{err}");
}

/// Not handlebars' list of every grammar rule it expected at the end of the text.
#[test]
fn an_unclosed_block_is_named_with_where_it_opened() {
    let err = render("ok\n  {{#if name}}unclosed").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unclosed {{#if}} block opened at line 2, column 3"
    );
    let err = render("{{#each xs}}{{#if y}}z{{/if}}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unclosed {{#each}} block opened at line 1, column 1"
    );
    // A syntax error before the end is reported where it is, as handlebars found it.
    let err = render("{{#if name}}{{ }}").unwrap_err();
    assert!(err.to_string().starts_with("line 1, column 16: "), "{err}");
}

/// The context as it was first written (`json!` wrapped by `Context::wraps`): the
/// hand-built one must stay identical to it.
fn reference_context(event: &FlaggerEvent, cluster: &str, canary: Option<&CanaryFacts>) -> Value {
    let ms = event.timestamp_ms();
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    let metadata: Map<String, Value> = event
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "name": event.name,
        "namespace": event.namespace,
        "target": format!("{}.{}", event.name, event.namespace),
        "phase": event.phase,
        "message": event.message(),
        "eventType": event.event_type().as_str(),
        "timestamp": ms.to_string(),
        "time": time,
        "checksum": event.checksum,
        "severity": event.severity().as_str(),
        "cluster": cluster,
        "metadata": metadata,
        "canary": canary,
        "policy": "",
        "receiver": "",
    })
}

#[test]
fn context_matches_the_reference() {
    let with_checksum = sample_event();
    let mut without = FlaggerEvent::new(
        "a",
        "b",
        "Failed",
        "Canary failed!",
        herald_api::EventType::Warning,
        0,
    );
    without.metadata.insert("cluster".into(), "x".into());
    for event in [&with_checksum, &without] {
        for canary in [None, Some(&sample_canary())] {
            for cluster in ["", "prod-eu"] {
                let mut built = event_context(event, cluster, canary);
                assert_eq!(built.data(), &reference_context(event, cluster, canary));
                set_delivery(&mut built, "ns/p", "r");
                set_delivery(&mut built, "ns/policy", "receiver");
                assert_eq!(built.data()["policy"], "ns/policy");
                assert_eq!(built.data()["receiver"], "receiver");
            }
        }
    }
}

/// Templates rendered without handlebars give exactly what handlebars gives, for events
/// with and without checksum, cluster, odd characters and empty values.
#[test]
fn direct_rendering_is_handlebars_rendering() {
    let direct = [
        DEFAULT_TITLE,
        DEFAULT_TEXT,
        "",
        "plain text, no variables",
        "{{name}}|{{namespace}}|{{target}}|{{phase}}|{{eventType}}|{{timestamp}}|{{time}}|{{checksum}}|{{severity}}|{{cluster}}|{{policy}}|{{receiver}}|{{message}}",
        "{{{name}}} {{{message}}}",
        "{{#if checksum}}rev {{checksum}}{{else}}no revision{{/if}}",
        "{{#unless cluster}}no cluster{{else}}{{cluster}}{{/unless}}",
        "{{#if cluster}}a{{else if checksum}}b{{else}}c{{/if}}",
        "{{#if name}}{{#if cluster}}[{{cluster}}]{{/if}} {{name}}{{/if}}",
        "{\"canary\": {{json target}}, \"phase\": {{json phase}}, \"severity\": {{json severity}},\n \"text\": {{json message}}, \"at\": {{json time}}, \"revision\": {{json checksum}}}",
        "{{upper name}} {{lower phase}} {{upper cluster}}",
        "{{#if cluster}}[{{cluster}}] {{/if}}{{upper name}} in {{namespace}}",
        "{{message}} ({{phase}}, {{time}})",
        "  {{~name~}}  -  {{~namespace}}\n",
        "{{#if cluster}}\n  {{cluster}}\n{{/if}}\n{{name}}\n",
        "a {{! a comment }} b {{!-- another --}} c",
        "\\{{name}} {{name}}",
        "<{{message}}> & \"{{name}}\"",
        "{{{json message}}} {{{upper name}}} {{{lower phase}}} {{{checksum}}} {{{json checksum}}}",
        "<!here> [{{name}}](https://x/{{{name}}}) {{json message}} {{upper message}} {{lower message}}",
    ];
    let handlebars_only = [
        "{{metadata.eventType}}",
        "{{canary.weight}}",
        "{{#if canary}}x{{/if}}",
        "{{this.name}}",
        "{{upper checksum}}",
        "{{truncate message 12}}",
        "{{default checksum \"none\"}}",
        "{{#each metadata}}{{@key}}{{/each}}",
        "{{#if (eq phase \"Failed\")}}x{{/if}}",
        "{{#with metadata}}{{eventType}}{{/with}}",
        "{{lookup metadata \"eventType\"}}",
        "{{#if cluster includeZero=true}}x{{/if}}",
        "{{json \"literal\"}}",
        "{{{metadata.eventType}}} {{metadata.eventType}}",
    ];
    let mut engine = TemplateEngine::new();
    let mut events = vec![
        sample_event(),
        FlaggerEvent::new(
            "p\u{e9}-\"q\"",
            "ns\n",
            "Failed",
            "Rolling back \u{1F680} <b>\\ \"quoted\"",
            herald_api::EventType::Warning,
            0,
        ),
        FlaggerEvent::new(
            "a",
            "b",
            "Paused",
            "",
            herald_api::EventType::Normal,
            1_764_072_000_100,
        ),
        FlaggerEvent::new(
            "@all",
            "<!channel>",
            "<b>&\"",
            "<@U123> <http://evil.example|approve> @here [click](http://evil) <a href=x> *b* _i_ `c` \\",
            herald_api::EventType::Warning,
            1,
        ),
    ];
    events[2].metadata.insert("x".into(), "y".into());
    events[3]
        .metadata
        .insert("eventType".into(), "<@everyone> [x](y)".into());
    for (sources, expect_direct) in [(&direct[..], true), (&handlebars_only[..], false)] {
        for source in sources {
            let id = engine.compile(source).unwrap();
            assert_eq!(engine.is_direct(id), expect_direct, "{source:?}");
            for event in &events {
                for cluster in ["", "prod-eu"] {
                    for (policy, receiver) in [("", ""), ("ns/policy", "r\"1")] {
                        let mut context = event_context(event, cluster, None);
                        set_delivery(&mut context, policy, receiver);
                        let vars = Vars {
                            event,
                            cluster,
                            policy,
                            receiver,
                        };
                        for markup in MARKUPS {
                            let by_handlebars = engine.render_as(id, &context, markup);
                            let formatted = Formatted::default();
                            match engine.render_direct_with(id, &vars, &formatted, markup) {
                                Some(out) => assert_eq!(
                                    Ok(out),
                                    by_handlebars,
                                    "{source:?} for {event:?}, cluster {cluster:?}, {markup:?}"
                                ),
                                None => assert!(!expect_direct),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Formatted values made by one template of an event are reused by its next ones, with
/// the same output as handlebars.
#[test]
fn formatted_values_are_shared_by_an_event_s_templates() {
    let sources = [
        "{{time}} {{target}} {{timestamp}}",
        "{{json time}}|{{json target}}|{{json timestamp}}",
        "{{#if time}}{{upper target}}{{/if}} {{lower time}} {{timestamp}}{{time}}",
    ];
    let mut engine = TemplateEngine::new();
    let ids: Vec<TemplateId> = sources.iter().map(|s| engine.compile(s).unwrap()).collect();
    for event in [
        sample_event(),
        FlaggerEvent::new("a\"", "b\n", "P", "m", herald_api::EventType::Normal, 0),
    ] {
        let formatted = Formatted::default();
        let vars = Vars {
            event: &event,
            cluster: "c",
            policy: "p",
            receiver: "r",
        };
        let mut context = event_context(&event, "c", None);
        set_delivery(&mut context, "p", "r");
        for _ in 0..2 {
            for &id in &ids {
                assert_eq!(
                    engine.render_direct_with(id, &vars, &formatted, Markup::Slack),
                    Some(engine.render_as(id, &context, Markup::Slack).unwrap())
                );
            }
        }
    }
}

const MARKUPS: [Markup; 6] = [
    Markup::Plain,
    Markup::Slack,
    Markup::RocketChat,
    Markup::Teams,
    Markup::Discord,
    Markup::Html,
];

/// Values are escaped for the markup, whether handlebars or Herald renders them; the
/// template's own text and triple-stash values are not.
#[test]
fn values_are_escaped_and_the_template_s_text_is_not() {
    let mut engine = TemplateEngine::new();
    let source = "<!here> *{{name}}* {{{name}}} {{metadata.k}}|{{{metadata.k}}} {{default metadata.none \"<x>\"}}";
    let id = engine.compile(source).unwrap();
    let direct = engine.compile("<!here> {{message}} {{{message}}}").unwrap();
    let mut event = FlaggerEvent::new(
        "<@U1>",
        "ns",
        "Failed",
        "@all <b>",
        herald_api::EventType::Warning,
        0,
    );
    event.metadata.insert("k".into(), "[a](b)".into());
    let context = event_context(&event, "", None);
    let vars = Vars {
        event: &event,
        cluster: "",
        policy: "",
        receiver: "",
    };
    let render = |markup| {
        (
            engine.render_as(id, &context, markup).unwrap(),
            engine.render_direct_with(direct, &vars, &Formatted::default(), markup),
        )
    };
    assert_eq!(
        render(Markup::Slack),
        (
            "<!here> *&lt;@U1&gt;* <@U1> [a](b)|[a](b) &lt;x&gt;".to_owned(),
            Some("<!here> @all &lt;b&gt; @all <b>".to_owned())
        )
    );
    assert_eq!(
        render(Markup::Teams),
        (
            "<!here> *\\<@U1\\>* <@U1> \\[a\\]\\(b\\)|[a](b) \\<x\\>".to_owned(),
            Some("<!here> @all \\<b\\> @all <b>".to_owned())
        )
    );
    assert_eq!(
        render(Markup::RocketChat).1,
        Some("<!here> @\u{200B}all &lt;b&gt; @all <b>".to_owned())
    );
    assert_eq!(
        render(Markup::Plain).0,
        "<!here> *<@U1>* <@U1> [a](b)|[a](b) <x>"
    );
    // The markup is only that render's: the next plain one is not escaped.
    assert_eq!(
        engine.render(direct, &context).unwrap(),
        "<!here> @all <b> @all <b>"
    );
}

#[test]
fn values_inside_json_strings_are_found() {
    assert_eq!(
        values_in_json_strings(
            r#"{"text": "{{message}}", "ok": {{json message}}, "url": "https://x/{{{name}}}?q={{ lower phase }}", "n": {{timestamp}}}"#
        ),
        ["{{message}}", "{{{name}}}", "{{ lower phase }}"]
    );
    // Blocks and comments in strings are not values; escaped quotes and braces stay in
    // the string; an escaped mustache is text.
    assert_eq!(
        values_in_json_strings(
            r#"{"a": "{{#if cluster}}x{{else}}y{{/if}}{{! note }}", "b": "q\"{{name}}\"", "c": "\{{name}}", "d": {{#if x}}"{{~name~}}"{{/if}}}"#
        ),
        ["{{name}}", "{{~name~}}"]
    );
    assert!(values_in_json_strings(r#"{"a": {{json a}}, "b": [{{json b}}]}"#).is_empty());
}

#[test]
fn identical_sources_compile_once() {
    let mut engine = TemplateEngine::new();
    let a = engine.compile("{{name}}").unwrap();
    let b = engine.compile("{{name}}").unwrap();
    assert_eq!(a, b);
    assert_eq!(engine.len(), 1);
}
