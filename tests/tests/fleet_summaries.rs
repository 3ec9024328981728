//! The fleet simulator in summaries mode against a real server (issue 18): 20 simulated nodes
//! whose repeated executions travel as summaries (the real `Summaries` table, a 5 s interval),
//! and the server's stored execution counts, element by element, are exactly what was
//! simulated.

use procguard_tests::*;
use std::collections::BTreeMap;
use std::process::Command;

#[test]
fn a_summarising_fleet_is_stored_execution_for_execution() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create_with(&work.path().join("pki"), &["node-a"], &["fleet"], &[]);
    // Learning lasts the default hour: every execution is an observation the server learns,
    // so every one of them is counted in an element's provenance.
    let server = Server::start(&pki, work.path(), &["--sensor-fleet-names", "fleet"]);
    let out = Command::new(bin("fleet_sim"))
        .arg("--server")
        .arg(server.url())
        .arg("--ca")
        .arg(pki.file("ca.crt"))
        .arg("--cert")
        .arg(pki.file("sensor-fleet.crt"))
        .arg("--key")
        .arg(pki.file("sensor-fleet.key"))
        .args([
            "--nodes",
            "20",
            "--mode",
            "summaries",
            "--summary-interval",
            "5",
        ])
        .args([
            "--deployments",
            "6",
            "--daemonsets",
            "2",
            "--pods-per-node",
            "2",
        ])
        .args(["--warmup-timeout", "0", "--settle", "1", "--seconds", "6"])
        // Deviations and a crash loop too (learned here, as nothing is enforced), pod churn,
        // and the late Deployment on 3 nodes.
        .args([
            "--deviations-per-node-hour",
            "1800",
            "--crashloop-every",
            "5",
        ])
        .args(["--pod-churn-per-hour", "1800"])
        .args(["--new-workload-after", "2", "--new-workload-nodes", "3"])
        .arg("--count-by-element")
        .output()
        .expect("fleet_sim");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fleet_sim prints one JSON line ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("FLEET summaries: {report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["welcomed"], 20, "{report}");
    let total = &report["total"];
    let generated = total["executions_generated"].as_u64().unwrap();
    assert!(generated > 1_000, "{report}");
    assert_eq!(total["executions_sent"], generated, "{report}");
    assert_eq!(total["acked"], total["events"], "{report}");
    // Summaries were used: fewer events than executions (not by much in so short a run with a
    // 5 s interval, so many deviations and so much pod churn).
    assert!(report["measured"]["summary_events"].as_u64().unwrap() > 0);
    assert!(total["events"].as_u64().unwrap() < generated, "{report}");
    assert_eq!(total["unacked_at_end"], 0, "{report}");
    // A new learning element is stored at once, not after the interval (5 s: the bound says
    // which, with room for a loaded machine; it is no speed target).
    let learning = &report["new_learning_element_exec_to_ack"];
    assert!(learning["count"].as_u64().unwrap() >= 3, "{report}");
    assert!(learning["max_ms"].as_f64().unwrap() < 4_500.0, "{report}");

    // The server's counts, element by element.
    let list = ctl_json(&pki, &server, "viewer", &["baselines", "list"]).expect("list");
    let mut stored = BTreeMap::<String, u64>::new();
    for b in list.as_array().expect("an array of baselines") {
        let w = b["workload"].as_str().unwrap();
        let full = ctl_json(&pki, &server, "viewer", &["baselines", "get", w]).expect("get");
        let name = w.split('/').nth(3).unwrap();
        for e in full["elements"].as_array().unwrap() {
            let count = e["provenance"]["count"].as_u64().unwrap();
            let exe = e["exe_path"].as_str().unwrap();
            *stored.entry(format!("{name} {exe}")).or_default() += count;
        }
    }
    let sent: BTreeMap<String, u64> =
        serde_json::from_value(total["executions_by_element"].clone()).unwrap();
    assert!(sent.len() > 20, "{sent:?}");
    assert_eq!(stored, sent);
    assert_eq!(stored.values().sum::<u64>(), generated);
}
