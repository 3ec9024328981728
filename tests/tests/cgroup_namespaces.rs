//! The sensor in a private cgroup namespace, as every pod on a cgroup-v2 node runs it: real
//! cgroups, a real `unshare --cgroup`, the real proc connector.
//!
//! The sensor is moved into a cgroup shaped like its own pod's container and then given a
//! private cgroup namespace, so it reads every other process's path as `/../…`. A process in
//! a containerd-shaped (systemd driver, v2 only) and a cgroupfs-shaped (v1 and v2) container
//! cgroup must come out exactly as a sensor in the host's namespace sees it: container ID,
//! runtime, pod UID and QoS class, whether the sensor entered the host's namespace (the
//! DaemonSet's way) or, where that is refused, resolved paths against its own cgroup.
//!
//! On these machines PID 1's `/proc/1/ns/*` cannot be opened (the sandbox's supervisor), so
//! this test process's own cgroup namespace, the host's, stands in for the node's.

use procguard_tests::cgroups::NamedCgroup;
use procguard_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The tests here create and remove cgroups under the same parents; one at a time.
fn hex_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How the sensor is run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// In the host's cgroup namespace.
    Host,
    /// In a private one, entering the host's (`--host-cgroupns`).
    Entered,
    /// In a private one, `setns` refused: resolves against its own cgroup (`--cgroup-root`).
    Resolved,
    /// In a private one with neither: must not guess.
    Blind,
}

struct Running {
    sensor: Proc,
    out: std::path::PathBuf,
    port: u16,
    _own: Option<NamedCgroup>,
}

fn start(work: &Path, mode: Mode, backend: Backend) -> Running {
    let out = work.join("events.jsonl");
    let port = free_port();
    let sensor_args = [
        bin("procguard-sensor").display().to_string(),
        "--node-name".into(),
        "cgns-node".into(),
        "--jsonl".into(),
        out.display().to_string(),
        "--admin-addr".into(),
        format!("127.0.0.1:{port}"),
        "--spool-dir".into(),
        work.join("spool").display().to_string(),
        "--capture".into(),
        backend.name().into(),
    ]
    .join(" ");
    let (own, cmd) = match mode {
        Mode::Host => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("exec {sensor_args}")]);
            (None, c)
        }
        _ => {
            // The sensor's own pod: a burstable containerd pod (v2) / cgroupfs pod (v1).
            let (suid, sid) = (uuid::Uuid::new_v4().to_string(), hex_id());
            let v2 = format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{sid}.scope",
                suid.replace('-', "_")
            );
            let own =
                NamedCgroup::create(Some(&format!("kubepods/burstable/pod{suid}/{sid}")), &v2)
                    .expect("sensor cgroup");
            let (ns, root) = match mode {
                Mode::Entered => (
                    format!("/proc/{}/ns/cgroup", std::process::id()),
                    "/sys/fs/cgroup".to_string(),
                ),
                Mode::Resolved => (
                    "/nonexistent/ns/cgroup".into(),
                    "/sys/fs/cgroup".to_string(),
                ),
                _ => {
                    let empty = work.join("empty-cgroup-root");
                    std::fs::create_dir_all(&empty).unwrap();
                    ("/nonexistent/ns/cgroup".into(), empty.display().to_string())
                }
            };
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!(
                    "{} exec unshare --cgroup -- {sensor_args} --host-cgroupns {ns} --cgroup-root {root}",
                    own.join_snippet()
                ),
            ]);
            (Some(own), c)
        }
    };
    let sensor = Proc::spawn(cmd, work.join("sensor.log"));
    assert!(
        wait_for(Duration::from_secs(15), || sensor
            .log_text()
            .contains("Initial /proc scan done")
            .then_some(()))
        .is_some(),
        "sensor did not start; log:\n{}",
        sensor.log_text()
    );
    Running {
        sensor,
        out,
        port,
        _own: own,
    }
}

/// Runs a process that joins `cg` and lives 300 ms (long enough for `/proc` to be read), and
/// returns its event.
fn exec_in(r: &Running, cg: &NamedCgroup, marker: &str) -> serde_json::Value {
    let st = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("{} /bin/sleep 0.3; true", cg.join_snippet()),
            marker,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for(Duration::from_secs(5), || {
        repo::jsonl(&r.out).into_iter().find(|e| {
            e["exe_path"].as_str().is_some_and(|p| p.ends_with("sleep"))
                && events_parent_has(&r.out, e, marker)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no event for {marker}; sensor log:\n{}",
            r.sensor.log_text()
        )
    })
}

/// Whether `e`'s parent is the shell that carried `marker` in its argv.
fn events_parent_has(out: &Path, e: &serde_json::Value, marker: &str) -> bool {
    repo::jsonl(out)
        .iter()
        .any(|p| p["pid"] == e["ppid"] && p["argv"].to_string().contains(marker))
}

fn check_mode(mode: Mode, backend: Backend) {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let r = start(work.path(), mode, backend);
    let view = match mode {
        Mode::Host => "host",
        Mode::Entered => "entered",
        Mode::Resolved => "resolved",
        Mode::Blind => "blind",
    };
    assert_eq!(
        metric(
            r.port,
            &format!("procguard_sensor_cgroup_view{{mode=\"{view}\"}}")
        ),
        Some(1.0),
        "{mode:?}; log:\n{}",
        r.sensor.log_text()
    );
    // containerd with the systemd driver, BestEffort: a cgroup-v2-only shape.
    let (uid, id) = (uuid::Uuid::new_v4().to_string(), hex_id());
    let systemd = NamedCgroup::create(
        None,
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
    )
    .unwrap();
    let ev = exec_in(&r, &systemd, &format!("cgns-systemd-{view}"));
    if mode == Mode::Blind {
        assert!(
            ev["container"].is_null(),
            "a blind sensor must not guess a container: {ev}"
        );
    } else {
        assert_eq!(
            ev["container"]["container_id"],
            id.as_str(),
            "{mode:?}: {ev}"
        );
        assert_eq!(ev["container"]["runtime"], "containerd", "{mode:?}: {ev}");
        assert_eq!(ev["container"]["pod_uid"], uid.as_str(), "{mode:?}: {ev}");
        assert_eq!(ev["container"]["qos"], "best-effort", "{mode:?}: {ev}");
    }
    // The cgroupfs driver's shape, in every hierarchy (v1 and v2).
    let (uid, id) = (uuid::Uuid::new_v4().to_string(), hex_id());
    let rel = format!("kubepods/besteffort/pod{uid}/{id}");
    let cgroupfs = NamedCgroup::create(Some(&rel), &rel).unwrap();
    let ev = exec_in(&r, &cgroupfs, &format!("cgns-cgroupfs-{view}"));
    if mode == Mode::Blind {
        assert!(ev["container"].is_null(), "{ev}");
    } else {
        assert_eq!(
            ev["container"]["container_id"],
            id.as_str(),
            "{mode:?}: {ev}"
        );
        assert_eq!(ev["container"]["pod_uid"], uid.as_str(), "{mode:?}: {ev}");
        assert_eq!(ev["container"]["qos"], "best-effort", "{mode:?}: {ev}");
        assert_eq!(ev["completeness"], "full", "{mode:?}: {ev}");
    }
}

fn needs_root() -> bool {
    require(
        is_root(),
        "needs root for cgroups, cgroup namespaces and the proc connector",
    )
}

per_backend!(host_namespace_attributes_every_shape);
fn host_namespace_attributes_every_shape(backend: Backend) {
    if needs_root() {
        check_mode(Mode::Host, backend);
    }
}

per_backend!(private_namespace_entering_the_hosts_attributes_every_shape);
fn private_namespace_entering_the_hosts_attributes_every_shape(backend: Backend) {
    if needs_root() {
        check_mode(Mode::Entered, backend);
    }
}

per_backend!(private_namespace_resolving_against_its_own_cgroup_attributes_every_shape);
fn private_namespace_resolving_against_its_own_cgroup_attributes_every_shape(backend: Backend) {
    if needs_root() {
        check_mode(Mode::Resolved, backend);
    }
}

per_backend!(private_namespace_with_no_way_out_guesses_nothing_and_says_so);
fn private_namespace_with_no_way_out_guesses_nothing_and_says_so(backend: Backend) {
    if needs_root() {
        check_mode(Mode::Blind, backend);
    }
}

per_backend!(children_of_a_process_that_joined_a_container_are_not_left_on_the_host);
/// How `runc exec` and a shell moved into a pod's cgroup start processes: the parent joins a
/// container's cgroup after the sensor has seen it, then runs sub-millisecond children that
/// are gone before their own cgroup can be read. None of them may be attributed to the host
/// cgroup the parent left; those attributed through the parent's current cgroup say so.
fn children_of_a_process_that_joined_a_container_are_not_left_on_the_host(backend: Backend) {
    if !needs_root() {
        return;
    }
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let r = start(work.path(), Mode::Entered, backend);
    let (uid, id) = (uuid::Uuid::new_v4().to_string(), hex_id());
    let rel = format!("kubepods/besteffort/pod{uid}/{id}");
    let cg = NamedCgroup::create(Some(&rel), &rel).unwrap();
    let marker = "cgns-joined-storm";
    // The shell is seen (and placed on the host) first; it joins only after a pause.
    let script = format!(
        "sleep 0.5; {} i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
        cg.join_snippet()
    );
    let st = Command::new("/bin/sh")
        .args(["-c", &script, marker])
        .status()
        .unwrap();
    assert!(st.success());
    let shell = wait_for(Duration::from_secs(5), || {
        repo::jsonl(&r.out)
            .into_iter()
            .find(|e| e["argv"].to_string().contains(marker))
    })
    .expect("the shell's event");
    let trues = || -> Vec<serde_json::Value> {
        repo::jsonl(&r.out)
            .into_iter()
            .filter(|e| {
                e["ppid"] == shell["pid"]
                    && !e["exe_path"].as_str().is_some_and(|p| p.ends_with("sleep"))
            })
            .collect()
    };
    let got = wait_for(Duration::from_secs(10), || {
        let t = trues();
        (t.len() >= 300).then_some(t)
    })
    .unwrap_or_else(|| panic!("expected 300 children, got {}", trues().len()));
    let mut inherited = 0;
    for e in &got {
        assert_eq!(
            e["container"]["container_id"],
            id.as_str(),
            "a child of the joined shell left on the host: {e}"
        );
        let missing = e["missing"].to_string();
        if missing.contains("inherited:container") {
            inherited += 1;
            assert_eq!(e["completeness"], "partial", "{e}");
        }
    }
    eprintln!(
        "{} children, {inherited} attributed through their parent's current cgroup",
        got.len()
    );
}
