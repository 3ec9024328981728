//! Real container runtimes for the tests, besides Docker: Podman with the cgroupfs manager, and
//! containerd driven directly through `ctr`, as a kubelet with the cgroupfs driver drives it.
//!
//! Each is private to the test that starts it: Podman gets its own storage root, run root and
//! temporary directory; containerd is a daemon of the test's own (own socket, root, state and
//! configuration) that is stopped when the test ends. Both run the same `FROM scratch` busybox
//! image as the Docker tests ([`crate::busybox_image`]), exported with `docker save` and
//! imported, and put containers where a kubelet puts a BestEffort pod's:
//!
//! - Docker: `--cgroup-parent /kubepods/besteffort/pod<uid>` → `.../pod<uid>/<id>`;
//! - Podman: `--cgroup-parent /kubepods/besteffort/pod<uid>` → `.../pod<uid>/libpod-<id>`;
//! - containerd: `ctr run --cgroup /kubepods/besteffort/pod<uid>/<id>`, exactly that path.
//!
//! Containers have no network. Everything (containers, the pod cgroup, the private daemon,
//! leftover mounts, the directories) is removed on drop, also when a test panics. Facts about
//! these runtimes on this kind of machine: `shared/reference/runtimes-here.md`.

use crate::{busybox_image, cgroups, require, Container, Proc, BUSYBOX_IMAGE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A container runtime the tests can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The Docker engine the tests already use.
    Docker,
    /// Podman, cgroupfs manager, runc.
    Podman,
    /// containerd through `ctr`, with a daemon of the test's own.
    Containerd,
}

impl Runtime {
    /// The runtime's name as the sensor's events spell it (`container.runtime`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
        }
    }

    /// The commands the runtime needs beyond Docker (which builds the image), with why.
    fn needs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Docker => &[],
            Self::Podman => &[
                ("podman", "apt-get install podman"),
                // crun 1.8 refuses hosts with v1 controllers next to cgroup v2 ("cgroups in
                // hybrid mode not supported"); runc comes with docker.io.
                ("runc", "apt-get install runc (a dependency of docker.io)"),
            ],
            Self::Containerd => &[
                (
                    "containerd",
                    "apt-get install containerd (a dependency of docker.io)",
                ),
                (
                    "ctr",
                    "apt-get install containerd (a dependency of docker.io)",
                ),
            ],
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `name` is an executable on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(name);
            p.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Root, Docker (it builds the image every runtime runs) and `runtime`'s own tools, or skip
/// (fail under `PROCGUARD_STRICT_TESTS=1`).
pub fn require_runtime(runtime: Runtime) -> bool {
    if !crate::require_root_and_docker() {
        return false;
    }
    runtime.needs().iter().all(|(cmd, install)| {
        require(
            on_path(cmd),
            &format!("this {runtime} test needs `{cmd}` on PATH ({install})"),
        )
    })
}

/// Runs `cmd`, panicking with its stderr when it fails; returns its stdout, trimmed.
fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `cmd` for cleanup, ignoring how it ends; returns its stdout.
fn quietly(mut cmd: Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Saves the test image to `dir/image.tar` with `docker save` and returns its path.
fn save_image(dir: &Path) -> PathBuf {
    let tar = dir.join("image.tar");
    let mut cmd = Command::new("docker");
    cmd.args(["save", busybox_image(), "-o"]).arg(&tar);
    run(cmd, "docker save");
    tar
}

/// Unmounts (lazily) whatever is still mounted under `dir`, deepest first, so that the
/// directory can be removed even after a runtime left a container's rootfs behind.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stderr(Stdio::null())
            .status();
    }
}

/// A random 64-hex container ID (what containerd's CRI plugin would make).
fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Podman with its own storage, cgroupfs manager and runc; every container of it is removed
/// when dropped.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Sets Podman up in a fresh directory and loads the test image into it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Podman's default ulimits (nproc 1048576) exceed this machine's hard limit and the
        // container's init fails; an empty list keeps the inherited limits.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
        )
        .expect("containers.conf");
        let p = Self { dir };
        let tar = save_image(p.dir.path());
        let mut load = p.cmd();
        load.arg("load").arg("-i").arg(&tar);
        run(load, "podman load");
        let _ = std::fs::remove_file(tar);
        p
    }

    /// A `podman` command with this instance's storage and settings.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
        cmd
    }

    /// The test image as Podman names it after `podman load`.
    pub fn image(&self) -> String {
        format!("localhost/{BUSYBOX_IMAGE}")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut rm = self.cmd();
        rm.args(["rm", "--all", "--force", "--time", "0"]);
        quietly(rm);
        unmount_under(self.dir.path());
    }
}

/// A containerd daemon of the test's own (own socket, root, state and configuration, no CRI
/// plugin), driven through `ctr` in the `k8s.io` namespace as the kubelet's containerd is.
/// Dropping it removes every task and container and stops the daemon.
#[derive(Debug)]
pub struct Containerd {
    daemon: Proc,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts the daemon, waits until it answers, and imports the test image.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // Its own configuration, so that the host's /etc/containerd/config.toml (CRI plugin,
        // CNI, /opt/containerd) plays no part.
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
                d.join("opt").display()
            ),
        )
        .expect("config.toml");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .arg("--address")
            .arg(d.join("containerd.sock"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"));
        let daemon = Proc::spawn(cmd, d.join("containerd.log"));
        let c = Self { daemon, dir };
        let up = crate::wait_for(Duration::from_secs(20), || {
            let mut v = c.ctr();
            v.arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the test's containerd did not answer; log:\n{}",
            c.daemon.log_text()
        );
        let tar = save_image(c.dir.path());
        let mut import = c.ctr();
        import
            .args(["images", "import", "--all-platforms"])
            .arg(&tar);
        run(import, "ctr images import");
        let _ = std::fs::remove_file(tar);
        c
    }

    /// A `ctr` command against this daemon.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    /// The test image as containerd names it after the import.
    pub fn image(&self) -> String {
        format!("docker.io/library/{BUSYBOX_IMAGE}")
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first: a task left running would outlive the daemon in its shim.
        let mut ls = self.ctr();
        ls.args(["tasks", "ls", "--quiet"]);
        for id in quietly(ls).split_whitespace() {
            let mut rm = self.ctr();
            rm.args(["tasks", "rm", "--force", id]);
            quietly(rm);
        }
        let mut ls = self.ctr();
        ls.args(["containers", "ls", "--quiet"]);
        for id in quietly(ls).split_whitespace() {
            let mut rm = self.ctr();
            rm.args(["containers", "rm", id]);
            quietly(rm);
        }
        let _ = self.daemon.terminate(Duration::from_secs(5));
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
        unmount_under(self.dir.path());
    }
}

/// A started runtime: containers run in it live no longer than it.
#[derive(Debug)]
pub enum Engine {
    /// The host's Docker engine.
    Docker,
    /// A private Podman.
    Podman(Podman),
    /// A private containerd.
    Containerd(Containerd),
}

impl Engine {
    /// Starts `runtime` (builds the image for Docker; sets up and imports it for the others).
    pub fn start(runtime: Runtime) -> Self {
        match runtime {
            Runtime::Docker => {
                busybox_image();
                Self::Docker
            }
            Runtime::Podman => Self::Podman(Podman::start()),
            Runtime::Containerd => Self::Containerd(Containerd::start()),
        }
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> Runtime {
        match self {
            Self::Docker => Runtime::Docker,
            Self::Podman(_) => Runtime::Podman,
            Self::Containerd(_) => Runtime::Containerd,
        }
    }

    /// Runs `cmd` in a new container of the test image, without network, in the cgroup a
    /// kubelet with the cgroupfs driver gives a container of the BestEffort pod `pod_uid`.
    pub fn run_in_pod(&self, pod_uid: &str, cmd: &[&str]) -> RuntimeContainer<'_> {
        let parent = format!("/kubepods/besteffort/pod{pod_uid}");
        let (id, docker) = match self {
            Self::Docker => {
                let c = Container::run_in_pod(pod_uid, cmd);
                (c.id.clone(), Some(c))
            }
            Self::Podman(p) => {
                let mut run_cmd = p.cmd();
                run_cmd
                    .args(["run", "--detach", "--network", "none", "--cgroup-parent"])
                    .arg(&parent)
                    .arg(p.image())
                    .args(cmd);
                (run(run_cmd, "podman run"), None)
            }
            Self::Containerd(c) => {
                let id = random_id();
                let mut run_cmd = c.ctr();
                run_cmd
                    .args(["run", "--detach", "--cgroup"])
                    .arg(format!("{parent}/{id}"))
                    .arg(c.image())
                    .arg(&id)
                    .args(cmd);
                let out = run_cmd.stdin(Stdio::null()).output().expect("ctr run");
                assert!(
                    out.status.success(),
                    "ctr run failed: {}\ncontainerd log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    c.log_text()
                );
                (id, None)
            }
        };
        RuntimeContainer {
            engine: self,
            id,
            pod_uid: pod_uid.to_string(),
            docker,
        }
    }
}

/// A container of an [`Engine`], removed (with its pod cgroup) when dropped.
#[derive(Debug)]
pub struct RuntimeContainer<'a> {
    engine: &'a Engine,
    /// Full 64-hex container ID.
    pub id: String,
    /// Pod UID of its kubelet-shaped cgroup.
    pub pod_uid: String,
    /// Docker's container handle (removes the container when dropped).
    docker: Option<Container>,
}

impl RuntimeContainer<'_> {
    /// The runtime that runs it.
    pub fn runtime(&self) -> Runtime {
        self.engine.runtime()
    }

    /// The host PID of the container's first process.
    pub fn pid(&self) -> u32 {
        let out = match self.engine {
            Engine::Docker => {
                let mut cmd = Command::new("docker");
                cmd.args(["inspect", "-f", "{{.State.Pid}}", &self.id]);
                run(cmd, "docker inspect")
            }
            Engine::Podman(p) => {
                let mut cmd = p.cmd();
                cmd.args(["inspect", "-f", "{{.State.Pid}}", &self.id]);
                run(cmd, "podman inspect")
            }
            Engine::Containerd(c) => {
                let mut cmd = c.ctr();
                cmd.args(["tasks", "ls"]);
                let ls = run(cmd, "ctr tasks ls");
                ls.lines()
                    .find_map(|l| {
                        let mut cols = l.split_whitespace();
                        (cols.next() == Some(self.id.as_str()))
                            .then(|| cols.next().unwrap_or("").to_string())
                    })
                    .unwrap_or_default()
            }
        };
        out.parse().unwrap_or_else(|_| {
            panic!(
                "no PID for {} container {}: '{out}'",
                self.runtime(),
                self.id
            )
        })
    }

    /// Runs `cmd` in the container through the runtime (`docker exec`, `podman exec`,
    /// `ctr tasks exec`), as `kubectl exec` would.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut c = match self.engine {
            Engine::Docker => {
                let mut c = Command::new("docker");
                c.arg("exec");
                c
            }
            Engine::Podman(p) => {
                let mut c = p.cmd();
                c.arg("exec");
                c
            }
            Engine::Containerd(ctrd) => {
                let mut c = ctrd.ctr();
                c.args(["tasks", "exec", "--exec-id"])
                    .arg(format!("pg-{}", uuid::Uuid::new_v4().simple()));
                c
            }
        };
        c.arg(&self.id)
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} exec: {e}", self.runtime()))
    }
}

impl Drop for RuntimeContainer<'_> {
    fn drop(&mut self) {
        match self.engine {
            Engine::Docker => drop(self.docker.take()),
            Engine::Podman(p) => {
                let mut rm = p.cmd();
                rm.args(["rm", "--force", "--time", "0", &self.id]);
                quietly(rm);
            }
            Engine::Containerd(c) => {
                let mut rm = c.ctr();
                rm.args(["tasks", "rm", "--force", &self.id]);
                quietly(rm);
                let mut rm = c.ctr();
                rm.args(["containers", "rm", &self.id]);
                quietly(rm);
            }
        }
        let pod = format!("kubepods/besteffort/pod{}", self.pod_uid);
        if let Engine::Podman(_) = self.engine {
            // Podman's cgroupfs manager puts conmon in `<cgroup parent>/conmon`.
            cgroups::remove_empty(&format!("{pod}/conmon"));
        }
        cgroups::remove_empty(&pod);
    }
}
