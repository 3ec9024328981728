//! Running a process in a private cgroup namespace, the way containerd and CRI-O run every
//! container on a cgroup-v2 node, the sensor's own DaemonSet pod included (a pod cannot ask for
//! the host's cgroup namespace there).
//!
//! The process is first moved into a fresh child of its current cgroup in every mounted
//! hierarchy (each v1 controller and the v2 hierarchy), then `unshare --cgroup` makes those
//! children its namespace root. Every other process's `/proc/<pid>/cgroup` then reads as
//! `/../…` from inside, as it does for a sensor on such a node. Moving first matters: a
//! namespace made where the process already is would be rooted at the test process's own
//! cgroups, and on this machine that is the root of most hierarchies, so nothing would change.
//!
//! The move is done by a shell that writes its own PID into each `cgroup.procs` and then
//! `exec`s `unshare`, which `exec`s the program: the PID stays the same throughout, so the
//! spawned child's PID is the program's, and no `unsafe` `pre_exec` is needed.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which cgroup namespace a sensor under test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupNs {
    /// The host's (the test process's), as the tests ran it before issue 14.
    Host,
    /// A private one rooted at fresh child cgroups ([`PrivateCgroupNs`]), as on a cgroup-v2
    /// node, with [`HOST_CGROUPNS_ENV`] naming the host's.
    Private,
}

impl std::fmt::Display for CgroupNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Private => "private",
        })
    }
}

/// The sensor's environment variable for `--host-cgroupns`: the cgroup namespace it reads
/// other processes' cgroups through.
pub const HOST_CGROUPNS_ENV: &str = "PROCGUARD_HOST_CGROUPNS";

/// The host's cgroup namespace as a test can name it: this test process's, which runs in the
/// host's. (The sensor's default, `/proc/1/ns/cgroup`, cannot be opened on these machines:
/// PID 1 is the sandbox's supervisor.)
pub fn host_cgroupns() -> String {
    format!("/proc/{}/ns/cgroup", std::process::id())
}

/// The sensor binary's command for `ns`. For [`CgroupNs::Private`] it is wrapped so that it
/// starts in a new private cgroup namespace, with [`HOST_CGROUPNS_ENV`] set to
/// [`host_cgroupns`]; the returned [`PrivateCgroupNs`] must outlive the sensor process.
pub fn sensor_command(ns: CgroupNs) -> io::Result<(Command, Option<PrivateCgroupNs>)> {
    let sensor = crate::bin("procguard-sensor");
    match ns {
        CgroupNs::Host => Ok((Command::new(sensor), None)),
        CgroupNs::Private => {
            let cgns = PrivateCgroupNs::create()?;
            let mut cmd = cgns.command(sensor);
            cmd.env(HOST_CGROUPNS_ENV, host_cgroupns());
            Ok((cmd, Some(cgns)))
        }
    }
}

/// One mounted cgroup hierarchy and this process's cgroup directory in it.
#[derive(Debug)]
struct Hierarchy {
    /// This process's cgroup in it, as a directory on the mount.
    current: PathBuf,
    /// A v1 hierarchy (`cpuset` there needs its CPUs and memory nodes copied to a child).
    v1: bool,
}

/// Every hierarchy this process is in (one per line of `/proc/self/cgroup`), found on its mount.
fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    // (mount root within the hierarchy, mount point, v1, super options)
    let cgroup_mounts: Vec<(&str, &str, bool, Vec<&str>)> = mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let root = pre.nth(3)?;
            let mount_point = pre.next()?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let opts = post.nth(1).unwrap_or("").split(',').collect();
            matches!(fstype, "cgroup" | "cgroup2").then_some((
                root,
                mount_point,
                fstype == "cgroup",
                opts,
            ))
        })
        .collect();
    let mut out = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = id == "0" && controllers.is_empty();
        let mount = cgroup_mounts.iter().find(|(_, _, v1, opts)| {
            if v2 {
                !v1
            } else {
                *v1 && controllers.split(',').all(|c| opts.contains(&c))
            }
        });
        let Some((root, mount_point, v1, _)) = mount else {
            return Err(io::Error::other(format!(
                "the cgroup hierarchy of '{line}' is not mounted; cannot make a private cgroup \
                 namespace that hides it"
            )));
        };
        let rel = Path::new(path).strip_prefix(root).map_err(|_| {
            io::Error::other(format!(
                "this process's cgroup {path} is outside the mount of {mount_point} (root {root})"
            ))
        })?;
        out.push(Hierarchy {
            current: Path::new(mount_point).join(rel),
            v1: *v1,
        });
    }
    if out.is_empty() {
        return Err(io::Error::other(
            "no cgroup hierarchy found in /proc/self/cgroup",
        ));
    }
    Ok(out)
}

/// Fresh child cgroups, one per hierarchy, to be the root of a private cgroup namespace;
/// removed (once empty) when dropped.
#[derive(Debug)]
pub struct PrivateCgroupNs {
    dirs: Vec<PathBuf>,
}

impl PrivateCgroupNs {
    /// Creates `procguard-cgns-<random>` under this process's cgroup in every hierarchy. Children
    /// of the current cgroups rather than of the roots, so that limits and accounting over the
    /// test (the machine's memory cgroup) still apply to what runs there.
    pub fn create() -> io::Result<Self> {
        let name = format!(
            "procguard-cgns-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut this = Self { dirs: Vec::new() };
        for h in hierarchies()? {
            let dir = h.current.join(&name);
            std::fs::create_dir(&dir)?;
            this.dirs.push(dir.clone());
            // A new v1 cpuset has no CPUs or memory nodes, and nothing can join it until it has.
            if h.v1 && dir.join("cpuset.cpus").exists() {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    std::fs::write(dir.join(f), std::fs::read(h.current.join(f))?)?;
                }
            }
        }
        Ok(this)
    }

    /// The `cgroup.procs` files, one per hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// A command that runs `program` (add its arguments to the result) in a new cgroup
    /// namespace rooted at these cgroups.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut script: String = self
            .procs_files()
            .iter()
            .map(|f| format!("echo $$ > '{}' || exit 97; ", f.display()))
            .collect();
        script.push_str("exec unshare --cgroup -- \"$@\"");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("procguard-cgns").arg(program);
        cmd
    }

    /// `/proc/<pid>/cgroup` as a process in this namespace reads it: the probe that the
    /// namespace hides the host's paths (they start with `/..`).
    pub fn read_cgroup_of(&self, pid: u32) -> String {
        let out = self
            .command("cat")
            .arg(format!("/proc/{pid}/cgroup"))
            .stdin(Stdio::null())
            .output()
            .expect("run cat in a private cgroup namespace");
        assert!(
            out.status.success(),
            "reading /proc/{pid}/cgroup from a private cgroup namespace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateCgroupNs {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Only an empty cgroup can be removed; its process may take a moment to be reaped.
            crate::cgroups::remove_when_empty(d, 50);
        }
    }
}

/// The identity of the cgroup namespace of `pid` (the target of `/proc/<pid>/ns/cgroup`).
pub fn cgroupns_of(pid: u32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/cgroup"))
}

/// Panics unless every line of a `/proc/<pid>/cgroup` content read from a private namespace
/// starts with `/..` (the process is outside the namespace in every hierarchy).
pub fn assert_outside(content: &str, what: &str) {
    assert!(!content.trim().is_empty(), "no cgroup lines for {what}");
    for line in content.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        assert!(
            path.starts_with("/.."),
            "harness error: {what} is not outside the private cgroup namespace in every \
             hierarchy ('{line}'); the test would not exercise a cgroup-v2 node's view:\n{content}"
        );
    }
}
