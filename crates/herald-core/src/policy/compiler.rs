//! What compiling a policy's receivers needs: its Secrets, the template engine, and where
//! problems go. Receiver kinds compile their settings with it.

use herald_api::{AddressRef, SecretKeyRef};

use super::{is_http_url, template_problem, Problem, Reason};
use crate::secret::{Redacted, SecretError, SecretSource};
use crate::template::{self, TemplateEngine, TemplateId};

/// Compiles the parts of one policy, collecting every problem found.
pub struct Compiler<'a> {
    pub(super) secrets: &'a dyn SecretSource,
    pub(super) engine: &'a mut TemplateEngine,
    /// The cluster name templates see.
    pub(super) cluster: &'a str,
    /// Where the policy's Secrets are read.
    pub(super) secret_namespace: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Compiler<'_> {
    /// Records a problem of the spec at `path`.
    pub fn invalid(&mut self, path: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(Reason::InvalidSpec, path, message));
    }

    /// A receiver's Web API base: its `apiUrl` if set, else the service's own, without a
    /// trailing `/`. Not an http(s) URL: a problem at `<path>.apiUrl`.
    pub fn api_url<'s>(&mut self, given: Option<&'s str>, default: &'s str, path: &str) -> &'s str {
        let api = given.unwrap_or(default).trim_end_matches('/');
        if !crate::policy::is_http_url(api) {
            self.invalid(
                &format!("{path}.apiUrl"),
                "must be an http:// or https:// URL with a host",
            );
        }
        api
    }

    /// How many problems have been found so far.
    pub fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// Compiles a template and renders it once against a sample event, so that a misspelt
    /// variable is reported now, with its line and column.
    pub fn checked_template(&mut self, source: &str, path: &str) -> Option<TemplateId> {
        let checked = self.engine.compile(source).and_then(|id| {
            let context = template::event_context(
                &template::sample_event(),
                self.cluster,
                Some(&template::sample_canary()),
            );
            self.engine.render(id, &context).map(|_| id)
        });
        match checked {
            Ok(id) => Some(id),
            Err(e) => {
                self.problems.push(template_problem(path, &e));
                None
            }
        }
    }

    /// A template that must render one JSON document (a webhook's body).
    pub fn json_template(&mut self, source: &str, path: &str) -> Option<TemplateId> {
        let id = self.checked_template(source, path)?;
        let context = template::event_context(
            &template::sample_event(),
            self.cluster,
            Some(&template::sample_canary()),
        );
        let rendered = self.engine.render(id, &context).ok()?;
        if let Err(e) = super::json::check_json(&rendered) {
            self.problems.push(Problem::new(
                Reason::TemplateError,
                path,
                format!(
                    "renders invalid JSON (line {}, column {} of the output: {}); insert values with {{{{json ...}}}}",
                    e.line(),
                    e.column(),
                    crate::json_error_reason(&e)
                ),
            ));
            return None;
        }
        Some(id)
    }

    /// A token sent in an `Authorization` header (key `token` unless the reference names
    /// one): it must be one non-empty line of visible ASCII.
    pub fn token_value(&mut self, secret: &SecretKeyRef, path: &str) -> Option<Redacted> {
        let token = self.secret_value(secret, herald_api::DEFAULT_TOKEN_KEY, path)?;
        if token.expose().is_empty() || !crate::receivers::http::is_header_value(token.expose()) {
            self.invalid(path, "the token must be one line of visible ASCII");
            return None;
        }
        Some(token)
    }

    /// A value from a Secret key (`default_key` when the reference names none), without the
    /// line break `kubectl create secret --from-file` keeps at the end of a file.
    pub fn secret_value(
        &mut self,
        secret: &SecretKeyRef,
        default_key: &str,
        path: &str,
    ) -> Option<Redacted> {
        match self.secrets.secret_value(
            self.secret_namespace,
            &secret.name,
            secret.key_or(default_key),
        ) {
            Ok(value) => Some(Redacted::new(value.trim_end_matches(['\n', '\r']))),
            Err(e) => {
                let reason = match e {
                    SecretError::NotText { .. } => Reason::InvalidSpec,
                    _ => Reason::SecretNotFound,
                };
                self.problems
                    .push(Problem::new(reason, path, e.to_string()));
                None
            }
        }
    }

    /// The receiver's URL, inline or from its Secret; it must be an `http(s)://` URL.
    pub fn resolve_address(&mut self, address: AddressRef<'_>, path: &str) -> Option<Redacted> {
        let (url, field) = match address {
            AddressRef::Invalid => {
                self.invalid(path, "set exactly one of url, secretRef");
                return None;
            }
            AddressRef::Url(url) => (url.to_owned(), format!("{path}.url")),
            AddressRef::Secret(secret) => {
                let field = format!("{path}.secretRef");
                let url = self.secret_value(secret, herald_api::DEFAULT_SECRET_KEY, &field)?;
                (url.expose().to_owned(), field)
            }
        };
        if !is_http_url(&url) {
            // Never echo the value: it is a credential.
            self.invalid(&field, "must be an http:// or https:// URL with a host");
            return None;
        }
        Some(Redacted::new(url))
    }
}
