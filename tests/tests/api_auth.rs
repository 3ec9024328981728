//! API authentication beyond tokens: client certificates bound to roles, and a sensor
//! certificate that is not an API identity (even with its common name listed) unless the
//! tokens file lists its sensor URI.

use procguard_tests::*;
use std::process::Command;

/// `procguardctl` with `file`'s certificate (`client-alice`, `sensor-node-a`) and no token.
fn ctl_cert(pki: &Pki, server: &Server, file: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("procguardctl"))
        .args([
            "--server",
            &server.url(),
            "--tls-server-name",
            "localhost",
            "-o",
            "json",
        ])
        .arg("--tls-ca")
        .arg(pki.file("ca.crt"))
        .arg("--tls-cert")
        .arg(pki.file(&format!("{file}.crt")))
        .arg("--tls-key")
        .arg(pki.file(&format!("{file}.key")))
        .args(args)
        .env_remove("PROCGUARD_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn client_certificates_authenticate_api_callers_by_role() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create_with(
        &work.path().join("pki"),
        &["node-a", "node-b"],
        &[],
        &["alice", "bob"],
    );
    let tokens = pki.file("tokens.yaml");
    let mut yaml = std::fs::read_to_string(&tokens).unwrap();
    // node-a's common name is listed, which does not make its sensor certificate an API
    // identity; node-b's sensor URI is listed, which does.
    yaml.push_str(
        "certificates:\n- name: alice\n  role: approver\n  common_name: alice\n- name: bob\n  role: viewer\n  common_name: bob\n\
         - name: cn-node-a\n  role: admin\n  common_name: node-a\n\
         - name: node-b-reader\n  role: viewer\n  uri: procguard://sensor/node-b\n",
    );
    std::fs::write(&tokens, yaml).unwrap();
    let server = Server::start(&pki, work.path(), &[]);
    let workload = "c/ns/deployment/web/app";

    let ok = ctl_cert(
        &pki,
        &server,
        "client-alice",
        &[
            "baselines",
            "add",
            workload,
            "--element",
            "/app/server",
            "--reason",
            "cert",
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let viewer = ctl_cert(&pki, &server, "client-bob", &["baselines", "get", workload]);
    assert!(viewer.status.success(), "{viewer:?}");
    let denied = ctl_cert(
        &pki,
        &server,
        "client-bob",
        &["baselines", "reset", workload],
    );
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("'bob' has role 'viewer'"));
    // A sensor's certificate is not an API identity, though its common name is listed, and
    // not with a valid token either.
    let sensor = ctl_cert(&pki, &server, "sensor-node-a", &["baselines", "list"]);
    assert_ne!(sensor.status.code(), Some(0), "{sensor:?}");
    let said = String::from_utf8_lossy(&sensor.stderr);
    assert!(
        said.contains("is a sensor certificate, and sensor certificates cannot call the API"),
        "{said}"
    );
    let mut with_token = Command::new(bin("procguardctl"));
    with_token
        .args(["--server", &server.url(), "--tls-server-name", "localhost"])
        .arg("--tls-ca")
        .arg(pki.file("ca.crt"))
        .arg("--tls-cert")
        .arg(pki.file("sensor-node-a.crt"))
        .arg("--tls-key")
        .arg(pki.file("sensor-node-a.key"))
        .arg("--token-file")
        .arg(pki.file("admin.token"))
        .args(["baselines", "list"]);
    let with_token = with_token.output().unwrap();
    assert_ne!(with_token.status.code(), Some(0), "{with_token:?}");
    // One listed by its sensor URI is the API identity it is listed as.
    let listed = ctl_cert(
        &pki,
        &server,
        "sensor-node-b",
        &["baselines", "get", workload],
    );
    assert!(listed.status.success(), "{listed:?}");

    let audit = ctl_json(&pki, &server, "admin", &["audit", "list"]).unwrap();
    let rec = audit.as_array().unwrap();
    assert!(
        rec.iter()
            .any(|r| r["actor"] == "alice" && r["action"] == "AddElements" && r["result"] == "ok"),
        "{audit}"
    );
    assert!(
        rec.iter().any(|r| r["actor"] == "bob"
            && r["action"] == "ResetBaseline"
            && r["result"] == "denied"),
        "{audit}"
    );
    assert!(
        rec.iter()
            .any(|r| r["actor"] == "sensor-certificate:CN=node-a"
                && r["action"] == "ListBaselines"
                && r["result"] == "denied"),
        "{audit}"
    );
    assert!(
        rec.iter()
            .any(|r| r["actor"] == "node-b-reader" && r["result"] == "ok"),
        "{audit}"
    );
}
