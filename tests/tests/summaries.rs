//! Summaries end to end: the real sensor and server, a real container in a kubelet-shaped
//! cgroup, a summary interval of two minutes. Once its baseline is enforced, the workload runs an
//! allowed executable 300 times and an executable outside its baseline 200 times: the
//! deviation's incident is raised at once, long before the interval ends, while its repeats
//! wait; a graceful stop of the sensor sends them, and then the incident counts exactly 200,
//! the allowed element's sightings grow by exactly 300, and far fewer events than executions
//! crossed to the server.

use procguard_tests::*;
use serde_json::Value;
use std::time::Duration;

/// The workload: learns `true` and `echo`, waits for `/tmp/go`, then runs `true` 300 times and
/// `id` (never learned) 200 times, and says it is done.
const SCRIPT: &str =
    "i=0; while [ $i -lt 5 ]; do /bin/true; /bin/echo x >/dev/null; i=$((i+1)); done; \
    while [ ! -e /tmp/go ]; do /bin/sleep 1; done; \
    i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; \
    i=0; while [ $i -lt 200 ]; do /usr/bin/id >/dev/null; i=$((i+1)); done; \
    /bin/echo done >/tmp/done; /bin/sleep 600";

fn element<'a>(baseline: &'a Value, applet: &str) -> Option<&'a Value> {
    baseline["elements"].as_array()?.iter().find(|e| {
        e["applet"] == applet
            || e["exe_path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("/{applet}")))
    })
}

#[test]
fn repeats_cross_as_summaries_and_every_execution_is_counted() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    // Learning needs its repeats within the test's patience; enforcement is tested with a
    // sensor that holds them for two minutes.
    let mut sensor = Sensor::start(
        &pki,
        &server,
        "node-a",
        work.path(),
        &["--summary-interval", "2s"],
    );
    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sh", "-c", SCRIPT]);
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let get = || ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok();
    // Learning: `true` and `echo` each ran five times (their first at once, the rest in a
    // summary at most one interval later).
    let learned = wait_for(Duration::from_secs(30), || {
        get().filter(|b| {
            ["true", "echo"].iter().all(|a| {
                element(b, a).is_some_and(|e| e["provenance"]["count"].as_u64() >= Some(5))
            })
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the baseline never learned true and echo five times: {:#?}\nsensor log:\n{}",
            get(),
            sensor.proc.log_text()
        )
    });
    let true_before = element(&learned, "true").unwrap()["provenance"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(true_before, 5, "{learned:#}");
    ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", &workload, "--reason", "e2e"],
    )
    .unwrap();
    assert!(sensor.proc.terminate(Duration::from_secs(15)).is_some());
    let sensor = Sensor::start(
        &pki,
        &server,
        "node-a",
        work.path(),
        &["--summary-interval", "120s"],
    );
    assert!(wait_for(Duration::from_secs(15), || sensor
        .metric("procguard_sensor_baselines")
        .filter(|n| *n >= 1.0))
    .is_some());
    let server_metric = |name: &str| metric(server.admin_port, name).unwrap_or(0.0) as u64;
    let events_before = server_metric("procguard_server_events_ingested_total");
    let executions_before = server_metric("procguard_server_executions_ingested_total");

    assert!(c
        .exec(&["/bin/sh", "-c", "/bin/echo go >/tmp/go"])
        .status
        .success());
    // The deviation is raised at once, before its repeats' summary could have gone out.
    let incident = |min: u64| {
        wait_for(Duration::from_secs(30), || {
            let list = ctl_json(&pki, &server, "viewer", &["incidents", "list"]).ok()?;
            list.as_array()?
                .iter()
                .find(|i| {
                    i["kind"] == "deviation"
                        && i["workload"] == workload.as_str()
                        && i["exe_path"] == "/usr/bin/id"
                        && i["count"].as_u64() >= Some(min)
                })
                .cloned()
        })
    };
    let went = std::time::Instant::now();
    let first = incident(1).unwrap_or_else(|| {
        panic!(
            "no incident for id; sensor log:\n{}",
            sensor.proc.log_text()
        )
    });
    assert!(
        went.elapsed() < Duration::from_secs(30),
        "the deviation waited for its interval"
    );
    assert!(
        wait_for(Duration::from_secs(30), || c
            .exec(&["/bin/cat", "/tmp/done"])
            .status
            .success()
            .then_some(()))
        .is_some(),
        "the workload never finished its loops"
    );
    // The repeats are held, counted, until the interval ends (or the sensor stops).
    let held = incident(1).unwrap();
    assert_eq!(held["count"], 1, "{first:#}\n{held:#}");
    assert!(
        sensor
            .metric("procguard_sensor_summary_held_executions")
            .unwrap_or(0.0)
            >= 499.0,
        "{}",
        sensor.proc.log_text()
    );
    let mut sensor = sensor;
    assert!(sensor.proc.terminate(Duration::from_secs(20)).is_some());
    // Every execution counted, none twice.
    let settled = incident(200).unwrap_or_else(|| {
        panic!(
            "the incident never counted 200 after a graceful stop: {:#?}\nsensor log:\n{}",
            incident(1),
            sensor.proc.log_text()
        )
    });
    assert_eq!(settled["count"], 200, "{settled:#}");
    let b = get().unwrap();
    let true_after = element(&b, "true").unwrap()["provenance"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(true_after, true_before + 300, "{b:#}");
    let events = server_metric("procguard_server_events_ingested_total") - events_before;
    let executions =
        server_metric("procguard_server_executions_ingested_total") - executions_before;
    assert!(executions >= 500, "{executions} executions stored");
    // The sensor sees the whole node: other processes add events (one execution each at
    // least) beside this workload's. This workload's 500 took a handful of events, so at
    // least 490 executions crossed without an event of their own.
    assert!(
        executions - events >= 490,
        "{events} events for {executions} executions: repeats were not summarised"
    );
}
