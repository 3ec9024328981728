//! The first end-to-end path: a real container in a kubelet-shaped cgroup runs `/usr/bin/id`,
//! the real sensor sees it through the proc connector, streams it over mTLS to the real server,
//! and its baseline shows in `procguardctl` within 2 s.

use procguard_tests::*;
use std::time::{Duration, Instant};

#[test]
fn a_container_exec_appears_in_its_baseline_within_two_seconds() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    // fanotify names the executable of processes gone before /proc is read; `id` lives ~1 ms.
    let sensor = Sensor::start(&pki, &server, "node-a", work.path(), &["--fanotify"]);

    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "120"]);
    let workload = format!("default//pod/pod-{uid}/{}", c.short());

    let started = Instant::now();
    let out = c.exec(&["/usr/bin/id"]);
    assert!(out.status.success(), "docker exec id failed: {out:?}");
    let found = wait_for(Duration::from_secs(2), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok()?;
        let elements = b["elements"].as_array()?;
        elements
            .iter()
            .any(|e| e["exe_path"] == "/usr/bin/id")
            .then_some(b)
    });
    let elapsed = started.elapsed();
    let b = found.unwrap_or_else(|| {
        panic!(
            "/usr/bin/id not in baseline {workload} within 2s.\nlist: {:?}\nsensor log:\n{}\nserver log:\n{}",
            ctl_json(&pki, &server, "viewer", &["baselines", "list"]),
            sensor.proc.log_text(),
            server.proc.log_text()
        )
    });
    eprintln!("baseline visible {elapsed:?} after docker exec");
    assert_eq!(b["state"], "learning");
    let paths: Vec<&str> = b["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["exe_path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/bin/sleep"),
        "entrypoint missing: {paths:?}"
    );
    // Paths are as seen inside the container, never the host's overlay path.
    assert!(paths.iter().all(|p| !p.contains("overlay")), "{paths:?}");
    // An exec session during learning is held for review, never trusted silently.
    let id = b["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exe_path"] == "/usr/bin/id")
        .unwrap();
    assert_eq!(id["status"], "needs-review", "{id}");
    assert_eq!(id["review_reasons"][0], "exec-session", "{id}");

    // The listing shows it too, and a viewer may not approve.
    let list = ctl_json(&pki, &server, "viewer", &["baselines", "list"]).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["workload"] == workload.as_str()));
    let denied = ctl(
        &pki,
        &server,
        "viewer",
        &["baselines", "approve", &workload],
    );
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("needs role 'approver'"));
    let approved = ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", &workload, "--reason", "e2e"],
    )
    .unwrap();
    assert_eq!(approved["state"], "enforced");

    // Both calls are in the audit log, with who and the result.
    let audit = ctl_json(&pki, &server, "admin", &["audit", "list"]).unwrap();
    let records = audit.as_array().unwrap();
    assert!(
        records.iter().any(|r| r["action"] == "ApproveBaseline"
            && r["result"] == "denied"
            && r["actor"] == "dev-viewer"),
        "{audit}"
    );
    assert!(
        records.iter().any(|r| r["action"] == "ApproveBaseline"
            && r["result"] == "ok"
            && r["actor"] == "dev-approver"
            && r["target"] == workload.as_str()),
        "{audit}"
    );

    // Once enforced, a new executable in that container is a deviation, seen by the sensor.
    let before = sensor
        .metric("procguard_sensor_deviations_total")
        .unwrap_or(0.0);
    assert!(wait_for(Duration::from_secs(5), || sensor
        .metric("procguard_sensor_baselines")
        .filter(|n| *n >= 1.0))
    .is_some());
    assert!(c.exec(&["/bin/sh", "-c", "sleep 1; true"]).status.success());
    assert!(
        wait_for(Duration::from_secs(5), || sensor
            .metric("procguard_sensor_deviations_total")
            .filter(|n| *n > before))
        .is_some(),
        "no deviation for sh; sensor log:\n{}",
        sensor.proc.log_text()
    );
}

#[test]
fn a_sensor_cannot_report_for_another_node() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a", "node-b"]);
    let server = Server::start(&pki, work.path(), &[]);
    // node-b's certificate, claiming node-a.
    let mut cmd = std::process::Command::new(bin("procguard-sensor"));
    cmd.args([
        "--server",
        &server.url(),
        "--node-name",
        "node-a",
        "--tls-server-name",
        "localhost",
    ])
    .arg("--tls-ca")
    .arg(pki.file("ca.crt"))
    .arg("--tls-cert")
    .arg(pki.file("sensor-node-b.crt"))
    .arg("--tls-key")
    .arg(pki.file("sensor-node-b.key"))
    .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
    .arg("--spool-dir")
    .arg(work.path().join("spool"));
    let p = Proc::spawn(cmd, work.path().join("liar.log"));
    let refused = wait_for(Duration::from_secs(10), || {
        p.log_text()
            .contains("is not the node your certificate names")
            .then_some(())
    });
    assert!(refused.is_some(), "log:\n{}", p.log_text());
    assert!(server.proc.log_text().contains("Sensor stream refused."));
}
