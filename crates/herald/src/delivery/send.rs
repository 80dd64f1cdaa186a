//! Sending one notification: its kind's plan of requests, each with retries (exponential
//! backoff with jitter, `Retry-After` honoured for the whole rate-limit group), its answer
//! read through the kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use herald_api::HttpMethod;
use herald_core::receivers::{Answer, KeepThread, Posted, Request};
use herald_core::Redacted;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::StatusCode;
use tracing::{debug, error, warn};

use super::lane::LaneState;
use super::redact::{describe, parse_retry_after, snippet};
use super::{Inner, Job};
use crate::metrics::{Outcome, ReceiverLabels};

/// Sends one job (its plan, with retries) and hands it back with its outcome; `None` when
/// it was not stored in the durable queue (its event was refused).
pub(super) async fn send_job(
    inner: Arc<Inner>,
    lane: Arc<LaneState>,
    job: Job,
) -> (Job, Option<Outcome>) {
    if let Some(committed) = job.committed.clone() {
        if !crate::durable::committed(committed).await {
            return (job, None);
        }
    }
    let outcome = run_plan(&inner, &job, &lane).await;
    (job, Some(outcome))
}

/// Runs the receiver's plan for one notification: the request that carries it, what the
/// answer makes the canary's thread, then the follow-up (whose failure is only logged).
async fn run_plan(inner: &Inner, job: &Job, lane: &LaneState) -> Outcome {
    let current = job.thread.as_ref().and_then(|t| inner.threads.parent(t));
    let mut plan = job
        .kind
        .plan(&job.body, job.thread.as_ref(), current.as_ref());
    if let (None, Some(path)) = (&plan.request.url, &job.path) {
        plan.request.url = Some(Redacted::new(format!("{}{path}", job.url.expose())));
    }
    let (outcome, posted) = deliver(inner, job, lane, plan.request).await;
    if outcome != Outcome::Delivered {
        return outcome;
    }
    if let Some(thread) = &job.thread {
        match plan.keep {
            KeepThread::Nothing => {}
            KeepThread::Parent(parent) => inner.threads.remember(thread, parent),
            KeepThread::Posted => match posted {
                Some(Posted { channel, ts }) => inner
                    .threads
                    .remember(thread, thread.parent_at(channel, ts)),
                None => warn!(
                    policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                    "the answer did not name the posted message: the rollout's later messages will not be threaded under it"
                ),
            },
        }
    }
    if let Some(follow_up) = plan.follow_up {
        let name = follow_up.name;
        let (done, _) = deliver(inner, job, lane, follow_up).await;
        if done != Outcome::Delivered {
            // The notification was delivered: it counts as delivered.
            warn!(
                policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                request = name, "a follow-up request failed; the notification itself was delivered"
            );
        }
    }
    outcome
}

/// Where one request goes and what it carries.
struct Prepared<'a> {
    name: &'static str,
    /// `None`: the receiver's method.
    method: Option<herald_api::HttpMethod>,
    /// `None`: the queue's URL, parsed once for all its requests.
    url: Option<Redacted>,
    lane: &'a LaneState,
    body: Bytes,
    headers: HeaderMap,
}

/// Why an attempt failed, and whether to try again.
enum AttemptError {
    Retry {
        detail: String,
        retry_after: Option<Duration>,
        /// The request was sent and no answer came in time.
        timed_out: bool,
    },
    Permanent {
        detail: String,
    },
}
/// Sends one request of a plan with retries. Also returns the message the service says it
/// posted, when its kind reads that from the answer.
async fn deliver(
    inner: &Inner,
    job: &Job,
    lane: &LaneState,
    request: Request,
) -> (Outcome, Option<Posted>) {
    let body = request.body.map_or_else(|| job.body.clone(), Bytes::from);
    let prepared = match prepare(job, lane, request.name, request.url, body, request.method) {
        Ok(prepared) => prepared,
        Err(detail) => {
            error!(
                policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                request = request.name, error = %detail, "notification failed; not retrying"
            );
            return (Outcome::Failed, None);
        }
    };
    let request = prepared.name;
    let config = &inner.config;
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_jitter()
        .without_max_times()
        .build();
    let labels = ReceiverLabels {
        receiver_type: job.receiver_type,
    };
    // A `429` pauses the whole group: the kind's (e.g. every channel of a Slack token),
    // else the destination (whose other canaries' requests may be in flight).
    let group = job.kind.rate_limit_group().unwrap_or(lane.key.as_str());
    for attempt in 1..=config.max_attempts {
        // One of the destination's request slots, for this attempt only.
        let _slot = lane.slots.acquire().await.expect("slots are never closed");
        inner.wait_to_send(lane, group).await;
        if !job.completion.as_ref().is_none_or(|c| c.may_send()) {
            warn!(
                policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                request, attempt, "notification not sent: this replica's lease may have expired; the new leader sends it"
            );
            return (Outcome::Dropped, None);
        }
        inner.metrics.delivery_attempts.get_or_create(&labels).inc();
        job.sending(true);
        let attempted = attempt_once(inner, job, &prepared).await;
        job.sending(false);
        match attempted {
            Ok((status, posted)) => {
                // Debug, not info: `event received` already says how many notifications each
                // event queued, `herald_deliveries_total` counts them delivered, and failures
                // are logged at warn and error. One more line per notification at info was 4%
                // of a busy relay's CPU (BENCHMARKS.md, session 6) for no more knowledge.
                debug!(
                    policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                    request, attempt, status = status.as_u16(), "notification delivered"
                );
                return (Outcome::Delivered, posted);
            }
            Err(AttemptError::Permanent { detail }) => {
                if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "failed") {
                    error!(
                        policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                        request, attempt, error = %detail, suppressed, "notification failed; not retrying"
                    );
                }
                return (Outcome::Failed, None);
            }
            Err(AttemptError::Retry {
                detail,
                retry_after,
                timed_out,
            }) => {
                if attempt == config.max_attempts {
                    if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "failed")
                    {
                        error!(
                            policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                            request, attempt, error = %detail, suppressed, timed_out,
                            "{}", if timed_out {
                                "notification timed out on the last attempt: the receiver may have it"
                            } else {
                                "notification failed after the last attempt"
                            }
                        );
                    }
                    // A request that timed out once sent may have reached the receiver.
                    let outcome = if timed_out {
                        Outcome::Timeout
                    } else {
                        Outcome::Failed
                    };
                    return (outcome, None);
                }
                let delay = match retry_after {
                    Some(asked) => asked.min(config.max_retry_after),
                    None => backoff.next().unwrap_or(config.max_backoff),
                };
                if retry_after.is_some() {
                    let until = Instant::now() + delay;
                    let mut paused = inner.paused.lock().expect("pause lock");
                    let entry = paused.entry(group.to_owned()).or_insert(until);
                    *entry = (*entry).max(until);
                }
                if let Some(suppressed) = inner.logs.admit(&job.policy, &job.receiver, "retry") {
                    warn!(
                        policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                        request, attempt, error = %detail, retry_in = ?delay, suppressed,
                        "notification attempt failed; retrying"
                    );
                }
                drop(_slot);
                tokio::time::sleep(delay).await;
            }
        }
    }
    (Outcome::Failed, None)
}
/// The request's body, URL and headers, made once for all its attempts.
fn prepare<'a>(
    job: &Job,
    lane: &'a LaneState,
    name: &'static str,
    url: Option<Redacted>,
    body: Bytes,
    method: Option<herald_api::HttpMethod>,
) -> Result<Prepared<'a>, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(job.kind.content_type()),
    );
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
    );
    for header in job.request.headers_for(&body) {
        match (
            HeaderName::try_from(header.name.as_str()),
            HeaderValue::try_from(header.value.expose()),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(header.sensitive);
                headers.insert(name, value);
            }
            // Headers are validated when the policy loads; this guards the request.
            _ => return Err(format!("invalid header {:?}", header.name)),
        }
    }
    Ok(Prepared {
        name,
        method,
        url,
        lane,
        body,
        headers,
    })
}

async fn attempt_once(
    inner: &Inner,
    job: &Job,
    prepared: &Prepared<'_>,
) -> Result<(StatusCode, Option<Posted>), AttemptError> {
    let method = match prepared.method.unwrap_or(job.request.method) {
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
    };
    let request = match (&prepared.url, &prepared.lane.url) {
        (Some(url), _) => inner.client.request(method, url.expose()),
        (None, Some(parsed)) => inner.client.request(method, parsed.clone()),
        (None, None) => inner.client.request(method, job.url.expose()),
    };
    let response = request
        .headers(prepared.headers.clone())
        .body(prepared.body.clone())
        .send()
        .await
        .map_err(|e| AttemptError::Retry {
            detail: describe(&e),
            retry_after: None,
            timed_out: e.is_timeout() && !e.is_connect(),
        })?;
    let status = response.status();
    if status.is_success() {
        if !job.kind.reads_answer() {
            return Ok((status, None));
        }
        let answer = response.bytes().await.unwrap_or_default();
        return match job.kind.read_answer(&answer) {
            Answer::Delivered { posted } => Ok((status, posted)),
            Answer::Unreadable => {
                warn!(
                    policy = %job.policy, receiver = %job.receiver, receiver_type = job.receiver_type,
                    status = status.as_u16(), "the receiver answered success with a body Herald cannot read; not sending again"
                );
                Ok((status, None))
            }
            Answer::Retry { detail } => Err(AttemptError::Retry {
                detail,
                retry_after: None,
                timed_out: false,
            }),
            Answer::Refused { detail } => Err(AttemptError::Permanent { detail }),
        };
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(parse_retry_after);
    let answer = response.bytes().await.unwrap_or_default();
    let retry_after = retry_after.or_else(|| {
        (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| job.kind.retry_after(&answer))
            .flatten()
    });
    let snippet = snippet(&answer);
    let detail = format!("HTTP {}: {snippet}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(AttemptError::Retry {
            detail,
            retry_after,
            timed_out: false,
        })
    } else {
        debug!(
            status = status.as_u16(),
            "receiver rejected the notification"
        );
        Err(AttemptError::Permanent { detail })
    }
}
