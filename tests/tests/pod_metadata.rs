//! Pod metadata end to end: real Docker containers in kubelet-shaped cgroups, a fake API server
//! on loopback speaking the real list/watch protocol to the sensor's real `kube` client, and
//! the sensor's JSON-lines output (or a real server, for what is learned and matched).

use procguard_tests::fake_kube::{FakeKube, PodBuilder};
use procguard_tests::jsonl::{argv_has, JsonlSensor};
use procguard_tests::*;
use serde_json::Value;
use std::time::Duration;

fn in_container(ev: &Value, id: &str) -> bool {
    ev["container"]["container_id"].as_str() == Some(id)
}

per_backend!(pod_metadata_arriving_after_the_process_is_attached_and_probes_are_recognised);
fn pod_metadata_arriving_after_the_process_is_attached_and_probes_are_recognised(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let api = FakeKube::start();
    let node = format!("node-{}", &pod_uid()[..8]);
    let uid = pod_uid();
    // A pod on another node with the same containers: the field selector must keep it out.
    api.apply(
        PodBuilder::new("other", "elsewhere", &pod_uid(), "other-node")
            .owned_by("DaemonSet", "wrong")
            .build(),
    );
    // Started before the sensor: found by the initial /proc scan.
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "3600"]);
    let kubeconfig = api.kubeconfig(work.path());
    let sensor = JsonlSensor::start(
        work.path(),
        &node,
        &backend.args(&[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]),
    );
    // No pod yet: the entrypoint is held, then sent with its cgroup identity, marked partial.
    let early = sensor.wait_event(Duration::from_secs(10), "entrypoint without pod", |e| {
        in_container(e, &c.id) && argv_has(e, "3600")
    });
    assert_eq!(early["completeness"], "partial", "{early}");
    assert!(
        early["missing"].to_string().contains("pod_metadata"),
        "{early}"
    );
    assert_eq!(early["workload"]["workload_name"], format!("pod-{uid}"));
    assert_eq!(early["context"], "entrypoint", "{early}");
    assert!(
        sensor
            .metric("procguard_sensor_pod_metadata_missing_total")
            .unwrap_or(0.0)
            >= 1.0
    );

    // An exec session starts while the pod is still unknown; it is held (not sent, not
    // dropped) until the pod arrives.
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            "-d",
            &c.id,
            "/bin/sh",
            "-c",
            "sleep 20; true",
            "pg-late-marker",
        ])
        .status()
        .unwrap();
    assert!(out.success());
    assert!(
        wait_for(Duration::from_secs(5), || sensor
            .metric("procguard_sensor_pod_events_held")
            .filter(|v| *v >= 1.0))
        .is_some(),
        "the exec was not held; log:\n{}",
        sensor.proc.log_text()
    );
    let too_early: Vec<Value> = sensor
        .events()
        .into_iter()
        .filter(|e| in_container(e, &c.id) && argv_has(e, "pg-late-marker"))
        .collect();
    assert!(
        too_early.is_empty(),
        "sent before its pod was known: {too_early:?}"
    );
    api.apply(
        PodBuilder::new("shop", "web-5d8f7c9b4-x2x7q", &uid, &node)
            .owned_by("ReplicaSet", "web-5d8f7c9b4")
            .label("pod-template-hash", "5d8f7c9b4")
            .label("app", "web")
            .container(
                "app",
                busybox_image(),
                Some(&c.id),
                Some(&["/bin/sh", "-c", "sleep 0.2; cat /tmp/healthy"]),
            )
            .build(),
    );
    let late = sensor.wait_event(Duration::from_secs(5), "held exec", |e| {
        in_container(e, &c.id) && argv_has(e, "pg-late-marker")
    });
    assert_eq!(late["completeness"], "full", "{late}");
    assert_eq!(late["context"], "exec-session", "{late}");
    assert_eq!(late["workload"]["namespace"], "shop");
    assert_eq!(late["workload"]["kind"], "deployment");
    assert_eq!(late["workload"]["workload_name"], "web");
    assert_eq!(late["workload"]["container_name"], "app");
    assert_eq!(late["container"]["pod_name"], "web-5d8f7c9b4-x2x7q");
    assert_eq!(late["container"]["pod_labels"]["app"], "web");
    assert_eq!(late["container"]["image"], busybox_image());
    assert_eq!(
        late["container"]["image_digest"],
        procguard_tests::fake_kube::image_digest(busybox_image())
    );
    assert_eq!(late["container"]["runtime"], "docker");

    // The kubelet's exec probe (docker exec stands in for the CRI ExecSync) is a probe; another
    // exec of the same binary with other arguments is an exec session.
    assert!(c
        .exec(&["/bin/sh", "-c", "sleep 0.2; cat /tmp/healthy"])
        .status
        .code()
        .is_some());
    assert!(c
        .exec(&["/bin/sh", "-c", "sleep 0.2; cat /etc/hostname-pg"])
        .status
        .code()
        .is_some());
    let probe = sensor.wait_event(Duration::from_secs(5), "probe", |e| {
        in_container(e, &c.id) && argv_has(e, "sleep 0.2; cat /tmp/healthy")
    });
    assert_eq!(probe["context"], "probe", "{probe}");
    assert_eq!(probe["workload"]["workload_name"], "web");
    // Only the probe's own process is exempt: its children are the workload's processes,
    // evaluated like any other (a probe script the container can write is no free pass).
    let child = sensor.wait_event(Duration::from_secs(5), "probe child", |e| {
        in_container(e, &c.id) && e["ppid"] == probe["pid"] && argv_has(e, "0.2")
    });
    assert_eq!(child["context"], "descendant", "{child}");
    let session = sensor.wait_event(Duration::from_secs(5), "exec session", |e| {
        in_container(e, &c.id) && argv_has(e, "sleep 0.2; cat /etc/hostname-pg")
    });
    assert_eq!(session["context"], "exec-session", "{session}");

    // Only pods on this node were asked for, through the field selector.
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .all(|r| r.contains(&format!("fieldSelector=spec.nodeName%3D{node}"))),
        "{reqs:?}"
    );
    assert!(reqs.iter().any(|r| r.contains("watch=true")), "{reqs:?}");
    // The pod on the other node never reached the sensor.
    assert!(!sensor
        .events()
        .iter()
        .any(|e| e["workload"]["workload_name"] == "wrong"));
}

per_backend!(a_cronjob_pod_is_resolved_from_its_job_name);
fn a_cronjob_pod_is_resolved_from_its_job_name(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let api = FakeKube::start();
    let node = format!("node-{}", &pod_uid()[..8]);
    let uid = pod_uid();
    let kubeconfig = api.kubeconfig(work.path());
    let sensor = JsonlSensor::start(
        work.path(),
        &node,
        &backend.args(&[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]),
    );
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "3600"]);
    api.apply(
        PodBuilder::new("batch", "report-29012345-abcde", &uid, &node)
            .owned_by("Job", "report-29012345")
            .container("report", busybox_image(), Some(&c.id), None)
            .build(),
    );
    // Once the pod is known, whatever the container runs carries the CronJob's identity.
    assert!(
        wait_for(Duration::from_secs(5), || sensor
            .metric("procguard_sensor_pods_known")
            .filter(|v| *v >= 1.0))
        .is_some(),
        "pod not known; log:\n{}",
        sensor.proc.log_text()
    );
    assert!(c
        .exec(&["/bin/sh", "-c", "sleep 0.3; true", "pg-cron-marker"])
        .status
        .success());
    let ev = sensor.wait_event(Duration::from_secs(10), "cronjob pod exec", |e| {
        in_container(e, &c.id) && argv_has(e, "pg-cron-marker")
    });
    assert_eq!(ev["workload"]["kind"], "cron-job", "{ev}");
    assert_eq!(ev["workload"]["workload_name"], "report");
    assert_eq!(ev["workload"]["container_name"], "report");
}

/// Every baseline's workload on the server.
fn baseline_workloads(pki: &Pki, server: &Server) -> Vec<String> {
    ctl_json(pki, server, "viewer", &["baselines", "list"])
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["workload"].as_str().map(String::from))
        .collect()
}

per_backend!(late_pod_metadata_is_never_learned_outside_the_workloads_baseline);
/// The API answers later than the sensor's hold (2 s): the first execs of each pod are reported
/// under their pod UID only, partial, and never learned there. Once the pod is known they are
/// sent again under the workload: learned into its baseline while it learns, and, once it is
/// enforced, an exec outside it that ran before the pod was known is a deviation.
fn late_pod_metadata_is_never_learned_outside_the_workloads_baseline(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    const LATE: Duration = Duration::from_secs(6);
    let node = "node-late";
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &[node]);
    let server = Server::start(&pki, work.path(), &[]);
    let api = FakeKube::start();
    api.delay_answers(LATE);
    let kubeconfig = api.kubeconfig(work.path());
    let sensor = Sensor::start(
        &pki,
        &server,
        node,
        work.path(),
        &backend.args(&[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]),
    );
    let workload = "default/shop/deployment/web/app";
    let pod = |name: &str, uid: &str, c: &Container| {
        PodBuilder::new("shop", name, uid, node)
            .owned_by("ReplicaSet", "web-5d8f7c9b4")
            .label("pod-template-hash", "5d8f7c9b4")
            .container("app", busybox_image(), Some(&c.id), None)
            .build()
    };
    let provisional =
        |w: &str| w.starts_with("default//pod/") || w.starts_with("default//container/");

    // Learning: the pod's first exec happens before the API names the pod.
    let uid = pod_uid();
    let first = Container::run_in_pod(&uid, &["/bin/sleep", "3600"]);
    let applied = std::time::Instant::now();
    api.apply(pod("web-5d8f7c9b4-aaaaa", &uid, &first));
    let learned = wait_for(Duration::from_secs(20), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", workload]).ok()?;
        b["elements"]
            .as_array()?
            .iter()
            .any(|e| e["exe_path"] == "/bin/sleep")
            .then_some(b)
    });
    assert!(
        learned.is_some(),
        "the entrypoint never reached {workload}; baselines: {:?}\nsensor log:\n{}",
        baseline_workloads(&pki, &server),
        sensor.proc.log_text()
    );
    assert!(
        applied.elapsed() >= LATE - Duration::from_millis(500),
        "the pod became known before the API answered"
    );
    let all = baseline_workloads(&pki, &server);
    assert!(
        !all.iter().any(|w| provisional(w)),
        "a pod-UID-only baseline: {all:?}"
    );
    // It was reported under its pod UID first (partial), then sent again under the workload.
    assert!(
        sensor
            .metric("procguard_sensor_pod_metadata_missing_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sensor
            .metric("procguard_sensor_pod_metadata_late_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        metric(
            server.admin_port,
            "procguard_server_events_unattributed_total"
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Enforced: a new pod of the workload runs /bin/sh (not in the baseline) before the API
    // names it.
    let approved = ctl_json(
        &pki,
        &server,
        "approver",
        &["baselines", "approve", workload, "--reason", "e2e"],
    )
    .unwrap();
    assert_eq!(approved["state"], "enforced");
    assert!(wait_for(Duration::from_secs(5), || sensor
        .metric("procguard_sensor_baselines")
        .filter(|n| *n >= 1.0))
    .is_some());
    let uid = pod_uid();
    let second = Container::run_in_pod(&uid, &["/bin/sh", "-c", "sleep 3600; true"]);
    api.apply(pod("web-5d8f7c9b4-bbbbb", &uid, &second));
    let incident = wait_for(Duration::from_secs(20), || {
        ctl_json(&pki, &server, "viewer", &["incidents", "list"])
            .ok()?
            .as_array()?
            .iter()
            .find(|i| i["workload"] == workload && i["exe_path"] == "/bin/sh")
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no deviation for /bin/sh in {workload}; incidents: {:?}\nsensor log:\n{}",
            ctl_json(&pki, &server, "viewer", &["incidents", "list"]),
            sensor.proc.log_text()
        )
    });
    let id = incident["id"].as_str().unwrap();
    let incident = ctl_json(&pki, &server, "viewer", &["incidents", "get", id]).unwrap();
    let samples = incident["samples"].as_array().unwrap();
    // Every sample is this container's exec, sent again under the workload, with the time gap
    // visible: attributed after the hold, when the API answered.
    assert!(!samples.is_empty(), "{incident}");
    for s in samples {
        let p = &s["process"];
        assert_eq!(p["container_id"], second.id.as_str(), "{incident}");
        assert!(
            p["attributed_late_ms"].as_u64().unwrap_or(0) >= 1,
            "not marked as attributed late: {incident}"
        );
    }
    // Still no baseline of a pod UID or a container: the only one outside the node's own
    // (host) processes is the workload's.
    let all = baseline_workloads(&pki, &server);
    let containers: Vec<&String> = all
        .iter()
        .filter(|w| !w.starts_with("default//host/"))
        .collect();
    assert_eq!(containers, vec![workload], "{all:?}");
}

per_backend!(a_probe_whose_script_runs_an_unknown_binary_raises_a_deviation);
/// A probe is exempt, its children are not: with an enforced baseline, a probe whose script
/// runs a binary the workload never ran raises a deviation for that binary, as the
/// workload's descendant, while the probe itself raises nothing (no exec-session incident).
fn a_probe_whose_script_runs_an_unknown_binary_raises_a_deviation(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let api = FakeKube::start();
    let node = format!("node-{}", &pod_uid()[..8]);
    let uid = pod_uid();
    // The probe as the pod spec declares it; its script runs /bin/ls (a file of the image the
    // workload never runs) before the allowed sleep.
    let probe: &[&str] = &["/bin/sh", "-c", "/bin/ls / >/dev/null; /bin/sleep 0.3"];
    let c = Container::run_in_pod(
        &uid,
        &["/bin/sh", "-c", "while true; do /bin/sleep 0.2; done"],
    );
    api.apply(
        PodBuilder::new("shop", "probed-7c9b4d5f8-q2x7k", &uid, &node)
            .owned_by("ReplicaSet", "probed-7c9b4d5f8")
            .label("pod-template-hash", "7c9b4d5f8")
            .container("app", busybox_image(), Some(&c.id), Some(probe))
            .build(),
    );
    let kubeconfig = api.kubeconfig(work.path());
    let pki = Pki::create(&work.path().join("pki"), &[&node]);
    let server = Server::start(&pki, work.path(), &[]);
    let sensor = Sensor::start(
        &pki,
        &server,
        &node,
        work.path(),
        &backend.args(&[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]),
    );
    let workload = "default/shop/deployment/probed/app";
    let learned = wait_for(Duration::from_secs(20), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", workload]).ok()?;
        let els = b["elements"].as_array()?.clone();
        let has = |e: &str, s: &str| {
            els.iter()
                .any(|x| x["exe_path"] == e && x["script_path"].as_str().unwrap_or("") == s)
        };
        (has("/bin/sleep", "") && has("/bin/sh", "[inline]")).then_some(())
    });
    assert!(
        learned.is_some(),
        "baseline of {workload} not learned; sensor log:\n{}",
        sensor.proc.log_text()
    );
    approve_and_wait_for_push(&pki, &server, &sensor, workload);

    // The kubelet runs the probe (docker exec stands in for the CRI's ExecSync).
    let out = c.exec(probe);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = wait_for(Duration::from_secs(15), || {
        incident_list(&pki, &server)
            .into_iter()
            .find(|i| i["kind"] == "deviation" && i["exe_path"] == "/bin/ls")
    })
    .unwrap_or_else(|| {
        panic!(
            "no deviation for the probe's child /bin/ls; incidents: {:#}\nbaseline: {:#}\nsensor log:\n{}",
            Value::from(incident_list(&pki, &server)),
            ctl_json(&pki, &server, "viewer", &["baselines", "get", workload]).unwrap_or_default(),
            sensor.proc.log_text()
        )
    });
    assert_eq!(dev["workload"], workload, "{dev:#}");
    let id = dev["id"].as_str().unwrap().to_string();
    let full = ctl_json(&pki, &server, "viewer", &["incidents", "get", &id]).unwrap();
    let contexts: Vec<&Value> = full["samples"]
        .as_array()
        .map(|s| s.iter().map(|x| &x["process"]["context"]).collect())
        .unwrap_or_default();
    assert!(
        !contexts.is_empty() && contexts.iter().all(|c| *c == "descendant"),
        "the probe's child is the workload's descendant: {full:#}"
    );
    // The probe itself alerts nothing: no exec-session incident, no other deviation.
    std::thread::sleep(Duration::from_secs(2));
    let others: Vec<Value> = incident_list(&pki, &server)
        .into_iter()
        .filter(|i| i["id"] != dev["id"])
        .collect();
    assert!(others.is_empty(), "the probe alerted: {others:#?}");
}
