//! Handlebars templating: a strict registry (a misspelt variable is an error, not an empty
//! string), compiled once per policy generation, with the helpers notification authors need.

use std::collections::HashMap;

use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::{CanaryFacts, FlaggerEvent};

/// The title when a policy sets none: the canary, prefixed by the cluster when one is set.
pub const DEFAULT_TITLE: &str = "{{#if cluster}}[{{cluster}}] {{/if}}{{name}}.{{namespace}}";
/// The text when a policy sets none: Flagger's own message.
pub const DEFAULT_TEXT: &str = "{{message}}";

/// A compiled template in a [`TemplateEngine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateId(u32);

/// A template that does not compile or render, with its position in the template source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", position(*line, *column))]
pub struct TemplateError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

/// Compiles each distinct template source once and renders by id.
pub struct TemplateEngine {
    registry: Handlebars<'static>,
    names: Vec<String>,
    by_source: HashMap<String, TemplateId>,
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateEngine {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        // Output goes into JSON strings or chat markup, never HTML: no HTML escaping.
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("upper", Box::new(upper));
        registry.register_helper("lower", Box::new(lower));
        registry.register_helper("truncate", Box::new(truncate));
        registry.register_helper("json", Box::new(json_literal));
        registry.register_helper("default", Box::new(DefaultHelper));
        TemplateEngine {
            registry,
            names: Vec::new(),
            by_source: HashMap::new(),
        }
    }

    /// Compiles `source`, or returns the id of the identical template compiled before.
    pub fn compile(&mut self, source: &str) -> Result<TemplateId, TemplateError> {
        if let Some(id) = self.by_source.get(source) {
            return Ok(*id);
        }
        let id = TemplateId(self.names.len() as u32);
        let name = format!("t{}", id.0);
        self.registry
            .register_template_string(&name, source)
            .map_err(|e| {
                let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
                TemplateError {
                    line,
                    column,
                    reason: e.reason().to_string(),
                }
            })?;
        self.names.push(name);
        self.by_source.insert(source.to_owned(), id);
        Ok(id)
    }

    pub fn render(&self, id: TemplateId, context: &Context) -> Result<String, TemplateError> {
        self.registry
            .render_with_context(&self.names[id.0 as usize], context)
            .map_err(render_error)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn render_error(e: RenderError) -> TemplateError {
    let reason = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("variable {path:?} not found"),
        RenderErrorReason::MissingVariable(None) => "a variable used here is not found".to_owned(),
        other => other.to_string(),
    };
    TemplateError {
        line: e.line_no,
        column: e.column_no,
        reason,
    }
}

/// The variables every template sees. `policy` and `receiver` are filled per delivery by
/// [`set_delivery`]; `canary` is null for events received over HTTP.
pub fn event_context(event: &FlaggerEvent, cluster: &str, canary: Option<&CanaryFacts>) -> Context {
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
    Context::wraps(json!({
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
    }))
    .expect("a JSON object is a valid context")
}

/// Sets the `policy` and `receiver` variables in a context built by [`event_context`].
pub fn set_delivery(context: &mut Context, policy: &str, receiver: &str) {
    if let Value::Object(map) = context.data_mut() {
        map.insert("policy".to_owned(), Value::String(policy.to_owned()));
        map.insert("receiver".to_owned(), Value::String(receiver.to_owned()));
    }
}

/// The event used to check templates at load time, so a misspelt variable is reported when
/// the policy is applied rather than when the first rollout fails.
pub fn sample_event() -> FlaggerEvent {
    FlaggerEvent::new(
        "podinfo",
        "default",
        "Progressing",
        "New revision detected! Scaling up podinfo.default",
        herald_api::EventType::Normal,
        1_578_607_635_167,
    )
    .with_checksum("5d8f8f7b9c")
}

/// The canary facts used to check templates at load time.
pub fn sample_canary() -> CanaryFacts {
    CanaryFacts {
        labels: [("app".to_owned(), "podinfo".to_owned())].into(),
        weight: Some(10),
        failed_checks: Some(0),
        iterations: Some(1),
        revision: Some("5d8f8f7b9c".to_owned()),
    }
}

handlebars_helper!(upper: |s: str| s.to_uppercase());
handlebars_helper!(lower: |s: str| s.to_lowercase());
handlebars_helper!(truncate: |s: str, max: u64| {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
});
handlebars_helper!(json_literal: |v: Json| serde_json::to_string(v).unwrap_or_default());

/// `{{default value fallback}}`: the fallback when `value` is missing, null or empty. Unlike
/// other helpers it accepts a missing `value` in strict mode: that is its purpose.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fallback = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let empty = value.is_value_missing()
            || matches!(value.value(), Value::Null)
            || value.value().as_str().is_some_and(str::is_empty);
        let chosen = if empty {
            fallback.value()
        } else {
            value.value()
        };
        Ok(ScopedJson::Derived(chosen.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let id = engine.compile("{{#if canary}}weight {{canary.weight}}, {{canary.labels.app}}{{else}}no canary{{/if}}").unwrap();
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
        let err = render("ok\n{{#if name}}unclosed").unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(21)));
        assert!(err.to_string().starts_with("line 2, column 21: "), "{err}");
    }

    #[test]
    fn identical_sources_compile_once() {
        let mut engine = TemplateEngine::new();
        let a = engine.compile("{{name}}").unwrap();
        let b = engine.compile("{{name}}").unwrap();
        assert_eq!(a, b);
        assert_eq!(engine.len(), 1);
    }
}
