//! Baselines end to end: learning across sensors, learning that ends on evidence, delivery to
//! sensors that connect later, poisoning resistance, image changes, dry runs, and GitOps
//! export/import — all with the real binaries over TLS.

use procguard_proto::v1 as pb;
use procguard_tests::*;
use serde_json::Value;
use std::time::Duration;

fn elements(b: &Value) -> Vec<(String, String)> {
    b["elements"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["exe_path"].as_str().unwrap_or("").to_string(),
                        e["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn get(pki: &Pki, server: &Server, workload: &str) -> Option<Value> {
    ctl_json(pki, server, "viewer", &["baselines", "get", workload]).ok()
}

fn wait_element(pki: &Pki, server: &Server, workload: &str, exe: &str) -> Value {
    wait_for(Duration::from_secs(5), || {
        get(pki, server, workload).filter(|b| elements(b).iter().any(|(p, _)| p == exe))
    })
    .unwrap_or_else(|| {
        panic!(
            "{exe} never joined {workload}; list: {:?}",
            ctl_json(pki, server, "viewer", &["baselines", "list"])
        )
    })
}

#[test]
fn two_sensors_learn_one_workload_and_learning_ends_by_stability() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a", "node-b"]);
    // Learning may end after 3 s once 5 s pass with no new executable; one pod is enough here.
    let server = Server::start(
        &pki,
        work.path(),
        &[
            "--learning-min",
            "3s",
            "--learning-quiet",
            "4s",
            "--learning-max",
            "10m",
            "--learning-min-pods",
            "1",
        ],
    );
    let a = Sensor::start(&pki, &server, "node-a", work.path(), &[]);
    let b = Sensor::start(&pki, &server, "node-b", work.path(), &[]);
    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "120"]);
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    assert!(c.exec(&["/bin/sh", "-c", "sleep 1; true"]).status.success());
    let both = |b: &Value| {
        b["elements"].as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["exe_path"] == "/bin/sh"
                    && e["provenance"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.len() == 2)
            })
        })
    };
    let base = wait_for(Duration::from_secs(5), || {
        get(&pki, &server, &workload).filter(|b| b["learning"]["nodes_observed"] == 2 && both(b))
    })
    .unwrap_or_else(|| {
        panic!(
            "both sensors never fed {workload}: {:?}\n{}\n{}",
            get(&pki, &server, &workload),
            a.proc.log_text(),
            b.proc.log_text()
        )
    });
    let ls = base["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exe_path"] == "/bin/sh")
        .unwrap();
    let nodes: Vec<&str> = ls["provenance"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(nodes, vec!["node-a", "node-b"], "{ls}");
    assert_eq!(base["state"], "learning");

    // No new executable for the quiet period after the minimum: learning ends, by stability,
    // and the baseline waits for a person (the default policy).
    let ended = wait_for(Duration::from_secs(20), || {
        get(&pki, &server, &workload).filter(|b| b["state"] != "learning")
    })
    .expect("learning never ended");
    assert_eq!(ended["state"], "pending-review", "{ended}");
    assert_eq!(ended["learning"]["end_reason"], "stable", "{ended}");
    let history = ctl_json(
        &pki,
        &server,
        "viewer",
        &["baselines", "history", &workload],
    )
    .unwrap();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["action"] == "learning-ended" && v["actor"] == "policy"),
        "{history}"
    );
}

#[test]
fn an_approved_baseline_reaches_a_sensor_that_connects_later() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a", "node-late"]);
    let server = Server::start(&pki, work.path(), &[]);
    let a = Sensor::start(&pki, &server, "node-a", work.path(), &[]);
    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "120"]);
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    wait_element(&pki, &server, &workload, "/bin/sleep");
    let approved = ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", &workload, "--reason", "reviewed"],
    )
    .unwrap();
    assert_eq!(approved["state"], "enforced");
    drop(a);

    let late = Sensor::start(&pki, &server, "node-late", work.path(), &[]);
    assert!(
        wait_for(Duration::from_secs(5), || late
            .metric("procguard_sensor_baselines")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "late sensor never received the baseline: {}",
        late.proc.log_text()
    );
    // Long enough to be read from /proc (sub-millisecond execs are the capture issue's business).
    assert!(c.exec(&["/bin/sh", "-c", "sleep 1; true"]).status.success());
    assert!(
        wait_for(Duration::from_secs(5), || late
            .metric("procguard_sensor_deviations_total")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "late sensor did not flag /bin/sh: {}",
        late.proc.log_text()
    );
    // The server agrees: /bin/sh did not join the enforced baseline.
    let b = get(&pki, &server, &workload).unwrap();
    assert!(!elements(&b).iter().any(|(p, _)| p == "/bin/sh"), "{b}");
}

#[test]
fn drift_during_learning_waits_for_review_and_dry_run_shows_what_would_alert() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    let _a = Sensor::start(&pki, &server, "node-a", work.path(), &[]);
    let uid = pod_uid();
    // An "attacker" present during training drops a binary in /tmp and runs it (busybox
    // copied as /tmp/sleep, so it runs for a second).
    let c = Container::run_in_pod(
        &uid,
        &[
            "/bin/sh",
            "-c",
            "/bin/cp /bin/sleep /tmp/sleep; /tmp/sleep 1; exec /bin/sleep 120",
        ],
    );
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    // The entrypoint ends by exec-ing /bin/sleep after the dropped binary ran: wait for both.
    wait_element(&pki, &server, &workload, "/bin/sleep");
    let b = wait_element(&pki, &server, &workload, "/tmp/sleep");
    let dropped = b["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exe_path"] == "/tmp/sleep")
        .unwrap();
    assert_eq!(dropped["status"], "needs-review", "{dropped}");
    assert!(
        dropped["review_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "drift-writable-layer"),
        "{dropped}"
    );
    assert_eq!(
        dropped["origins"],
        serde_json::json!(["writable-layer"]),
        "{dropped}"
    );

    // A blanket approval does not sweep it in.
    let approved = ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", &workload],
    )
    .unwrap();
    let status: Vec<(String, String)> = elements(&approved);
    assert!(
        status.contains(&("/tmp/sleep".into(), "needs-review".into())),
        "{status:?}"
    );
    assert!(
        status.contains(&("/bin/sleep".into(), "approved".into())),
        "{status:?}"
    );

    // Dry run of the current baseline: /tmp/miner would have alerted; /bin/sleep would not.
    let dry = ctl_json(
        &pki,
        &server,
        "viewer",
        &["baselines", "dry-run", &workload, "--days", "1"],
    )
    .unwrap();
    let alerts: Vec<&str> = dry["would_alert"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["element"].as_str())
        .collect();
    assert!(alerts.contains(&"/tmp/sleep"), "{dry}");
    assert!(!alerts.contains(&"/bin/sleep"), "{dry}");
    assert!(dry["events_replayed"].as_u64().unwrap() >= 3, "{dry}");
    // Each hit says where what would have alerted came from.
    let hit = dry["would_alert"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["element"] == "/tmp/sleep")
        .unwrap();
    assert_eq!(
        hit["origins"],
        serde_json::json!(["writable-layer"]),
        "{dry}"
    );
    // A candidate with only /bin/sleep flags everything else.
    let dry = ctl_json(
        &pki,
        &server,
        "viewer",
        &["baselines", "dry-run", &workload, "--element", "/bin/sleep"],
    )
    .unwrap();
    let alerts: Vec<&str> = dry["would_alert"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["element"].as_str())
        .collect();
    // /bin/cp may have been too short-lived to read without --fanotify; the shell (running
    // inline code: `sh -c`) and the dropped binary lived long enough, and the candidate
    // itself must not alert.
    assert!(
        alerts.contains(&"/bin/sh [inline]")
            && alerts.contains(&"/tmp/sleep")
            && !alerts.contains(&"/bin/sleep"),
        "{dry}"
    );
    let too_long = ctl(
        &pki,
        &server,
        "viewer",
        &["baselines", "dry-run", &workload, "--days", "365"],
    );
    assert_eq!(too_long.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("at most 30"));
}

#[test]
fn export_import_round_trip_on_a_fresh_server() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let first = Server::start(&pki, work.path(), &[]);
    let workload = "prod/shop/deployment/web/nginx";
    // Build a baseline by hand: add elements, reject one.
    ctl_json(
        &pki,
        &first,
        "approver",
        &[
            "baselines",
            "add",
            workload,
            "--element",
            "/usr/sbin/nginx",
            "--element",
            "/usr/bin/python3 /app/health.py",
            "--element",
            "/bin/sh",
        ],
    )
    .unwrap();
    ctl_json(
        &pki,
        &first,
        "approver",
        &["baselines", "reject", workload, "--element", "/bin/sh"],
    )
    .unwrap();
    // An applet added with exactly two contents: pinned to those, and the audit log says so.
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let before = get(&pki, &first, workload).unwrap()["version"]
        .as_u64()
        .unwrap();
    let wget = "/bin/busybox (wget)";
    let added = ctl_json(
        &pki,
        &first,
        "approver",
        &[
            "baselines",
            "add",
            workload,
            "--element",
            wget,
            "--sha256",
            &a,
            "--sha256",
            &b,
        ],
    )
    .unwrap();
    let pinned = added["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exe_path"] == "/bin/busybox" && e["applet"] == "wget")
        .unwrap_or_else(|| panic!("{added:#}"));
    assert_eq!(
        pinned["approved_sha256"],
        serde_json::json!([a, b]),
        "{pinned}"
    );
    let audit = ctl_json(&pki, &first, "admin", &["audit", "list"]).unwrap();
    let record = audit
        .as_array()
        .unwrap()
        .iter()
        // Newest first: the latest such record.
        .find(|r| r["action"] == "AddElements" && r["result"] == "ok")
        .unwrap()
        .clone();
    let detail = record["detail"].as_str().unwrap();
    assert!(
        detail.contains(wget) && detail.contains(&a) && detail.contains(&b),
        "{record}"
    );
    // The diff names the element with its applet and each content it gained.
    let diff = ctl_json(
        &pki,
        &first,
        "viewer",
        &["baselines", "diff", workload, "--from", &before.to_string()],
    )
    .unwrap();
    assert_eq!(diff["added"], serde_json::json!([wget]), "{diff}");
    assert_eq!(
        diff["content_changed"],
        serde_json::json!([{"element": wget, "sha256_added": [a, b], "sha256_removed": []}]),
        "{diff}"
    );
    // A malformed content, or contents with no single element to belong to, are refused
    // and change nothing.
    for (args, want) in [
        (
            vec!["--element", wget, "--sha256", "ABC"],
            "64 lowercase hex digits",
        ),
        (
            vec!["--element", wget, "--element", "/bin/id", "--sha256", &a],
            "exactly one --element",
        ),
    ] {
        let mut all = vec!["baselines", "add", workload];
        all.extend(args);
        let out = ctl(&pki, &first, "approver", &all);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains(want), "{msg}");
    }
    let original = get(&pki, &first, workload).unwrap();
    assert_eq!(
        original["version"], added["version"],
        "a refused add changed it"
    );
    let export = ctl(&pki, &first, "viewer", &["baselines", "export"]);
    assert!(export.status.success(), "{export:?}");
    let yaml = String::from_utf8(export.stdout).unwrap();
    assert!(
        yaml.contains("kind: BaselineList") && yaml.contains("/app/health.py"),
        "{yaml}"
    );
    let file = work.path().join("baselines.yaml");
    std::fs::write(&file, &yaml).unwrap();
    // `-o json` is the same document as JSON (it used to be YAML whatever was asked).
    let exported_json = ctl_json(&pki, &first, "viewer", &["baselines", "export"]).unwrap();
    assert_eq!(exported_json["kind"], "BaselineList", "{exported_json}");
    assert_eq!(
        exported_json,
        serde_yaml::from_str::<Value>(&yaml).unwrap(),
        "JSON and YAML exports differ"
    );
    let json_file = work.path().join("baselines.json");
    std::fs::write(&json_file, exported_json.to_string()).unwrap();
    drop(first);

    let fresh_dir = work.path().join("fresh");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    let second = Server::start(&pki, &fresh_dir, &[]);
    // Only admins import.
    let denied = ctl(
        &pki,
        &second,
        "approver",
        &["baselines", "import", file.to_str().unwrap()],
    );
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    // A dry run changes nothing and says what would change.
    let dry = ctl_json(
        &pki,
        &second,
        "admin",
        &["baselines", "import", file.to_str().unwrap(), "--dry-run"],
    )
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changes"][0]["action"], "create", "{dry}");
    // The JSON export imports to the very same changes.
    let dry_json = ctl_json(
        &pki,
        &second,
        "admin",
        &[
            "baselines",
            "import",
            json_file.to_str().unwrap(),
            "--dry-run",
        ],
    )
    .unwrap();
    assert_eq!(dry_json["changes"], dry["changes"]);
    // It names each element with applet and script, and each content it would approve.
    let names: Vec<&str> = dry["changes"][0]["added"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&wget) && names.contains(&"/usr/bin/python3 /app/health.py"),
        "{dry}"
    );
    assert_eq!(
        dry["changes"][0]["content_changed"],
        serde_json::json!([{"element": wget, "sha256_added": [a, b], "sha256_removed": []}]),
        "{dry}"
    );
    assert!(
        get(&pki, &second, workload).is_none(),
        "dry run wrote something"
    );
    // A broken document is refused whole, with every problem located.
    let broken = work.path().join("broken.yaml");
    std::fs::write(
        &broken,
        yaml.replacen("/usr/sbin/nginx", "usr/sbin/nginx", 1)
            .replacen("kind: deployment", "kind: deploymnt", 1),
    )
    .unwrap();
    let refused = ctl(
        &pki,
        &second,
        "admin",
        &["baselines", "import", broken.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(
        msg.contains("nothing was changed") && msg.contains("items[0].workload.kind"),
        "{msg}"
    );
    assert!(
        get(&pki, &second, workload).is_none(),
        "a refused import wrote something"
    );
    let typo = work.path().join("typo.yaml");
    std::fs::write(&typo, yaml.replacen("exe:", "exe_path:", 1)).unwrap();
    let refused = ctl(
        &pki,
        &second,
        "admin",
        &["baselines", "import", typo.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown field `exe_path`"),
        "{refused:?}"
    );

    let applied = ctl_json(
        &pki,
        &second,
        "admin",
        &[
            "baselines",
            "import",
            file.to_str().unwrap(),
            "--reason",
            "gitops",
        ],
    )
    .unwrap();
    assert_eq!(applied["dry_run"], false);
    let imported = get(&pki, &second, workload).unwrap();
    assert_eq!(elements(&imported), elements(&original));
    assert_eq!(imported["state"], original["state"]);
    let history = ctl_json(&pki, &second, "viewer", &["baselines", "history", workload]).unwrap();
    assert_eq!(history[0]["action"], "import");
    assert_eq!(history[0]["actor"], "dev-admin");
    assert_eq!(history[0]["reason"], "gitops");
    // Importing the same document again changes nothing.
    let again = ctl_json(
        &pki,
        &second,
        "admin",
        &["baselines", "import", file.to_str().unwrap(), "--dry-run"],
    )
    .unwrap();
    assert_eq!(again["changes"][0]["action"], "unchanged", "{again}");
    for list in ["added", "removed", "changed", "content_changed"] {
        assert_eq!(again["changes"][0][list], serde_json::json!([]), "{again}");
    }
    // A document that drops one content of the applet is an update that names it.
    let fewer = work.path().join("fewer.yaml");
    let without_b: String = yaml
        .lines()
        .filter(|l| l.trim() != format!("- {b}"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&fewer, without_b).unwrap();
    let dropped = ctl_json(
        &pki,
        &second,
        "admin",
        &["baselines", "import", fewer.to_str().unwrap(), "--dry-run"],
    )
    .unwrap();
    assert_eq!(dropped["changes"][0]["action"], "update", "{dropped}");
    assert_eq!(
        dropped["changes"][0]["content_changed"],
        serde_json::json!([{"element": wget, "sha256_added": [], "sha256_removed": [b]}]),
        "{dropped}"
    );

    // Bulk changes by namespace; a bulk change without a filter is refused.
    let unfiltered = ctl(&pki, &second, "approver", &["baselines", "bulk-reset"]);
    assert_eq!(unfiltered.status.code(), Some(2), "{unfiltered:?}");
    let other = ctl_json(
        &pki,
        &second,
        "approver",
        &["baselines", "bulk-reset", "-n", "elsewhere"],
    )
    .unwrap();
    assert_eq!(other["changed"], serde_json::json!([]));
    let reset = ctl_json(
        &pki,
        &second,
        "approver",
        &[
            "baselines",
            "bulk-reset",
            "-n",
            "shop",
            "--reason",
            "re-learn",
        ],
    )
    .unwrap();
    assert_eq!(reset["changed"], serde_json::json!([workload]), "{reset}");
    assert_eq!(get(&pki, &second, workload).unwrap()["state"], "learning");
    let approved = ctl_json(
        &pki,
        &second,
        "approver",
        &["baselines", "bulk-approve", "-n", "shop"],
    )
    .unwrap();
    assert_eq!(
        approved["changed"],
        serde_json::json!([workload]),
        "{approved}"
    );
    assert_eq!(get(&pki, &second, workload).unwrap()["state"], "enforced");
}

/// A real gRPC sensor session with synthetic events, for server-side behaviour that needs
/// facts a sensor only has with pod metadata (image digests).
async fn send_events(pki: &Pki, server: &Server, node: &str, events: Vec<pb::SensorEvent>) -> u64 {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |f: &str| std::fs::read_to_string(pki.file(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read(&format!("sensor-{node}.crt")),
            read(&format!("sensor-{node}.key")),
        ))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::sensor_service_client::SensorServiceClient::new(channel);
    let last = events.last().map(|e| e.sequence).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Hello(pb::Hello {
            node_name: node.into(),
            sensor_version: "test".into(),
            boot_id: "t".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events })),
    })
    .await
    .unwrap();
    loop {
        let m = inbound
            .message()
            .await
            .unwrap()
            .expect("stream ended before ack");
        if let Some(pb::server_message::Body::Ack(a)) = m.body {
            if a.sequence >= last {
                return a.sequence;
            }
        }
    }
}

fn event(seq: u64, exe: &str, digest: &str) -> pb::SensorEvent {
    pb::SensorEvent {
        event_id: format!("ev-{seq}"),
        sequence: seq,
        kind: pb::EventKind::Observation as i32,
        observed_at: None,
        baseline_revision: 0,
        process: Some(pb::ProcessEvent {
            pid: 100 + seq as u32,
            ppid: 1,
            exe_path: exe.into(),
            argv: vec![exe.into()],
            comm: "x".into(),
            context: pb::ExecContext::Descendant as i32,
            completeness: pb::Completeness::Full as i32,
            node_name: "node-a".into(),
            container: Some(pb::ContainerInfo {
                container_id: "c".repeat(64),
                pod_uid: "p1".into(),
                pod_name: "web-1".into(),
                image_digest: digest.into(),
                ..Default::default()
            }),
            workload: Some(pb::WorkloadIdentity {
                cluster: "prod".into(),
                namespace: "shop".into(),
                kind: pb::WorkloadKind::Deployment as i32,
                workload_name: "web".into(),
                container_name: "app".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn an_image_change_relearns_only_new_elements() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &["--relearn-window", "1h"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let workload = "prod/shop/deployment/web/app";
    rt.block_on(send_events(
        &pki,
        &server,
        "node-a",
        vec![
            event(1, "/app/server", "sha256:v1"),
            event(2, "/bin/helper", "sha256:v1"),
        ],
    ));
    ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", workload],
    )
    .unwrap();
    ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "reject", workload, "--element", "/bin/helper"],
    )
    .unwrap();
    // Same image, new executable: a deviation, not learned.
    rt.block_on(send_events(
        &pki,
        &server,
        "node-a",
        vec![event(3, "/usr/bin/curl", "sha256:v1")],
    ));
    assert!(!elements(&get(&pki, &server, workload).unwrap())
        .iter()
        .any(|(p, _)| p == "/usr/bin/curl"));
    // New image: the new executable is learned, approved ones stay, rejected ones stay rejected.
    rt.block_on(send_events(
        &pki,
        &server,
        "node-a",
        vec![
            event(4, "/app/server-v2", "sha256:v2"),
            event(5, "/bin/helper", "sha256:v2"),
        ],
    ));
    let b = get(&pki, &server, workload).unwrap();
    let els = elements(&b);
    assert!(
        els.contains(&("/app/server".into(), "approved".into())),
        "{els:?}"
    );
    assert!(
        els.contains(&("/app/server-v2".into(), "learned".into())),
        "{els:?}"
    );
    assert!(
        els.contains(&("/bin/helper".into(), "rejected".into())),
        "{els:?}"
    );
    assert_eq!(b["state"], "enforced");
    let digests: Vec<&str> = b["image_digests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(digests, vec!["sha256:v1", "sha256:v2"]);
    // The change shows in the history, and the diff names exactly the new element.
    let history = ctl_json(&pki, &server, "viewer", &["baselines", "history", workload]).unwrap();
    let versions = history.as_array().unwrap();
    let approved_v = versions
        .iter()
        .rev()
        .find(|v| v["action"] == "rejected")
        .unwrap()["version"]
        .as_u64()
        .unwrap();
    let diff = ctl_json(
        &pki,
        &server,
        "viewer",
        &[
            "baselines",
            "diff",
            workload,
            "--from",
            &approved_v.to_string(),
        ],
    )
    .unwrap();
    assert_eq!(
        diff["added"],
        serde_json::json!(["/app/server-v2"]),
        "{diff}"
    );
    assert_eq!(diff["removed"], serde_json::json!([]), "{diff}");
}
