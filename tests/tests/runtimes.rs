//! Attribution of real containers of every runtime that runs here (Docker, Podman, containerd
//! through `ctr`), by the sensor binary writing JSON lines, with the sensor in the host's cgroup
//! namespace and in a private one, as on a cgroup-v2 node where containerd and CRI-O give every
//! container (the sensor's own pod included) a namespace of its own.
//!
//! Each case runs a container in a kubelet-shaped BestEffort pod cgroup whose entrypoint starts
//! a process, then execs one into it through the runtime, and requires all three events to name
//! the container, its pod, its runtime (from the cgroup path, or the shim that started the
//! container's processes; see [`runtime_in_event`]) and the right execution context.

use procguard_tests::cgroupns::{self, CgroupNs};
use procguard_tests::jsonl::{argv_has, JsonlSensor};
use procguard_tests::runtimes::{require_runtime, Engine, Runtime};
use procguard_tests::*;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// One case at a time: each starts a sensor and a runtime, and this machine has two cores
/// shared with other builds; the sensors would otherwise also see every other case's execs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The runtime each event must name. Podman's cgroup path names it (`libpod-<id>`); Docker's
/// and containerd's, with a kubelet's cgroupfs parent, are both `/kubepods/…/pod<uid>/<id>`, so
/// the sensor takes theirs from the shim that started the container's processes
/// (`containerd-shim-runc-v2 -namespace moby` for Docker, any other namespace for containerd).
fn runtime_in_event(runtime: Runtime) -> Value {
    match runtime {
        Runtime::Podman => Value::from("podman"),
        Runtime::Docker => Value::from("docker"),
        Runtime::Containerd => Value::from("containerd"),
    }
}

fn check(runtime: Runtime, ns: CgroupNs, backend: Backend) {
    if !require_runtime(runtime) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let engine = Engine::start(runtime);
    let sensor = JsonlSensor::start_in(
        ns,
        work.path(),
        &format!("{runtime}-{ns}-node"),
        &backend.args(&[]),
    );

    let uid = pod_uid();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (entry, child, exec) = (
        format!("pg-entry-{tag}"),
        format!("pg-child-{tag}"),
        format!("pg-exec-{tag}"),
    );
    // The entrypoint is a shell (its `$0` is the marker) that starts a child shell and then
    // stays as `sleep`. Each shell lives long enough for /proc to be read; the trailing `true`
    // keeps a one-command shell from exec-ing `sleep` in its place.
    let script = format!("/bin/sh -c '/bin/sleep 0.5; /bin/true' {child}; exec /bin/sleep 3600");
    let c = engine.run_in_pod(&uid, &["/bin/sh", "-c", &script, &entry]);
    let pid = c.pid();

    if let Some(cgns) = &sensor.cgroupns {
        // The probe: from the sensor's namespace the container is outside, in every hierarchy.
        cgroupns::assert_outside(&cgns.read_cgroup_of(pid), &format!("{runtime} container"));
    }

    let out = c.exec(&["/bin/sh", "-c", "/bin/sleep 0.5; /bin/true", &exec]);
    assert!(
        out.status.success(),
        "{runtime} exec failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (marker, context) in [
        (&entry, "entrypoint"),
        (&child, "descendant"),
        (&exec, "exec-session"),
    ] {
        // The runtime's client (`docker run`, `ctr tasks exec`, ...) carries the marker too;
        // the process in the container is the shell that has it.
        let ev = sensor.wait_event(Duration::from_secs(15), marker, |e| {
            e["argv"][0] == "/bin/sh" && argv_has(e, marker)
        });
        let why = format!(
            "the {context} process of a {runtime} container, sensor in the {ns} cgroup \
             namespace:\n{ev}"
        );
        let ct = &ev["container"];
        assert_eq!(ct["container_id"], c.id.as_str(), "container ID: {why}");
        assert_eq!(ct["pod_uid"], uid.as_str(), "pod UID: {why}");
        assert_eq!(ct["runtime"], runtime_in_event(runtime), "runtime: {why}");
        assert_eq!(ct["qos"], "best-effort", "QoS class: {why}");
        assert_eq!(ev["workload"]["kind"], "pod", "{why}");
        assert_eq!(
            ev["workload"]["workload_name"],
            format!("pod-{uid}"),
            "{why}"
        );
        assert_eq!(ev["context"], context, "{why}");
        assert!(
            !ev["missing"]
                .as_array()
                .is_some_and(|m| m.iter().any(|f| f == "container")),
            "container inherited, not read: {why}"
        );
        if context == "entrypoint" {
            assert_eq!(ev["pid"], pid, "{why}");
        }
    }
}

per_backend!(docker_container_attributed_from_the_host_cgroup_namespace);
fn docker_container_attributed_from_the_host_cgroup_namespace(backend: Backend) {
    check(Runtime::Docker, CgroupNs::Host, backend);
}

per_backend!(docker_container_attributed_from_a_private_cgroup_namespace);
fn docker_container_attributed_from_a_private_cgroup_namespace(backend: Backend) {
    check(Runtime::Docker, CgroupNs::Private, backend);
}

per_backend!(podman_container_attributed_from_the_host_cgroup_namespace);
fn podman_container_attributed_from_the_host_cgroup_namespace(backend: Backend) {
    check(Runtime::Podman, CgroupNs::Host, backend);
}

per_backend!(podman_container_attributed_from_a_private_cgroup_namespace);
fn podman_container_attributed_from_a_private_cgroup_namespace(backend: Backend) {
    check(Runtime::Podman, CgroupNs::Private, backend);
}

per_backend!(containerd_container_attributed_from_the_host_cgroup_namespace);
fn containerd_container_attributed_from_the_host_cgroup_namespace(backend: Backend) {
    check(Runtime::Containerd, CgroupNs::Host, backend);
}

per_backend!(containerd_container_attributed_from_a_private_cgroup_namespace);
fn containerd_container_attributed_from_a_private_cgroup_namespace(backend: Backend) {
    check(Runtime::Containerd, CgroupNs::Private, backend);
}
