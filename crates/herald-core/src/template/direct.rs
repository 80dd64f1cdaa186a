//! The fast path: templates that only write the event's plain variables, `json`, `upper`,
//! `lower`, `if` and `unless` are rendered straight from the event, without building a
//! handlebars context, with exactly the output handlebars gives (the tests compare the two).
//! Most policies use only such templates, and rendering is on every event's path.

use std::cell::OnceCell;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};

use super::context::rfc3339;
use crate::escape::Markup;
use crate::event::Severity;
use crate::FlaggerEvent;

/// A template rendered without handlebars.
pub(super) struct Direct {
    pieces: Vec<Piece>,
    /// The length of its text pieces and the number of its variables, to size the output.
    text_len: usize,
    vars: usize,
}

impl Direct {
    /// The template's pieces, or `None` when it uses anything [`Piece`] does not cover.
    pub(super) fn from_template(template: &Template) -> Option<Direct> {
        let pieces = direct_pieces(template)?;
        Some(Direct {
            text_len: text_len(&pieces),
            vars: var_count(&pieces),
            pieces,
        })
    }

    /// The rendered template: what handlebars gives for the same event, delivery and markup.
    pub(super) fn render(&self, vars: &Vars<'_>, formatted: &Formatted, markup: Markup) -> String {
        // The template's own text plus room for typical values: the output is rarely grown.
        let mut out = String::with_capacity(self.text_len + 64 + 32 * self.vars);
        render_pieces(&self.pieces, vars, formatted, markup, &mut out);
        out
    }
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

/// The variables of [`event_context`](super::event_context) that are present in every context, with a value that is
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
