//! Component tests of the sensor binary against the real kernel, with no server: the
//! JSON-lines output mode, and capture from a pod-like network namespace.

use procguard_tests::*;
use std::process::Command;
use std::time::Duration;

fn jsonl_sensor(
    work: &std::path::Path,
    netns: Option<&str>,
    wrap: Option<&[&str]>,
    backend: Backend,
) -> (Proc, std::path::PathBuf) {
    let out = work.join("events.jsonl");
    let mut args: Vec<String> = vec![
        bin("procguard-sensor").display().to_string(),
        "--node-name".into(),
        "jsonl-node".into(),
        "--jsonl".into(),
        out.display().to_string(),
        "--admin-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--spool-dir".into(),
        work.join("spool").display().to_string(),
        "--capture".into(),
        backend.name().into(),
    ];
    if let Some(ns) = netns {
        args.extend(["--netlink-netns".into(), ns.into()]);
    }
    let mut full: Vec<String> = wrap.unwrap_or(&[]).iter().map(|s| s.to_string()).collect();
    full.extend(args);
    let mut cmd = Command::new(&full[0]);
    cmd.args(&full[1..]);
    (Proc::spawn(cmd, work.join("sensor.log")), out)
}

fn wait_for_exec(sensor: &Proc, out: &std::path::Path, marker: &str) -> serde_json::Value {
    // Give the subscription a moment, then run a process with a unique argv.
    assert!(
        wait_for(Duration::from_secs(10), || sensor
            .log_text()
            .contains("Initial /proc scan done")
            .then_some(()))
        .is_some(),
        "sensor did not start; log:\n{}",
        sensor.log_text()
    );
    // A shell that lives 500 ms (the trailing `true` keeps it from exec-ing sleep): long enough for /proc to be read. Sub-millisecond processes
    // are the capture benchmark's business, not this test's.
    let st = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3", marker])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for(Duration::from_secs(5), || {
        repo::jsonl(out)
            .into_iter()
            .find(|e| e["argv"].to_string().contains(marker))
    })
    .unwrap_or_else(|| panic!("no event for {marker}; sensor log:\n{}", sensor.log_text()))
}

per_backend!(jsonl_output_carries_every_documented_field);
fn jsonl_output_carries_every_documented_field(backend: Backend) {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (sensor, out) = jsonl_sensor(work.path(), None, None, backend);
    let ev = wait_for_exec(&sensor, &out, "procguard-jsonl-marker");
    for field in [
        "pid",
        "ppid",
        "ancestors",
        "start_time",
        "uid",
        "gid",
        "comm",
        "exe_path",
        "argv",
        "exe_sha256",
        "workload",
        "context",
        "completeness",
        "node_name",
    ] {
        assert!(ev.get(field).is_some(), "field {field} missing from {ev}");
    }
    assert_eq!(ev["node_name"], "jsonl-node");
    assert_eq!(ev["context"], "host");
    assert_eq!(ev["workload"]["kind"], "host");
    assert_eq!(ev["exe_sha256"].as_str().map(str::len), Some(64), "{ev}");
    assert!(ev["exe_path"].as_str().unwrap().ends_with("sh"), "{ev}");
    assert_eq!(ev["completeness"], "full", "{ev}");
    // This test process, which started before the sensor, is the nearest ancestor.
    assert_eq!(ev["ancestors"][0]["pid"], std::process::id(), "{ev}");
}

#[test]
fn capture_works_from_a_pod_network_namespace_with_netlink_netns() {
    if !require(
        is_root(),
        "needs root for namespaces and the proc connector",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The proc connector's own test: the eBPF backend needs no network namespace at all.
    // Without --netlink-netns a sensor in its own network namespace cannot subscribe, and says why.
    let (failing, _) = jsonl_sensor(
        work.path(),
        None,
        Some(&["unshare", "--net", "--"]),
        Backend::Netlink,
    );
    let mut failing = failing;
    let status = wait_for(Duration::from_secs(10), || {
        failing.child.try_wait().ok().flatten()
    })
    .expect("sensor should exit when it cannot subscribe");
    assert!(!status.success());
    assert!(
        failing
            .log_text()
            .contains("cannot subscribe to the kernel's process events"),
        "{}",
        failing.log_text()
    );

    let work = tempfile::tempdir().unwrap();
    // This test's own network namespace stands in for the node's.
    let host_ns = format!("/proc/{}/ns/net", std::process::id());
    let (sensor, out) = jsonl_sensor(
        work.path(),
        Some(&host_ns),
        Some(&["unshare", "--net", "--"]),
        Backend::Netlink,
    );
    let ev = wait_for_exec(&sensor, &out, "procguard-netns-marker");
    assert_eq!(ev["completeness"], "full", "{ev}");
}
