//! The first hour and the first month (issue 16), end to end: what a newcomer's mistakes get
//! back from the real `procguardctl` against a real server over TLS (a token the server does
//! not know, a baseline version that does not exist, a server that is not there, a server
//! whose CA was not given), each message naming the fix; a sensor's losses logged by the
//! server when they change, not with every report that repeats them; and partial events
//! counted as coverage, never as blindness.

use procguard_tests::grpc::{self, SensorStream};
use procguard_tests::in_process::InProcessServer;
use procguard_tests::*;
use std::path::Path;
use std::process::{Command, Output};

/// A workload whose baseline exists (one version per change).
const WORKLOAD: &str = "c/shop/deployment/web/app";

/// `procguardctl` against `server` (a URL) with `ca` and no token of the PKI's: `args` say
/// which token, if any.
fn ctl_raw(server: &str, ca: &Path, args: &[&str]) -> Output {
    Command::new(bin("procguardctl"))
        .args(["--server", server, "--tls-server-name", "localhost"])
        .arg("--tls-ca")
        .arg(ca)
        .args(args)
        .env_remove("PROCGUARD_TOKEN")
        .env_remove("PROCGUARD_TOKEN_FILE")
        .output()
        .expect("run procguardctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_token_the_server_does_not_know_is_refused_with_where_tokens_come_from() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    // A real token, of another development PKI: the server's tokens file does not hold it.
    let other = Pki::create(&work.path().join("other-pki"), &["node-a"]);
    let ca = pki.file("ca.crt");

    let unknown = ctl_raw(
        &server.url(),
        &ca,
        &[
            "--token-file",
            other.file("viewer.token").to_str().unwrap(),
            "baselines",
            "list",
        ],
    );
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    let said = stderr(&unknown);
    assert!(
        said.contains("Unauthenticated: unknown bearer token"),
        "{said}"
    );
    // Where tokens come from: the server's tokens file, through an admin; and the flags that
    // carry one.
    assert!(
        said.contains("the server's tokens file") && said.contains("ask an admin for a token"),
        "{said}"
    );
    assert!(
        said.contains("--token") && said.contains("--token-file"),
        "{said}"
    );

    // No token at all says how to send one.
    let missing = ctl_raw(&server.url(), &ca, &["baselines", "list"]);
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    let said = stderr(&missing);
    assert!(
        said.contains("missing bearer token") && said.contains("--token"),
        "{said}"
    );

    // The same call with a token the server knows works: the refusals were the token's.
    let known = ctl_raw(
        &server.url(),
        &ca,
        &[
            "--token-file",
            pki.file("viewer.token").to_str().unwrap(),
            "baselines",
            "list",
        ],
    );
    assert!(known.status.success(), "{known:?}");
}

#[test]
fn a_baseline_version_that_does_not_exist_points_at_the_history() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let added = ctl(
        &pki,
        &server,
        "admin",
        &[
            "baselines",
            "add",
            WORKLOAD,
            "--element",
            "/app/server",
            "--reason",
            "first",
        ],
    );
    assert!(added.status.success(), "{added:?}");
    let history = format!("'procguardctl baselines history {WORKLOAD}' lists the versions it has");

    let get = ctl(
        &pki,
        &server,
        "viewer",
        &["baselines", "get", WORKLOAD, "--version", "999"],
    );
    assert_eq!(get.status.code(), Some(4), "{get:?}");
    let said = stderr(&get);
    assert!(said.contains("NotFound"), "{said}");
    assert!(said.contains("has no version 999"), "{said}");
    assert!(said.contains(&history), "{said}");

    // A diff with a missing version, on either side, says the same.
    for range in [
        ["--from", "999", "--to", "0"],
        ["--from", "1", "--to", "999"],
    ] {
        let diff = ctl(
            &pki,
            &server,
            "viewer",
            &[&["baselines", "diff", WORKLOAD][..], &range[..]].concat(),
        );
        assert_eq!(diff.status.code(), Some(4), "{range:?}: {diff:?}");
        let said = stderr(&diff);
        assert!(
            said.contains("has no version 999") && said.contains(&history),
            "{range:?}: {said}"
        );
    }

    // The history it points at lists the versions there are, and one of them reads.
    let versions = ctl_json(&pki, &server, "viewer", &["baselines", "history", WORKLOAD])
        .unwrap_or_else(|e| panic!("the history the hint names: {e}"));
    let first = versions
        .as_array()
        .and_then(|v| v.first())
        .and_then(|v| v["version"].as_u64())
        .unwrap_or_else(|| panic!("no version listed: {versions}"));
    let got = ctl(
        &pki,
        &server,
        "viewer",
        &[
            "baselines",
            "get",
            WORKLOAD,
            "--version",
            &first.to_string(),
        ],
    );
    assert!(got.status.success(), "{got:?}");

    // A workload with no baseline at all points at the list instead.
    let none = ctl(
        &pki,
        &server,
        "viewer",
        &["baselines", "get", "c/shop/deployment/nope/app"],
    );
    assert_eq!(none.status.code(), Some(4), "{none:?}");
    let said = stderr(&none);
    assert!(
        said.contains("no baseline for workload 'c/shop/deployment/nope/app'")
            && said.contains("'procguardctl baselines list'"),
        "{said}"
    );
}

#[test]
fn a_server_that_is_not_there_or_not_trusted_is_named_with_the_flag_to_check() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = InProcessServer::start(&pki, work.path(), &[]);
    let token = pki.file("viewer.token");
    let token = ["--token-file", token.to_str().unwrap()];
    let list = [&token[..], &["baselines", "list"][..]].concat();

    // Nothing listens on the port: the address, and --server.
    let closed = format!("https://127.0.0.1:{}", free_port());
    let refused = ctl_raw(&closed, &pki.file("ca.crt"), &list);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = stderr(&refused);
    assert!(
        said.contains(&format!("cannot connect to {closed}")),
        "{said}"
    );
    assert!(
        said.contains("nothing listens there") && said.contains("--server"),
        "{said}"
    );

    // The server's admin port (plain HTTP) instead of its API port: check the port.
    let admin = format!("https://127.0.0.1:{}", server.admin_port());
    let plain = ctl_raw(&admin, &pki.file("ca.crt"), &list);
    assert_eq!(plain.status.code(), Some(1), "{plain:?}");
    let said = stderr(&plain);
    assert!(
        said.contains(&format!("cannot connect to {admin}")),
        "{said}"
    );
    assert!(
        said.contains("does not speak TLS: check the port in --server"),
        "{said}"
    );

    // The CA of another development PKI: the server is there, its certificate not trusted.
    let other = Pki::create(&work.path().join("other-pki"), &["node-a"]);
    let untrusted = ctl_raw(&server.url(), &other.file("ca.crt"), &list);
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");
    let said = stderr(&untrusted);
    assert!(
        said.contains(&format!("cannot connect to {}", server.url())),
        "{said}"
    );
    assert!(
        said.contains("not signed by the CA given: check --tls-ca"),
        "{said}"
    );

    // With the right CA, the same call works.
    let trusted = ctl_raw(&server.url(), &pki.file("ca.crt"), &list);
    assert!(trusted.status.success(), "{trusted:?}");
}

/// The server's JSON log lines at WARN saying `message` about `node`.
fn warnings(log: &str, message: &str, node: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "WARN" && l["message"] == message && l["node"] == node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_a_sensors_losses_when_they_change_not_with_every_report() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    // The binary, for its log as an operator reads it (JSON, to be read exactly here).
    let server = Server::start(&pki, work.path(), &["--log-format", "json"]);
    let mut sensor = SensorStream::open(&pki, &server.url(), "node-a")
        .await
        .unwrap();
    let w = grpc::workload("shop", "web");
    let losses =
        |server: &Server| warnings(&server.proc.log_text(), "Sensor reports losses.", "node-a");

    // The same cumulative loss in five reports (a sensor reports every few seconds, and its
    // counters only grow): one warning. The stream handles its messages in order, so a batch
    // acknowledged after the reports means the reports were handled.
    for _ in 0..5 {
        sensor.health(5, 2).await.unwrap();
    }
    let evs = sensor.events(&w, &["/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    let logged = losses(&server);
    assert_eq!(logged.len(), 1, "{logged:#?}\n{}", server.proc.log_text());
    assert_eq!(logged[0]["dropped"], 5, "{}", logged[0]);

    // A new loss: a second warning, with the new count; repeats of it, none.
    for _ in 0..3 {
        sensor.health(7, 2).await.unwrap();
    }
    let evs = sensor.events(&w, &["/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    let logged = losses(&server);
    assert_eq!(logged.len(), 2, "{logged:#?}\n{}", server.proc.log_text());
    assert_eq!(logged[1]["dropped"], 7, "{}", logged[1]);
}

/// Partial events are coverage, not blindness: a sensor whose events miss a field (their argv,
/// say) and whose health report counts them raises no sensor-blind incident; the server counts
/// them in `procguard_server_events_partial_total` and in the baseline's coverage, which
/// `baselines get` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_events_are_counted_as_coverage_and_never_open_a_blind_incident() {
    use procguard_proto::v1 as pb;
    let grpc::EnforcedStack {
        work: _work,
        pki,
        server,
        mut sensor,
        workload: w,
    } = grpc::EnforcedStack::start().await;
    let mut evs = sensor.events(&w, &["/app/server"; 7]);
    for e in &mut evs {
        let p = e.process.as_mut().unwrap();
        p.completeness = pb::Completeness::Partial as i32;
        p.missing = vec!["argv".into()];
        p.argv.clear();
    }
    sensor.send_acked(evs).await.unwrap();
    sensor.health(0, 7).await.unwrap();
    // An acknowledged batch after the report: the server has handled the report.
    let evs = sensor.events(&w, &["/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    assert_eq!(
        metric(server.admin_port, "procguard_server_events_partial_total"),
        Some(7.0)
    );
    let b = ctl_json(
        &pki,
        &server,
        "viewer",
        &["baselines", "get", "test/shop/deployment/web/main"],
    )
    .unwrap();
    assert_eq!(b["coverage"]["partial_events"], 7, "{b:#}");
    let list = ctl_json(&pki, &server, "viewer", &["incidents", "list"]).unwrap();
    let blind: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "sensor-blind")
        .collect();
    assert!(blind.is_empty(), "{blind:#?}");
}
