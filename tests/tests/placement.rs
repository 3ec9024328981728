//! A node affects only its own pods (`--kube on`): the real server, watching pods through a
//! fake API server on loopback that speaks the real list/watch protocol, refuses a sensor's
//! report of another node's pod, of another workload, or of an image the pod does not run.
//! The attack it stops: a compromised node reporting a new image digest for an enforced
//! workload it does not run, which opened that baseline's re-learning window and taught it
//! the attacker's binary, pushed to every sensor.

use procguard_proto::v1 as pb;
use procguard_tests::fake_kube::FakeKube;
use procguard_tests::grpc::{self, SensorStream};
use procguard_tests::*;
use serde_json::json;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const UA: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const UB: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const UNKNOWN: &str = "ffffffff-0000-0000-0000-00000000000f";

/// A pod of the Deployment `shop/web` (container `main`, running the image with digest D1).
fn web_pod(uid: &str, name: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "labels": {"pod-template-hash": "5c9f"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-5c9f", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "web:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "main", "image": "web:1",
            "ready": true, "restartCount": 0, "imageID": format!("docker-pullable://web@{D1}"),
            "containerID": format!("containerd://{}", "c".repeat(64)),
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    })
}

/// A report of `exe` in `w` from `pod` with image `digest`.
fn report(
    s: &mut SensorStream,
    w: &pb::WorkloadIdentity,
    pod: &str,
    digest: &str,
    exe: &str,
) -> pb::SensorEvent {
    let mut e = s.events(w, &[exe]).remove(0);
    let c = e
        .process
        .as_mut()
        .unwrap()
        .container
        .as_mut()
        .expect("container");
    c.pod_uid = pod.into();
    c.image_digest = digest.into();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reporting_another_nodes_pod_is_refused_and_cannot_reopen_learning() {
    let work = tempfile::tempdir().unwrap();
    let kube = FakeKube::start();
    kube.apply(web_pod(UA, "web-5c9f-a", "node-a"));
    kube.apply(web_pod(UB, "web-5c9f-b", "node-b"));
    let kubeconfig = kube.kubeconfig(work.path());
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(
        &pki,
        work.path(),
        &["--kube", "on", "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let url = server.url();
    let mut sensor = SensorStream::open(&pki, &url, "node-a").await.unwrap();
    let web = grpc::workload("shop", "web");

    // node-a's own pod teaches the baseline, which is then enforced.
    let learn = report(&mut sensor, &web, UA, D1, "/app/server");
    sensor.send_acked(vec![learn]).await.unwrap();
    let ch = grpc::channel(&pki, &url, None).await.unwrap();
    let mut baselines = pb::baseline_service_client::BaselineServiceClient::new(ch.clone());
    baselines
        .approve_baseline(grpc::req(
            &pki,
            "admin",
            pb::ApproveBaselineRequest {
                workload: Some(web.clone()),
                reason: "test".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let get = |mut c: pb::baseline_service_client::BaselineServiceClient<_>| {
        let pki = &pki;
        let web = web.clone();
        async move {
            c.get_baseline(grpc::req(
                pki,
                "viewer",
                pb::GetBaselineRequest {
                    workload: Some(web),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let enforced = get(baselines.clone()).await;
    assert_eq!(enforced.image_digests, vec![D1.to_string()]);

    // The attack: node-a reports node-b's pod running a new image (which would open the
    // re-learning window) and the attacker's binary; then its own pod with an image it does
    // not run, and its own pod as another workload.
    let foreign = report(&mut sensor, &web, UB, D2, "/tmp/miner");
    let wrong_image = report(&mut sensor, &web, UA, D2, "/tmp/miner");
    let payments = grpc::workload("payments", "api");
    let other_workload = report(&mut sensor, &payments, UA, D1, "/tmp/miner");
    let last = sensor
        .send_acked(vec![foreign, wrong_image, other_workload])
        .await
        .expect("refused reports are acknowledged: the sensor is not wedged");

    let after = get(baselines.clone()).await;
    assert_eq!(after.image_digests, vec![D1.to_string()], "no re-learning");
    assert_eq!(
        after.version, enforced.version,
        "the baseline did not change"
    );
    assert_eq!(after.relearn_until, None);
    assert_eq!(
        metric(server.admin_port, "procguard_server_reports_refused_total"),
        Some(3.0)
    );

    let mut incidents = pb::incident_service_client::IncidentServiceClient::new(ch.clone());
    let list = incidents
        .list_incidents(grpc::req(
            &pki,
            "viewer",
            pb::ListIncidentsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.incidents.iter().all(|i| i.exe_path != "/tmp/miner"),
        "a refused report accuses no one: {:?}",
        list.incidents
    );
    let mut audit = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let denied = wait_for(std::time::Duration::from_secs(10), || {
        let records = futures::executor::block_on(audit.list_audit(grpc::req(
            &pki,
            "siem",
            pb::ListAuditRequest {
                limit: 1000,
                ..Default::default()
            },
        )))
        .ok()?
        .into_inner()
        .records;
        records.into_iter().find(|r| r.action == "SensorReport")
    })
    .expect("the refused reports are audited");
    assert_eq!(denied.actor, "sensor:node-a");
    assert_eq!(denied.target, format!("pod/{UB}"));
    assert_eq!(denied.result, pb::AuditResult::Denied as i32);
    assert!(
        denied.detail.contains("3 event(s) refused")
            && denied.detail.contains("scheduled on node 'node-b'"),
        "{}",
        denied.detail
    );

    // node-a's own pod still reports: a deviation there is an incident.
    let shell = report(&mut sensor, &web, UA, D1, "/bin/sh");
    // A pod the API never heard of (deleted long ago, say): kept, but its new image digest
    // is not trusted, so it reopens nothing either.
    let unknown = report(&mut sensor, &web, UNKNOWN, D2, "/usr/bin/curl");
    assert!(sensor.send_acked(vec![shell, unknown]).await.unwrap() > last);
    let list = incidents
        .list_incidents(grpc::req(
            &pki,
            "viewer",
            pb::ListIncidentsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    for exe in ["/bin/sh", "/usr/bin/curl"] {
        assert!(
            list.incidents.iter().any(|i| i.exe_path == exe),
            "{exe}: {:?}",
            list.incidents
        );
    }
    let after = get(baselines).await;
    assert_eq!(after.image_digests, vec![D1.to_string()]);
    assert_eq!(
        metric(server.admin_port, "procguard_server_reports_verified_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            server.admin_port,
            "procguard_server_reports_unverified_total"
        ),
        Some(1.0)
    );
}
