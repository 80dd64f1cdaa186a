//! Handlebars templating: a strict registry (a misspelt variable is an error, not an empty
//! string), compiled once per policy generation, with the helpers notification authors need.
//!
//! - `engine`: the registry, compiling each distinct source once and rendering by id;
//! - `context`: the variables every template sees, and the sample event templates are
//!   checked against at load time;
//! - `direct`: the fast path, rendering the common templates straight from the event with
//!   the output handlebars would give;
//! - `helpers`: `upper`, `lower`, `truncate`, `json` and `default`;
//! - `json_strings`: the lint for values placed unescaped inside a JSON body's strings.

mod context;
mod direct;
mod engine;
mod helpers;
mod json_strings;
#[cfg(test)]
mod tests;

pub use crate::escape::Markup;
pub(crate) use context::rfc3339;
pub use context::{event_context, sample_canary, sample_event, set_delivery};
pub use direct::{Formatted, Vars};
pub use engine::{TemplateEngine, TemplateError, TemplateId};
pub use json_strings::values_in_json_strings;

/// The title when a policy sets none: the canary, prefixed by the cluster when one is set.
pub const DEFAULT_TITLE: &str = "{{#if cluster}}[{{cluster}}] {{/if}}{{name}}.{{namespace}}";
/// The text when a policy sets none: Flagger's own message.
pub const DEFAULT_TEXT: &str = "{{message}}";
