//! The template registry: each distinct source compiled once per policy generation, rendered
//! by id, through handlebars or, when the template allows it, the direct path (`direct.rs`).

use std::cell::Cell;
use std::collections::HashMap;

use handlebars::{Context, Handlebars, RenderError, RenderErrorReason, TemplateErrorReason};

use super::direct::{Direct, Formatted, Vars};
use super::helpers;
use crate::escape::Markup;
use crate::unclosed_block;

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
    /// [`Direct`]), `None` when it needs handlebars.
    direct: Vec<Option<Direct>>,
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
        helpers::register(&mut registry);
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
            .and_then(Direct::from_template);
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
    /// uses what the direct path (`direct.rs`) covers; `None` when it needs [`Self::render`].
    /// The output is the one handlebars gives (tested against it), and cannot fail.
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
        Some(direct.render(vars, formatted, markup))
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
