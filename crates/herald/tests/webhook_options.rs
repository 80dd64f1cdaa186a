//! Generic webhooks with a method, a bearer token, custom headers and an HMAC signature,
//! delivered to a local receiver on 127.0.0.1 that checks them the way a real one would:
//! it recomputes the signature over the exact body and rejects a mismatch with 401.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::Router;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(10);
const SIGNING_KEY: &str = "k3y-for-hmac";
const TOKEN: &str = "t0ken-abc";

#[derive(Clone, Debug)]
struct Checked {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    accepted: bool,
}

/// A receiver that accepts only correctly signed, authorised requests.
async fn verifying_receiver() -> (SocketAddr, Arc<Mutex<Vec<Checked>>>) {
    let seen: Arc<Mutex<Vec<Checked>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
            let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
            mac.update(&body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
            };
            let accepted = header("x-herald-signature") == expected
                && header("authorization") == format!("Bearer {TOKEN}");
            log.lock().unwrap().push(Checked {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                headers: parts.headers.clone(),
                body,
                accepted,
            });
            if accepted {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn signed_policy(addr: SocketAddr, signing_key: &str) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: default}}
stringData:
  address: http://{addr}/hooks/flagger
  token: {TOKEN}
  signingKey: {signing_key}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: signed, namespace: default}}
spec:
  receivers:
    - name: audit
      webhook:
        secretRef: {{name: hook}}
        method: PUT
        headers: {{X-Team: payments}}
        bearerTokenSecretRef: {{name: hook}}
        signature:
          secretRef: {{name: hook}}
          header: X-Herald-Signature
"##
    )
}

#[tokio::test]
async fn signed_authorised_put_is_accepted_by_a_verifying_receiver() {
    let (addr, seen) = verifying_receiver().await;
    let dir = PolicyDir::new(&[("signed.yaml", &signed_policy(addr, SIGNING_KEY))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Progressing",
        "New revision detected! Scaling up podinfo.default",
        "Normal",
        1_764_072_060_000,
    );
    let (status, _) = post_event(server.addr, "/events", &body).await;
    assert_eq!(status, 202);
    wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="delivered"}"#,
        1.0,
        WAIT,
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let request = &seen[0];
    assert!(request.accepted);
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.path, "/hooks/flagger");
    assert_eq!(request.headers["x-team"], "payments");
    assert_eq!(request.headers["content-type"], "application/json");
    // The body is Flagger's event JSON, byte for byte.
    assert_eq!(String::from_utf8(request.body.clone()).unwrap(), body);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_signing_key_is_rejected_and_counted_as_failed_without_retrying() {
    let (addr, seen) = verifying_receiver().await;
    let dir = PolicyDir::new(&[("signed.yaml", &signed_policy(addr, "another-key"))]);
    let server = herald::serve::start(options(dir.path())).await.unwrap();
    let body = event(
        "podinfo",
        "default",
        "Failed",
        "Canary failed! Scaling down podinfo.default",
        "Warning",
        1_764_072_060_000,
    );
    post_event(server.addr, "/events", &body).await;
    wait_for_metric(
        server.addr,
        r#"herald_deliveries_total{receiver_type="webhook",outcome="failed"}"#,
        1.0,
        WAIT,
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "a 401 is not retried");
    assert!(!seen[0].accepted);
    server.stop().await.unwrap();
}
