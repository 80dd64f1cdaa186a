//! `msteams`: a Workflows webhook (Adaptive Card) or a legacy Office 365 connector.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A Microsoft Teams webhook: a Workflows webhook (Adaptive Card) or a legacy Office 365
/// connector (MessageCard).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
pub struct TeamsReceiver {
    /// The endpoint URL. Anyone who can read the policy sees it: prefer `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The card format. Unset: MessageCard for a legacy Office 365 connector URL (host
    /// `*.webhook.office.com` or `outlook.office.com`), AdaptiveCard for any other URL
    /// (Workflows / Power Automate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<TeamsFormat>")]
    pub format: Option<TeamsFormat>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TeamsFormat {
    #[default]
    AdaptiveCard,
    MessageCard,
}

impl TeamsFormat {
    /// The format a Teams URL takes when `format` is unset: MessageCard for the legacy
    /// Office 365 connector hosts (`*.webhook.office.com`, `outlook.office.com`), AdaptiveCard
    /// for anything else (Workflows / Power Automate webhooks).
    pub fn detect(url: &str) -> TeamsFormat {
        let host = url_host(url);
        if host == "outlook.office.com" || host.ends_with(".webhook.office.com") {
            TeamsFormat::MessageCard
        } else {
            TeamsFormat::AdaptiveCard
        }
    }
}

/// The lower-cased host of an `http(s)://` URL, without user info, port or trailing dot;
/// empty when there is none.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or("", |(scheme, rest)| {
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            rest
        } else {
            ""
        }
    });
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal: never an Office 365 host.
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

super::url_or_secret_spec!(TeamsReceiver);

#[cfg(test)]
mod tests {
    use super::TeamsFormat;

    /// The hand-written schema of `msteams.format` names every variant.
    #[test]
    fn teams_format_schema_lists_every_variant() {
        let schema = schemars::schema_for!(TeamsFormat);
        let names: Vec<&str> = schema
            .get("enum")
            .and_then(|e| e.as_array())
            .expect("a plain enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours = crate::receivers::optional_enum::<TeamsFormat>(
            &mut schemars::SchemaGenerator::default(),
        );
        assert_eq!(ours.get("enum").unwrap(), &serde_json::json!(names));
        assert_eq!(names, ["AdaptiveCard", "MessageCard"]);
    }

    #[test]
    fn teams_format_is_detected_from_the_host() {
        for legacy in [
            "https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d",
            "https://CONTOSO.Webhook.Office.com./webhookb2/x",
            "https://outlook.office.com/webhook/a@b/IncomingWebhook/c/d",
            "https://user@outlook.office.com:443/webhook/x",
            "HTTPS://contoso.webhook.office.com",
        ] {
            assert_eq!(
                TeamsFormat::detect(legacy),
                TeamsFormat::MessageCard,
                "{legacy}"
            );
        }
        for workflows in [
            "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
            "https://default123.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/abc",
            "http://127.0.0.1:9099/teams/oncall",
            // Look-alikes are not Office 365 hosts.
            "https://webhook.office.com.example.com/x",
            "https://evilwebhook.office.com/x",
            "https://example.com/outlook.office.com/webhook",
            "https://example.com/?u=https://a.webhook.office.com",
            "https://outlook.office.com@example.com/webhook",
            "https://[::1]:8080/outlook.office.com",
            "ftp://outlook.office.com/webhook",
            "",
        ] {
            assert_eq!(
                TeamsFormat::detect(workflows),
                TeamsFormat::AdaptiveCard,
                "{workflows}"
            );
        }
    }
}
