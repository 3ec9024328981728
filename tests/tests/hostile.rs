//! Hostile clients against the real server over real TLS: malformed protobuf on the sensor
//! stream, client certificates that are expired or signed by another CA, every role against
//! every API method, and a token over its request rate. After each, the server still serves
//! everyone else.

use procguard_proto::v1 as pb;
use procguard_tests::in_process::InProcessServer;
use procguard_tests::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn tls(pki: &Pki, identity: Option<(String, String)>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read_to_string(pki.file("ca.crt")).unwrap(),
        ))
        .domain_name("localhost");
    if let Some((crt, key)) = identity {
        t = t.identity(Identity::from_pem(crt, key));
    }
    t
}

async fn channel(server: &impl ServerHandle, tls: ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn node_identity(pki: &Pki, node: &str) -> (String, String) {
    (
        std::fs::read_to_string(pki.file(&format!("sensor-{node}.crt"))).unwrap(),
        std::fs::read_to_string(pki.file(&format!("sensor-{node}.key"))).unwrap(),
    )
}

fn hello(node: &str) -> pb::SensorMessage {
    pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Hello(pb::Hello {
            node_name: node.into(),
            sensor_version: "hostile-test".into(),
            capabilities: vec![],
            boot_id: "b".into(),
            last_sequence: 0,
            baseline_revision: 0,
            cluster: "default".into(),
        })),
    }
}

/// Opens a real sensor session and waits for the Welcome.
async fn sensor_session(server: &impl ServerHandle, pki: &Pki, node: &str) -> Result<(), Status> {
    let ch = channel(server, tls(pki, Some(node_identity(pki, node))))
        .await
        .map_err(Status::unavailable)?;
    let mut client = pb::sensor_service_client::SensorServiceClient::new(ch);
    let out = tokio_stream::iter(vec![hello(node)]).chain(tokio_stream::pending());
    let mut inbound = client.session(out).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(_)),
        }))) => Ok(()),
        Ok(Err(s)) => Err(s),
        other => Err(Status::unknown(format!("no welcome: {other:?}"))),
    }
}

use tokio_stream::StreamExt;

/// A codec that sends bytes as they are: whatever the test wants inside a gRPC frame.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// Sends `frames` (raw message bodies) on a sensor session and returns the status the stream
/// ends with.
async fn raw_session(
    server: &impl ServerHandle,
    pki: &Pki,
    node: &str,
    frames: Vec<Vec<u8>>,
) -> Status {
    let ch = channel(server, tls(pki, Some(node_identity(pki, node))))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/procguard.v1.SensorService/Session");
    let req = tonic::Request::new(tokio_stream::iter(frames).chain(tokio_stream::pending()));
    let resp = grpc.streaming(req, path, Raw).await;
    let mut inbound = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => return s,
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Status::ok("stream ended without an error"),
            Ok(Err(s)) => return s,
            Err(_) => return Status::deadline_exceeded("the server neither answered nor closed"),
        }
    }
}

#[test]
fn malformed_protobuf_on_the_sensor_stream_gets_a_clear_status_and_others_go_on() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-h", "node-ok"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let rt = rt();
    rt.block_on(async {
        use prost::Message;
        let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
        // As the first message (where the Hello belongs) ...
        let s = raw_session(&server, &pki, "node-h", vec![garbage.clone()]).await;
        assert_eq!(s.code(), Code::Internal, "{s:?}");
        assert!(s.message().contains("decode"), "{s:?}");
        // ... and after a valid Hello, in the middle of a session.
        let s = raw_session(
            &server,
            &pki,
            "node-h",
            vec![hello("node-h").encode_to_vec(), garbage],
        )
        .await;
        assert_eq!(s.code(), Code::Internal, "{s:?}");
        // A valid protobuf that breaks the protocol: a batch event without a process.
        let bad = pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Batch(pb::EventBatch {
                events: vec![pb::SensorEvent {
                    event_id: "e1".into(),
                    sequence: 1,
                    kind: 1,
                    observed_at: None,
                    process: None,
                    baseline_revision: 0,
                    ..Default::default()
                }],
            })),
        };
        let s = raw_session(
            &server,
            &pki,
            "node-h",
            vec![hello("node-h").encode_to_vec(), bad.encode_to_vec()],
        )
        .await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("process is required"), "{s:?}");
        // The server still serves another sensor and the API.
        sensor_session(&server, &pki, "node-ok").await.unwrap();
    });
    assert!(ctl_json(&pki, &server, "viewer", &["baselines", "list"]).is_ok());
    assert!(
        metric(
            server.admin_port(),
            "procguard_server_batches_rejected_total"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
}

/// A sensor certificate for `node` (marked as `pki init` marks it), signed by `issuer`, valid
/// in the given window.
fn leaf(
    node: &str,
    issuer: &Issuer<'_, KeyPair>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> (String, String) {
    let mut p = CertificateParams::new(vec![node.to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        procguard_runtime::pki::sensor_uri(node).try_into().unwrap(),
    ));
    p.distinguished_name.push(DnType::CommonName, node);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = not_before;
    p.not_after = not_after;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn expired_and_foreign_client_certificates_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-c"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let now = time::OffsetDateTime::now_utc();
    // Signed by the server's own CA, but expired yesterday.
    let ca = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.file("ca.crt")).unwrap(),
        KeyPair::from_pem(&std::fs::read_to_string(pki.file("ca.key")).unwrap()).unwrap(),
    )
    .unwrap();
    let expired = leaf(
        "node-c",
        &ca,
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    // Valid dates, the right node name, but another CA.
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other
        .distinguished_name
        .push(DnType::CommonName, "procguard development CA");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_key = KeyPair::generate().unwrap();
    let foreign_issuer = Issuer::new(other, other_key);
    let foreign = leaf(
        "node-c",
        &foreign_issuer,
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );
    let rt = rt();
    rt.block_on(async {
        for (what, id) in [("expired", expired), ("foreign CA", foreign)] {
            let refused = async {
                let ch = channel(&server, tls(&pki, Some(id))).await?;
                let mut c = pb::sensor_service_client::SensorServiceClient::new(ch);
                let out = tokio_stream::iter(vec![hello("node-c")]).chain(tokio_stream::pending());
                let mut inbound = c
                    .session(out)
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
                    Ok(Ok(Some(m))) => Ok(format!("accepted: {m:?}")),
                    Ok(Ok(None)) => Err("closed".to_string()),
                    Ok(Err(s)) => Err(s.to_string()),
                    Err(_) => Err("timeout".to_string()),
                }
            }
            .await;
            assert!(
                refused.is_err(),
                "a client certificate that is {what} was accepted: {refused:?}"
            );
            eprintln!("{what}: refused with {}", refused.unwrap_err());
        }
        // The real certificate still works.
        sensor_session(&server, &pki, "node-c").await.unwrap();
    });
}

const ROLES: [&str; 4] = ["viewer", "approver", "admin", "siem"];

/// Every API method with the role it needs.
const METHODS: [(&str, &str); 23] = [
    ("ListBaselines", "viewer"),
    ("GetBaseline", "viewer"),
    ("GetHistory", "viewer"),
    ("DiffVersions", "viewer"),
    ("DryRun", "viewer"),
    ("ExportBaselines", "viewer"),
    ("ApproveBaseline", "approver"),
    ("RejectElements", "approver"),
    ("AddElements", "approver"),
    ("RemoveElements", "approver"),
    ("ResetBaseline", "approver"),
    ("BulkApprove", "approver"),
    ("BulkReset", "approver"),
    ("ImportBaselines", "admin"),
    ("ListAudit", "siem"),
    ("ListIncidents", "viewer"),
    ("GetIncident", "viewer"),
    ("AcknowledgeIncident", "approver"),
    ("ResolveIncident", "approver"),
    ("AllowIncident", "approver"),
    ("Subscribe", "siem"),
    ("AckCursor", "siem"),
    ("GetCursor", "siem"),
];

fn satisfies(role: &str, needed: &str) -> bool {
    match needed {
        "viewer" => matches!(role, "viewer" | "approver" | "admin"),
        "approver" => matches!(role, "approver" | "admin"),
        "admin" => role == "admin",
        // The audit log is for the SIEM role, and for admins.
        "siem" => matches!(role, "siem" | "admin"),
        _ => false,
    }
}

async fn call(ch: Channel, token: Option<&str>, method: &str) -> Result<(), Status> {
    fn req<T>(m: T, token: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
    let mut b = pb::baseline_service_client::BaselineServiceClient::new(ch.clone());
    let mut a = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let mut i = pb::incident_service_client::IncidentServiceClient::new(ch.clone());
    let mut sub = pb::subscription_service_client::SubscriptionServiceClient::new(ch);
    let t = token;
    match method {
        "ListBaselines" => b.list_baselines(req(Default::default(), t)).await.map(drop),
        "GetBaseline" => b.get_baseline(req(Default::default(), t)).await.map(drop),
        "GetHistory" => b.get_history(req(Default::default(), t)).await.map(drop),
        "DiffVersions" => b.diff_versions(req(Default::default(), t)).await.map(drop),
        "DryRun" => b.dry_run(req(Default::default(), t)).await.map(drop),
        "ExportBaselines" => b
            .export_baselines(req(Default::default(), t))
            .await
            .map(drop),
        "ApproveBaseline" => b
            .approve_baseline(req(Default::default(), t))
            .await
            .map(drop),
        "RejectElements" => b
            .reject_elements(req(Default::default(), t))
            .await
            .map(drop),
        "AddElements" => b.add_elements(req(Default::default(), t)).await.map(drop),
        "RemoveElements" => b
            .remove_elements(req(Default::default(), t))
            .await
            .map(drop),
        "ResetBaseline" => b.reset_baseline(req(Default::default(), t)).await.map(drop),
        "BulkApprove" => b.bulk_approve(req(Default::default(), t)).await.map(drop),
        "BulkReset" => b.bulk_reset(req(Default::default(), t)).await.map(drop),
        "ImportBaselines" => b
            .import_baselines(req(Default::default(), t))
            .await
            .map(drop),
        "ListAudit" => a.list_audit(req(Default::default(), t)).await.map(drop),
        "ListIncidents" => i.list_incidents(req(Default::default(), t)).await.map(drop),
        "GetIncident" => i.get_incident(req(Default::default(), t)).await.map(drop),
        "AcknowledgeIncident" => i
            .acknowledge_incident(req(Default::default(), t))
            .await
            .map(drop),
        "ResolveIncident" => i
            .resolve_incident(req(Default::default(), t))
            .await
            .map(drop),
        "AllowIncident" => i.allow_incident(req(Default::default(), t)).await.map(drop),
        "Subscribe" => sub.subscribe(req(Default::default(), t)).await.map(drop),
        "AckCursor" => sub.ack_cursor(req(Default::default(), t)).await.map(drop),
        "GetCursor" => sub.get_cursor(req(Default::default(), t)).await.map(drop),
        other => panic!("unknown method {other}"),
    }
}

#[test]
fn every_role_against_every_method() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-r"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let rt = rt();
    let mut failures = Vec::new();
    rt.block_on(async {
        let ch = channel(&server, tls(&pki, None)).await.unwrap();
        for (method, needed) in METHODS {
            for role in ROLES {
                let token = pki.token(role);
                let got = call(ch.clone(), Some(&token), method).await;
                let allowed = satisfies(role, needed);
                let ok = match &got {
                    Err(s) if s.code() == Code::PermissionDenied => {
                        !allowed && s.message().contains(&format!("needs role '{needed}'"))
                    }
                    Err(s) if s.code() == Code::Unauthenticated => false,
                    // Allowed calls may still fail on their (empty) input; never on authority.
                    _ => allowed,
                };
                if !ok {
                    failures.push(format!("{role} -> {method}: {got:?}"));
                }
            }
            // No token, and a token nobody issued.
            for bad in [None, Some("not-a-real-token")] {
                match call(ch.clone(), bad, method).await {
                    Err(s) if s.code() == Code::Unauthenticated => {}
                    other => failures.push(format!("{bad:?} -> {method}: {other:?}")),
                }
            }
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every denial is in the audit log.
    let audit = ctl_json(
        &pki,
        &server,
        "admin",
        &["audit", "list", "--limit", "1000"],
    );
    let denied = audit
        .as_ref()
        .ok()
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["result"] == "denied")
        .count();
    assert!(denied >= 30, "only {denied} denials audited: {audit:?}");
}

#[test]
fn a_token_over_its_rate_is_refused_and_counted_others_go_on() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-r"]);
    let server = InProcessServer::start(&pki, work.path(), &["--api-rps", "1", "--api-burst", "3"]);
    let rt = rt();
    rt.block_on(async {
        let ch = channel(&server, tls(&pki, None)).await.unwrap();
        let viewer = pki.token("viewer");
        let mut refused = 0;
        for _ in 0..8 {
            if let Err(s) = call(ch.clone(), Some(&viewer), "ListBaselines").await {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("--api-rps"), "{s:?}");
                refused += 1;
            }
        }
        assert!(
            refused >= 4,
            "only {refused} of 8 refused at 1/s with a burst of 3"
        );
        // Another token has its own bucket.
        call(ch.clone(), Some(&pki.token("approver")), "ListBaselines")
            .await
            .unwrap();
    });
    let counted = metric(
        server.admin_port(),
        "procguard_server_limit_exceeded_total{limit=\"api_rps\"}",
    )
    .unwrap_or(0.0);
    assert!(counted >= 4.0, "{counted}");
}

/// A valid sensor event for `node` with `argv`.
fn event(node: &str, seq: u64, argv: Vec<String>) -> pb::SensorEvent {
    use procguard_core::{ProcessEvent, WorkloadIdentity, WorkloadKind};
    let mut p = ProcessEvent::test("/usr/bin/app")
        .on_host()
        .pid(100)
        .on_node(node)
        .in_workload(&WorkloadIdentity::new(
            "default",
            "ns",
            WorkloadKind::Deployment,
            "app",
            "app",
        ));
    p.argv = argv;
    pb::SensorEvent {
        event_id: format!("limit-test-{seq}"),
        sequence: seq,
        kind: pb::EventKind::Observation as i32,
        observed_at: None,
        process: Some((&p).into()),
        baseline_revision: 0,
        ..Default::default()
    }
}

fn batch(events: Vec<pb::SensorEvent>) -> Vec<u8> {
    use prost::Message;
    pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events })),
    }
    .encode_to_vec()
}

#[test]
fn every_sensor_stream_limit_answers_a_clear_status_and_is_counted() {
    use prost::Message;
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-l", "node-m"]);
    let server = InProcessServer::start(
        &pki,
        work.path(),
        &[
            "--max-message-bytes",
            "4096",
            "--max-batch-events",
            "2",
            "--max-argv-count",
            "4",
            "--max-argv-bytes",
            "64",
            "--max-sensor-streams",
            "1",
        ],
    );
    let h = || hello("node-l").encode_to_vec();
    let rt = rt();
    rt.block_on(async {
        let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
            (
                "message_bytes",
                batch(vec![event("node-l", 1, vec!["x".repeat(5000)])]),
                Code::OutOfRange,
                "--max-message-bytes",
            ),
            (
                "batch_events",
                batch((1..=3).map(|i| event("node-l", i, vec![])).collect()),
                Code::InvalidArgument,
                "--max-batch-events",
            ),
            (
                "argv_count",
                batch(vec![event("node-l", 1, vec!["a".into(); 5])]),
                Code::InvalidArgument,
                "--max-argv-count",
            ),
            (
                "argv_bytes",
                batch(vec![event("node-l", 1, vec!["b".repeat(100)])]),
                Code::InvalidArgument,
                "--max-argv-bytes",
            ),
        ];
        for (limit, frame, code, names) in cases {
            let s = raw_session(&server, &pki, "node-l", vec![h(), frame]).await;
            assert_eq!(s.code(), code, "{limit}: {s:?}");
            assert!(s.message().contains(names), "{limit}: {s:?}");
            let counted = metric(
                server.admin_port(),
                &format!("procguard_server_limit_exceeded_total{{limit=\"{limit}\"}}"),
            )
            .unwrap_or(0.0);
            assert!(counted >= 1.0, "{limit} not counted");
        }
        // One stream at a time: a second sensor is refused while the first is open.
        let ch = channel(&server, tls(&pki, Some(node_identity(&pki, "node-l"))))
            .await
            .unwrap();
        let mut first = pb::sensor_service_client::SensorServiceClient::new(ch);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(hello("node-l")).await.unwrap();
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut open = first.session(out).await.unwrap().into_inner();
        assert!(open.message().await.unwrap().is_some());
        let refused = sensor_session(&server, &pki, "node-m").await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("--max-sensor-streams"));
        // The first sensor ends its stream.
        drop(tx);
        // Once it closes, the next sensor gets in.
        let mut ok = false;
        for _ in 0..50 {
            if sensor_session(&server, &pki, "node-m").await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the stream permit was never returned");
    });
}

/// A workload that runs endless distinct executables while learning (a build job, or an
/// attacker during training) stops its baseline at `--max-baseline-elements`: what does not fit
/// is refused, reported as a deviation and counted, and the baseline waits for review, marked,
/// in the API and in `procguardctl`.
#[test]
fn learning_stops_at_the_element_limit_and_what_did_not_fit_deviates() {
    use procguard_tests::grpc::{self, SensorStream};
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-e"]);
    let server = InProcessServer::start(&pki, work.path(), &["--max-baseline-elements", "5"]);
    let w = grpc::workload("ci", "builder");
    let exes: Vec<String> = (0..8).map(|i| format!("/usr/bin/tool-{i}")).collect();
    let rt = rt();
    rt.block_on(async {
        let mut sensor = SensorStream::open(&pki, &server.url(), "node-e")
            .await
            .unwrap();
        // Two batches, so the limit is reached in one and enforced across the next.
        let refs: Vec<&str> = exes.iter().map(String::as_str).collect();
        let first = sensor.events(&w, &refs[..6]);
        sensor.send_acked(first).await.unwrap();
        let second = sensor.events(&w, &[refs[6], refs[7], refs[0]]);
        sensor.send_acked(second).await.unwrap();
    });
    let id = "test/ci/deployment/builder/main";
    let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", id]).unwrap();
    assert_eq!(b["state"], "pending-review", "{b:#}");
    assert_eq!(b["elements"].as_array().unwrap().len(), 5, "{b:#}");
    assert_eq!(b["learning"]["end_reason"], "element-limit", "{b:#}");
    let limit = &b["learning"]["element_limit"];
    assert_eq!(limit["limit"], 5, "{b:#}");
    // tool-5 reached the limit; tool-6 and tool-7 came after; tool-0 is in the baseline.
    assert_eq!(limit["refused"], 3, "{b:#}");
    let learned: Vec<&str> = b["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["exe_path"].as_str().unwrap())
        .collect();
    for refused in &exes[5..] {
        assert!(
            !learned.contains(&refused.as_str()),
            "{refused} was learned"
        );
    }
    // The text form says so, and what to do.
    let text = ctl(&pki, &server, "viewer", &["baselines", "get", id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("element limit reached") && text.contains("--max-baseline-elements"),
        "{text}"
    );
    // Each refused executable is a deviation: an incident, not silence, and not low severity.
    let incidents = ctl_json(&pki, &server, "viewer", &["incidents", "list"]).unwrap();
    let incidents = incidents.as_array().unwrap();
    for refused in &exes[5..] {
        let i = incidents
            .iter()
            .find(|i| i["exe_path"] == refused.as_str())
            .unwrap_or_else(|| panic!("no incident for {refused}: {incidents:#?}"));
        assert_eq!(i["severity"], "medium", "{i:#}");
    }
    assert_eq!(incidents.len(), 3, "{incidents:#?}");
    let counted = metric(
        server.admin_port(),
        "procguard_server_limit_exceeded_total{limit=\"baseline_elements\"}",
    );
    assert_eq!(counted, Some(3.0));
}

/// A unary API call over `--max-message-bytes` is refused by tonic's decoder before any handler
/// runs; the server still answers with a status that names the flag, and counts it with the
/// stream violations. Other calls go on.
#[test]
fn an_oversized_api_call_is_refused_with_a_clear_status_and_counted() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-o"]);
    let server = InProcessServer::start(&pki, work.path(), &["--max-message-bytes", "4096"]);
    let counted = || {
        metric(
            server.admin_port(),
            "procguard_server_limit_exceeded_total{limit=\"message_bytes\"}",
        )
        .unwrap_or(0.0)
    };
    let rt = rt();
    rt.block_on(async {
        let ch = channel(&server, tls(&pki, None)).await.unwrap();
        let mut b = pb::baseline_service_client::BaselineServiceClient::new(ch.clone());
        let mut req = tonic::Request::new(pb::ImportBaselinesRequest {
            yaml: "# padding\n".repeat(1000),
            dry_run: true,
            reason: "too big".into(),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", pki.token("admin")).parse().unwrap(),
        );
        let s = b.import_baselines(req).await.unwrap_err();
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
        assert!(s.message().contains("--max-message-bytes"), "{s:?}");
        assert!(s.message().contains("4096"), "{s:?}");
        // A request within the limit on the same connection is served.
        call(ch, Some(&pki.token("viewer")), "ListBaselines")
            .await
            .unwrap();
    });
    assert_eq!(counted(), 1.0);
}

/// The per-token rate limit covers every API method for every role (the siem role's audit log
/// included), and calls without a valid token share one bucket. It is taken before the role
/// check, so a flood of calls the caller may not make cannot write audit records at will
/// either: of each run of refusals only the first is audited, the rest are counted.
#[test]
fn every_method_is_rate_limited_for_every_role_and_the_first_refusal_is_audited() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-r"]);
    // One call per caller, then (for the length of this test) no refill.
    let server = InProcessServer::start(
        &pki,
        work.path(),
        &["--api-rps", "0.001", "--api-burst", "1"],
    );
    let tokens: Vec<(String, Option<String>)> = ROLES
        .iter()
        .map(|r| (r.to_string(), Some(pki.token(r))))
        .chain([
            ("no token".to_string(), None),
            ("unknown token".to_string(), Some("not-a-real-token".into())),
        ])
        .collect();
    let rt = rt();
    let mut failures = Vec::new();
    rt.block_on(async {
        let ch = channel(&server, tls(&pki, None)).await.unwrap();
        for (who, token) in &tokens {
            // The one call the bucket holds (the unknown token shares the no-token bucket,
            // already empty by then).
            let first = call(ch.clone(), token.as_deref(), "ListBaselines").await;
            if who != "unknown token" {
                assert_ne!(
                    first.as_ref().err().map(Status::code),
                    Some(Code::ResourceExhausted),
                    "{who}: {first:?}"
                );
            }
            for (method, _) in METHODS {
                match call(ch.clone(), token.as_deref(), method).await {
                    Err(s)
                        if s.code() == Code::ResourceExhausted
                            && s.message().contains("--api-rps") => {}
                    other => failures.push(format!("{who} -> {method}: {other:?}")),
                }
            }
        }
    });
    assert!(
        failures.is_empty(),
        "not rate-limited:\n{}",
        failures.join("\n")
    );
    let counted = metric(
        server.admin_port(),
        "procguard_server_limit_exceeded_total{limit=\"api_rps\"}",
    );
    // Every method for every caller, plus the unknown token's first call (its bucket, shared
    // with the no-token calls, was already empty).
    assert_eq!(counted, Some((tokens.len() * METHODS.len() + 1) as f64));
    // Restart with fresh buckets on the same database to read the audit log.
    drop(server);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let audit = ctl_json(
        &pki,
        &server,
        "admin",
        &["audit", "list", "--limit", "1000"],
    )
    .unwrap();
    let refusals: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["result"] == "denied" && r["detail"].as_str().unwrap_or("").contains("--api-rps")
        })
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // One audited refusal per role's token, and one for all calls without a valid token.
    for role in ROLES {
        let n = refusals
            .iter()
            .filter(|(a, _)| *a == format!("dev-{role}"))
            .count();
        assert_eq!(n, 1, "{role}: {refusals:?}");
    }
    let anonymous = refusals.iter().filter(|(a, _)| a == "anonymous").count();
    assert_eq!(anonymous, 1, "{refusals:?}");
    assert_eq!(refusals.len(), ROLES.len() + 1, "{refusals:?}");
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The audit log cannot be used to fill the disk: 300 unauthenticated calls each carrying a
/// 3 MiB target (the audit target is read from the request before authentication) leave the
/// data directory within a few MiB, each denied call still audited, its target cut and marked.
#[test]
fn unauthenticated_calls_with_huge_fields_cannot_fill_the_disk() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-f"]);
    let server = Server::start(&pki, work.path(), &[]);
    let rt = rt();
    let before = dir_bytes(&server.data_dir);
    let huge = "n".repeat(3 << 20);
    let denied = rt.block_on(async {
        let ch = channel(&server, tls(&pki, None)).await.unwrap();
        let mut denied = 0;
        for i in 0..300 {
            let mut b = pb::baseline_service_client::BaselineServiceClient::new(ch.clone());
            let mut req = tonic::Request::new(pb::ApproveBaselineRequest {
                workload: Some(pb::WorkloadIdentity {
                    cluster: "c".into(),
                    namespace: format!("{i}{huge}"),
                    kind: pb::WorkloadKind::Deployment as i32,
                    workload_name: "web".into(),
                    container_name: "app".into(),
                }),
                reason: "flood".into(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("authorization", "Bearer not-a-token".parse().unwrap());
            let s = b.approve_baseline(req).await.unwrap_err();
            assert!(
                matches!(s.code(), Code::Unauthenticated | Code::ResourceExhausted),
                "{s:?}"
            );
            denied += 1;
        }
        denied
    });
    assert_eq!(denied, 300);
    let grown = dir_bytes(&server.data_dir).saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "300 denied calls with 3 MiB fields grew the data directory by {grown} bytes"
    );
    // They were audited, with their targets cut.
    let audit =
        ctl_json(&pki, &server, "siem", &["audit", "list", "--limit", "1000"]).expect("audit list");
    let records = audit.as_array().expect("audit list");
    let unauthenticated: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "ApproveBaseline")
        .collect();
    assert!(!unauthenticated.is_empty(), "{audit}");
    for r in unauthenticated {
        let target = r["target"].as_str().unwrap_or_default();
        assert!(target.len() <= 512 && target.ends_with('…'), "{r}");
    }
}

/// Sequence poisoning: an event numbered 2^64-1 for node X would have the server acknowledge
/// everything X will ever send, and X's real sensor delete its spool and fall silent while
/// looking healthy. It is refused with a status that says what was wrong and what to do, and
/// counted; a number inside the bound but beyond the real sensor's own (a stolen certificate
/// can send that) is stored, yet the real sensor is never acknowledged past its own numbers: it
/// keeps delivering, on its open stream and after a restart.
#[test]
fn a_sequence_far_beyond_the_nodes_mark_is_refused_and_the_real_sensor_keeps_delivering() {
    use prost::Message;
    if !require(is_root(), "the real sensor needs root") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-q"]);
    let server = Server::start(&pki, work.path(), &[]);
    let sensor = Sensor::start(&pki, &server, "node-q", work.path(), &[]);
    let stored =
        || metric(server.admin_port, "procguard_server_events_ingested_total").unwrap_or(0.0);
    let execs = |n: usize| {
        for _ in 0..n {
            std::process::Command::new("/bin/true").status().unwrap();
        }
    };
    execs(20);
    let acked = |s: &Sensor| {
        s.metric("procguard_sensor_events_acked_total")
            .unwrap_or(0.0)
    };
    assert!(
        wait_for(Duration::from_secs(15), || (acked(&sensor) > 0.0)
            .then_some(()))
        .is_some(),
        "the real sensor delivered nothing; log:\n{}",
        sensor.proc.log_text()
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let h = || hello("node-q").encode_to_vec();
    rt().block_on(async {
        let s = raw_session(
            &server,
            &pki,
            "node-q",
            vec![h(), batch(vec![event("node-q", u64::MAX, vec![])])],
        )
        .await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(
            s.message().contains("sequence 18446744073709551615")
                && s.message().contains("node-q")
                && s.message().contains("clock"),
            "the status names what was wrong and what to check: {s:?}"
        );
        // Inside the bound, beyond the real sensor's numbers: the server cannot tell it from a
        // sensor whose clock runs ahead, so it is stored; the stream that sent it ends when
        // the test stops listening.
        let ahead = now_us + (1 << 39);
        let s = raw_session(
            &server,
            &pki,
            "node-q",
            vec![h(), batch(vec![event("node-q", ahead, vec![])])],
        )
        .await;
        assert_eq!(s.code(), Code::DeadlineExceeded, "accepted: {s:?}");
    });
    assert_eq!(
        metric(
            server.admin_port,
            "procguard_server_limit_exceeded_total{limit=\"sequence\"}"
        ),
        Some(1.0)
    );
    // The real sensor's open stream is acknowledged only up to what it sent.
    let (before, stored_before) = (acked(&sensor), stored());
    execs(20);
    assert!(
        wait_for(Duration::from_secs(15), || (acked(&sensor) > before
            && stored() > stored_before)
            .then_some(()))
        .is_some(),
        "the real sensor stopped delivering on its open stream; log:\n{}",
        sensor.proc.log_text()
    );
    // Restarted (same spool), it is welcomed at its own mark, not the poisoned one, and keeps
    // delivering; nothing it sent was refused as a protocol error.
    let spool_log = sensor.proc.log_text();
    drop(sensor);
    let sensor = Sensor::start(&pki, &server, "node-q", work.path(), &[]);
    let stored_before = stored();
    execs(20);
    assert!(
        wait_for(Duration::from_secs(15), || (acked(&sensor) > 0.0
            && stored() > stored_before)
            .then_some(()))
        .is_some(),
        "the restarted sensor delivered nothing; log:\n{}\nfirst run:\n{spool_log}",
        sensor.proc.log_text()
    );
    assert_eq!(
        sensor.metric("procguard_sensor_server_protocol_errors_total"),
        Some(0.0)
    );
    assert!(
        metric(
            server.admin_port,
            "procguard_server_sensor_acked_beyond_last_total"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the clamped Welcome is counted"
    );
}
