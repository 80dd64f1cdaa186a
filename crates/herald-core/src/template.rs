//! Handlebars templating: a strict registry (a misspelt variable is an error, not an empty
//! string), compiled once per policy generation, with the helpers notification authors need.

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, Path, PathSeg, RenderContext,
    RenderError, RenderErrorReason, ScopedJson, TemplateErrorReason,
};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

pub use crate::escape::Markup;
use crate::event::Severity;
use crate::unclosed_block;
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
    /// Per template: its pieces when it can be rendered straight from the event (see
    /// [`Piece`]), `None` when it needs handlebars.
    direct: Vec<Option<Direct>>,
}

/// A template rendered without handlebars.
struct Direct {
    pieces: Vec<Piece>,
    /// The length of its text pieces and the number of its variables, to size the output.
    text_len: usize,
    vars: usize,
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
        // Values are escaped for the markup of the receiver being rendered for (see
        // [`Markup`]); `{{{value}}}` is written as it is.
        registry.register_escape_fn(|value| MARKUP.get().escape(value).into_owned());
        registry.register_helper("upper", Box::new(upper));
        registry.register_helper("lower", Box::new(lower));
        registry.register_helper("truncate", Box::new(truncate));
        registry.register_helper("json", Box::new(json_literal));
        registry.register_helper("default", Box::new(DefaultHelper));
        TemplateEngine {
            registry,
            names: Vec::new(),
            by_source: HashMap::new(),
            direct: Vec::new(),
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
            .map_err(|e| compile_error(source, &e))?;
        let direct = self
            .registry
            .get_template(&name)
            .and_then(direct_pieces)
            .map(|pieces| Direct {
                text_len: text_len(&pieces),
                vars: var_count(&pieces),
                pieces,
            });
        self.direct.push(direct);
        self.names.push(name);
        self.by_source.insert(source.to_owned(), id);
        Ok(id)
    }

    /// Renders with values as they are ([`Markup::Plain`]).
    pub fn render(&self, id: TemplateId, context: &Context) -> Result<String, TemplateError> {
        self.render_as(id, context, Markup::Plain)
    }

    /// Renders with the values inserted escaped for `markup`; the template's own text and
    /// triple-stash values (`{{{message}}}`) are written as they are.
    pub fn render_as(
        &self,
        id: TemplateId,
        context: &Context,
        markup: Markup,
    ) -> Result<String, TemplateError> {
        // Handlebars' escape function takes no argument but the value: it reads the markup
        // from here, set for the length of this (synchronous) render.
        let previous = MARKUP.replace(markup);
        let out = self
            .registry
            .render_with_context(&self.names[id.0 as usize], context)
            .map_err(render_error);
        MARKUP.set(previous);
        out
    }

    /// Renders straight from the event, without a handlebars context, when the template only
    /// uses what [`Piece`] covers; `None` when it needs [`Self::render`]. The output is the
    /// one handlebars gives (tested against it), and cannot fail.
    pub fn render_direct(&self, id: TemplateId, vars: &Vars<'_>) -> Option<String> {
        self.render_direct_with(id, vars, &Formatted::default(), Markup::Plain)
    }

    /// [`Self::render_direct`], with the event's formatted values (see [`Formatted`]) kept
    /// in `formatted` for the event's other templates.
    pub fn render_direct_with(
        &self,
        id: TemplateId,
        vars: &Vars<'_>,
        formatted: &Formatted,
        markup: Markup,
    ) -> Option<String> {
        let direct = self.direct[id.0 as usize].as_ref()?;
        // The template's own text plus room for typical values: the output is rarely grown.
        let mut out = String::with_capacity(direct.text_len + 64 + 32 * direct.vars);
        render_pieces(&direct.pieces, vars, formatted, markup, &mut out);
        Some(out)
    }

    /// Whether [`Self::render_direct`] renders this template.
    pub fn is_direct(&self, id: TemplateId) -> bool {
        self.direct[id.0 as usize].is_some()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

thread_local! {
    /// The markup of the render under way on this thread (see [`TemplateEngine::render_as`]).
    static MARKUP: Cell<Markup> = const { Cell::new(Markup::Plain) };
}

/// A compile error as Herald reports it. Handlebars reports an unclosed block as a syntax
/// error at the very end listing every grammar rule it expected there: name the block and
/// where it was opened instead.
fn compile_error(source: &str, e: &handlebars::TemplateError) -> TemplateError {
    let at_end = e.pos() == Some(unclosed_block::end_position(source));
    let syntax = matches!(e.reason(), TemplateErrorReason::InvalidSyntax(_));
    if let Some(block) = unclosed_block::unclosed_block(source).filter(|_| at_end && syntax) {
        return TemplateError {
            // The position is in the reason: "opened at" says what it is.
            line: None,
            column: None,
            reason: format!(
                "unclosed {{{{#{}}}}} block opened at line {}, column {}",
                block.name, block.line, block.column
            ),
        };
    }
    let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
    TemplateError {
        line,
        column,
        reason: e.reason().to_string(),
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
///
/// Built once per event on the hot path: the map is assembled directly (no `json!` and no
/// `Context::wraps`, which would serialise the finished value into a second copy).
pub fn event_context(event: &FlaggerEvent, cluster: &str, canary: Option<&CanaryFacts>) -> Context {
    let ms = event.timestamp_ms();
    let time = rfc3339(ms);
    let metadata: Map<String, Value> = event
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let string = |s: &str| Value::String(s.to_owned());
    let mut map = Map::new();
    map.insert("name".to_owned(), string(&event.name));
    map.insert("namespace".to_owned(), string(&event.namespace));
    let mut target = String::with_capacity(event.name.len() + 1 + event.namespace.len());
    target.push_str(&event.name);
    target.push('.');
    target.push_str(&event.namespace);
    map.insert("target".to_owned(), Value::String(target));
    map.insert("phase".to_owned(), string(&event.phase));
    map.insert("message".to_owned(), string(event.message()));
    map.insert("eventType".to_owned(), string(event.event_type().as_str()));
    map.insert("timestamp".to_owned(), Value::String(ms.to_string()));
    map.insert("time".to_owned(), Value::String(time));
    map.insert(
        "checksum".to_owned(),
        event.checksum.as_deref().map_or(Value::Null, string),
    );
    map.insert("severity".to_owned(), string(event.severity().as_str()));
    map.insert("cluster".to_owned(), string(cluster));
    map.insert("metadata".to_owned(), Value::Object(metadata));
    map.insert(
        "canary".to_owned(),
        serde_json::to_value(canary).expect("canary facts serialise"),
    );
    map.insert("policy".to_owned(), string(""));
    map.insert("receiver".to_owned(), string(""));
    Context::from(Value::Object(map))
}

/// The `time` variable: the event's timestamp in RFC 3339, empty when out of range.
pub(crate) fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// What a template rendered without handlebars reads: the event and the delivery.
#[derive(Clone, Copy, Debug)]
pub struct Vars<'a> {
    pub event: &'a FlaggerEvent,
    pub cluster: &'a str,
    pub policy: &'a str,
    pub receiver: &'a str,
}

/// The event's variables that are formatted or worked out rather than stored (`target`,
/// `timestamp`, `time`, `severity`), for one event: each is made the first time one of the
/// event's templates (or payloads) uses it and then shared by the others.
#[derive(Debug, Default)]
pub struct Formatted {
    target: OnceCell<String>,
    timestamp: OnceCell<String>,
    time: OnceCell<String>,
    severity: OnceCell<Severity>,
}

impl Formatted {
    /// The event's severity, worked out from its message once (it is needed by the `severity`
    /// variable and by most receivers' payloads).
    pub fn severity(&self, event: &FlaggerEvent) -> Severity {
        *self.severity.get_or_init(|| event.severity())
    }
}

/// The variables of [`event_context`] that are present in every context, with a value that is
/// a string (`checksum`: a string or null).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Name,
    Namespace,
    Target,
    Phase,
    Message,
    EventType,
    Timestamp,
    Time,
    Checksum,
    Severity,
    Cluster,
    Policy,
    Receiver,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "name" => Var::Name,
            "namespace" => Var::Namespace,
            "target" => Var::Target,
            "phase" => Var::Phase,
            "message" => Var::Message,
            "eventType" => Var::EventType,
            "timestamp" => Var::Timestamp,
            "time" => Var::Time,
            "checksum" => Var::Checksum,
            "severity" => Var::Severity,
            "cluster" => Var::Cluster,
            "policy" => Var::Policy,
            "receiver" => Var::Receiver,
            _ => return None,
        })
    }
}

impl<'a> Vars<'a> {
    /// The variable's value as the context holds it; `None` for null. Formatted values are
    /// made once, in `formatted`.
    fn get<'b>(&self, var: Var, formatted: &'b Formatted) -> Option<&'b str>
    where
        'a: 'b,
    {
        let event = self.event;
        Some(match var {
            Var::Name => event.name.as_str(),
            Var::Namespace => event.namespace.as_str(),
            Var::Target => formatted
                .target
                .get_or_init(|| format!("{}.{}", event.name, event.namespace)),
            Var::Phase => event.phase.as_str(),
            Var::Message => event.message(),
            Var::EventType => event.event_type().as_str(),
            Var::Timestamp => formatted
                .timestamp
                .get_or_init(|| event.timestamp_ms().to_string()),
            Var::Time => formatted.time.get_or_init(|| rfc3339(event.timestamp_ms())),
            Var::Checksum => return event.checksum.as_deref(),
            Var::Severity => formatted.severity(event).as_str(),
            Var::Cluster => self.cluster,
            Var::Policy => self.policy,
            Var::Receiver => self.receiver,
        })
    }
}

/// A part of a template that Herald renders without handlebars, exactly as handlebars (in
/// strict mode, without HTML escaping, with Herald's helpers) would: text, `{{var}}`,
/// `{{json var}}`, `{{upper var}}`, `{{lower var}}`, and `{{#if var}}`/`{{#unless var}}` with
/// `{{else}}`, where `var` is one of [`Var`]. Handlebars resolves whitespace control and
/// standalone lines when it compiles, so the pieces come from its compiled template. Anything
/// else (other variables, other helpers, partials, `each`, `with`, paths, literals) makes the
/// whole template go through handlebars.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    /// A value, escaped for the markup unless `raw` (written `{{{...}}}`).
    Value {
        var: Var,
        form: Form,
        raw: bool,
    },
    If {
        var: Var,
        negate: bool,
        then: Vec<Piece>,
        otherwise: Vec<Piece>,
    },
}

fn direct_pieces(template: &Template) -> Option<Vec<Piece>> {
    let mut pieces = Vec::with_capacity(template.elements.len());
    for element in &template.elements {
        match element {
            TemplateElement::RawString(text) => pieces.push(Piece::Text(text.clone())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(helper) => pieces.push(direct_expression(helper, false)?),
            TemplateElement::HtmlExpression(helper) => {
                pieces.push(direct_expression(helper, true)?)
            }
            TemplateElement::HelperBlock(helper) => pieces.push(direct_block(helper)?),
            _ => return None,
        }
    }
    Some(pieces)
}

/// How a value is written: `{{var}}`, `{{json var}}`, `{{upper var}}`, `{{lower var}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Plain,
    Json,
    Upper,
    Lower,
}

/// `{{var}}`, or a value helper with one variable; `raw` for the triple-stash form.
fn direct_expression(helper: &HelperTemplate, raw: bool) -> Option<Piece> {
    if helper.block
        || helper.block_param.is_some()
        || helper.template.is_some()
        || helper.inverse.is_some()
        || !helper.hash.is_empty()
    {
        return None;
    }
    let name = simple_name(&helper.name)?;
    let (var, form) = match helper.params.as_slice() {
        // No helper is named like a variable, so handlebars looks the variable up.
        [] => (Var::parse(name)?, Form::Plain),
        [param] => {
            let var = Var::parse(simple_name(param)?)?;
            let form = match name {
                "json" => Form::Json,
                // `upper` and `lower` take a string: checksum may be null (an error).
                "upper" if var != Var::Checksum => Form::Upper,
                "lower" if var != Var::Checksum => Form::Lower,
                _ => return None,
            };
            (var, form)
        }
        _ => return None,
    };
    Some(Piece::Value { var, form, raw })
}

/// `{{#if var}}...{{else}}...{{/if}}` and `{{#unless var}}`.
fn direct_block(helper: &HelperTemplate) -> Option<Piece> {
    if !helper.block || helper.block_param.is_some() || !helper.hash.is_empty() {
        return None;
    }
    let negate = match simple_name(&helper.name)? {
        "if" => false,
        "unless" => true,
        _ => return None,
    };
    let [param] = helper.params.as_slice() else {
        return None;
    };
    let var = Var::parse(simple_name(param)?)?;
    let part = |template: &Option<Template>| match template {
        Some(template) => direct_pieces(template),
        None => Some(Vec::new()),
    };
    Some(Piece::If {
        var,
        negate,
        then: part(&helper.template)?,
        otherwise: part(&helper.inverse)?,
    })
}

/// A bare identifier (`name`, not `this.name`, `../name`, `[name]` or `@root.name`).
fn simple_name(parameter: &Parameter) -> Option<&str> {
    match parameter {
        Parameter::Name(name) => Some(name),
        Parameter::Path(Path::Relative((segments, raw))) => match segments.as_slice() {
            [PathSeg::Named(name)] if name == raw => Some(name),
            _ => None,
        },
        _ => None,
    }
}

/// The length of the text pieces, branches included.
fn text_len(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.len(),
            Piece::If {
                then, otherwise, ..
            } => text_len(then).max(text_len(otherwise)),
            _ => 0,
        })
        .sum()
}

/// The number of variables written (not those only tested by `if`), branches included.
fn var_count(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(_) => 0,
            Piece::If {
                then, otherwise, ..
            } => var_count(then).max(var_count(otherwise)),
            _ => 1,
        })
        .sum()
}

fn render_pieces(
    pieces: &[Piece],
    vars: &Vars<'_>,
    formatted: &Formatted,
    markup: Markup,
    out: &mut String,
) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Value { var, form, raw } => {
                let markup = if *raw { Markup::Plain } else { markup };
                let value = vars.get(*var, formatted);
                match form {
                    // Null renders as nothing.
                    Form::Plain => markup.push_escaped(out, value.unwrap_or_default()),
                    // As `serde_json::to_string` of the string (what the `json` helper does),
                    // written in place when there is nothing to escape.
                    Form::Json if markup == Markup::Plain => match value {
                        Some(value) => crate::receivers::json::push_str(out, value),
                        None => out.push_str("null"),
                    },
                    Form::Json => {
                        let mut json = String::new();
                        match value {
                            Some(value) => crate::receivers::json::push_str(&mut json, value),
                            None => json.push_str("null"),
                        }
                        markup.push_escaped(out, &json);
                    }
                    Form::Upper => {
                        markup.push_escaped(out, &value.unwrap_or_default().to_uppercase())
                    }
                    Form::Lower => {
                        markup.push_escaped(out, &value.unwrap_or_default().to_lowercase())
                    }
                }
            }
            Piece::If {
                var,
                negate,
                then,
                otherwise,
            } => {
                // Handlebars truthiness: a non-empty string (null is false).
                let truthy = vars
                    .get(*var, formatted)
                    .is_some_and(|value| !value.is_empty());
                let branch = if truthy != *negate { then } else { otherwise };
                render_pieces(branch, vars, formatted, markup, out);
            }
        }
    }
}

/// Sets the `policy` and `receiver` variables in a context built by [`event_context`],
/// reusing the strings already there.
pub fn set_delivery(context: &mut Context, policy: &str, receiver: &str) {
    if let Value::Object(map) = context.data_mut() {
        set_string(map, "policy", policy);
        set_string(map, "receiver", receiver);
    }
}

fn set_string(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(Value::String(s)) => {
            s.clear();
            s.push_str(value);
        }
        _ => {
            map.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
}

/// The value expressions (`{{message}}`, `{{{name}}}`, `{{json x}}`...) that a JSON body
/// template puts inside a JSON string, as written in the template. Inside quotes a value is
/// not JSON-escaped: one with a quote breaks the body, or adds keys to it; `{{json value}}`
/// in place of the quoted string is safe. Blocks, `else` and comments are not values.
pub fn values_in_json_strings(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{{") {
            // `\{{` is handlebars' escaped mustache: literal braces (handlebars drops the
            // backslash), unless the backslash is itself escaped.
            if i > 0 && bytes[i - 1] == b'\\' && !(i > 1 && bytes[i - 2] == b'\\') {
                escaped = false;
                i += 2;
                continue;
            }
            let triple = bytes[i..].starts_with(b"{{{");
            let close: &str = if triple { "}}}" } else { "}}" };
            let end = source[i..]
                .find(close)
                .map_or(bytes.len(), |at| i + at + close.len());
            let tag = &source[i..end];
            let inner = tag
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim_matches('~')
                .trim();
            let not_a_value = inner.is_empty()
                || inner.starts_with(['!', '#', '/', '^', '>', '*'])
                || inner == "else"
                || inner.starts_with("else ");
            if in_string && !not_a_value {
                found.push(tag.to_owned());
            }
            i = end;
            escaped = false;
            continue;
        }
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        i += 1;
    }
    found
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
    fn reference_context(
        event: &FlaggerEvent,
        cluster: &str,
        canary: Option<&CanaryFacts>,
    ) -> Value {
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
}
