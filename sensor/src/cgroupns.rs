//! Choosing how the sensor reads other processes' cgroup paths: the kernel adapter behind
//! [`crate::cgroup::View`].
//!
//! The kernel writes `/proc/<pid>/cgroup` relative to the reader's cgroup namespace. On a
//! cgroup-v2 node containerd and CRI-O give the sensor's own pod a private one, so every other
//! process reads as `/../../kubepods.slice/…`. [`establish`] runs once, before any thread
//! exists, and tries in order:
//!
//! 1. **Already the host's namespace** (the initial cgroup namespace, known by the inode number
//!    the kernel fixes for it, or the same namespace as `--host-cgroupns`): paths are absolute
//!    as read.
//! 2. **Enter the host's namespace** with `setns(CLONE_NEWCGROUP)` on `--host-cgroupns`
//!    (default `<proc-root>/1/ns/cgroup`). The kernel then writes host paths itself, for
//!    every shape and runtime, with no interpretation on our side. It needs CAP_SYS_ADMIN
//!    (which the DaemonSet grants for its network-namespace `setns` and fanotify) and
//!    ptrace access to PID 1 (CAP_SYS_PTRACE). A cgroup namespace belongs to a thread, and
//!    threads inherit it from their creator, so this happens on the main thread before the
//!    tokio runtime or any capture thread starts.
//! 3. **Resolve against our own cgroup**: where `setns` is refused, find the sensor's own
//!    cgroup in each hierarchy of the host's tree mounted at `--cgroup-root` (the directory
//!    whose `cgroup.procs` lists the sensor's PID), and resolve every `/..` path against it.
//! 4. Otherwise paths outside the namespace stay unattributed, and one error line says what
//!    to grant.
//!
//! Entering is preferred over resolving because it leaves nothing to get wrong: the kernel
//! does the resolution, including for hierarchies and shapes we never saw.

use crate::cgroup::View;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How the view was obtained (shown in `/metrics` as `procguard_sensor_cgroup_view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The sensor already ran in the host's cgroup namespace.
    Host,
    /// The sensor entered the host's cgroup namespace.
    Entered,
    /// Paths are resolved against the sensor's own cgroup, found under `--cgroup-root`.
    Resolved,
    /// Neither worked: containers outside the sensor's namespace are unattributed.
    Blind,
}

impl Mode {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Entered => "entered",
            Self::Resolved => "resolved",
            Self::Blind => "blind",
        }
    }
}

/// The outcome of [`establish`].
#[derive(Debug, Clone)]
pub struct Established {
    /// How paths are to be read.
    pub view: View,
    /// How that view was obtained.
    pub mode: Mode,
}

/// Cgroup directories looked at while searching for the sensor's own cgroup in one hierarchy;
/// a node has a few thousand, and the search runs once.
const MAX_WALK: usize = 200_000;

/// The inode number the kernel gives the initial cgroup namespace (`PROC_CGROUP_INIT_INO`, a
/// fixed constant of the kernel's ABI): a sensor whose namespace has it reads host paths.
const INITIAL_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// Whether the calling thread is in the initial cgroup namespace.
fn in_initial_namespace() -> bool {
    std::fs::metadata("/proc/thread-self/ns/cgroup").is_ok_and(|m| m.ino() == INITIAL_CGROUP_NS_INO)
}

fn same_namespace(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.ino() == b.ino() && a.dev() == b.dev())
}

/// Decides the view. Must run before any other thread is started (see the module docs).
pub fn establish(host_ns: &Path, proc_root: &Path, cgroup_root: &Path) -> Established {
    let own = Path::new("/proc/thread-self/ns/cgroup");
    if in_initial_namespace() || same_namespace(own, host_ns).unwrap_or(false) {
        tracing::debug!(message = "Reading cgroup paths in the host's cgroup namespace.");
        return Established {
            view: View::host(),
            mode: Mode::Host,
        };
    }
    let entered = enter(host_ns);
    match &entered {
        Ok(()) => {
            tracing::info!(
                message = "Entered the host's cgroup namespace to read container cgroup paths.",
                namespace = %host_ns.display()
            );
            return Established {
                view: View::host(),
                mode: Mode::Entered,
            };
        }
        Err(error) => tracing::warn!(
            message = "Cannot enter the host's cgroup namespace; resolving paths against the sensor's own cgroup instead.",
            namespace = %host_ns.display(),
            %error,
            hint = "grant CAP_SYS_ADMIN and CAP_SYS_PTRACE and point --host-cgroupns at <host proc>/1/ns/cgroup"
        ),
    }
    let self_cgroup = std::fs::read_to_string(proc_root.join("self/cgroup"))
        .or_else(|_| std::fs::read_to_string("/proc/self/cgroup"))
        .unwrap_or_default();
    match own_roots(&self_cgroup, cgroup_root, std::process::id()) {
        Some(view) if !view.is_host() => {
            tracing::info!(
                message = "Resolving cgroup paths against the sensor's own cgroup.",
                cgroup_root = %cgroup_root.display(),
                view = ?view
            );
            Established {
                view,
                mode: Mode::Resolved,
            }
        }
        Some(view) => Established {
            // The sensor's namespace is rooted at the host's root: nothing to resolve.
            view,
            mode: Mode::Host,
        },
        None => {
            tracing::error!(
                message = "Cannot attribute processes outside the sensor's cgroup namespace: containers on this node will be reported unattributed.",
                enter_error = %entered.err().map(|e| e.to_string()).unwrap_or_default(),
                cgroup_root = %cgroup_root.display(),
                fix = "grant CAP_SYS_ADMIN (setns) with --host-cgroupns <host proc>/1/ns/cgroup, or mount the host's cgroup filesystem at --cgroup-root"
            );
            Established {
                view: View::host(),
                mode: Mode::Blind,
            }
        }
    }
}

/// `setns` into the cgroup namespace at `path`, and checks that it took.
fn enter(path: &Path) -> std::io::Result<()> {
    let ns = std::fs::File::open(path)?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(std::io::Error::from)?;
    if same_namespace(Path::new("/proc/thread-self/ns/cgroup"), path)? {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "setns succeeded but the namespace did not change",
        ))
    }
}

/// The mount directory of one hierarchy under `root`: the v2 tree (`cgroup.controllers` marks
/// it) for hierarchy 0, or the v1 mount named after its controllers.
fn mount_of(root: &Path, id: u32, controllers: &str) -> Option<PathBuf> {
    if id == 0 {
        return [root.join("unified"), root.to_path_buf()]
            .into_iter()
            .find(|p| p.join("cgroup.controllers").is_file());
    }
    let name = controllers.strip_prefix("name=").unwrap_or(controllers);
    std::iter::once(name.to_string())
        .chain(controllers.split(',').map(|c| c.to_string()))
        .map(|n| root.join(n))
        .find(|p| p.join("cgroup.procs").is_file())
}

/// The sensor's namespace root in every hierarchy of `self_cgroup` (its own
/// `/proc/self/cgroup`), found by looking for `pid` in the `cgroup.procs` files of the host's
/// tree at `cgroup_root`. `None` when not one hierarchy could be placed.
pub fn own_roots(self_cgroup: &str, cgroup_root: &Path, pid: u32) -> Option<View> {
    let mut view = View::host();
    let mut placed = 0;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else { continue };
        let Some(mount) = mount_of(cgroup_root, id, controllers) else {
            continue;
        };
        let Some(abs) = find_pid(&mount, pid) else {
            continue;
        };
        // Our path as read in our own namespace is `rel`; the namespace root is what remains
        // of our absolute path without it.
        let rel = rel.trim_end_matches('/');
        let Some(root) = abs.strip_suffix(rel) else {
            continue;
        };
        view = view.with_root(id, if root.is_empty() { "/" } else { root });
        placed += 1;
    }
    (placed > 0).then_some(view)
}

/// The path (relative to `mount`, with a leading `/`) of the cgroup whose `cgroup.procs`
/// lists `pid`: breadth-first, bounded by [`MAX_WALK`] directories.
fn find_pid(mount: &Path, pid: u32) -> Option<String> {
    let want = pid.to_string();
    let mut queue = std::collections::VecDeque::from([mount.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > MAX_WALK {
            return None;
        }
        if std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|l| l == want))
        {
            let rel = dir.strip_prefix(mount).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push_back(e.path());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_roots_strip_the_path_read_inside_the_namespace() {
        // A fake tree: the "mount" is a plain directory with cgroup.procs files.
        let dir = tempfile::tempdir().unwrap();
        let unified = dir.path().join("unified");
        let own = unified.join("kubepods.slice/sensor.scope/sub");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(unified.join("cgroup.controllers"), "").unwrap();
        std::fs::write(unified.join("cgroup.procs"), "1\n2\n").unwrap();
        std::fs::write(own.join("cgroup.procs"), "77\n4242\n").unwrap();
        let mem = dir.path().join("memory/docker/abc");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(dir.path().join("memory/cgroup.procs"), "1\n").unwrap();
        std::fs::write(mem.join("cgroup.procs"), "4242\n").unwrap();
        // Inside the namespace the sensor reads itself at `/sub` (v2) and `/` (v1).
        let view = own_roots("4:memory:/\n0::/sub\n", dir.path(), 4242).unwrap();
        let expected = View::host()
            .with_root(4, "/docker/abc")
            .with_root(0, "/kubepods.slice/sensor.scope");
        assert_eq!(view, expected);
        assert!(own_roots("0::/\n", dir.path(), 999).is_none());
    }
}
