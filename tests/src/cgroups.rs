//! Container-like cgroups made by hand: the directories a kubelet with the cgroupfs driver
//! creates for a BestEffort pod's container (`kubepods/besteffort/pod<uid>/<64-hex id>`), in
//! every mounted cgroup v1 hierarchy and in the v2 hierarchy (`/sys/fs/cgroup/unified` on a
//! hybrid host, or `/sys/fs/cgroup` itself on a pure v2 host). Moving a process into one makes
//! the sensor attribute it to that "container" without a container runtime: the capture tests
//! and the exec-storm benchmark use them.

use std::path::{Path, PathBuf};

/// A container-like cgroup in every hierarchy; removed (once empty) when dropped.
#[derive(Debug)]
pub struct FakeContainerCgroup {
    /// Pod UID with dashes.
    pub pod_uid: String,
    /// 64-hex container ID.
    pub id: String,
    dirs: Vec<PathBuf>,
}

/// Hierarchies under `root` that processes can be moved into: each v1 controller mount and the
/// v2 mount, except the v1 memory controller: the machine's own memory accounting of the test
/// process stays where it is (one v1 line naming the container suffices for attribution).
fn hierarchies(root: &Path) -> Vec<PathBuf> {
    typed_hierarchies(root)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// [`hierarchies`], each with whether it is the v2 (unified) hierarchy.
fn typed_hierarchies(root: &Path) -> Vec<(PathBuf, bool)> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for l in mounts.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or("");
        let fstype = post.split(' ').next().unwrap_or("");
        if (fstype == "cgroup" || fstype == "cgroup2")
            && Path::new(mp).starts_with(root)
            && !mp.ends_with("/memory")
            // A new v1 cpuset has no CPUs until configured; joining it would fail.
            && !mp.ends_with("/cpuset")
        {
            out.push((PathBuf::from(mp), fstype == "cgroup2"));
        }
    }
    out
}

/// Removes the cgroup directory `dir` once it is empty, trying `tries` times 100 ms apart:
/// only an empty cgroup can be removed, and its last processes (or the runtime that removes a
/// container's own cgroup) may take a moment. Gone already counts as removed.
pub fn remove_when_empty(dir: &Path, tries: u32) {
    for _ in 0..tries {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A cgroup at a path of the caller's choosing: `v2` in the unified hierarchy and, when
/// given, `v1` in every v1 hierarchy (a node's systemd-driver shapes exist only in v2; a
/// cgroupfs kubelet writes the same path in all). Removed (once empty) when dropped.
#[derive(Debug)]
pub struct NamedCgroup {
    dirs: Vec<PathBuf>,
}

impl NamedCgroup {
    /// Creates the directories.
    pub fn create(v1: Option<&str>, v2: &str) -> std::io::Result<Self> {
        let mut dirs = Vec::new();
        for (h, is_v2) in typed_hierarchies(Path::new("/sys/fs/cgroup")) {
            let rel = match (is_v2, v1) {
                (true, _) => v2,
                (false, Some(r)) => r,
                (false, None) => continue,
            };
            let d = h.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&d)?;
            dirs.push(d);
        }
        if dirs.is_empty() {
            return Err(std::io::Error::other("no cgroup hierarchy to create it in"));
        }
        Ok(Self { dirs })
    }

    /// The `cgroup.procs` files, one per hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// A shell snippet that moves the shell running it (`$$`) in, in every hierarchy.
    pub fn join_snippet(&self) -> String {
        self.procs_files()
            .iter()
            .map(|f| format!("echo $$ > {};", f.display()))
            .collect()
    }
}

impl Drop for NamedCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            remove_when_empty(d, 50);
            // Parents this test made and nothing else uses.
            let mut p = d.parent();
            while let Some(dir) = p {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
                p = dir.parent();
            }
        }
    }
}

/// Removes the cgroup `rel` (relative to the hierarchy roots, e.g. `kubepods/besteffort/pod<uid>`)
/// from every hierarchy under `/sys/fs/cgroup` where it exists and is empty. Runtimes remove a
/// container's own cgroup but leave the pod cgroup a `--cgroup-parent` made them create.
pub fn remove_empty(rel: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or("");
        let fstype = post.split(' ').next().unwrap_or("");
        if matches!(fstype, "cgroup" | "cgroup2") && mp.starts_with("/sys/fs/cgroup") {
            let d = Path::new(mp).join(rel);
            // A runtime may remove the container's cgroup a moment after it reports it gone.
            remove_when_empty(&d, 20);
        }
    }
}

impl FakeContainerCgroup {
    /// Creates `kubepods/besteffort/pod<uid>/<id>` in every hierarchy under `/sys/fs/cgroup`.
    pub fn create(pod_uid: &str, id: &str) -> std::io::Result<Self> {
        let rel = format!("kubepods/besteffort/pod{pod_uid}/{id}");
        let mut dirs = Vec::new();
        for h in hierarchies(Path::new("/sys/fs/cgroup")) {
            let d = h.join(&rel);
            std::fs::create_dir_all(&d)?;
            dirs.push(d);
        }
        if dirs.is_empty() {
            return Err(std::io::Error::other(
                "no cgroup hierarchy mounted under /sys/fs/cgroup",
            ));
        }
        Ok(Self {
            pod_uid: pod_uid.to_string(),
            id: id.to_string(),
            dirs,
        })
    }

    /// A random one: a fresh pod UID and a 64-hex ID.
    pub fn random() -> std::io::Result<Self> {
        let uid = uuid::Uuid::new_v4().to_string();
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        Self::create(&uid, &id)
    }

    /// The `cgroup.procs` files, one per hierarchy (a shell can `echo $$ >` each).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves process `pid` in, in every hierarchy.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for f in self.procs_files() {
            std::fs::write(f, pid.to_string())?;
        }
        Ok(())
    }
}

impl Drop for FakeContainerCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Only empty cgroups can be removed; wait briefly for the last processes to go.
            remove_when_empty(d, 50);
            let _ = d.parent().map(std::fs::remove_dir);
        }
    }
}
