//! The helpers Herald adds to handlebars' built-ins (`if`, `unless`, `each`, `with`, `eq`...):
//! what notification authors need to shape a message, and nothing that reaches outside the
//! event.

use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

/// Registers `upper`, `lower`, `truncate`, `json` and `default`.
pub(super) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("upper", Box::new(upper));
    registry.register_helper("lower", Box::new(lower));
    registry.register_helper("truncate", Box::new(truncate));
    registry.register_helper("json", Box::new(json_literal));
    registry.register_helper("default", Box::new(DefaultHelper));
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
