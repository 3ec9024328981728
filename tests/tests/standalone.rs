//! Containers outside any pod (plain Docker): identified by the runtime and the name or
//! Compose service Docker records for them, so a restarted or recreated container keeps its
//! baseline. Real Docker containers, the real sensor, its JSON-lines output.

use procguard_tests::jsonl::{argv_has, JsonlSensor};
use procguard_tests::*;
use serde_json::Value;
use std::time::Duration;

/// The entrypoint event of container `id` (its `sh -c ... <marker>`).
fn entrypoint(sensor: &JsonlSensor, id: &str, marker: &str) -> Value {
    sensor.wait_event(Duration::from_secs(10), marker, |e| {
        e["container"]["container_id"].as_str() == Some(id)
            && argv_has(e, marker)
            && e["exe_path"] == "/bin/sh"
    })
}

fn identity(ev: &Value) -> (String, String, String, String) {
    let w = &ev["workload"];
    let s = |k: &str| w[k].as_str().unwrap_or("?").to_string();
    (
        s("namespace"),
        s("kind"),
        s("workload_name"),
        s("container_name"),
    )
}

#[test]
fn a_named_container_keeps_its_identity_across_restart_and_recreation() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sensor = JsonlSensor::start(work.path(), "node-standalone", &[]);
    let tag = &pod_uid()[..8];
    let name = format!("pg-std-{tag}");
    let marker = format!("pg-std-marker-{tag}");
    let cmd = ["/bin/sh", "-c", "sleep 3600; true", marker.as_str()];
    let expected = (
        String::new(),
        "container".to_string(),
        format!("docker:{name}"),
        String::new(),
    );

    let first = Container::run_standalone(&["--name", &name], &cmd);
    let ev = entrypoint(&sensor, &first.id, &marker);
    assert_eq!(identity(&ev), expected, "{ev}");
    assert_eq!(ev["container"]["runtime"], "docker", "{ev}");
    assert!(ev["container"]["pod_uid"].is_null(), "{ev}");
    let first_pid = ev["pid"].clone();

    // `docker restart` keeps the ID: a new entrypoint, the same identity.
    let out = std::process::Command::new("docker")
        .args(["restart", "-t", "0", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again = sensor.wait_event(Duration::from_secs(10), "entrypoint after restart", |e| {
        e["container"]["container_id"].as_str() == Some(first.id.as_str())
            && argv_has(e, &marker)
            && e["exe_path"] == "/bin/sh"
            && e["pid"] != first_pid
    });
    assert_eq!(identity(&again), expected, "{again}");

    // `docker rm` + `docker run --name` the same: a new ID, the same identity.
    drop(first);
    let second = Container::run_standalone(&["--name", &name], &cmd);
    let ev = entrypoint(&sensor, &second.id, &marker);
    assert_eq!(identity(&ev), expected, "{ev}");
}

#[test]
fn a_compose_labelled_container_is_its_service() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sensor = JsonlSensor::start(work.path(), "node-compose", &[]);
    let tag = &pod_uid()[..8];
    let project = format!("p{tag}");
    let marker = format!("pg-compose-marker-{tag}");
    let cmd = ["/bin/sh", "-c", "sleep 3600; true", marker.as_str()];
    let labels = [
        "--label".to_string(),
        format!("com.docker.compose.project={project}"),
        "--label".to_string(),
        "com.docker.compose.service=web".to_string(),
    ];
    let expected = (
        String::new(),
        "container".to_string(),
        format!("docker:compose:{project}"),
        "web".to_string(),
    );
    // Two replicas of the service (Compose names them <project>-web-1, -2): one identity.
    for n in 1..=2 {
        let name = format!("{project}-web-{n}");
        let mut flags: Vec<&str> = vec!["--name", &name];
        flags.extend(labels.iter().map(String::as_str));
        let c = Container::run_standalone(&flags, &cmd);
        let ev = entrypoint(&sensor, &c.id, &marker);
        assert_eq!(identity(&ev), expected, "{ev}");
    }
}
