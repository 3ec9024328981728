//! Who may do what, against the real server over real TLS: only a sensor certificate opens
//! the sensor stream (API and viewer certificates, a certificate named like the node, an
//! unlisted fleet certificate and another node's certificate are refused, counted and
//! audited); a sensor certificate never reaches the API, token or not; one stream past
//! `--max-subscriber-streams` is refused; a durable subscription is its creator's alone; a
//! fleet certificate naming node after node stops at `--max-sensors`.

use procguard_proto::v1 as pb;
use procguard_tests::grpc::{self, SensorStream};
use procguard_tests::*;
use std::time::Duration;
use tonic::Code;

/// The second SIEM identity's token, added to the tokens file by hand.
const OTHER_SIEM: &str = "pgt_other_siem_secret";

fn add_tokens_entries(pki: &Pki, yaml: &str) {
    let path = pki.file("tokens.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(yaml);
    std::fs::write(&path, text).unwrap();
}

async fn audit(pki: &Pki, url: &str) -> Vec<pb::AuditRecord> {
    let ch = grpc::channel(pki, url, None).await.unwrap();
    pb::audit_service_client::AuditServiceClient::new(ch)
        .list_audit(grpc::req(
            pki,
            "admin",
            pb::ListAuditRequest {
                limit: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_sensor_certificate_opens_the_sensor_stream_for_its_own_node() {
    let work = tempfile::tempdir().unwrap();
    // client-node-a: an API certificate whose common name is the node's name.
    let pki = Pki::create_with(
        &work.path().join("pki"),
        &["node-a", "node-b"],
        &["ds", "unlisted"],
        &["viewer", "admin", "node-a"],
    );
    add_tokens_entries(
        &pki,
        "certificates:\n- name: cert-viewer\n  role: viewer\n  common_name: viewer\n\
         - name: cert-admin\n  role: admin\n  common_name: admin\n",
    );
    let server = Server::start(&pki, work.path(), &["--sensor-fleet-names", "ds"]);
    let url = server.url();

    let refused = [
        ("client-viewer", "node-a", "not a sensor certificate"),
        ("client-admin", "node-a", "not a sensor certificate"),
        ("client-node-a", "node-a", "not a sensor certificate"),
        (
            "sensor-node-b",
            "node-a",
            "is not the node your certificate names",
        ),
        ("sensor-unlisted", "node-a", "--sensor-fleet-names"),
    ];
    for (identity, node, says) in refused {
        let e = SensorStream::open_as(&pki, &url, node, identity)
            .await
            .expect_err(identity);
        let s = grpc::status_of(&e);
        assert_eq!(s.code(), Code::PermissionDenied, "{identity}: {s:?}");
        assert!(s.message().contains(says), "{identity}: {s:?}");
        eprintln!("{identity} claiming {node}: {}", s.message());
    }
    // The server's own certificate is not even a client certificate (server auth only): the
    // handshake or the mark refuses it.
    assert!(SensorStream::open_as(&pki, &url, "node-a", "server")
        .await
        .is_err());

    // The real ones: a node's own certificate, and the listed fleet for any node.
    let mut a = SensorStream::open(&pki, &url, "node-a").await.unwrap();
    let w = grpc::workload("shop", "web");
    let evs = a.events(&w, &["/app/server"]);
    a.send_acked(evs).await.unwrap();
    let mut f = SensorStream::open_as(&pki, &url, "node-z", "sensor-ds")
        .await
        .unwrap();
    let evs = f.events(&w, &["/app/server"]);
    f.send_acked(evs).await.unwrap();

    let rejected = metric(
        server.admin_port,
        "procguard_server_sensor_streams_rejected_total",
    )
    .unwrap_or(0.0);
    assert!(rejected >= 5.0, "rejected streams counted: {rejected}");
    let entries = audit(&pki, &url).await;
    for actor in [
        "certificate:CN=viewer",
        "certificate:CN=admin",
        "certificate:CN=node-a",
        "certificate:CN=node-b",
        "certificate:CN=unlisted",
    ] {
        assert!(
            entries.iter().any(|e| e.actor == actor
                && e.action == "SensorSession"
                && e.result == pb::AuditResult::Denied as i32),
            "no denied SensorSession audited for {actor}: {entries:?}"
        );
    }
    assert!(server.proc.log_text().contains("Sensor stream refused."));
    assert!(server
        .proc
        .log_text()
        .contains("Sensor uses a fleet certificate"));
}

/// A fleet certificate may name any node, and each new name is a record and a metric series
/// on the server: past `--max-sensors` a new name is refused (counted, audited), while the
/// nodes already known keep reporting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_claiming_to_be_nodes_stop_at_max_sensors() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create_with(&work.path().join("pki"), &["node-a"], &["ds"], &["admin"]);
    let server = Server::start(
        &pki,
        work.path(),
        &["--sensor-fleet-names", "ds", "--max-sensors", "3"],
    );
    let url = server.url();
    let w = grpc::workload("shop", "web");
    let mut open = Vec::new();
    for node in ["node-a", "invented-1", "invented-2"] {
        let identity = if node == "node-a" {
            "sensor-node-a"
        } else {
            "sensor-ds"
        };
        let mut s = SensorStream::open_as(&pki, &url, node, identity)
            .await
            .unwrap_or_else(|e| panic!("{node}: {e:?}"));
        let evs = s.events(&w, &["/app/server"]);
        s.send_acked(evs).await.unwrap();
        open.push(s);
    }
    for node in ["invented-3", "invented-4"] {
        let e = SensorStream::open_as(&pki, &url, node, "sensor-ds")
            .await
            .expect_err(node);
        let s = grpc::status_of(&e);
        assert_eq!(s.code(), Code::ResourceExhausted, "{node}: {s:?}");
        assert!(s.message().contains("--max-sensors 3"), "{s:?}");
        assert!(s.message().contains(node), "names the refused node: {s:?}");
    }
    // A known node reconnects past the limit: the limit is on records, not streams.
    drop(open);
    let mut again = SensorStream::open_as(&pki, &url, "invented-1", "sensor-ds")
        .await
        .unwrap();
    let evs = again.events(&w, &["/app/server"]);
    again.send_acked(evs).await.unwrap();
    let refused = metric(
        server.admin_port,
        "procguard_server_limit_exceeded_total{limit=\"sensors\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(refused, 2.0, "each refused new node counted");
    let entries = audit(&pki, &url).await;
    assert!(
        entries.iter().any(|e| e.target == "invented-3"
            && e.action == "SensorSession"
            && e.result == pb::AuditResult::Denied as i32
            && e.detail.contains("--max-sensors")),
        "the refusal is audited: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_certificate_is_refused_on_the_api_even_with_a_valid_token() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create_with(&work.path().join("pki"), &["node-a"], &["ds"], &[]);
    let server = Server::start(&pki, work.path(), &["--sensor-fleet-names", "ds"]);
    for identity in ["sensor-node-a", "sensor-ds"] {
        let ch = grpc::channel_as(&pki, &server.url(), Some(identity))
            .await
            .unwrap();
        let s = pb::baseline_service_client::BaselineServiceClient::new(ch)
            .list_baselines(grpc::req(&pki, "admin", Default::default()))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{identity}: {s:?}");
        assert!(
            s.message()
                .contains("sensor certificates cannot call the API"),
            "{s:?}"
        );
    }
    // The same token without the sensor certificate is fine.
    let ch = grpc::channel(&pki, &server.url(), None).await.unwrap();
    pb::baseline_service_client::BaselineServiceClient::new(ch)
        .list_baselines(grpc::req(&pki, "admin", Default::default()))
        .await
        .unwrap();
    let entries = audit(&pki, &server.url()).await;
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "sensor-certificate:CN=node-a"
                && e.action == "ListBaselines"
                && e.result == pb::AuditResult::Denied as i32),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_stream_past_the_limit_is_refused_and_its_permit_comes_back() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &["--max-subscriber-streams", "2"]);
    let url = server.url();
    let now = pb::start_position::Position::Now(true);
    let one = grpc::subscribe(&pki, &url, now.clone(), &[]).await.unwrap();
    let two = grpc::subscribe(&pki, &url, now.clone(), &[]).await.unwrap();
    let s = grpc::subscribe(&pki, &url, now.clone(), &[])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("--max-subscriber-streams"), "{s:?}");
    assert_eq!(
        metric(
            server.admin_port,
            "procguard_server_limit_exceeded_total{limit=\"subscriber_streams\"}"
        ),
        Some(1.0)
    );
    // The open ones still get records.
    let mut sensor = SensorStream::open(&pki, &url, "node-a").await.unwrap();
    let evs = sensor.events(&grpc::workload("shop", "web"), &["/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    for mut s in [one, two].into_iter().take(1) {
        let got = tokio::time::timeout(Duration::from_secs(10), s.message()).await;
        assert!(matches!(got, Ok(Ok(Some(_)))), "{got:?}");
        drop(s);
    }
    // A closed stream gives its permit back (the server notices the reset).
    let again = wait_for_async(Duration::from_secs(10), || async {
        grpc::subscribe(&pki, &url, now.clone(), &[]).await.ok()
    })
    .await;
    assert!(again.is_some(), "no permit came back after a stream closed");
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_is_read_and_moved_only_by_its_owner() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    add_tokens_entries(
        &pki,
        &format!(
            "- name: other-siem\n  role: siem\n  sha256: {}\n",
            procguard_runtime::pki::hash_token(OTHER_SIEM)
        ),
    );
    let server = Server::start(&pki, work.path(), &[]);
    let url = server.url();
    let mut sensor = SensorStream::open(&pki, &url, "node-a").await.unwrap();
    let w = grpc::workload("shop", "web");
    for exe in ["/app/a", "/app/b", "/app/c"] {
        let evs = sensor.events(&w, &[exe]);
        sensor.send_acked(evs).await.unwrap();
    }
    let durable = || pb::start_position::Position::DurableName("splunk".into());

    // The owner subscribes (which claims the name) and acknowledges its first record.
    let mut mine = grpc::subscribe(&pki, &url, durable(), &[]).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), mine.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .cursor;
    let ch = grpc::channel(&pki, &url, None).await.unwrap();
    let mut sub = pb::subscription_service_client::SubscriptionServiceClient::new(ch);
    let acked = sub
        .ack_cursor(grpc::req(
            &pki,
            "siem",
            pb::AckCursorRequest {
                durable_name: "splunk".into(),
                cursor: first,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .cursor;
    assert_eq!(acked, first);
    let newest = sub
        .get_cursor(grpc::req(
            &pki,
            "siem",
            pb::GetCursorRequest {
                durable_name: "splunk".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .cursor;
    assert_eq!(newest, first);

    // Another SIEM identity: cannot move it forward (which would make the owner skip
    // records), read its position, or read from it.
    let s = sub
        .ack_cursor(grpc::req_token(
            OTHER_SIEM,
            pb::AckCursorRequest {
                durable_name: "splunk".into(),
                cursor: first + 2,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("belongs to another identity"), "{s:?}");
    let s = sub
        .get_cursor(grpc::req_token(
            OTHER_SIEM,
            pb::GetCursorRequest {
                durable_name: "splunk".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = sub
        .subscribe(grpc::req_token(
            OTHER_SIEM,
            pb::SubscribeRequest {
                start: Some(pb::StartPosition {
                    position: Some(durable()),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // Nothing moved: the owner resumes right after its acknowledged record.
    drop(mine);
    let after = sub
        .get_cursor(grpc::req(
            &pki,
            "siem",
            pb::GetCursorRequest {
                durable_name: "splunk".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .cursor;
    assert_eq!(after, first, "another identity moved the cursor");
    let mut resumed = grpc::subscribe(&pki, &url, durable(), &[]).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .cursor;
    assert_eq!(next, first + 1);
    // The other identity has its own names.
    sub.ack_cursor(grpc::req_token(
        OTHER_SIEM,
        pb::AckCursorRequest {
            durable_name: "elastic".into(),
            cursor: first,
        },
    ))
    .await
    .unwrap();

    let entries = audit(&pki, &url).await;
    for action in ["AckCursor", "GetCursor", "Subscribe"] {
        assert!(
            entries.iter().any(|e| e.actor == "other-siem"
                && e.action == action
                && e.target == "durable/splunk"
                && e.result != pb::AuditResult::Ok as i32
                && e.detail.contains("belongs to another identity")),
            "{action} by other-siem not audited as refused: {entries:?}"
        );
    }
}
