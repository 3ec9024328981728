//! API authentication beyond tokens: client certificates bound to roles, and a sensor
//! certificate that is not an API identity.

use procguard_tests::*;
use std::process::Command;

fn ctl_cert(pki: &Pki, server: &Server, who: &str, args: &[&str]) -> std::process::Output {
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
        .arg(pki.file(&format!("sensor-{who}.crt")))
        .arg("--tls-key")
        .arg(pki.file(&format!("sensor-{who}.key")))
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
    let pki = Pki::create(&work.path().join("pki"), &["node-a", "alice", "bob"]);
    let tokens = pki.file("tokens.yaml");
    let mut yaml = std::fs::read_to_string(&tokens).unwrap();
    yaml.push_str("certificates:\n- name: alice\n  role: approver\n  common_name: alice\n- name: bob\n  role: viewer\n  common_name: bob\n");
    std::fs::write(&tokens, yaml).unwrap();
    let server = Server::start(&pki, work.path(), &[]);
    let workload = "c/ns/deployment/web/app";

    let ok = ctl_cert(
        &pki,
        &server,
        "alice",
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
    let viewer = ctl_cert(&pki, &server, "bob", &["baselines", "get", workload]);
    assert!(viewer.status.success(), "{viewer:?}");
    let denied = ctl_cert(&pki, &server, "bob", &["baselines", "reset", workload]);
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("'bob' has role 'viewer'"));
    // A sensor's certificate is not an API identity.
    let sensor = ctl_cert(&pki, &server, "node-a", &["baselines", "list"]);
    assert_eq!(sensor.status.code(), Some(3), "{sensor:?}");
    let said = String::from_utf8_lossy(&sensor.stderr);
    assert!(
        said.contains("the client certificate (CN=node-a) is not an API identity")
            && said.contains("--token-file"),
        "{said}"
    );

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
        rec.iter().any(|r| r["actor"] == "anonymous"
            && r["action"] == "ListBaselines"
            && r["result"] == "denied"),
        "{audit}"
    );
}
