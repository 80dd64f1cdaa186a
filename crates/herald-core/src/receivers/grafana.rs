//! Grafana's annotations API: `POST <url>/api/annotations` with `{time, tags, text,
//! dashboardUID?, panelId?}` and a service account's bearer token. Each notification is one
//! point annotation at the event's time, tagged `flagger`, the canary, its namespace, its
//! phase and the cluster, so a dashboard's annotation query by tag shows a canary's rollouts.
//! Grafana answers `{"message":"Annotation added","id":N}`. Dashboards show the text as
//! sanitised HTML, so the event's values are escaped as HTML.
//!
//! A rollout is also a region: its "New revision detected!" annotation's id is kept like a
//! Slack thread's parent (in the state ConfigMap or state file, so a restart keeps it), and
//! the rollout's outcome is not a point of its own but `PATCH /api/annotations/<id>` with
//! `timeEnd`, the outcome's text and tags: the region spans the rollout.

use std::any::Any;
use std::sync::Arc;

use herald_api::GrafanaReceiver;
use serde::Serialize;

use super::threads::{thread_action, ThreadAction};
use super::{
    chat_body, limit, Answer, Compiled, KeepThread, Plan, Posted, ReceiverKind, Render, Request,
    RequestSpec, ThreadParent, ThreadRef,
};
use crate::escape::Markup;
use crate::policy::Compiler;
use crate::secret::Redacted;
use crate::template::TemplateError;

/// The annotation's text is cut to this many bytes (Grafana keeps it in a `TEXT` column;
/// dashboards show the first lines).
pub const TEXT_LIMIT: usize = 10_000;

/// A Grafana organisation (or one dashboard, or one panel).
#[derive(Debug)]
pub struct Grafana {
    pub dashboard_uid: Option<String>,
    pub panel_id: Option<i64>,
    pub tags: Vec<String>,
    /// `<url>/api/annotations`, where a region's end is patched (a credential when the URL
    /// came from a Secret).
    pub annotations_url: Redacted,
    /// Whose regions: this Grafana and token (by fingerprint).
    pub thread_scope: String,
}

impl ReceiverKind for Grafana {
    fn body(&self, render: &mut dyn Render) -> Result<Vec<u8>, TemplateError> {
        chat_body(render, Markup::Html, |message, _| {
            let event = message.event;
            let mut tags = vec![
                "flagger",
                event.name.as_str(),
                event.namespace.as_str(),
                event.phase.as_str(),
            ];
            if !message.cluster.is_empty() {
                tags.push(message.cluster);
            }
            tags.extend(self.tags.iter().map(String::as_str));
            let text = match (message.title.is_empty(), message.text.is_empty()) {
                (false, false) => format!("{}: {}", message.title, message.text),
                (true, _) => message.text.to_owned(),
                (false, true) => message.title.to_owned(),
            };
            let body = Annotation {
                dashboard_uid: self.dashboard_uid.as_deref(),
                panel_id: self.panel_id,
                time: event.timestamp_ms(),
                tags,
                text: &limit(&text, TEXT_LIMIT),
            };
            serde_json::to_vec(&body).expect("an annotation serialises")
        })
    }

    fn thread_scope(&self) -> Option<&str> {
        Some(&self.thread_scope)
    }

    fn plan(
        &self,
        body: &[u8],
        thread: Option<&ThreadRef>,
        current: Option<&ThreadParent>,
    ) -> Plan {
        let post = Plan::post("annotation");
        let Some(thread) = thread else { return post };
        match thread_action(thread, current) {
            // A rollout's first message opens its region: Grafana's answer names it.
            ThreadAction::Start if thread.starts => Plan {
                keep: KeepThread::Posted,
                ..post
            },
            ThreadAction::Reply { parent, .. } if thread.outcome => Plan {
                request: Request {
                    name: "annotation end",
                    url: Some(Redacted::new(format!(
                        "{}/{}",
                        self.annotations_url.expose(),
                        parent.ts
                    ))),
                    body: Some(region_end(body)),
                    method: Some(herald_api::HttpMethod::Patch),
                },
                keep: KeepThread::Nothing,
                follow_up: None,
            },
            _ => post,
        }
    }

    fn read_answer(&self, body: &[u8]) -> Answer {
        #[derive(serde::Deserialize)]
        struct Added {
            id: Option<u64>,
        }
        match serde_json::from_slice::<Added>(body) {
            Ok(Added { id }) => Answer::Delivered {
                posted: id.map(|id| Posted {
                    channel: String::new(),
                    ts: id.to_string(),
                }),
            },
            Err(_) => Answer::Unreadable,
        }
    }

    fn reads_answer(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The PATCH that ends a region: the outcome's time as `timeEnd`, its text and tags; the
/// start time stays.
fn region_end(body: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Point {
        time: u64,
        text: String,
        tags: Vec<String>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct End {
        time_end: u64,
        text: String,
        tags: Vec<String>,
    }
    let point: Point = serde_json::from_slice(body).expect("the body is Herald's annotation");
    serde_json::to_vec(&End {
        time_end: point.time,
        text: point.text,
        tags: point.tags,
    })
    .expect("a patch serialises")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Annotation<'a> {
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    dashboard_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    panel_id: Option<i64>,
    time: u64,
    tags: Vec<&'a str>,
    text: &'a str,
}

pub(crate) fn compile(
    spec: &GrafanaReceiver,
    path: &str,
    cx: &mut Compiler<'_>,
) -> Option<Compiled> {
    use herald_api::ReceiverSpec;
    let before = cx.problem_count();
    if spec.dashboard_uid.as_deref() == Some("") {
        cx.invalid(&format!("{path}.dashboardUid"), "must not be empty");
    }
    if spec.panel_id.is_some() && spec.dashboard_uid.is_none() {
        cx.invalid(
            &format!("{path}.panelId"),
            "needs dashboardUid: a panel is a dashboard's",
        );
    }
    for (i, tag) in spec.tags.iter().enumerate() {
        if tag.is_empty() {
            cx.invalid(&format!("{path}.tags[{i}]"), "must not be empty");
        }
    }
    let field = format!("{path}.tokenSecretRef");
    let token = match &spec.token_secret_ref {
        None => {
            cx.invalid(
                &field,
                "required: the Secret key holding a service account token",
            );
            None
        }
        Some(secret) => cx.token_value(secret, &field),
    };
    let base = cx.resolve_address(spec.address(), path);
    if cx.problem_count() > before {
        return None;
    }
    let url = format!("{}/api/annotations", base?.expose().trim_end_matches('/'));
    let token = token?;
    let thread_scope = format!(
        "grafana/{}",
        super::http::fingerprint(&format!("{url}\n{}", token.expose()))
    );
    Some(Compiled {
        type_name: "",
        kind: Arc::new(Grafana {
            dashboard_uid: spec.dashboard_uid.clone(),
            panel_id: spec.panel_id,
            tags: spec.tags.clone(),
            annotations_url: Redacted::new(url.clone()),
            thread_scope,
        }),
        url: Redacted::new(url),
        request: RequestSpec {
            bearer_token: Some(token),
            ..RequestSpec::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::{load_sources, FlaggerEvent, MatchInput};
    use herald_api::EventType;

    const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: gf, namespace: default}
stringData: {token: glsa_demo}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: dash, namespace: default}
spec:
  receivers:
    - name: gf
      grafana: {url: "https://grafana.example.com/", tokenSecretRef: {name: gf}, dashboardUid: canaries, panelId: 2, tags: [payments]}
"#;

    #[test]
    fn an_annotation_at_the_event_time_tagged_with_the_canary() {
        let mut loaded = load_sources([("p.yaml", POLICY)]);
        let set = loaded.build("prod-eu", "default");
        assert_eq!(loaded.problems, []);
        let receiver = set.receiver(0, 0);
        assert_eq!(
            receiver.url.expose(),
            "https://grafana.example.com/api/annotations"
        );
        let headers = receiver.request.headers_for(b"");
        assert_eq!(headers[0].value.expose(), "Bearer glsa_demo");
        let ev = FlaggerEvent::new(
            "podinfo",
            "default",
            "Succeeded",
            "Promotion completed! <b>x</b>",
            EventType::Normal,
            1_578_607_635_167,
        );
        let got = set.notifications(&MatchInput::event(&ev), None);
        assert_eq!(
            String::from_utf8(got[0].as_ref().unwrap().body.clone()).unwrap(),
            r#"{"dashboardUID":"canaries","panelId":2,"time":1578607635167,"tags":["flagger","podinfo","default","Succeeded","prod-eu","payments"],"text":"[prod-eu] podinfo.default: Promotion completed! &lt;b&gt;x&lt;/b&gt;"}"#
        );
    }

    #[test]
    fn a_rollout_opens_a_region_and_its_outcome_ends_it() {
        use crate::receivers::{KeepThread, ThreadParent};
        let mut loaded = load_sources([("p.yaml", POLICY)]);
        let set = loaded.build("", "default");
        let receiver = set.receiver(0, 0);
        let notification = |phase: &str, message: &str| {
            let ev = FlaggerEvent::new(
                "podinfo",
                "default",
                phase,
                message,
                EventType::Normal,
                1_000,
            )
            .with_checksum("rev1");
            set.notifications(&MatchInput::event(&ev), None)
                .remove(0)
                .unwrap()
        };
        let start = notification(
            "Progressing",
            "New revision detected! Scaling up podinfo.default",
        );
        let plan = receiver.kind.plan(&start.body, start.thread.as_ref(), None);
        assert_eq!((plan.request.method, plan.keep), (None, KeepThread::Posted));
        let parent = ThreadParent {
            channel: String::new(),
            ts: "42".into(),
            revision: None,
        };
        let step = notification("Progressing", "Advance podinfo.default canary weight 10");
        let plan = receiver
            .kind
            .plan(&step.body, step.thread.as_ref(), Some(&parent));
        assert_eq!(
            (plan.request.method, plan.request.url.is_none()),
            (None, true)
        );
        let done = notification(
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
        );
        let plan = receiver
            .kind
            .plan(&done.body, done.thread.as_ref(), Some(&parent));
        assert_eq!(plan.request.method, Some(herald_api::HttpMethod::Patch));
        assert_eq!(
            plan.request.url.unwrap().expose(),
            "https://grafana.example.com/api/annotations/42"
        );
        assert_eq!(
            String::from_utf8(plan.request.body.unwrap()).unwrap(),
            r#"{"timeEnd":1000,"text":"podinfo.default: Promotion completed! Scaling down podinfo.default","tags":["flagger","podinfo","default","Succeeded","payments"]}"#
        );
        assert_eq!(
            receiver
                .kind
                .read_answer(br#"{"message":"Annotation added","id":42}"#),
            crate::receivers::Answer::Delivered {
                posted: Some(crate::receivers::Posted {
                    channel: String::new(),
                    ts: "42".into()
                })
            }
        );
    }
}
