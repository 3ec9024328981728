//! Support for procguard's end-to-end tests: the real binaries, a real development PKI, real
//! containers, all on loopback.
//!
//! Tests that need root or a Docker engine call [`require`]. On a laptop without them the test
//! prints why it skipped; with `PROCGUARD_STRICT_TESTS=1` (set by `.ci/run`) a missing
//! privilege fails the test instead, so CI can never pass by skipping.

pub mod cgroupns;
pub mod cgroups;
pub mod fake_kube;
pub mod grpc;
pub mod images;
pub mod in_process;
pub mod jsonl;
pub mod kubelet;
pub mod repo;
pub mod runtimes;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether skips must fail (CI).
pub fn strict() -> bool {
    std::env::var("PROCGUARD_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// Returns true when `ok`; otherwise skips (prints why and returns false) or, in strict mode,
/// panics with `why`.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if strict() {
        panic!("PROCGUARD_STRICT_TESTS=1 and a requirement is missing: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

/// A capture backend of the sensor (`--capture`). Every capture test runs its body once per
/// backend ([`per_backend!`]), so CI covers both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's exec, fork and exit tracepoints.
    Ebpf,
    /// The netlink proc connector.
    Netlink,
}

impl Backend {
    /// Its `--capture` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::Netlink => "netlink",
        }
    }

    /// `extra` sensor flags with `--capture <this backend>`.
    pub fn args<'a>(self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--capture", self.name()];
        v.extend_from_slice(extra);
        v
    }

    /// Whether the backend can run here ([`require`]: skips, or fails under
    /// `PROCGUARD_STRICT_TESTS=1`, with the reason).
    pub fn require(self) -> bool {
        match self {
            Backend::Netlink => true,
            Backend::Ebpf => require(
                is_root() && Path::new("/sys/kernel/btf/vmlinux").exists(),
                "eBPF capture needs root and a kernel with BTF (/sys/kernel/btf/vmlinux)",
            ),
        }
    }
}

/// Runs the test body `fn NAME(backend: Backend)` once per capture backend, as the tests
/// `NAME::ebpf` and `NAME::netlink`. The two never run at the same time: each is the same
/// workload, and running both at once doubled the load the capture tests were written for
/// (the suite runs other tests beside them anyway).
#[macro_export]
macro_rules! per_backend {
    ($name:ident) => {
        mod $name {
            static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

            #[test]
            fn ebpf() {
                let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
                if $crate::Backend::Ebpf.require() {
                    super::$name($crate::Backend::Ebpf)
                }
            }
            #[test]
            fn netlink() {
                let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
                super::$name($crate::Backend::Netlink)
            }
        }
    };
}

/// Whether this process is root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether a Docker engine answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Root and Docker, or skip.
pub fn require_root_and_docker() -> bool {
    require(is_root(), "this test needs root (netlink proc connector, cgroups)")
        && require(
            docker_available(),
            "this test needs a running Docker engine (apt-get install docker.io; dockerd --bridge=none --iptables=false)",
        )
}

/// The workspace's target directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary; panics with the command to build it when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        p.display()
    );
    p
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Holds the test binary's one lock, for tests that must not run beside each other (they
/// load the machine, or share host state such as cgroups); a test that panicked while
/// holding it does not poison it for the rest.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `f` every 50 ms until it returns `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an HTTP GET of `url` on loopback answers 200 (a tiny client: the admin port is plain HTTP).
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped; its output goes to a log file.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its combined log.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        Self { child, log }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `grace`; returns the exit status if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_for(grace, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate(Duration::from_secs(3));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A development PKI made by `procguardctl pki init`.
#[derive(Debug)]
pub struct Pki {
    /// Its directory.
    pub dir: PathBuf,
}

impl Pki {
    /// Creates one for `nodes` in `dir`: a sensor certificate per node
    /// (`sensor-<node>.crt`, marked `procguard://sensor/<node>`).
    pub fn create(dir: &Path, nodes: &[&str]) -> Self {
        Self::create_with(dir, nodes, &[], &[])
    }

    /// [`Pki::create`] with fleet certificates (`sensor-<name>.crt`, marked
    /// `procguard://sensor-fleet/<name>`) and API client certificates (`client-<name>.crt`).
    pub fn create_with(dir: &Path, nodes: &[&str], fleets: &[&str], clients: &[&str]) -> Self {
        let mut cmd = Command::new(bin("procguardctl"));
        cmd.args(["pki", "init", "--dir"])
            .arg(dir)
            .arg("--node")
            .arg(nodes.join(","));
        if !fleets.is_empty() {
            cmd.arg("--fleet").arg(fleets.join(","));
        }
        if !clients.is_empty() {
            cmd.arg("--client").arg(clients.join(","));
        }
        let out = cmd.output().expect("procguardctl pki init");
        assert!(
            out.status.success(),
            "pki init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// A file in the PKI directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The secret token of a role.
    pub fn token(&self, role: &str) -> String {
        std::fs::read_to_string(self.file(&format!("{role}.token")))
            .expect("token")
            .trim()
            .to_string()
    }
}

/// A running `procguard-server`.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// gRPC port.
    pub grpc_port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// A running server as its clients reach it: the binary ([`Server`]) or the library
/// in-process ([`in_process::InProcessServer`]).
pub trait ServerHandle {
    /// The gRPC URL (`https://127.0.0.1:PORT`).
    fn url(&self) -> String;
    /// The admin port (`/healthz`, `/readyz`, `/metrics`).
    fn admin_port(&self) -> u16;
}

impl ServerHandle for Server {
    fn url(&self) -> String {
        Server::url(self)
    }

    fn admin_port(&self) -> u16 {
        self.admin_port
    }
}

impl Server {
    /// Starts a server with `pki` and `extra` flags, and waits until it is ready.
    pub fn start(pki: &Pki, work: &Path, extra: &[&str]) -> Self {
        Self::start_at(pki, work, free_port(), extra)
    }

    /// [`Server::start`] on gRPC port `grpc_port` (a port sensors were already told).
    pub fn start_at(pki: &Pki, work: &Path, grpc_port: u16, extra: &[&str]) -> Self {
        let admin_port = free_port();
        let data_dir = work.join("server-data");
        let mut cmd = Command::new(bin("procguard-server"));
        cmd.arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--tls-cert")
            .arg(pki.file("server.crt"))
            .arg("--tls-key")
            .arg(pki.file("server.key"))
            .arg("--tls-client-ca")
            .arg(pki.file("ca.crt"))
            .arg("--tokens-file")
            .arg(pki.file("tokens.yaml"))
            .args(extra);
        let proc = Proc::spawn(cmd, work.join(format!("server-{grpc_port}.log")));
        let s = Self {
            proc,
            grpc_port,
            admin_port,
            data_dir,
        };
        assert!(
            wait_for(Duration::from_secs(15), || http_ok(admin_port, "/readyz")
                .then_some(()))
            .is_some(),
            "server not ready; log:\n{}",
            s.proc.log_text()
        );
        s
    }

    /// The server URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }
}

/// A running `procguard-sensor`.
#[derive(Debug)]
pub struct Sensor {
    /// The process.
    pub proc: Proc,
    /// Admin port.
    pub admin_port: u16,
    /// The cgroups rooting its private cgroup namespace, if it runs in one (dropped after
    /// `proc`, once the sensor has stopped).
    pub cgroupns: Option<cgroupns::PrivateCgroupNs>,
}

impl Sensor {
    /// Starts a sensor for `node` against `server`, and waits until it is connected.
    pub fn start(
        pki: &Pki,
        server: &impl ServerHandle,
        node: &str,
        work: &Path,
        extra: &[&str],
    ) -> Self {
        Self::start_in(cgroupns::CgroupNs::Host, pki, server, node, work, extra)
    }

    /// [`Sensor::start`] in cgroup namespace `ns`; [`cgroupns::CgroupNs::Private`] runs the
    /// sensor as a cgroup-v2 node does ([`cgroupns::sensor_command`]).
    pub fn start_in(
        ns: cgroupns::CgroupNs,
        pki: &Pki,
        server: &impl ServerHandle,
        node: &str,
        work: &Path,
        extra: &[&str],
    ) -> Self {
        let s = Self::spawn_in(ns, pki, server, node, work, extra);
        s.await_metric(
            "procguard_sensor_connected",
            1.0,
            Duration::from_secs(15),
            "sensor not connected",
        );
        s
    }

    /// [`Sensor::start_in`] without waiting for the connection (to a server that may not
    /// answer).
    pub fn spawn_in(
        ns: cgroupns::CgroupNs,
        pki: &Pki,
        server: &impl ServerHandle,
        node: &str,
        work: &Path,
        extra: &[&str],
    ) -> Self {
        let admin_port = free_port();
        let (mut cmd, cgroupns) =
            cgroupns::sensor_command(ns).expect("make the sensor's cgroup namespace");
        cmd.arg("--server")
            .arg(server.url())
            .arg("--node-name")
            .arg(node)
            .arg("--tls-ca")
            .arg(pki.file("ca.crt"))
            .arg("--tls-cert")
            .arg(pki.file(&format!("sensor-{node}.crt")))
            .arg("--tls-key")
            .arg(pki.file(&format!("sensor-{node}.key")))
            .arg("--tls-server-name")
            .arg("localhost")
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--spool-dir")
            .arg(work.join(format!("sensor-{node}")))
            .args(extra);
        let proc = Proc::spawn(cmd, work.join(format!("sensor-{node}-{admin_port}.log")));
        Self {
            proc,
            admin_port,
            cgroupns,
        }
    }

    /// Waits up to `timeout` for the sensor's metric `name` to reach `min`; panics saying
    /// `what` did not happen, with the sensor's log, otherwise.
    pub fn await_metric(&self, name: &str, min: f64, timeout: Duration, what: &str) {
        assert!(
            wait_for(timeout, || self.metric(name).filter(|v| *v >= min)).is_some(),
            "{what}; log:\n{}",
            self.proc.log_text()
        );
    }

    /// Reads one metric from the sensor's /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.admin_port, name)
    }
}

/// Reads one metric value from an admin port on loopback (an endpoint that does not answer
/// within 10 s reads as `None`: a test never hangs on it).
pub fn metric(port: u16, name: &str) -> Option<f64> {
    scrape(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        name,
        Duration::from_secs(10),
    )
}

/// Reads one metric value from an admin port on any address, within a second to connect and
/// two to answer (for endpoints a fault may have cut off).
pub fn metric_at(ip: std::net::IpAddr, port: u16, name: &str) -> Option<f64> {
    scrape(ip, port, name, Duration::from_secs(2))
}

fn scrape(ip: std::net::IpAddr, port: u16, name: &str, read: Duration) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)).ok()?;
    let _ = s.set_read_timeout(Some(read));
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Approves `workload`'s baseline as an approver and waits until `sensor` holds at least one
/// enforced baseline (the push reached it); panics with what went wrong otherwise.
pub fn approve_and_wait_for_push(
    pki: &Pki,
    server: &impl ServerHandle,
    sensor: &Sensor,
    workload: &str,
) {
    let approved = ctl_json(
        pki,
        server,
        "approver",
        &["baselines", "approve", workload, "--reason", "e2e"],
    )
    .unwrap_or_else(|e| panic!("approve {workload}: {e}"));
    assert_eq!(approved["state"], "enforced", "{approved}");
    sensor.await_metric(
        "procguard_sensor_baselines",
        1.0,
        Duration::from_secs(5),
        "the approved baseline did not reach the sensor",
    );
}

/// `procguardctl incidents list` as JSON (empty when the call fails).
pub fn incident_list(pki: &Pki, server: &impl ServerHandle) -> Vec<serde_json::Value> {
    ctl_json(pki, server, "viewer", &["incidents", "list"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Runs `procguardctl` against `server` with a role's token.
pub fn ctl(pki: &Pki, server: &impl ServerHandle, role: &str, args: &[&str]) -> Output {
    Command::new(bin("procguardctl"))
        .arg("--server")
        .arg(server.url())
        .arg("--tls-ca")
        .arg(pki.file("ca.crt"))
        .arg("--tls-server-name")
        .arg("localhost")
        .arg("--token")
        .arg(pki.token(role))
        .args(args)
        .output()
        .expect("run procguardctl")
}

/// Runs `procguardctl ... -o json` and parses its output.
pub fn ctl_json(
    pki: &Pki,
    server: &impl ServerHandle,
    role: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = ctl(pki, server, role, &all);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// `procguardctl watch ARGS` as the `siem` role, its output piped.
pub fn watch_command(pki: &Pki, server: &impl ServerHandle, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("procguardctl"));
    cmd.arg("--server")
        .arg(server.url())
        .arg("--tls-ca")
        .arg(pki.file("ca.crt"))
        .arg("--tls-server-name")
        .arg("localhost")
        .arg("--token")
        .arg(pki.token("siem"))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `procguardctl watch ARGS` as the `siem` role and returns the first line that `wanted`
/// accepts, or `None` once `timeout` has passed; the watcher is stopped either way.
pub fn watch_until(
    pki: &Pki,
    server: &impl ServerHandle,
    args: &[&str],
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut child = watch_command(pki, server, args)
        .stderr(Stdio::null())
        .spawn()
        .expect("run procguardctl watch");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut found = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if wanted(&line) => {
                found = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found
}

/// Name of the test image: busybox-static, with each applet as its own file, `FROM scratch`.
pub const BUSYBOX_IMAGE: &str = "procguard-test-busybox:2";

/// Builds [`BUSYBOX_IMAGE`] once per test process.
pub fn busybox_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        images::build(&images::Spec {
            tag: BUSYBOX_IMAGE,
            applets: &[
                (
                    "bin",
                    &[
                        "sh", "sleep", "cat", "true", "ls", "echo", "cp", "chmod", "rm",
                    ],
                ),
                ("usr/bin", &["id", "env", "wget", "whoami"]),
            ],
            files: &[],
            labels: &[],
            cmd: &["/bin/sleep", "3600"],
        })
    });
    BUSYBOX_IMAGE
}

/// A container removed when dropped.
#[derive(Debug)]
pub struct Container {
    /// Full container ID.
    pub id: String,
    /// Pod UID of its kubelet-shaped cgroup parent, if any.
    pub pod_uid: Option<String>,
}

impl Container {
    /// Runs `cmd` in a new container of [`busybox_image`], without network, in the cgroup a
    /// kubelet would give a BestEffort pod with `pod_uid`.
    pub fn run_in_pod(pod_uid: &str, cmd: &[&str]) -> Self {
        Self::run_image_in_pod(busybox_image(), pod_uid, cmd)
    }

    /// [`Container::run_in_pod`] of `image`; an empty `cmd` runs the image's own `CMD`.
    pub fn run_image_in_pod(image: &str, pod_uid: &str, cmd: &[&str]) -> Self {
        let parent = format!("/kubepods/besteffort/pod{pod_uid}");
        Self::run(image, &["--cgroup-parent", &parent], cmd, Some(pod_uid))
    }

    /// [`Container::run_in_pod`] with the extra `docker run` flags `flags` (`-v`, ...).
    pub fn run_in_pod_with(pod_uid: &str, flags: &[&str], cmd: &[&str]) -> Self {
        let parent = format!("/kubepods/besteffort/pod{pod_uid}");
        let mut all = vec!["--cgroup-parent", &parent];
        all.extend_from_slice(flags);
        Self::run(busybox_image(), &all, cmd, Some(pod_uid))
    }

    /// The container's writable layer (its overlay upper directory) as Docker reports it.
    pub fn upper_dir(&self) -> PathBuf {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", &self.id])
            .output()
            .expect("docker inspect");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Runs `cmd` in a new standalone container of [`busybox_image`] (no pod: Docker's own
    /// cgroup), without network, with the extra `docker run` flags `flags` (`--name`,
    /// `--label`, ...).
    pub fn run_standalone(flags: &[&str], cmd: &[&str]) -> Self {
        Self::run(busybox_image(), flags, cmd, None)
    }

    /// `docker run -d --network none FLAGS IMAGE CMD`.
    fn run(image: &str, flags: &[&str], cmd: &[&str], pod_uid: Option<&str>) -> Self {
        let out = Command::new("docker")
            .args(["run", "-d", "--network", "none"])
            .args(flags)
            .arg(image)
            .args(cmd)
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            pod_uid: pod_uid.map(String::from),
        }
    }

    /// `docker exec` in the container.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("docker")
            .arg("exec")
            .arg(&self.id)
            .args(cmd)
            .output()
            .expect("docker exec")
    }

    /// The first 12 characters of the ID.
    pub fn short(&self) -> &str {
        &self.id[..12]
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A random pod UID.
pub fn pod_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}
