//! `grafana`: Grafana annotations, one per notification.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{AddressRef, ReceiverSpec, SecretKeyRef};

/// Grafana (`POST <url>/api/annotations`): an annotation at the event's time for each
/// notification, tagged with the canary, so dashboards show rollouts next to their metrics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url, secretRef"))]
#[x_kube(validation = Rule::new("has(self.tokenSecretRef)").message("set tokenSecretRef"))]
pub struct GrafanaReceiver {
    /// Grafana's base URL (e.g. `https://grafana.example.com`); annotations go to
    /// `<url>/api/annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Secret key holding the base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The Secret key holding a service account token (role Editor, or annotations:write),
    /// sent as `Authorization: Bearer <token>`; the key defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Annotates this dashboard only (its UID); unset: an organisation-wide annotation,
    /// which dashboards show by querying its tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    /// Annotates this panel of the dashboard only (needs `dashboardUid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panel_id: Option<i64>,
    /// Tags added to every annotation (besides `flagger`, the canary, its namespace, its phase
    /// and the cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl ReceiverSpec for GrafanaReceiver {
    fn address(&self) -> AddressRef<'_> {
        super::url_or_secret(&self.url, &self.secret_ref)
    }

    fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let mut refs = super::address_secret(self.address());
        refs.extend(self.token_secret_ref.as_ref());
        refs
    }
}
