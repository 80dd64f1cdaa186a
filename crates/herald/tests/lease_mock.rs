//! Leader election against a mocked API (tower-test): the Lease requests Herald's elector
//! makes, and what it concludes from the answers.

mod common;

use std::time::Duration;

use common::mock::*;
use herald::controller::leader::Leadership;
use serde_json::{json, Value};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/herald/leases/herald-leader";

fn lease(holder: Option<&str>, version: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "herald-leader", "namespace": "herald", "resourceVersion": version},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
            "renewTime": "2026-12-01T10:00:00.000000Z"
        }
    })
}

/// A released lease (no holder, as client-go and Herald leave it) is taken at once, with a
/// patch conditional on the resourceVersion it read; the lease is renewed every 2 s with one
/// patch conditional on the version it wrote.
#[tokio::test]
async fn a_released_lease_is_taken_at_once_with_a_conditional_patch() {
    let (client, mut api) = mock_client();
    let leadership = Leadership::elect(client, "herald", "herald-leader", "replica-b");
    assert!(!leadership.fence.holds(), "no renewal yet");
    expect(&mut api, "GET", LEASE, 200, lease(None, "41", 3)).await;
    let patch = expect(
        &mut api,
        "PATCH",
        &format!("{LEASE}?"),
        200,
        lease(Some("replica-b"), "42", 4),
    )
    .await;
    assert_eq!(patch["metadata"]["resourceVersion"], "41");
    assert_eq!(patch["spec"]["holderIdentity"], "replica-b");
    assert_eq!(patch["spec"]["leaseTransitions"], 4);
    assert_eq!(patch["spec"]["leaseDurationSeconds"], 15);
    let mut leading = leadership.leading.clone();
    tokio::time::timeout(Duration::from_secs(1), leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    assert!(leadership.fence.holds());

    // Renewal: one conditional patch on the version it wrote (no GET), transitions unchanged.
    let renewal = expect(
        &mut api,
        "PATCH",
        &format!("{LEASE}?"),
        200,
        lease(Some("replica-b"), "43", 4),
    )
    .await;
    assert_eq!(renewal["metadata"]["resourceVersion"], "42");
    assert_eq!(renewal["spec"]["leaseTransitions"], 4);

    // Shutdown: the lease is given up (no holder) so the other replica need not wait 15 s.
    let release = tokio::spawn(leadership.release());
    expect(
        &mut api,
        "GET",
        LEASE,
        200,
        lease(Some("replica-b"), "43", 4),
    )
    .await;
    let given_up = expect(
        &mut api,
        "PATCH",
        &format!("{LEASE}?"),
        200,
        lease(None, "44", 4),
    )
    .await;
    assert_eq!(given_up["metadata"]["resourceVersion"], "43");
    assert_eq!(given_up["spec"]["holderIdentity"], Value::Null);
    assert_eq!(given_up["spec"]["leaseDurationSeconds"], 1);
    release.await.unwrap();
}

/// Two candidates: the one whose conditional patch loses (409) does not lead; a lease held
/// by another replica that keeps renewing is left alone.
#[tokio::test]
async fn a_lost_race_and_a_live_holder_leave_the_replica_following() {
    let (client, mut api) = mock_client();
    let leadership = Leadership::elect(client, "herald", "herald-leader", "replica-b");
    expect(&mut api, "GET", LEASE, 200, lease(None, "41", 3)).await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    expect(&mut api, "PATCH", &format!("{LEASE}?"), 409, conflict).await;
    // replica-a won and renews: each look finds a newer record, so it never expires.
    for version in ["42", "43"] {
        expect(
            &mut api,
            "GET",
            LEASE,
            200,
            lease(Some("replica-a"), version, 4),
        )
        .await;
    }
    assert!(!*leadership.leading.borrow());
    assert!(!leadership.fence.holds());
}

/// The API server is unreachable: the leader steps down once its renewal deadline (10 s)
/// has passed, and its fence is down before anyone else may take over (15 s).
#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_runs_out() {
    let (client, mut api) = mock_client();
    let leadership = Leadership::elect(client, "herald", "herald-leader", "replica-b");
    expect(
        &mut api,
        "GET",
        LEASE,
        404,
        not_found("leases \"herald-leader\""),
    )
    .await;
    let created = expect(
        &mut api,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/herald/leases?",
        201,
        lease(Some("replica-b"), "1", 0),
    )
    .await;
    assert_eq!(created["spec"]["holderIdentity"], "replica-b");
    let acquired = std::time::Instant::now();
    let mut leading = leadership.leading.clone();
    tokio::time::timeout(Duration::from_secs(1), leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    // Every renewal fails from now on.
    let unavailable = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
    let server = tokio::spawn(async move {
        // The renewal patch, then looks at the lease: all fail.
        expect(
            &mut api,
            "PATCH",
            &format!("{LEASE}?"),
            500,
            unavailable.clone(),
        )
        .await;
        loop {
            expect(&mut api, "GET", LEASE, 500, unavailable.clone()).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(14), leading.wait_for(|l| !*l))
        .await
        .expect("stepped down")
        .unwrap();
    let stepped_down = acquired.elapsed();
    assert!(!leadership.fence.holds());
    assert!(
        stepped_down >= Duration::from_secs(10) && stepped_down < Duration::from_secs(14),
        "stepped down after {stepped_down:?}"
    );
    server.abort();
}
