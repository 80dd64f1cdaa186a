//! Rollout threads, for the kinds that keep one per rollout (Slack bots, Google Chat): which
//! thread a message belongs to, whether it starts one, and how a body is put in it.

use herald_api::CanaryPhase;

use crate::event::FlaggerEvent;
use crate::CanaryFacts;

/// The revision an event belongs to: Flagger's `checksum`, or the Canary's
/// `status.lastAppliedSpec` when Herald watches the cluster.
pub fn rollout_revision<'a>(
    event: &'a FlaggerEvent,
    canary: Option<&'a CanaryFacts>,
) -> Option<&'a str> {
    event
        .checksum
        .as_deref()
        .or_else(|| canary.and_then(|c| c.revision.as_deref()))
        .filter(|r| !r.is_empty())
}

/// Where one message goes in its rollout's thread (Slack bots and Google Chat).
///
/// A rollout is found by what Flagger says, not only by the revision: Flagger records "New
/// revision detected!" *before* it stores the new revision, so that message carries the
/// previous revision's checksum (and, in a cluster, the previous phase). It therefore always
/// starts a new thread; the revision of the first later message is bound to that thread, and
/// a message whose revision differs from its thread's starts another one (Herald missed the
/// start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    /// Which receiver's threads: a Slack bot's token and channel, or a Google Chat webhook
    /// (fingerprints, never the secrets themselves).
    pub scope: String,
    pub namespace: String,
    pub canary: String,
    /// The event's revision, when known.
    pub revision: Option<String>,
    /// "New revision detected!": this message starts the rollout's thread.
    pub starts: bool,
    /// The rollout ended ("Promotion completed!", "Canary failed!", or phase Succeeded or
    /// Failed): Slack's first message is updated to show it.
    pub outcome: bool,
    /// A failure: the reply is also shown in the channel (`reply_broadcast`), because an
    /// edited message notifies nobody.
    pub broadcast: bool,
    /// The event time (unix ms): names a new Google Chat thread.
    pub at_ms: u64,
}

impl ThreadRef {
    /// `<scope>/<namespace>/<canary>`: one current thread per receiver and canary.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.scope, self.namespace, self.canary)
    }

    /// The thread this message starts, or binds its revision to, at `channel` and `ts`. A
    /// starting message carries the previous rollout's revision (see above), so the new
    /// thread's revision stays unknown until the next message.
    pub fn parent_at(&self, channel: String, ts: String) -> ThreadParent {
        ThreadParent {
            channel,
            ts,
            revision: if self.starts {
                None
            } else {
                self.revision.clone()
            },
        }
    }
}

/// A rollout's thread as it was started: where its first message is (Slack: the channel ID
/// and `ts` Slack answered; Google Chat: the thread key, in `ts`) and the revision it belongs
/// to once known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadParent {
    pub channel: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// What to do with one message, given the canary's current thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadAction<'a> {
    /// Post on its own; it becomes the canary's thread.
    Start,
    /// Reply in `parent`. `bind`: the thread's revision was unknown and is this message's.
    Reply {
        parent: &'a ThreadParent,
        bind: bool,
    },
}

pub fn thread_action<'a>(
    thread: &ThreadRef,
    current: Option<&'a ThreadParent>,
) -> ThreadAction<'a> {
    let Some(parent) = current else {
        return ThreadAction::Start;
    };
    if thread.starts {
        return ThreadAction::Start;
    }
    match (&parent.revision, &thread.revision) {
        (Some(theirs), Some(ours)) if theirs != ours => ThreadAction::Start,
        (None, Some(_)) => ThreadAction::Reply { parent, bind: true },
        _ => ThreadAction::Reply {
            parent,
            bind: false,
        },
    }
}

/// The thread of one event for a receiver whose threads are named by `scope`.
pub fn thread_ref(scope: &str, event: &FlaggerEvent, canary: Option<&CanaryFacts>) -> ThreadRef {
    let message = event.message();
    let phase = event.known_phase();
    let failed = phase == Some(CanaryPhase::Failed) || message.starts_with("Canary failed!");
    let succeeded =
        phase == Some(CanaryPhase::Succeeded) || message.starts_with("Promotion completed!");
    let starts = message.starts_with("New revision detected!");
    ThreadRef {
        scope: scope.to_owned(),
        namespace: event.namespace.clone(),
        canary: event.name.clone(),
        revision: rollout_revision(event, canary).map(str::to_owned),
        starts,
        // The phase of a starting message may be the previous rollout's (see above).
        outcome: !starts && (failed || succeeded),
        broadcast: !starts && failed,
        at_ms: event.timestamp_ms(),
    }
}

/// Adds `"<name>":<value>` at the end of a JSON object body, keeping its bytes.
pub fn with_field(body: &[u8], name: &str, value: &serde_json::Value) -> Vec<u8> {
    let end = body
        .iter()
        .rposition(|b| *b == b'}')
        .expect("bodies are JSON objects");
    let mut out = Vec::with_capacity(body.len() + name.len() + 64);
    out.extend_from_slice(&body[..end]);
    if body[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        out.push(b',');
    }
    serde_json::to_writer(&mut out, name).expect("a string serialises");
    out.push(b':');
    serde_json::to_writer(&mut out, value).expect("a value serialises");
    out.extend_from_slice(&body[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_api::EventType;

    fn event(
        phase: &str,
        message: &str,
        event_type: EventType,
        checksum: Option<&str>,
    ) -> FlaggerEvent {
        let event = FlaggerEvent::new("podinfo", "default", phase, message, event_type, 1_000);
        match checksum {
            Some(c) => event.with_checksum(c),
            None => event,
        }
    }

    /// Flagger's real order: "New revision detected!" carries the previous revision (and, in
    /// a cluster, the previous phase); it starts a thread anyway, which the next message's
    /// revision is bound to.
    #[test]
    fn a_rollout_starts_with_new_revision_detected_whatever_its_checksum() {
        let new = event(
            "Succeeded",
            "New revision detected! Scaling up podinfo.default",
            EventType::Normal,
            Some("old"),
        );
        let start = thread_ref("slack/abc/C1", &new, None);
        assert!(start.starts && !start.outcome && !start.broadcast);
        assert_eq!(start.key(), "slack/abc/C1/default/podinfo");
        let previous = ThreadParent {
            channel: "C1".into(),
            ts: "1.0".into(),
            revision: Some("old".into()),
        };
        assert_eq!(thread_action(&start, Some(&previous)), ThreadAction::Start);

        let started = ThreadParent {
            channel: "C1".into(),
            ts: "2.0".into(),
            revision: None,
        };
        let advance = thread_ref(
            "slack/abc/C1",
            &event(
                "Progressing",
                "Advance podinfo.default canary weight 10",
                EventType::Normal,
                Some("new"),
            ),
            None,
        );
        assert_eq!(
            thread_action(&advance, Some(&started)),
            ThreadAction::Reply {
                parent: &started,
                bind: true
            }
        );
        let bound = ThreadParent {
            revision: Some("new".into()),
            ..started.clone()
        };
        assert_eq!(
            thread_action(&advance, Some(&bound)),
            ThreadAction::Reply {
                parent: &bound,
                bind: false
            }
        );
        // Another revision without a start message: Herald missed it; a new thread.
        let missed = thread_ref(
            "slack/abc/C1",
            &event(
                "Progressing",
                "Advance podinfo.default canary weight 10",
                EventType::Normal,
                Some("newer"),
            ),
            None,
        );
        assert_eq!(thread_action(&missed, Some(&bound)), ThreadAction::Start);
        assert_eq!(thread_action(&missed, None), ThreadAction::Start);
    }

    #[test]
    fn outcomes_by_phase_or_by_flaggers_message() {
        let promoted = thread_ref(
            "s",
            &event(
                "Finalising",
                "Promotion completed! Scaling down podinfo.default",
                EventType::Normal,
                None,
            ),
            None,
        );
        assert!(promoted.outcome && !promoted.broadcast);
        // In a cluster the phase may still be Progressing when Flagger records the failure.
        let failed = thread_ref(
            "s",
            &event(
                "Progressing",
                "Canary failed! Scaling down podinfo.default",
                EventType::Warning,
                None,
            ),
            None,
        );
        assert!(failed.outcome && failed.broadcast);
        let rolling_back = thread_ref(
            "s",
            &event(
                "Progressing",
                "Rolling back podinfo.default failed checks threshold reached 5",
                EventType::Warning,
                None,
            ),
            None,
        );
        assert!(!rolling_back.outcome && !rolling_back.broadcast);
        // The canary's revision when the event has no checksum.
        let canary = CanaryFacts {
            revision: Some("rev-2".into()),
            ..CanaryFacts::default()
        };
        assert_eq!(
            thread_ref(
                "s",
                &event("Progressing", "x", EventType::Normal, None),
                Some(&canary)
            )
            .revision
            .as_deref(),
            Some("rev-2")
        );
    }
}
