//! The sensor's privilege set, proven on the real kernel with real containers.
//!
//! The DaemonSet in `deploy/` claims the sensor works with exactly three added capabilities, the
//! host PID namespace, read-only host `/proc` and cgroup mounts, a read-only root filesystem,
//! no host network and no privileged mode. This test takes that claim from the rendered
//! manifest itself (`kubectl kustomize deploy/overlays/production`), so the test and the
//! manifest cannot drift, turns it into the equivalent `docker run` flags, and runs the locally
//! built `procguard-sensor` in an image assembled `FROM scratch` (the binary, its dynamic
//! loader and the libraries `ldd` names: nothing else, not even a shell).
//!
//! It then shows that the sensor, so confined, captures and attributes execs in *other* real
//! containers placed in kubelet-shaped cgroups (`docker exec` standing in for `kubectl exec`):
//! the executable path inside the container, its sha256, the container ID and the pod UID.
//! Three execs cover what the capabilities are for: one as root, one as an unprivileged user,
//! and one of an executable only its (non-root) owner may read.
//!
//! Then it removes each added capability in turn and records what the sensor loses, on the
//! proc connector (`--capture netlink`: the path every kernel has, and the fallback where BPF
//! is refused). A capability whose removal loses nothing fails the test: the DaemonSet must
//! not grant it.
//!
//! Finally it runs the eBPF backend with exactly the same grant (CAP_SYS_ADMIN includes
//! CAP_BPF and CAP_PERFMON, so nothing is added for it), requires the same probes to pass, and
//! shows that where the kernel offers no BTF `--capture auto` falls back to the proc connector
//! with one line saying why, and still passes them.
//!
//! What differs from a cluster, and why:
//! - `--network none` instead of a pod network: stricter, and it forces the proc connector
//!   socket to be opened through `PROCGUARD_NETLINK_NETNS`, as in a pod without host network.
//! - That namespace is this test process's (`/host/proc/<test pid>/ns/net`), not PID 1's. On
//!   these machines PID 1 is the sandbox's own supervisor, whose `/proc/1/ns/*` links the
//!   kernel refuses even to root, so no container could open it. The test process is, like a
//!   node's PID 1, a root process with every capability in the initial network namespace, so
//!   opening its namespace needs the same privileges as opening `/host/proc/1/ns/net` on a node.
//! - The sensor runs in a private cgroup namespace (`--cgroupns private`), as containerd and
//!   CRI-O run every pod on a cgroup-v2 node: it reads other processes' cgroup paths as
//!   `/../…` unless it enters the host's (`PROCGUARD_HOST_CGROUPNS`, which points at this test
//!   process's namespace for the same reason as the network namespace above).
//! - Likewise `PROCGUARD_HOST_ROOT` (where containers' writable layers are looked up) is this
//!   test process's root, `/host/proc/<test pid>/root`, not PID 1's.
//! - No server and no Kubernetes API: events go to `PROCGUARD_JSONL` on the (writable) spool
//!   mount, the TLS settings are dropped, and `PROCGUARD_POD_METADATA=off`.
//! - The spool's hostPath is a temporary directory, and the TLS Secret an empty one.

use procguard_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The image the test assembles around the locally built binary.
const IMAGE: &str = "procguard-test-sensor:privilege-set";

/// The workload user of the unprivileged execs, and owner of the private executable.
const WORKLOAD_UID: u32 = 1234;

/// What the rendered DaemonSet grants the sensor container, as `docker run` understands it.
#[derive(Debug, Clone)]
struct Grant {
    /// Capabilities added after dropping ALL, in manifest order.
    caps: Vec<String>,
    /// `uid:gid`.
    user: String,
    /// Whether the root filesystem is read-only.
    read_only_root: bool,
    /// Whether `no_new_privs` is set (allowPrivilegeEscalation: false).
    no_new_privs: bool,
    /// Whether AppArmor is unconfined.
    apparmor_unconfined: bool,
    /// Memory limit in bytes.
    memory: u64,
    /// CPU limit in millicores.
    cpu_millis: u64,
    /// Mounts: (what to mount on the host, path in the container, read-only).
    mounts: Vec<(PathBuf, String, bool)>,
    /// Environment, after the documented overrides.
    env: BTreeMap<String, String>,
    /// Where the JSON-lines output lands on the host.
    jsonl_on_host: PathBuf,
    /// `docker run` arguments of the test's own, not from the manifest (empty but for the
    /// eBPF fallback's kernel without BTF).
    docker_args: Vec<String>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Renders the production overlay (it needs no Secrets) and returns the sensor DaemonSet.
fn rendered_sensor_daemonset() -> Value {
    let dir = repo::root().join("deploy/overlays/production");
    repo::objects(&repo::kustomize(&dir).unwrap_or_else(|e| panic!("{e}")))
        .into_iter()
        .find(|o| {
            text(o, "/kind") == Some("DaemonSet")
                && text(o, "/metadata/name") == Some("procguard-sensor")
        })
        .expect("the rendered production overlay has no DaemonSet procguard-sensor")
}

/// "256Mi" and friends, in bytes.
fn parse_memory(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("memory quantity") * factor;
        }
    }
    q.parse().expect("memory quantity")
}

/// "500m" or "1", in millicores.
fn parse_cpu(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("cpu quantity"),
        None => (q.parse::<f64>().expect("cpu quantity") * 1000.0) as u64,
    }
}

/// Reads the grant from the DaemonSet, asserting on the way everything the test cannot map to
/// Docker (so a manifest change the test does not understand fails here, not silently).
fn grant_from(ds: &Value, work: &Path) -> Grant {
    let pod = ds.pointer("/spec/template/spec").expect("pod spec");
    assert_eq!(
        pod.pointer("/hostPID"),
        Some(&Value::Bool(true)),
        "the sensor must use hostPID"
    );
    assert_ne!(
        pod.pointer("/hostNetwork"),
        Some(&Value::Bool(true)),
        "the sensor must not use hostNetwork"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "the test maps exactly one sensor container"
    );
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_ne!(
        sc.pointer("/privileged"),
        Some(&Value::Bool(true)),
        "the sensor must not be privileged"
    );
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"], "the sensor must drop ALL capabilities");
    let caps: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|v| {
            let c = v.as_str().expect("capability name");
            c.strip_prefix("CAP_").unwrap_or(c).to_string()
        })
        .collect();
    let seccomp =
        text(sc, "/seccompProfile/type").or(text(pod, "/securityContext/seccompProfile/type"));
    assert_eq!(
        seccomp,
        Some("RuntimeDefault"),
        "the test maps only the RuntimeDefault seccomp profile (Docker's default)"
    );
    let uid = sc["runAsUser"].as_u64().expect("runAsUser");
    let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
    let limits = &c["resources"]["limits"];

    // Volumes by name, then each mount.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("mount name");
        let path = m["mountPath"].as_str().expect("mountPath").to_string();
        let read_only = m["readOnly"].as_bool().unwrap_or(false);
        let v = volumes[name];
        let source = if let Some(host) = text(v, "/hostPath/path") {
            match host {
                // The host's kernel interfaces: mounted as they are.
                "/proc" | "/sys/fs/cgroup" => PathBuf::from(host),
                // Node state (the spool): a scratch directory stands in for the node's.
                _ => {
                    let d = work.join(format!("hostpath-{name}"));
                    std::fs::create_dir_all(&d).unwrap();
                    d
                }
            }
        } else if v.get("secret").is_some() || v.get("emptyDir").is_some() {
            // No server in this test, so the TLS Secret is an empty directory.
            let d = work.join(format!("volume-{name}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        } else {
            panic!("the test does not know how to mount volume {v}");
        };
        mounts.push((source, path, read_only));
    }
    for host in ["/proc", "/sys/fs/cgroup"] {
        assert!(
            mounts.iter().any(|(s, _, ro)| s == Path::new(host) && *ro),
            "the sensor must mount the host's {host} read-only"
        );
    }

    // Environment: the manifest's values, then the documented overrides.
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name").to_string();
        if let Some(v) = e["value"].as_str() {
            env.insert(name, v.to_string());
        } else if text(e, "/valueFrom/fieldRef/fieldPath") == Some("spec.nodeName") {
            env.insert(name, "privilege-set-node".to_string());
        } else {
            panic!("the test does not know how to provide env {e}");
        }
    }
    assert!(
        env.contains_key("NODE_NAME"),
        "NODE_NAME must come from the downward API"
    );
    let proc_root = env["PROCGUARD_PROC_ROOT"].clone();
    assert_eq!(
        env.get("PROCGUARD_NETLINK_NETNS").map(String::as_str),
        Some(format!("{proc_root}/1/ns/net").as_str()),
        "the DaemonSet should open the proc connector in PID 1's network namespace"
    );
    // See the module comment: this process stands in for the node's PID 1.
    env.insert(
        "PROCGUARD_NETLINK_NETNS".into(),
        format!("{proc_root}/{}/ns/net", std::process::id()),
    );
    assert_eq!(
        env.get("PROCGUARD_HOST_CGROUPNS").map(String::as_str),
        Some(format!("{proc_root}/1/ns/cgroup").as_str()),
        "the DaemonSet should read cgroup paths in PID 1's cgroup namespace"
    );
    env.insert(
        "PROCGUARD_HOST_CGROUPNS".into(),
        format!("{proc_root}/{}/ns/cgroup", std::process::id()),
    );
    assert_eq!(
        env.get("PROCGUARD_HOST_ROOT").map(String::as_str),
        Some(format!("{proc_root}/1/root").as_str()),
        "the DaemonSet should look containers' writable layers up through PID 1's root"
    );
    env.insert(
        "PROCGUARD_HOST_ROOT".into(),
        format!("{proc_root}/{}/root", std::process::id()),
    );
    for unused in [
        "PROCGUARD_SERVER",
        "PROCGUARD_TLS_CA",
        "PROCGUARD_TLS_CERT",
        "PROCGUARD_TLS_KEY",
    ] {
        env.remove(unused);
    }
    env.insert("PROCGUARD_POD_METADATA".into(), "off".into());
    // The JSON lines go to the spool, the one writable mount the DaemonSet has.
    let spool = env["PROCGUARD_SPOOL_DIR"].clone();
    let (spool_host, _, spool_ro) = mounts
        .iter()
        .find(|(_, p, _)| *p == spool)
        .expect("PROCGUARD_SPOOL_DIR must be a mount");
    assert!(!spool_ro, "the spool mount must be writable");
    let jsonl_on_host = spool_host.join("events.jsonl");
    env.insert("PROCGUARD_JSONL".into(), format!("{spool}/events.jsonl"));

    Grant {
        caps,
        user: format!("{uid}:{gid}"),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
        no_new_privs: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        apparmor_unconfined: text(sc, "/appArmorProfile/type") == Some("Unconfined"),
        memory: parse_memory(limits["memory"].as_str().expect("memory limit")),
        cpu_millis: parse_cpu(limits["cpu"].as_str().expect("cpu limit")),
        mounts,
        env,
        jsonl_on_host,
        docker_args: Vec::new(),
    }
}

/// Builds [`IMAGE`]: `FROM scratch`, the sensor binary, and what `ldd` says it loads.
fn build_image(work: &Path) {
    let binary = bin("procguard-sensor");
    let ctx = work.join("image");
    let root = ctx.join("rootfs");
    let place = |from: &Path, to: &Path| {
        let dest = root.join(to.strip_prefix("/").unwrap_or(to));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // fs::copy follows symlinks: the library file itself lands at the linked name.
        std::fs::copy(from, &dest)
            .unwrap_or_else(|e| panic!("copy {} into the image: {e}", from.display()));
    };
    place(&binary, Path::new("/usr/local/bin/procguard-sensor"));
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    // A static binary makes ldd say "not a dynamic executable" and exit 1: nothing to add.
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or, for the loader,
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            place(Path::new(p), Path::new(p));
        }
    }
    // The same user as deploy/images/Dockerfile.sensor; the DaemonSet overrides it.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/procguard-sensor\"]\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "docker build of the sensor image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sensor container, removed when dropped.
struct SensorContainer {
    name: String,
}

impl SensorContainer {
    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn running(&self) -> bool {
        inspect(&self.name, "{{.State.Running}}") == "true"
    }

    fn host_pid(&self) -> Option<u32> {
        inspect(&self.name, "{{.State.Pid}}")
            .parse()
            .ok()
            .filter(|p| *p != 0)
    }
}

impl Drop for SensorContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn inspect(name: &str, format: &str) -> String {
    Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `docker run` with exactly `grant` (its capabilities replaced by `caps`).
fn run_sensor(grant: &Grant, caps: &[String], label: &str) -> SensorContainer {
    let name = format!("procguard-privset-{label}-{}", &pod_uid()[..8]);
    let mut cmd = Command::new("docker");
    cmd.args(["run", "-d", "--name", &name, "--cap-drop", "ALL"]);
    for c in caps {
        cmd.args(["--cap-add", c]);
    }
    cmd.args(["--pid", "host", "--network", "none", "--user", &grant.user]);
    // A pod's own cgroup namespace, as on every cgroup-v2 node.
    cmd.args(["--cgroupns", "private"]);
    cmd.arg(format!("--memory={}", grant.memory));
    cmd.arg(format!("--cpus={}", grant.cpu_millis as f64 / 1000.0));
    if grant.read_only_root {
        cmd.arg("--read-only");
    }
    if grant.no_new_privs {
        cmd.args(["--security-opt", "no-new-privileges"]);
    }
    // Unconfined is what a host without AppArmor gives anyway; Docker refuses the option there.
    if grant.apparmor_unconfined && docker_has_apparmor() {
        cmd.args(["--security-opt", "apparmor=unconfined"]);
    }
    for (source, path, ro) in &grant.mounts {
        let suffix = if *ro { ":ro" } else { "" };
        cmd.arg("-v")
            .arg(format!("{}:{path}{suffix}", source.display()));
    }
    for (k, v) in &grant.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.args(&grant.docker_args);
    cmd.arg(IMAGE);
    let out = cmd.output().expect("docker run");
    assert!(
        out.status.success(),
        "docker run of the sensor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    SensorContainer { name }
}

fn docker_has_apparmor() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.SecurityOptions}}"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("apparmor"))
}

/// One exec in the workload container and what its event must say.
struct Probe {
    name: &'static str,
    /// `docker exec` user, if not the image's (root).
    user: Option<u32>,
    /// The executable, inside the container.
    exe: &'static str,
    /// Whether the executable was written into the container after it started (its writable
    /// layer), which the sensor must see through the node's root filesystem.
    written: bool,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "root exec",
        user: None,
        exe: "/bin/sh",
        written: false,
    },
    Probe {
        name: "unprivileged exec",
        user: Some(WORKLOAD_UID),
        exe: "/bin/sh",
        written: false,
    },
    Probe {
        name: "exec of an owner-only (0700) executable",
        user: Some(WORKLOAD_UID),
        exe: "/tmp/private/sh",
        written: true,
    },
    Probe {
        name: "exec of a file written into the container's writable layer",
        user: None,
        exe: "/usr/bin/sh",
        written: true,
    },
];

/// The workload: a container in a kubelet-shaped pod cgroup, with an executable only
/// [`WORKLOAD_UID`] may read.
struct Workload {
    container: Container,
    pod_uid: String,
    busybox_sha256: String,
}

fn start_workload(work: &Path) -> Workload {
    let pod = pod_uid();
    let container = Container::run_in_pod(&pod, &["/bin/sleep", "3600"]);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox");
    // /tmp/private/sh: busybox (so it runs as "sh"), owned by WORKLOAD_UID, mode 0700.
    let private = work.join("private");
    std::fs::create_dir_all(&private).unwrap();
    let sh = private.join("sh");
    std::fs::copy(&busybox, &sh).unwrap();
    std::os::unix::fs::chown(&sh, Some(WORKLOAD_UID), Some(WORKLOAD_UID)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    // -a keeps the owner and mode.
    let st = Command::new("docker")
        .args(["cp", "-a"])
        .arg(&private)
        .arg(format!("{}:/tmp/private", container.id))
        .status()
        .expect("docker cp");
    assert!(st.success(), "docker cp of the private executable failed");
    // /usr/bin/sh: busybox written into the writable layer after the container started (the
    // image has only /bin/sh), outside any writable directory; named `sh` so that busybox
    // runs its shell applet.
    let added = work.join("added-sh");
    std::fs::copy(&busybox, &added).unwrap();
    let st = Command::new("docker")
        .arg("cp")
        .arg(&added)
        .arg(format!("{}:/usr/bin/sh", container.id))
        .status()
        .expect("docker cp");
    assert!(st.success(), "docker cp of the added executable failed");
    let sum = Command::new("sha256sum")
        .arg(&busybox)
        .output()
        .expect("sha256sum");
    let busybox_sha256 = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    Workload {
        container,
        pod_uid: pod,
        busybox_sha256,
    }
}

/// Runs one probe and checks its event; `Err` says what was wrong.
fn run_probe(probe: &Probe, w: &Workload, jsonl: &Path, marker: &str) -> Result<(), String> {
    let mut cmd = Command::new("docker");
    cmd.arg("exec");
    if let Some(uid) = probe.user {
        cmd.args(["-u", &format!("{uid}:{uid}")]);
    }
    // "; true" keeps the shell alive (and its argv, with the marker, in /proc) while sleep
    // runs: with a lone command busybox sh would exec sleep in its place at once.
    let out = cmd
        .arg(&w.container.id)
        .args([probe.exe, "-c", "sleep 1; true", marker])
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "docker exec for {} failed: {}",
        probe.name,
        String::from_utf8_lossy(&out.stderr)
    );
    // The docker CLI on the host carries the marker too; the event wanted is the container's.
    let ev = wait_for(Duration::from_secs(10), || {
        repo::jsonl(jsonl).into_iter().find(|e| {
            !e["container"].is_null()
                && e["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
        })
    })
    .ok_or_else(|| "no event".to_string())?;
    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: &Value, want: Value| {
        if *got != want {
            wrong.push(format!("{what} {got} (want {want})"));
        }
    };
    expect("exe_path", &ev["exe_path"], probe.exe.into());
    expect(
        "container_id",
        &ev["container"]["container_id"],
        w.container.id.clone().into(),
    );
    expect(
        "pod_uid",
        &ev["container"]["pod_uid"],
        w.pod_uid.clone().into(),
    );
    expect("uid", &ev["uid"], probe.user.unwrap_or(0).into());
    expect(
        "exe_sha256",
        &ev["exe_sha256"],
        w.busybox_sha256.clone().into(),
    );
    expect(
        "exe_writable_location",
        &ev["exe_writable_location"],
        probe.written.into(),
    );
    // Its origin, classified with exactly the DaemonSet's grant (the layers looked up through
    // the host's root).
    expect(
        "origin",
        &ev["origin"],
        if probe.written {
            "writable-layer"
        } else {
            "image"
        }
        .into(),
    );
    expect("completeness", &ev["completeness"], "full".into());
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (missing: {})", wrong.join(", "), ev["missing"]))
    }
}

/// What one confined sensor did.
struct Outcome {
    /// Capabilities it was given.
    caps: Vec<String>,
    /// `Err(log)` when it never finished its initial scan.
    started: Result<(), String>,
    /// Per probe: `Ok` or what was wrong.
    probes: Vec<(&'static str, Result<(), String>)>,
    /// Its effective capability mask, read on the host.
    cap_eff: Option<u64>,
    /// The proc connector socket's receive buffer, in bytes, as the kernel reports it.
    rcvbuf: Option<u64>,
    /// Whether it entered the host's cgroup namespace (rather than resolving paths itself).
    entered_cgroupns: bool,
    /// The capture backend it runs (`ebpf`, `netlink`), from its start line.
    backend: Option<String>,
    /// Its log lines saying why it captures with netlink although eBPF was wanted.
    fallbacks: Vec<String>,
}

/// `grant` with environment variables set or replaced.
fn with_env(grant: &Grant, vars: &[(&str, &str)]) -> Grant {
    let mut g = grant.clone();
    for (k, v) in vars {
        g.env.insert((*k).to_string(), (*v).to_string());
    }
    g
}

fn confine_and_probe(grant: &Grant, caps: &[String], label: &str, w: &Workload) -> Outcome {
    let _ = std::fs::remove_file(&grant.jsonl_on_host);
    let sensor = run_sensor(grant, caps, label);
    let ready = wait_for(Duration::from_secs(20), || {
        let logs = sensor.logs();
        if logs.contains("Initial /proc scan done") {
            Some(true)
        } else if !sensor.running() {
            Some(false)
        } else {
            None
        }
    });
    let mut outcome = Outcome {
        caps: caps.to_vec(),
        started: Ok(()),
        probes: Vec::new(),
        cap_eff: None,
        rcvbuf: None,
        entered_cgroupns: false,
        backend: None,
        fallbacks: Vec::new(),
    };
    if ready != Some(true) {
        outcome.started = Err(sensor.logs().trim().to_string());
        return outcome;
    }
    let pid = sensor.host_pid().expect("sensor pid");
    outcome.cap_eff = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    outcome.rcvbuf = connector_rcvbuf(pid);
    let logs = sensor.logs();
    outcome.entered_cgroupns = logs.contains("Entered the host's cgroup namespace");
    // The start line names it: `"capture":"ebpf"` in JSON logs, `capture="ebpf"` in text.
    outcome.backend = ["ebpf", "netlink"]
        .into_iter()
        .find(|b| {
            logs.contains(&format!("\"capture\":\"{b}\""))
                || logs.contains(&format!("capture=\"{b}\""))
        })
        .map(str::to_string);
    outcome.fallbacks = logs
        .lines()
        .filter(|l| l.contains("Capturing with the netlink proc connector"))
        .map(str::to_string)
        .collect();
    for (i, probe) in PROBES.iter().enumerate() {
        let marker = format!("procguard-privset-{label}-{i}");
        outcome.probes.push((
            probe.name,
            run_probe(probe, w, &grant.jsonl_on_host, &marker),
        ));
    }
    outcome
}

/// The receive buffer of `pid`'s proc connector socket (netlink protocol 11), from the
/// kernel's socket diagnostics. The socket lives in the initial network namespace (the sensor
/// created it there), which is this test's, so `ss` here sees it.
fn connector_rcvbuf(pid: u32) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-f", "netlink", "-a", "-m", "-n"])
        .output()
        .ok()?;
    let needle = format!(" 11:{pid} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.split("rb").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
}

/// Linux capability numbers of the names the manifest uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "IPC_LOCK" => 14,
        "SYS_CHROOT" => 18,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "BPF" => 39,
        "PERFMON" => 38,
        other => panic!("capability {other} is not in the test's table; add its number"),
    }
}

/// What `outcome` lost compared with `full`; empty when nothing.
fn losses(outcome: &Outcome, full: &Outcome) -> Vec<String> {
    if let Err(log) = &outcome.started {
        let last = log.lines().last().unwrap_or("(no output)");
        return vec![format!("the sensor does not start: {last}")];
    }
    let mut lost: Vec<String> = outcome
        .probes
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    if full.entered_cgroupns && !outcome.entered_cgroupns {
        lost.push(
            "cannot enter the host's cgroup namespace (paths resolved against its own cgroup instead)"
                .to_string(),
        );
    }
    if let (Some(got), Some(want)) = (outcome.rcvbuf, full.rcvbuf) {
        if got < want {
            lost.push(format!(
                "proc connector receive buffer {got} bytes instead of {want} (capped at net.core.rmem_max)"
            ));
        }
    }
    lost
}

#[test]
fn sensor_captures_container_execs_with_exactly_the_daemonset_privileges() {
    if !require_root_and_docker() {
        return;
    }
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        kubectl,
        "this test renders deploy/ with kubectl (>= 1.27) kustomize",
    ) {
        return;
    }
    let ss = Command::new("ss")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        ss,
        "this test reads socket buffers with ss (apt-get install iproute2)",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let rendered = grant_from(&rendered_sensor_daemonset(), work.path());
    // Parts 1 and 2 measure the proc connector (the path every kernel has, and the fallback
    // where BPF is refused); part 3 the eBPF backend the DaemonSet's `auto` picks where it can.
    let grant = with_env(&rendered, &[("PROCGUARD_CAPTURE", "netlink")]);
    build_image(work.path());
    let workload = start_workload(work.path());
    // A root process in this network namespace with no capabilities at all (see below).
    let mut anchor_cmd = Command::new("setpriv");
    anchor_cmd.args([
        "--bounding-set",
        "-all",
        "--inh-caps",
        "-all",
        "sleep",
        "600",
    ]);
    let anchor = Proc::spawn(anchor_cmd, work.path().join("anchor.log"));

    // 1. Exactly what the DaemonSet grants: everything must work.
    let full = confine_and_probe(&grant, &grant.caps, "granted", &workload);
    if let Err(log) = &full.started {
        panic!(
            "with the DaemonSet's privileges ({:?}) the sensor did not start:\n{log}",
            grant.caps
        );
    }
    let expected_mask: u64 = grant.caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(
        full.cap_eff,
        Some(expected_mask),
        "the confined sensor's effective capabilities are not exactly {:?}",
        grant.caps
    );
    let failed: Vec<_> = full
        .probes
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "with the DaemonSet's privileges the sensor missed or misattributed execs:\n{}",
        failed.join("\n")
    );
    assert!(
        full.rcvbuf.is_some(),
        "no proc connector socket of the sensor in ss"
    );
    assert!(
        full.entered_cgroupns,
        "with the DaemonSet's privileges the sensor did not enter the host's cgroup namespace"
    );

    // 2. Each capability removed in turn.
    let mut table = vec![format!(
        "{:<16} | {}",
        "capability", "what the sensor loses without it"
    )];
    let mut unneeded = Vec::new();
    for cap in &grant.caps {
        let fewer: Vec<String> = grant.caps.iter().filter(|c| *c != cap).cloned().collect();
        let label = format!("no-{}", cap.to_lowercase().replace('_', "-"));
        let outcome = confine_and_probe(&grant, &fewer, &label, &workload);
        assert_eq!(outcome.caps, fewer);
        let mut lost = losses(&outcome, &full);
        if outcome.started.is_err() {
            // It could not even open the node's network namespace. Would it do its work if it
            // could? Ask again with the namespace of a root process without capabilities,
            // which the ptrace access checks let any root process open.
            let mut easier = grant.clone();
            easier.env.insert(
                "PROCGUARD_NETLINK_NETNS".into(),
                format!(
                    "{}/{}/ns/net",
                    grant.env["PROCGUARD_PROC_ROOT"],
                    anchor.child.id()
                ),
            );
            let again = confine_and_probe(&easier, &fewer, &format!("{label}-open-ns"), &workload);
            let more = losses(&again, &full);
            lost.push(if more.is_empty() {
                "nothing else given a namespace it may open".to_string()
            } else {
                format!("and given a namespace it may open: {}", more.join("; "))
            });
        }
        if lost.is_empty() {
            unneeded.push(cap.clone());
            table.push(format!("{cap:<16} | nothing"));
        } else {
            table.push(format!("{cap:<16} | {}", lost.join("; ")));
        }
    }
    // Straight to stderr, not eprintln!: the harness captures that for passing tests, and these
    // findings belong in every CI log.
    let _ = writeln!(
        std::io::stderr(),
        "privilege set of deploy/base/sensor/daemonset.yaml on kernel {}:\n{}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        table.join("\n")
    );
    assert!(
        unneeded.is_empty(),
        "the DaemonSet grants capabilities the sensor does not need: {unneeded:?}; drop them from \
         deploy/base/sensor/daemonset.yaml (and its justification comments)\n{}",
        table.join("\n")
    );

    // 3. eBPF. The same grant loads and attaches the eBPF programs (CAP_SYS_ADMIN includes
    // CAP_BPF and CAP_PERFMON) and captures as completely: no capability is added for it.
    if !Backend::Ebpf.require() {
        return;
    }
    let ebpf = confine_and_probe(
        &with_env(&rendered, &[("PROCGUARD_CAPTURE", "ebpf")]),
        &grant.caps,
        "granted-ebpf",
        &workload,
    );
    if let Err(log) = &ebpf.started {
        panic!(
            "with the DaemonSet's privileges ({:?}) the sensor could not capture with eBPF:\n{log}",
            grant.caps
        );
    }
    assert_eq!(ebpf.backend.as_deref(), Some("ebpf"));
    assert_eq!(ebpf.cap_eff, Some(expected_mask));
    let failed: Vec<_> = ebpf
        .probes
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "with the DaemonSet's privileges the eBPF backend missed or misattributed execs:\n{}",
        failed.join("\n")
    );
    // Where the kernel offers no BTF (hidden here by an empty /sys/kernel/btf), the
    // DaemonSet's `auto` falls back to the proc connector and one line says why. (Without
    // CAP_SYS_ADMIN it cannot fall back in a pod at all: the proc connector is reached by
    // setns into the node's network namespace, which needs it too. tests/tests/ebpf_capture.rs
    // shows the fallback for missing capabilities, on the host.)
    let mut no_btf = with_env(&rendered, &[("PROCGUARD_CAPTURE", "auto")]);
    no_btf.docker_args = vec!["--tmpfs".into(), "/sys/kernel/btf".into()];
    let fallback = confine_and_probe(&no_btf, &grant.caps, "no-btf-auto", &workload);
    if let Err(log) = &fallback.started {
        panic!("without BTF, --capture auto did not start:\n{log}");
    }
    assert_eq!(fallback.backend.as_deref(), Some("netlink"));
    assert_eq!(fallback.fallbacks.len(), 1, "{:?}", fallback.fallbacks);
    assert!(
        fallback.fallbacks[0].contains("BTF"),
        "the fallback line says why: {}",
        fallback.fallbacks[0]
    );
    let failed: Vec<_> = fallback
        .probes
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "after falling back, the proc connector missed execs:\n{}",
        failed.join("\n")
    );
    let _ = writeln!(
        std::io::stderr(),
        "eBPF with the DaemonSet's grant: captured every probe; without BTF: {}",
        fallback.fallbacks[0]
    );
}
