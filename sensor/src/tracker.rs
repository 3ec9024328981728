//! The process table: turns kernel events plus `/proc` reads into attributed
//! [`ProcessEvent`]s.
//!
//! Fork events give every new process its parent's container and context before it can be
//! read, so a child that exits before `/proc` is read still inherits the right container; the
//! fields it inherited are listed as missing. Exec events read `/proc` at once.

use crate::cgroup::{self, ContainerRef, Placement};
use crate::fanotify::{Claimed, ExecWatch};
use crate::origin::{self, CopyUp, Origins};
use crate::procfs::{plain_link, Opened, ProcInfo, ProcReader};
use crate::standalone;
use procguard_core::element;
use procguard_core::process::{Ancestor, UNREADABLE_EXE};
use procguard_core::{
    Completeness, ContainerInfo, ContainerRuntime, ExecContext, ProcessEvent, WorkloadIdentity,
    WorkloadKind,
};
use std::collections::HashMap;
use std::sync::Arc;

/// In `missing`: the executable's path is the exe link read after the exec, where the kernel's
/// record of the exec did not hold it whole (see [`AtExec::exe_path`]).
pub const MISSING_EXE_READ_LATE: &str = "late:exe_path";

/// Most processes tracked; past it the oldest-inserted entries of exited processes are
/// forgotten first (a fork bomb cannot grow the table without bound).
pub const MAX_TRACKED: usize = 131_072;
/// Ancestors recorded per event.
pub const MAX_ANCESTORS: usize = 5;

#[derive(Debug, Clone)]
struct Entry {
    ppid: u32,
    exe: String,
    /// (device, inode) of the executable it runs, as opened: what tells a runtime re-executing
    /// its own binary ([`Tracker::is_runtime_init`]).
    exe_id: Option<(u64, u64)>,
    /// Recognised as the container runtime's init: a host process's child that re-executed
    /// the very file its parent runs. Its memfd clone of itself is still the runtime.
    runtime_init: bool,
    placement: Placement,
    context: ExecContext,
    /// The exec session it belongs to (see [`ProcessEvent::exec_session`]).
    session: Option<String>,
    /// Facts the kernel's events keep current (fork copies them, uid/gid/comm events change
    /// them), so an exec need not read them from `/proc`.
    facts: Facts,
}

/// What fork, id and comm events say about a process.
#[derive(Debug, Clone, Default)]
struct Facts {
    uid: Option<u32>,
    gid: Option<u32>,
    comm: Option<String>,
    start_time: Option<std::time::SystemTime>,
}

/// Whether `path` lies in one of the [`origin::WRITABLE_DIRS`].
fn in_writable_dir(path: &str) -> bool {
    origin::WRITABLE_DIRS.iter().any(|d| path.starts_with(d))
}

/// Marks `ev` as run from a writable location when the script it ran (a shell's or an
/// interpreter's) lies in a writable directory. Applied once the element is final, after the
/// hash: content found to be multi-call then turns what read as a shell's script into an
/// applet's argument (`cat /tmp/x` through a copy of busybox named `sh` reads `/tmp/x`, it
/// does not run it), so the script slot is only known then. The executable's own part of the
/// flag is derived from its origin ([`origin::writable_location`]).
pub(crate) fn mark_writable_script(ev: &mut ProcessEvent) {
    if ev.script_path.as_deref().is_some_and(in_writable_dir) {
        ev.exe_writable_location = true;
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Directories searched for the name a multi-call binary was invoked as, when argv[0] has no
/// slash: the executable's own directory and the usual `PATH`.
const LINK_DIRS: &[&str] = &["/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin"];

/// Executables remembered as multi-call, and (executable, name) pairs found not linked; past
/// it each memo starts over (costing a `stat` or two per exec again, never memory).
const MAX_MULTI_CALL: usize = 4_096;

/// What [`Tracker::read_early`] read of a process.
#[derive(Debug)]
pub struct EarlyRead {
    exe: Option<std::fs::File>,
    /// The exec's file as fanotify handed it over, matched to the exe link.
    claimed: Option<Claimed>,
    /// This exec's file as fanotify recorded it, when `/proc` already showed a later exec's.
    superseded: Option<(crate::fanotify::ExecFile, Option<std::fs::File>)>,
    info: ProcInfo,
}

impl EarlyRead {
    /// The process read.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }
}

/// What the kernel recorded at the exec itself, in the exec'ing task (eBPF capture): facts
/// that neither the process's exit nor a later exec can change, so they stand over anything
/// `/proc` shows later. The capture backend fills it; the tracker does not know which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtExec {
    /// Parent's process ID.
    pub ppid: u32,
    /// Real user ID.
    pub uid: u32,
    /// Real group ID.
    pub gid: u32,
    /// Start, nanoseconds of CLOCK_BOOTTIME.
    pub start_boottime_ns: u64,
    /// Command name after the exec.
    pub comm: String,
    /// argv, bounded.
    pub argv: Vec<String>,
    /// argv was cut.
    pub argv_truncated: bool,
    /// The executed file's (device, inode).
    pub exe_id: (u64, u64),
    /// The executed file's link count at the exec: 0 for a file already unlinked (or a memfd).
    pub exe_nlink: u32,
    /// The executed file's own name (its dentry's at the exec); empty when not recorded.
    pub exe_name: String,
    /// The executed file is on overlayfs (whose `stat` may report a layer's device rather
    /// than the one recorded here: only the inode is compared).
    pub exe_on_overlay: bool,
    /// The executed file's path as the kernel recorded it at the exec; `None` when it could
    /// not record it whole (too long, or a pseudo file it could not name): the exe link read
    /// after the exec names it then, and the event says so (`late:exe_path` in `missing`).
    pub exe_path: Option<PathAtExec>,
    /// Its cgroup at exec, as the `0::` line `/proc/<pid>/cgroup` shows this sensor; `None`
    /// when the cgroup ID could not be resolved (then `/proc` is read as without it).
    pub cgroup: Option<String>,
    /// Its mount namespace at the exec (the inode `/proc/<pid>/ns/mnt` links to).
    pub mnt_ns: Option<u32>,
}

/// The executed file's path as the kernel recorded it at the exec: what `/proc/<pid>/exe`
/// showed then, with the deleted marker as a fact rather than text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAtExec {
    /// The path (for a memfd, `/memfd:NAME`).
    pub path: String,
    /// Unlinked at the exec.
    pub deleted: bool,
    /// A memfd.
    pub memfd: bool,
}

impl PathAtExec {
    /// The exe link the kernel printed for this file at the exec.
    fn link(&self) -> String {
        if self.deleted || self.memfd {
            format!("{}{}", self.path, crate::procfs::DELETED_MARK)
        } else {
            self.path.clone()
        }
    }
}

/// A process event with its executable held open, so it can be hashed after the process is
/// gone.
#[derive(Debug)]
pub struct Observed {
    /// The event, without its hash yet.
    pub event: ProcessEvent,
    /// The executable, when it could be opened.
    pub exe: Option<std::fs::File>,
    /// The executable's hash cache key, as the `statx` that opened or claimed it read it.
    pub exe_key: Option<(u64, u64, i64, u64)>,
    /// A file of the writable layer over an image file of the same size: its origin is the
    /// image's only if the contents are the same, compared once both are hashed
    /// ([`origin::settle_copy_up`]).
    pub copy_up: Option<CopyUp>,
}

/// The file name of an exe link as the kernel prints it: its last component, without the
/// " (deleted)" the kernel appends to an unlinked file.
fn link_file_name(link: &str) -> &str {
    let path = link.strip_suffix(" (deleted)").unwrap_or(link);
    path.rsplit('/').next().unwrap_or(path)
}

/// A process whose executable can no longer be read has exited (or is a kernel thread): its
/// cgroup file then names the root cgroup it was moved to on exit and its cmdline is empty.
/// Neither says anything about the process as it ran, so both count as unread.
fn forget_if_exited(info: &mut ProcInfo) {
    if info.superseded {
        // Alive, running a later program: its cgroup and IDs are still its own, its command
        // name is the later program's, unless the kernel recorded this exec's own (eBPF).
        if !info.at_exec {
            info.comm = None;
        }
        return;
    }
    // The kernel's record of the exec itself (eBPF) is the exec's own, whatever came after.
    if !info.seen_alive() {
        if !info.cgroup_at_exec {
            info.cgroup = None;
        }
        if !info.at_exec && info.argv.as_ref().is_some_and(|a| a.is_empty()) {
            info.argv = None;
        }
    }
}

/// The sensor's view of every live process.
#[derive(Debug)]
pub struct Tracker {
    reader: ProcReader,
    table: HashMap<u32, Entry>,
    node: String,
    cluster: String,
    /// Live processes per container ID, to tell an entrypoint from an exec session.
    live_in_container: HashMap<String, u32>,
    /// fanotify exec identities, when enabled.
    exec_watch: Option<Arc<ExecWatch>>,
    /// Where executables came from: containers' mounts and layers, looked up through the
    /// node's root.
    origins: Origins,
    /// Containers seen, by ID, to attribute a process by the root filesystem of the file it
    /// executed when its cgroup could no longer be read.
    containers: HashMap<String, Arc<ContainerRef>>,
    /// Attempts left to find each container's root filesystem for fanotify (0: found or given
    /// up). The runtime's own helper joins the container's cgroup before it switches to the
    /// container's root, so the first process seen in a container may still show the host's.
    root_tries: HashMap<String, u8>,
    /// How cgroup paths read from `/proc` are resolved to the host's (see [`crate::cgroupns`]).
    view: cgroup::View,
    /// Placements parsed from cgroup files, by content (through `view`): a container's
    /// processes all show the same file, which is parsed once, not at every exec.
    placements: HashMap<Box<str>, Placement>,
    /// Executables found to be multi-call generically (see [`Tracker::multi_call`]).
    multi_call: std::collections::HashSet<String>,
    /// (executable, name) pairs already found not to be links to each other, so a program
    /// that renames itself in argv costs its `stat`s once.
    not_linked: std::collections::HashSet<(String, String)>,
    /// Names of containers outside any pod, from the runtimes' state.
    standalone: Option<standalone::Names>,
    /// The runtime of containers whose cgroup path does not name it, from the shim that
    /// started their processes (see [`Tracker::learn_runtime`]).
    runtimes: HashMap<String, Option<ContainerRuntime>>,
    /// Per container whose runtime is not known yet, the last parent found alive, parent of
    /// a process started into it, and not a shim (its pid, start time and executable's device
    /// and inode): while it lives and runs that file, its later children are not looked at
    /// again (see [`Tracker::learn_runtime`]).
    runtime_not_from: HashMap<String, NotAShim>,
    /// Counts execs recognised as the runtime's init ([`Tracker::is_runtime_init`]).
    runtime_inits: prometheus_client::metrics::counter::Counter,
    /// Whether the last exec applied was the runtime's init (not reported, not lost).
    last_was_runtime_init: bool,
}

/// A live parent found not to be a container runtime's shim (see [`Tracker::learn_runtime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NotAShim {
    pid: u32,
    start: std::time::SystemTime,
    exe_id: (u64, u64),
}

/// Processes of a container looked at for its root filesystem before giving up (a container
/// that shares the host's root has none of its own).
const ROOT_TRIES: u8 = 8;

/// Containers remembered for attribution by root filesystem; past it the memo starts over.
const MAX_CONTAINERS: usize = 4_096;
/// Distinct cgroup files whose placement is kept parsed (about one per container and per
/// host unit).
const MAX_PLACEMENTS: usize = 4_096;

impl Tracker {
    /// A tracker over `reader`.
    pub fn new(reader: ProcReader, node: &str, cluster: &str) -> Self {
        Self {
            reader,
            table: HashMap::new(),
            node: node.to_string(),
            cluster: cluster.to_string(),
            live_in_container: HashMap::new(),
            exec_watch: None,
            origins: Origins::default(),
            containers: HashMap::new(),
            root_tries: HashMap::new(),
            view: cgroup::View::host(),
            placements: HashMap::new(),
            multi_call: Default::default(),
            not_linked: Default::default(),
            standalone: None,
            runtime_inits: Default::default(),
            runtimes: HashMap::new(),
            runtime_not_from: HashMap::new(),
            last_was_runtime_init: false,
        }
    }

    /// Whether `exe` is a multi-call binary, which runs the program its argv names. Known by
    /// name (busybox, toybox, coreutils), or found generically: the binary was run under a
    /// name other than its own that is a link (hard or symbolic) in its own root to the very
    /// file that ran (same device and inode: a kernel fact, so argv alone never decides it).
    /// Once found it stays multi-call, so a later `exec -a NAME` of it with no link by that
    /// name is still read as the applet NAME, which is what such a binary runs.
    fn multi_call(&mut self, pid: u32, exe: &str, argv: &[String], alive: bool) -> bool {
        use std::os::unix::fs::MetadataExt;
        if procguard_core::element::is_known_multi_call(exe) || self.multi_call.contains(exe) {
            return true;
        }
        let Some(arg0) = argv.first() else {
            return false;
        };
        let name = basename(arg0).trim_start_matches('-');
        if !alive || name.is_empty() || name == basename(exe) || exe == UNREADABLE_EXE {
            return false;
        }
        if self
            .not_linked
            .contains(&(exe.to_string(), name.to_string()))
        {
            return false;
        }
        let Ok(file) = std::fs::metadata(self.reader.path(pid, "exe")) else {
            return false;
        };
        let root = self.reader.path(pid, "root");
        let dir = exe.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let candidates: Vec<String> = if arg0.starts_with('/') {
            vec![arg0.trim_start_matches('-').to_string()]
        } else {
            std::iter::once(dir)
                .chain(LINK_DIRS.iter().copied())
                .map(|d| format!("{d}/{name}"))
                .collect()
        };
        let linked = candidates.iter().any(|c| {
            std::fs::metadata(root.join(c.trim_start_matches('/')))
                .is_ok_and(|m| m.dev() == file.dev() && m.ino() == file.ino())
        });
        if !linked {
            if self.not_linked.len() >= MAX_MULTI_CALL {
                self.not_linked.clear();
            }
            self.not_linked.insert((exe.to_string(), name.to_string()));
            return false;
        }
        if self.multi_call.len() >= MAX_MULTI_CALL {
            self.multi_call.clear();
        }
        self.multi_call.insert(exe.to_string());
        true
    }

    /// Reads cgroup paths through `view` (the sensor runs in a private cgroup namespace).
    pub fn set_cgroup_view(&mut self, view: cgroup::View) {
        self.view = view;
        self.placements.clear();
    }

    /// The placement a cgroup file's `content` names, parsed through the view once per
    /// distinct content (at most [`MAX_PLACEMENTS`] kept).
    fn placement_in(&mut self, content: &str) -> Placement {
        if let Some(p) = self.placements.get(content) {
            return p.clone();
        }
        let p = cgroup::parse_in(content, &self.view);
        if self.placements.len() >= MAX_PLACEMENTS {
            self.placements.clear();
        }
        self.placements.insert(content.into(), p.clone());
        p
    }

    /// The placement `/proc` shows now for a live process, or `None` when it is gone. An
    /// exited process's cgroup file names the root it was moved to, so liveness is checked
    /// by its executable link (empty for a zombie) after the cgroup was read.
    fn current_placement(&self, pid: u32) -> Option<Placement> {
        let mut info = ProcInfo {
            pid,
            ..Default::default()
        };
        self.reader.read_cgroup(&mut info);
        let content = info.cgroup?;
        std::fs::read_link(self.reader.path(pid, "exe")).ok()?;
        Some(cgroup::parse_in(&content, &self.view))
    }

    /// Learns the runtime of container `id` from the live parent of `pid`, a process started
    /// into the container from outside it, when the cgroup path did not name one (a kubelet's
    /// cgroupfs shape, `/kubepods/<qos>/pod<uid>/<id>`, is the same for Docker and
    /// containerd). That parent is the runtime's shim (the subreaper the runtime's helper
    /// hands its child to), a host process no container can write to: `containerd-shim*` in
    /// containerd's `moby` namespace is Docker's, in any other containerd's. Anything else
    /// (conmon, an unknown shim) leaves the runtime unknown; a process or parent already gone
    /// leaves it to the next process started into the container.
    ///
    /// `ppid` is the parent at the exec. While that parent lives it stays the process's
    /// parent (a process is handed to a subreaper only when its parent exits), so once it was
    /// found not to be a shim, its later children into the same container are not looked at
    /// again: each look costs a `/proc` read or two per exec, and a parent outside the
    /// container that starts many processes into it would pay them at every exec. The parent
    /// is known by its pid, start time and executable (device and inode) in the table, which
    /// loses it at its exit and follows its execs.
    fn learn_runtime(&mut self, id: &str, pid: u32, ppid: u32) {
        if self.runtimes.contains_key(id) {
            return;
        }
        let parent_now = self.table.get(&ppid).and_then(|p| {
            Some(NotAShim {
                pid: ppid,
                start: p.facts.start_time?,
                exe_id: p.exe_id?,
            })
        });
        if parent_now.is_some() && self.runtime_not_from.get(id) == parent_now.as_ref() {
            return;
        }
        let Some(parent) = crate::procfs::read_bounded(&self.reader.path(pid, "stat"), 4096)
            .and_then(|t| crate::procfs::parse_stat(&t))
            .map(|s| s.ppid)
            .filter(|p| *p > 1)
        else {
            return;
        };
        let Ok(exe) = std::fs::read_link(self.reader.path(parent, "exe")) else {
            return;
        };
        if self.runtimes.len() >= MAX_CONTAINERS {
            self.runtimes.clear();
        }
        let exe = basename(&exe.to_string_lossy()).to_string();
        let runtime = match exe.as_str() {
            e if e.starts_with("containerd-shim") => {
                let cmdline = crate::procfs::read_cmdline(&self.reader.path(parent, "cmdline"))
                    .map(|(argv, _)| argv)
                    .unwrap_or_default();
                let ns = cmdline
                    .iter()
                    .position(|a| a == "-namespace" || a == "--namespace")
                    .and_then(|i| cmdline.get(i + 1));
                Some(match ns.map(String::as_str) {
                    Some("moby") => ContainerRuntime::Docker,
                    _ => ContainerRuntime::Containerd,
                })
            }
            // Podman's and CRI-O's monitor: their cgroup paths name the runtime themselves.
            "conmon" => None,
            // The runtime's helper still waiting for its child (`runc exec`): the next
            // process started into the container may tell. Its next child does not (see
            // above), when it is the parent at the exec.
            _ => {
                if let Some(p) = parent_now.filter(|p| p.pid == parent) {
                    if self.runtime_not_from.len() >= MAX_CONTAINERS {
                        self.runtime_not_from.clear();
                    }
                    self.runtime_not_from.insert(id.to_string(), p);
                }
                return;
            }
        };
        self.runtime_not_from.remove(id);
        self.runtimes.insert(id.to_string(), runtime);
    }

    /// Identifies containers outside any pod by the names their runtime records.
    pub fn set_standalone(&mut self, names: standalone::Names) {
        self.standalone = Some(names);
    }

    /// Counts what the tracker decides not to report in `metrics`.
    pub fn set_metrics(&mut self, metrics: &crate::metrics::Metrics) {
        self.runtime_inits = metrics.runtime_init_execs.clone();
    }

    /// Whether the last exec given to [`Tracker::on_exec_read`] was the container runtime's
    /// own init, recognised and deliberately not reported (rather than lost).
    pub fn last_was_runtime_init(&self) -> bool {
        self.last_was_runtime_init
    }

    /// Looks for the root filesystem of container `id` through live process `pid`, until
    /// found or [`ROOT_TRIES`] processes were looked at.
    fn find_root(&mut self, pid: u32, id: &str) {
        let Some(w) = &self.exec_watch else { return };
        let left = self.root_tries.entry(id.to_string()).or_insert(ROOT_TRIES);
        if *left == 0 {
            return;
        }
        *left = if w.mark_root_of(self.reader.root(), pid, id) {
            0
        } else {
            *left - 1
        };
    }

    /// Uses fanotify exec identities for processes gone before `/proc` is read, and marks each
    /// new container's root filesystem for them.
    pub fn set_exec_watch(&mut self, w: Arc<ExecWatch>) {
        self.exec_watch = Some(w);
    }

    /// Looks the containers' layers up under `root`: the node's root filesystem as the
    /// sensor can reach it (`<host proc>/1/root` in the DaemonSet, whose own mount namespace
    /// has none of the runtime's state). The layers are paths of the runtime's (the node's)
    /// mount namespace, so they are looked up through the node's root, not the sensor's own.
    pub fn set_host_root(&mut self, root: std::path::PathBuf) {
        self.origins.set_host_root(root);
    }

    /// Housekeeping when no exec arrived for a while: drains the fanotify queue, so identities
    /// of execs never looked up (threads of the sensor's own) do not pile up in the kernel.
    pub fn idle(&self) {
        if let Some(w) = &self.exec_watch {
            w.pump();
        }
    }

    /// Reads the fanotify queue once for a batch of exec records taken from the kernel
    /// (eBPF), which lookups then use without reading it again ([`ExecWatch::set_batched`]).
    pub fn pump_exec_watch(&self) {
        if let Some(w) = &self.exec_watch {
            w.set_batched();
            w.pump();
        }
    }

    /// Processes tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn container_of(p: &Placement) -> Option<&Arc<ContainerRef>> {
        match p {
            Placement::Container(c) => Some(c),
            _ => None,
        }
    }

    fn insert(&mut self, pid: u32, e: Entry) {
        if self.table.len() >= MAX_TRACKED && !self.table.contains_key(&pid) {
            // Forget a process that is gone; if all are alive, forget an arbitrary one.
            let victim = self
                .table
                .keys()
                .copied()
                .find(|p| !self.reader.path(*p, "stat").exists())
                .or_else(|| self.table.keys().next().copied());
            if let Some(v) = victim {
                self.remove(v);
            }
        }
        if let Some(c) = Self::container_of(&e.placement) {
            // The common case (the container has live processes) allocates nothing.
            if let Some(n) = self.live_in_container.get_mut(&c.id) {
                *n += 1;
            } else {
                self.live_in_container.insert(c.id.clone(), 1);
                if self.containers.len() >= MAX_CONTAINERS {
                    self.containers.clear();
                    self.root_tries.clear();
                }
                self.containers.insert(c.id.clone(), Arc::clone(c));
            }
        }
        if let Some(old) = self.table.insert(pid, e) {
            if let Some(c) = Self::container_of(&old.placement) {
                self.dec_container(&c.id);
            }
        }
    }

    fn dec_container(&mut self, id: &str) {
        if let Some(n) = self.live_in_container.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.live_in_container.remove(id);
            }
        }
    }

    fn remove(&mut self, pid: u32) {
        if let Some(old) = self.table.remove(&pid) {
            if let Some(c) = Self::container_of(&old.placement) {
                self.dec_container(&c.id);
            }
        }
    }

    /// A new process, started at `start` (the fork event's time): it inherits its parent's
    /// placement, context and credentials until it execs.
    pub fn on_fork(&mut self, parent: u32, child: u32, start: Option<std::time::SystemTime>) {
        let inherited = self.table.get(&parent).cloned().map(|p| Entry {
            ppid: parent,
            exe: p.exe,
            exe_id: p.exe_id,
            // A fork runs its parent's image but has not re-executed anything itself.
            runtime_init: false,
            placement: p.placement,
            context: match p.context {
                ExecContext::Entrypoint => ExecContext::Descendant,
                c => c,
            },
            session: p.session,
            facts: Facts {
                start_time: start,
                ..p.facts
            },
        });
        if let Some(e) = inherited {
            self.insert(child, e);
        }
    }

    /// A process's real user ID changed.
    pub fn on_uid(&mut self, pid: u32, uid: u32) {
        if let Some(e) = self.table.get_mut(&pid) {
            e.facts.uid = Some(uid);
        }
    }

    /// A process's real group ID changed.
    pub fn on_gid(&mut self, pid: u32, gid: u32) {
        if let Some(e) = self.table.get_mut(&pid) {
            e.facts.gid = Some(gid);
        }
    }

    /// A process set its command name (`prctl(PR_SET_NAME)`).
    pub fn on_comm(&mut self, pid: u32, comm: String) {
        if let Some(e) = self.table.get_mut(&pid) {
            e.facts.comm = Some(comm);
        }
    }

    /// A process exited.
    pub fn on_exit(&mut self, pid: u32) {
        self.remove(pid);
    }

    /// Forgets everything (before a full rescan after a loss).
    pub fn clear(&mut self) {
        self.table.clear();
        self.live_in_container.clear();
    }

    fn identity(&self, placement: &Placement) -> WorkloadIdentity {
        match placement {
            Placement::Container(c) => {
                let short = &c.id[..12.min(c.id.len())];
                match &c.pod_uid {
                    // Pod metadata (namespace, owner, container name) replaces this when the
                    // pod watcher knows the pod.
                    Some(uid) => WorkloadIdentity::new(
                        &self.cluster,
                        "",
                        WorkloadKind::Pod,
                        format!("pod-{uid}"),
                        short,
                    ),
                    // No pod: the runtime's stable name for it (crate::standalone).
                    None => match &self.standalone {
                        Some(names) => names.identity_of(&self.cluster, c),
                        None => standalone::identity(&self.cluster, c.runtime, &c.id, None),
                    },
                }
            }
            Placement::Host { unit } => standalone::host_identity(&self.cluster, unit.as_deref()),
            Placement::Unattributed => {
                WorkloadIdentity::new(&self.cluster, "", WorkloadKind::Host, "unattributed", "")
            }
        }
    }

    /// Whether an exec re-executes the very file its parent runs (same device and inode, as
    /// opened), and the parent is outside the process's container (or in none): what runc does
    /// with `/proc/self/exe init`. Flagged whatever the process's placement reads, because the
    /// runtime may move it into the container's cgroup only after this exec.
    fn reexecs_outside_parent(&self, info: &ProcInfo, placement: &Placement, ppid: u32) -> bool {
        let Some(parent) = self.table.get(&ppid) else {
            return false;
        };
        let mine = Self::container_of(placement).map(|c| &c.id);
        let theirs = Self::container_of(&parent.placement).map(|c| &c.id);
        (theirs.is_none() || theirs != mine)
            && !info.exe_memfd
            && info.exe_id.is_some()
            && info.exe_id == parent.exe_id
    }

    /// Whether an exec is the container runtime's own init, from kernel facts only: the process
    /// is (now) in a container, its parent is not in that container (a host process: the
    /// runtime), and either it executes the very file its parent runs (runc's
    /// `/proc/self/exe init`, [`Tracker::reexecs_outside_parent`]), or it already did and now
    /// runs an anonymous memory file (runc's clone of itself,
    /// `/memfd:runc_cloned:/proc/self/exe`, whose name is never consulted). Nothing a
    /// container's own processes can do matches: their parents are in the container. A runtime
    /// that starts its init some other way is reported as it is.
    fn is_runtime_init(
        &self,
        info: &ProcInfo,
        placement: &Placement,
        ppid: u32,
        known: Option<&Entry>,
        reexec: bool,
    ) -> bool {
        let Some(c) = Self::container_of(placement) else {
            return false;
        };
        let Some(parent) = self.table.get(&ppid) else {
            return false;
        };
        if Self::container_of(&parent.placement).is_some_and(|pc| pc.id == c.id) {
            return false;
        }
        reexec || (info.exe_memfd && known.is_some_and(|k| k.runtime_init))
    }

    fn ancestors(&self, mut ppid: u32) -> Vec<Ancestor> {
        let mut out = Vec::new();
        while out.len() < MAX_ANCESTORS && ppid > 1 {
            let Some(e) = self.table.get(&ppid) else {
                break;
            };
            out.push(Ancestor {
                pid: ppid,
                exe_path: e.exe.clone(),
            });
            if e.ppid == ppid {
                break;
            }
            ppid = e.ppid;
        }
        out
    }

    /// A process replaced its image: read it and build its event, with the executable opened
    /// for hashing (the hash is computed off this path, see [`crate::capture`]). Returns `None`
    /// for kernel threads and processes gone without a trace.
    pub fn on_exec(&mut self, pid: u32) -> Option<Observed> {
        let early = self.read_early(pid);
        self.on_exec_read(early)
    }

    /// Reads, the moment its exec arrives, what of `pid` its exit would take away and no
    /// kernel event carries: the executable (opened, for its hash) and the command line. Needs
    /// nothing from the process table, so it runs before the fork and other events queued with
    /// the exec are applied.
    ///
    /// With fanotify, the executable usually need not be opened: the kernel already handed
    /// over a descriptor of the file this exec opened, with its cache key, and a file known to
    /// be at the path the exe link reads is that file ([`ExecWatch::claim_exec`]). Only
    /// otherwise is `/proc/<pid>/exe` opened.
    pub fn read_early(&self, pid: u32) -> EarlyRead {
        self.read_early_with(pid, true)
    }

    /// [`Tracker::read_early`], reading the command line only when `argv` (not when the
    /// kernel recorded it at the exec: [`Tracker::with_exec_facts`] adds it).
    pub fn read_early_with(&self, pid: u32, argv: bool) -> EarlyRead {
        let urgent = |pid| {
            if argv {
                self.reader.read_urgent(pid)
            } else {
                self.reader.read_exe_link(pid)
            }
        };
        let Some(w) = &self.exec_watch else {
            let mut info = urgent(pid);
            let exe = self.open_exe_unless_gone(&info);
            self.reader.resolve_exe(&mut info, exe.as_ref());
            return EarlyRead {
                exe,
                claimed: None,
                superseded: None,
                info,
            };
        };
        let mut info = urgent(pid);
        w.proc_read();
        // The process may have exec'd again before this read: `/proc` then shows the later
        // program, whose own exec event follows. This exec is named from the kernel's record
        // as for a process gone, and the argv read is not its own.
        if let Some(earlier) = info
            .exe_link
            .as_deref()
            .and_then(plain_link)
            .and_then(|exe| w.take_superseded(pid, exe))
        {
            info.exe = None;
            info.exe_link = None;
            info.exe_deleted_unknown = false;
            info.argv = None;
            info.argv_truncated = false;
            info.superseded = true;
            return EarlyRead {
                exe: None,
                claimed: None,
                superseded: Some(earlier),
                info,
            };
        }
        // Only a plain link is matched by path; a marked one (deleted, memfd, or a file named
        // so) is opened, so that the facts about that very file decide.
        let claimed = match info.exe_link.as_deref().and_then(plain_link) {
            Some(exe) => w.claim_exec(pid, exe).filter(|c| c.file.is_some()),
            None => None,
        };
        let exe = match &claimed {
            Some(c) => {
                info.exe_id = Some((c.key.0, c.key.1));
                info.exe_opened = [
                    Some(Opened {
                        key: c.key,
                        mount: c.mount,
                    }),
                    c.also,
                ];
                None
            }
            None => self.open_exe_unless_gone(&info),
        };
        self.reader.resolve_exe(&mut info, exe.as_ref());
        if let (None, Some(id)) = (&claimed, info.exe_id) {
            // Read without fanotify's record (not read from its queue yet): that record, when
            // it comes, is this exec's.
            w.read_from_proc(pid, id);
        }
        EarlyRead {
            exe,
            claimed,
            superseded: None,
            info,
        }
    }

    /// [`Tracker::read_early`] for an exec the kernel recorded with its path (eBPF) and that
    /// is known to have lost its image already (its exit or a later exec came in the same
    /// batch): `/proc` is not read (it could only fail, or show the later program). With
    /// fanotify, this exec's record is claimed now, before a later exec's read could take it
    /// (by the path, else the oldest queued); [`Tracker::with_exec_facts`] keeps it only if
    /// it is the file the kernel recorded.
    pub fn read_early_gone(&self, pid: u32, path: &PathAtExec) -> EarlyRead {
        let claimed = self.exec_watch.as_ref().and_then(|w| {
            let by_path = (!path.deleted && !path.memfd)
                .then(|| w.claim_exec(pid, &path.path))
                .flatten();
            by_path.or_else(|| w.claim(pid))
        });
        EarlyRead {
            exe: None,
            claimed,
            superseded: None,
            info: ProcInfo {
                pid,
                exe_link_gone: true,
                ..Default::default()
            },
        }
    }

    /// Opens `/proc/<pid>/exe` for the hash, unless reading its link already found the
    /// process gone or without an executable ([`ProcInfo::exe_link_gone`]): that open would
    /// fail the same way (in a storm of short processes, most are gone by their read).
    fn open_exe_unless_gone(&self, info: &ProcInfo) -> Option<std::fs::File> {
        if info.exe_link_gone {
            return None;
        }
        self.reader.open_exe(info.pid)
    }

    /// Adds what the kernel recorded at the exec to what `/proc` showed: those facts are the
    /// exec's own and stand over the read ([`AtExec`]).
    pub fn with_exec_facts(&self, mut early: EarlyRead, facts: AtExec) -> EarlyRead {
        early.info.mnt_ns_at_exec = facts.mnt_ns;
        early.info.exe_id_at_exec = Some((
            (!facts.exe_on_overlay).then_some(facts.exe_id.0),
            facts.exe_id.1,
        ));
        if let Some(at_exec) = facts.exe_path {
            // The path is the kernel's. `/proc` was read after the exec: it shows this exec's
            // image only if it prints the very link the kernel would have printed then, and
            // the file it opened (if any) is the one exec'd. Otherwise the process exec'd
            // again, exited, or its ID was reused: nothing of that read is this exec's
            // executable, and fanotify's record of the exec, when it is the file the kernel
            // recorded, is what is hashed.
            let info = &early.info;
            let opened = info.exe_opened[0].map(|o| o.key);
            let same_file =
                opened.is_none_or(|k| info.is_exec_file_seen_as(&k, info.exe_opened[1].as_ref()));
            // (A file reached through a mount detached from every namespace, as the runtime
            // re-executes a bind mount of itself it unmounted, walks to "/" as d_path prints
            // it; the same file exec'd before that through its real path is not "/".)
            let seen = same_file && info.exe_link.as_deref() == Some(at_exec.link().as_str());
            if !seen {
                tracing::debug!(
                    message = "The exe link read after the exec is not this exec's image.",
                    pid = info.pid,
                    link = ?info.exe_link,
                    at_exec = %at_exec.path,
                    opened = ?opened,
                    recorded = ?info.exe_id_at_exec
                );
                early.exe = None;
                // What was claimed from fanotify stays this exec's when it is the file exec'd.
                let info = &early.info;
                early.claimed = early
                    .claimed
                    .take()
                    .filter(|c| info.is_exec_file_seen_as(&c.key, c.also.as_ref()));
                let info = &mut early.info;
                info.superseded = info.exe_link.is_some();
                info.exe_link = None;
                info.exe_opened = [None, None];
                info.exe_id = None;
            }
            let info = &mut early.info;
            info.exe = Some(at_exec.path);
            info.exe_deleted = at_exec.deleted;
            info.exe_memfd = at_exec.memfd;
            info.exe_deleted_unknown = false;
            info.exe_at_exec = true;
            info.exe_unseen = !seen;
        } else {
            early.info.exe_read_late = true;
        }
        // Without the kernel's path, `/proc` was read after the exec. If it names a file other
        // than the one the kernel exec'd (by the file's own name), the process exec'd again
        // meanwhile, or it was renamed: nothing of that read is this exec's executable. It is
        // left unread, and fanotify's record of the exec (when there is one) names it.
        if !early.info.exe_at_exec
            && !facts.exe_name.is_empty()
            && early
                .info
                .exe_link
                .as_deref()
                .is_some_and(|link| link_file_name(link) != facts.exe_name)
        {
            early.exe = None;
            early.claimed = None;
            let info = &mut early.info;
            info.exe = None;
            info.exe_link = None;
            info.exe_deleted = false;
            info.exe_memfd = false;
            info.exe_deleted_unknown = false;
            info.exe_opened = [None, None];
            info.exe_id = None;
            info.superseded = true;
        }
        let info = &mut early.info;
        // `/proc` showed the file deleted, but it still had links when it was exec'd: it was
        // removed or replaced after the exec (the read comes after the batch's delay). What
        // ran was not a deleted file; the file's own facts decide its origin.
        info.linked_at_exec = facts.exe_nlink > 0;
        if info.exe_deleted && info.linked_at_exec && !info.exe_at_exec {
            info.exe_deleted = false;
        }
        info.at_exec = true;
        info.ppid = Some(facts.ppid);
        info.uid = Some(facts.uid);
        info.gid = Some(facts.gid);
        info.start_time = self.reader.start_time_of_boottime(facts.start_boottime_ns);
        info.comm = Some(facts.comm);
        info.argv = Some(facts.argv);
        info.argv_truncated = facts.argv_truncated;
        info.exe_id.get_or_insert(facts.exe_id);
        if let Some(line) = facts.cgroup {
            info.cgroup = Some(line);
            info.cgroup_at_exec = true;
        }
        early
    }

    /// Whether the exec read as `early` should wait for its fork: the process is unknown to
    /// the table (its fork not applied yet) and was already gone when `/proc` was read, so
    /// only the fork can say its parent and container. Never for an exec whose parent and
    /// argv the kernel recorded at the exec ([`AtExec`]). The kernel reports a fork after waking
    /// the child, so a parent descheduled in between reports it after the child's exec (and
    /// exit) on another CPU.
    pub fn awaits_fork(&self, early: &EarlyRead) -> bool {
        !early.info.at_exec
            && !self.table.contains_key(&early.info.pid)
            && (early.info.exe.is_none() || early.info.argv.is_none())
    }

    /// [`Tracker::on_exec`] for a process already read by [`Tracker::read_early`], after the
    /// events queued before its exec were applied. What the table knows from kernel events is
    /// used as is; only the rest is read from `/proc`: the parent, start time and IDs of a
    /// process whose fork was seen come from the fork and id events (the command name, which
    /// an exec changes without an event, is read); the container of a process forked inside a
    /// container is its parent's (leaving a container's cgroup takes privileges a container
    /// does not have), and anything else reads its cgroup file.
    pub fn on_exec_read(&mut self, early: EarlyRead) -> Option<Observed> {
        self.last_was_runtime_init = false;
        let EarlyRead {
            exe,
            claimed: early_claim,
            superseded,
            mut info,
        } = early;
        let pid = info.pid;
        let known = self.table.get(&pid);
        let mut lineage = None;
        // What the kernel recorded at the exec is not read again.
        match known {
            _ if info.cgroup_at_exec => {}
            Some(k) if matches!(k.placement, Placement::Container(_)) => {
                lineage = Some(k.placement.clone());
            }
            // Recorded by the kernel at the exec but for its cgroup (a hybrid host's v2 root):
            // read after the fact, so only if the ID still names that very process.
            _ if info.at_exec => self.reader.read_cgroup_of_same_process(&mut info),
            _ => self.reader.read_cgroup(&mut info),
        }
        match known {
            _ if info.at_exec => {}
            Some(k) if k.facts.start_time.is_some() => {
                info.ppid = Some(k.ppid);
                info.start_time = k.facts.start_time;
                self.reader.read_comm(&mut info);
            }
            _ => self.reader.read_stat(&mut info),
        }
        match known {
            _ if info.at_exec => {}
            Some(k) if k.facts.uid.is_some() && k.facts.gid.is_some() => {
                info.uid = k.facts.uid;
                info.gid = k.facts.gid;
            }
            _ => self.reader.read_status(&mut info),
        }
        forget_if_exited(&mut info);
        let alive = info.seen_alive();
        let mut exe_key = None;
        let mut hint = lineage;
        let mut claimed = None;
        let mut exe = exe;
        if let Some(w) = &self.exec_watch {
            if info.exe_unseen {
                // Named by the kernel's record, but `/proc` no longer showed that image (or
                // was not asked): fanotify's record of this exec (claimed at the early read,
                // or found before a later exec's, or the oldest queued) gives the file to
                // hash, when it is the file the kernel recorded. A later exec's file is never
                // hashed for this one.
                let found = match (early_claim, superseded) {
                    (Some(c), _) => Some((c.key, c.mount, c.also, c.file)),
                    (None, Some((f, file))) => Some((f.key, f.mount, f.also, file)),
                    (None, None) => w.claim(pid).map(|c| (c.key, c.mount, c.also, c.file)),
                };
                if let Some((key, mount, also, file)) =
                    found.filter(|(key, _, also, _)| info.is_exec_file_seen_as(key, also.as_ref()))
                {
                    exe_key = Some(key);
                    exe = file;
                    info.exe_id = Some((key.0, key.1));
                    info.exe_opened = [Some(Opened { key, mount }), also];
                    claimed = mount;
                }
            } else if info.exe.is_some() {
                if let Some(c) = early_claim {
                    exe_key = Some(c.key);
                    exe = c.file;
                    claimed = c.mount;
                } else if let Some(c) = w.claim(pid) {
                    // Exited between the link and the open: the kernel's open file serves
                    // (when it is the file the kernel recorded at the exec, if it did).
                    if exe.is_none() && info.is_exec_file_seen_as(&c.key, c.also.as_ref()) {
                        exe_key = Some(c.key);
                        exe = c.file;
                        info.exe_opened = [
                            Some(Opened {
                                key: c.key,
                                mount: c.mount,
                            }),
                            c.also,
                        ];
                    }
                    claimed = c.mount;
                }
            } else if let Some((f, file)) = superseded.or_else(|| w.take(pid)) {
                // The kernel's own record of the file this exec opened: fact, not a guess.
                info.exe = Some(f.path);
                // fanotify's record names the file when its event is read, after the exec: a
                // file replaced meanwhile (`mv` over it) reads as deleted, though it had links
                // when it ran, as the kernel recorded at the exec (eBPF).
                info.exe_deleted = f.deleted && !info.linked_at_exec;
                info.exe_memfd = f.memfd;
                info.exe_deleted_unknown = f.deleted_unknown;
                info.exe_id = Some((f.key.0, f.key.1));
                info.exe_opened = [
                    Some(Opened {
                        key: f.key,
                        mount: f.mount,
                    }),
                    f.also,
                ];
                exe_key = Some(f.key);
                exe = file;
            }
            // The executed file was reached through a container's root mount: the process ran
            // in that container (an exec session's process is forked outside the container
            // and joins its cgroup just before this exec, so its parent says nothing). This
            // holds whether `/proc` still showed the process when its link was read (and it
            // exited before its cgroup was) or fanotify's record alone names the file.
            if info.cgroup.is_none() && hint.is_none() {
                hint = info
                    .exe_opened
                    .iter()
                    .flatten()
                    .filter_map(|o| o.mount)
                    .find_map(|m| w.container_of_mount(m))
                    .and_then(|id| self.containers.get(&id).cloned())
                    .map(Placement::Container);
            }
        }
        // The file opened from /proc: its key was read with it (no second `statx`).
        if exe_key.is_none() && exe.is_some() {
            exe_key = info.exe_opened[0].map(|o| o.key);
        }
        let (ev, copy_up) = self.event_with(info, hint, alive);
        // A process read in full teaches which container its executable's mount belongs to.
        if let (Some(w), Some(m), Some(c)) = (
            &self.exec_watch,
            claimed,
            ev.as_ref()
                .filter(|e| e.missing.is_empty())
                .and_then(|e| e.container.as_ref()),
        ) {
            w.learn(m, &c.container_id);
        }
        ev.map(|event| Observed {
            event,
            exe,
            exe_key,
            copy_up,
        })
    }

    /// Builds the event for an already-read process (without its hash).
    pub fn event_from(&mut self, info: ProcInfo) -> Option<ProcessEvent> {
        let alive = info.seen_alive();
        self.event_with(info, None, alive).0
    }

    /// Builds the event; `hint` is the placement known as fact without the cgroup file (the
    /// parent's container, or the container whose root the executed file was reached
    /// through), used when the cgroup file was not read. `alive`: `/proc` still showed the
    /// process. With the event comes the copy-up whose content decides its origin, if any.
    fn event_with(
        &mut self,
        mut info: ProcInfo,
        hint: Option<Placement>,
        alive: bool,
    ) -> (Option<ProcessEvent>, Option<CopyUp>) {
        forget_if_exited(&mut info);
        let pid = info.pid;
        let known = self.table.get(&pid).cloned();
        let mut missing = Vec::new();
        // Kernel threads (kthreadd, pid 2, and its children) have no exe; they are not workload
        // processes. A process that already exited (a zombie) has no exe and an empty cmdline
        // too, but it is a workload process and keeps its event: only the parent tells them
        // apart.
        if info.exe.is_none() && (pid == 2 || info.ppid == Some(2)) {
            return (None, None);
        }
        let read = info.cgroup.as_deref().map(|c| self.placement_in(c));
        let placement = match (read, hint) {
            (Some(p), _) => p,
            (None, Some(h)) => h,
            (None, None) => {
                // Gone before its cgroup was read. What the table inherited at fork is the
                // parent's cgroup *then*; a parent that joined a container's cgroup since
                // (how `runc exec` and a shell moved into a pod's cgroup start children) has
                // moved on. The parent's cgroup now, when it is still alive, is the better
                // fact, and it is marked as inherited, never as read.
                let ppid = info.ppid.or(known.as_ref().map(|k| k.ppid));
                match ppid.and_then(|pp| Some((pp, self.current_placement(pp)?))) {
                    Some((pp, now)) => {
                        missing.push("inherited:container");
                        if let Some(parent) = self.table.get(&pp) {
                            if parent.placement != now {
                                let mut e = parent.clone();
                                e.placement = now.clone();
                                self.insert(pp, e);
                            }
                        }
                        now
                    }
                    None => {
                        missing.push("container");
                        known
                            .as_ref()
                            .map(|k| k.placement.clone())
                            .unwrap_or(Placement::Unattributed)
                    }
                }
            }
        };
        let ppid = info
            .ppid
            .or(known.as_ref().map(|k| k.ppid))
            .unwrap_or_else(|| {
                missing.push("ppid");
                0
            });
        // The container runtime's own init (runc re-executing itself before it execs the
        // entrypoint or an exec session's command) is not a workload process. It is recognised
        // by kernel facts only, never by its name (`comm` and paths are the file's name, which
        // whoever writes the file chooses).
        let reexec = self.reexecs_outside_parent(&info, &placement, ppid);
        if self.is_runtime_init(&info, &placement, ppid, known.as_ref(), reexec) {
            self.runtime_inits.inc();
            self.last_was_runtime_init = true;
            // It stays where its parent put it (outside the container) until it execs the
            // container's own program: it does not count as the container's first process.
            let e = known.unwrap_or(Entry {
                ppid,
                exe: String::new(),
                exe_id: None,
                runtime_init: true,
                placement: Placement::Unattributed,
                context: ExecContext::Host,
                session: None,
                facts: Facts::default(),
            });
            self.insert(
                pid,
                Entry {
                    exe: info.exe.clone().unwrap_or_default(),
                    exe_id: info.exe_id,
                    runtime_init: true,
                    ..e
                },
            );
            tracing::debug!(message = "Container runtime init recognised.", pid, ppid, exe = ?info.exe);
            return (None, None);
        }
        if info.exe_deleted_unknown {
            // The link ends in " (deleted)" and nothing could say whether the file was
            // unlinked or is named so: the path stands as printed, and the flag is unknown.
            missing.push("exe_deleted");
        }
        // The very file the parent runs (same device and inode, as opened), when its own link
        // cannot name it: the parent's path names that file (runc runs a read-only bind mount
        // of itself that it detached, whose path the kernel cannot print).
        let parents_file = self
            .table
            .get(&ppid)
            .filter(|p| info.exe_id.is_some() && p.exe_id == info.exe_id)
            .map(|p| p.exe.clone())
            .filter(|e| e.starts_with('/'));
        let exe = match (&info.exe, parents_file) {
            // "/" is what the kernel prints for an image unreachable from the reader's root.
            (Some(e), _) if e != "/" && !e.is_empty() => {
                if info.exe_read_late {
                    // The kernel recorded the exec but not its path whole: this is the link
                    // read after the exec, which a later exec of a same-named file could have
                    // replaced. Said, never passed off as the kernel's record.
                    missing.push(MISSING_EXE_READ_LATE);
                }
                e.clone()
            }
            (Some(_), Some(same)) => same,
            _ => {
                // Never guess (the image before the exec would be a lie an attacker could hide
                // behind): the event says the executable is unknown, and learning holds it for
                // review.
                missing.push("exe_path");
                UNREADABLE_EXE.to_string()
            }
        };
        let my_container = Self::container_of(&placement).map(|c| c.id.clone());
        if let (Some(id), true) = (&my_container, alive) {
            self.find_root(pid, id);
        }
        // The very process the table holds (same pid and start time, in the same container),
        // not a new one that reuses its pid.
        let same_process = known.as_ref().filter(|k| {
            k.facts.start_time.is_some()
                && k.facts.start_time == info.start_time
                && Self::container_of(&k.placement).map(|c| &c.id) == my_container.as_ref()
        });
        let parent = self.table.get(&ppid);
        let context = match (&my_container, parent) {
            (None, _) => ExecContext::Host,
            (Some(id), Some(p))
                if Self::container_of(&p.placement).is_some_and(|pc| pc.id == *id) =>
            {
                match p.context {
                    ExecContext::Entrypoint => ExecContext::Descendant,
                    c => c,
                }
            }
            // The parent is outside the container (the runtime's shim): the first process is the
            // entrypoint, any later one was started by an exec into the container.
            (Some(id), _) => {
                // Started into the container from outside it: the runtime's shim is (or,
                // once the runtime's own helper has exited, has become) its parent.
                self.learn_runtime(id, pid, ppid);
                match same_process.map(|k| k.context) {
                    // Read again (the rescan after a loss, or its own exec): how it was started
                    // does not change. Counting the container's processes now would make an
                    // entrypoint with children an exec session, and all it starts after.
                    Some(c @ (ExecContext::Entrypoint | ExecContext::ExecSession)) => c,
                    _ => {
                        let others = self.live_in_container.get(id).copied().unwrap_or(0)
                            - u32::from(known.as_ref().is_some_and(|k| {
                                Self::container_of(&k.placement).is_some_and(|c| c.id == *id)
                            }));
                        if others == 0 {
                            ExecContext::Entrypoint
                        } else {
                            ExecContext::ExecSession
                        }
                    }
                }
            }
        };
        // An exec session's processes share its ID: the first one (started into the container
        // from outside it) names it, its descendants in the container inherit it.
        let session = (context == ExecContext::ExecSession).then(|| {
            if let Some(s) = same_process.and_then(|k| k.session.clone()) {
                return s;
            }
            self.table
                .get(&ppid)
                .filter(|p| {
                    p.context == ExecContext::ExecSession
                        && Self::container_of(&p.placement).map(|c| &c.id) == my_container.as_ref()
                })
                .and_then(|p| p.session.clone())
                .unwrap_or_else(|| {
                    let started = info
                        .start_time
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    format!("{}/{pid}/{started}", self.node)
                })
        });
        let argv = info.argv.clone().unwrap_or_else(|| {
            missing.push("argv");
            Vec::new()
        });
        let multi = self.multi_call(pid, &exe, &argv, alive);
        let invocation = if info.argv.is_none() {
            // What ran beyond the executable is in argv, and argv is gone: say so, and name
            // the element `[unreadable]` rather than let the bare executable (an allowed
            // element, often) stand for an applet or script nobody saw.
            element::unreadable(&exe, multi, &mut missing)
        } else {
            element::identify(&exe, &argv, multi)
        };
        let script = invocation.script;
        // Where the executable came from, from the kernel's facts (crate::origin).
        let opened: Vec<Opened> = info.exe_opened.iter().flatten().copied().collect();
        // Gone before its container's mount table was read: its parent, when still in the
        // mount namespace the kernel recorded at the exec, stands in (origin checks the
        // namespace). Only the parent: no scan of the table per gone exec.
        let stand_ins = match (&my_container, info.mnt_ns_at_exec) {
            (Some(id), Some(_)) if !alive && !self.origins.knows(id) => vec![ppid],
            _ => Vec::new(),
        };
        let classified = self.origins.classify(
            &self.reader,
            origin::Exec {
                pid,
                alive,
                mnt_ns: info.mnt_ns_at_exec,
                stand_ins: &stand_ins,
                container: my_container.as_deref(),
                exe: &exe,
                fileless: info.exe_memfd || info.exe_deleted,
                deleted_unknown: info.exe_deleted_unknown,
                opened: &opened,
            },
        );
        if classified.facts_missing {
            missing.push(procguard_core::process::MISSING_ORIGIN);
        }
        // The script's part of the flag is added once the element is final
        // ([`mark_writable_script`]).
        let writable = origin::writable_location(classified.origin, &exe, info.exe_memfd);
        let container = Self::container_of(&placement).map(|c| ContainerInfo {
            container_id: c.id.clone(),
            runtime: c
                .runtime
                .or_else(|| self.runtimes.get(&c.id).copied().flatten()),
            pod_uid: c.pod_uid.clone(),
            pod_name: None,
            qos: c.qos,
            image: None,
            image_digest: None,
            pod_labels: Default::default(),
        });
        let facts = Facts {
            uid: info.uid,
            gid: info.gid,
            comm: info.comm.clone(),
            start_time: info.start_time,
        };
        let ev = ProcessEvent {
            pid,
            ppid,
            ancestors: self.ancestors(ppid),
            start_time: info.start_time,
            uid: info.uid.unwrap_or(u32::MAX),
            gid: info.gid.unwrap_or(u32::MAX),
            comm: info.comm.clone().unwrap_or_default(),
            applet: invocation.applet,
            script_path: script,
            exe_path: exe.clone(),
            argv,
            argv_truncated: info.argv_truncated,
            exe_sha256: None,
            exe_memfd: info.exe_memfd,
            exe_deleted: info.exe_deleted,
            exe_writable_location: writable,
            origin: classified.origin,
            container,
            workload: self.identity(&placement),
            context,
            exec_session: session.clone(),
            completeness: if missing.is_empty() {
                Completeness::Full
            } else {
                Completeness::Partial
            },
            missing: missing.iter().map(|s| s.to_string()).collect(),
            node_name: self.node.clone(),
            attributed_late_ms: None,
        };
        self.insert(
            pid,
            Entry {
                ppid,
                exe,
                exe_id: info.exe_id,
                runtime_init: reexec,
                placement,
                context,
                session: session.clone(),
                facts,
            },
        );
        (Some(ev), classified.copy_up)
    }

    /// Reads every process now running, parents before children, and returns their events.
    pub fn scan(&mut self) -> Vec<Observed> {
        let mut infos: Vec<(ProcInfo, Option<std::fs::File>)> = self
            .reader
            .pids()
            .into_iter()
            .map(|p| {
                let mut info = self.reader.read(p);
                let exe = self.reader.open_exe(p);
                self.reader.resolve_exe(&mut info, exe.as_ref());
                (info, exe)
            })
            .collect();
        // Parents first, so children find their parent's container and context.
        infos.sort_by_key(|(i, _)| (i.start_time, i.pid));
        infos
            .into_iter()
            .filter_map(|(i, exe)| {
                let exe_key = i.exe_opened[0].map(|o| o.key).filter(|_| exe.is_some());
                let alive = i.seen_alive();
                match self.event_with(i, None, alive) {
                    (Some(event), copy_up) => Some(Observed {
                        event,
                        exe,
                        exe_key,
                        copy_up,
                    }),
                    (None, _) => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exe_link_is_named_by_its_last_component() {
        assert_eq!(link_file_name("/bin/gone (deleted)"), "gone");
        assert_eq!(link_file_name("/memfd:payload (deleted)"), "memfd:payload");
        assert_eq!(link_file_name("/usr/bin/python3.11"), "python3.11");
        // A name that merely contains the marker elsewhere keeps it.
        assert_eq!(link_file_name("/tmp/x (deleted) y"), "x (deleted) y");
    }

    /// A process read from `/proc` as the tracker would see it: in `cgroup`, running the file
    /// (device, inode) `id` at `exe`, with the command name `comm`.
    fn proc(pid: u32, ppid: u32, exe: &str, id: (u64, u64), comm: &str, cgroup: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: Some(ppid),
            comm: Some(comm.into()),
            exe: Some(exe.into()),
            exe_link: Some(exe.into()),
            exe_memfd: exe.starts_with("/memfd:"),
            exe_id: Some(id),
            argv: Some(vec![exe.into()]),
            uid: Some(0),
            gid: Some(0),
            start_time: Some(std::time::SystemTime::now()),
            cgroup: Some(cgroup.into()),
            ..Default::default()
        }
    }

    /// A host process starting processes into a container whose cgroup path names no runtime
    /// is looked at once: while it lives and runs the same file, its later children are not
    /// read again (two `/proc` reads per exec otherwise). A parent that exec'd another file
    /// (here the shim itself) is looked at again, and so is another parent.
    #[test]
    fn a_parent_found_not_to_be_a_shim_is_not_read_again_while_it_runs_the_same_file() {
        const HOST: &str = "0::/system.slice/x.service\n";
        let ctr = format!(
            "0::/kubepods/besteffort/pod3693a8ec-0000-4000-8000-000000000002/{}\n",
            "b".repeat(64)
        );
        let root = tempfile::tempdir().unwrap();
        let at = |pid: u32| root.path().join(pid.to_string());
        // `/proc/<pid>/stat` of a child of 5, and 5's executable link.
        let child_of_5 = |pid: u32| {
            std::fs::create_dir_all(at(pid)).unwrap();
            let stat = format!("{pid} (sh) S 5 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 1000 0");
            std::fs::write(at(pid).join("stat"), stat).unwrap();
        };
        let exe_of_5 = |target: &str| {
            std::fs::create_dir_all(at(5)).unwrap();
            let _ = std::fs::remove_file(at(5).join("exe"));
            std::os::unix::fs::symlink(target, at(5).join("exe")).unwrap();
        };
        let mut t = Tracker::new(ProcReader::new(root.path()), "n1", "c");
        let started = std::time::SystemTime::now();
        let parent = |exe: &str, id: (u64, u64)| ProcInfo {
            start_time: Some(started),
            ..proc(5, 1, exe, id, "p", HOST)
        };
        let runtime = |t: &mut Tracker, pid: u32| {
            t.on_fork(5, pid, None);
            let ev = t
                .event_from(proc(pid, 5, "/bin/sh", (7, 1), "sh", &ctr))
                .unwrap();
            // Started into the container from outside it.
            assert_ne!(ev.context, ExecContext::Descendant);
            ev.container.unwrap().runtime
        };
        assert!(t.event_from(parent("/usr/bin/bash", (1, 50))).is_some());
        exe_of_5("/usr/bin/bash");
        child_of_5(6);
        assert_eq!(runtime(&mut t, 6), None, "bash is no shim");
        // Were 5 read again, it would now read as a shim: it is not.
        exe_of_5("/usr/bin/containerd-shim-runc-v2");
        child_of_5(7);
        assert_eq!(runtime(&mut t, 7), None, "not read again");
        // 5 execs another file (same pid, same start): read again.
        assert!(t
            .event_from(parent("/usr/bin/containerd-shim-runc-v2", (1, 60)))
            .is_some());
        child_of_5(8);
        assert_eq!(runtime(&mut t, 8), Some(ContainerRuntime::Containerd));
    }

    #[test]
    fn the_runtime_init_is_known_by_its_file_and_its_parent_never_by_its_name() {
        const HOST: &str = "0::/system.slice/containerd.service\n";
        let ctr = format!(
            "0::/kubepods/besteffort/pod3693a8ec-0000-4000-8000-000000000001/{}\n",
            "a".repeat(64)
        );
        let proc_root = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(ProcReader::new(proc_root.path()), "n1", "c");
        let metrics = crate::metrics::Metrics::default();
        t.set_metrics(&metrics);
        let runc = (1, 100);
        let sh = (7, 1);
        let ev = |t: &mut Tracker, info: ProcInfo| t.event_from(info);
        // runc (host) starts `runc init`: /proc/self/exe, the very file it runs, then its memfd
        // clone. Neither is the container's.
        assert!(ev(&mut t, proc(10, 1, "/usr/sbin/runc", runc, "runc", HOST)).is_some());
        t.on_fork(10, 11, None);
        assert!(ev(&mut t, proc(11, 10, "/usr/sbin/runc", runc, "exe", &ctr)).is_none());
        let clone = "/memfd:runc_cloned:/proc/self/exe";
        assert!(ev(&mut t, proc(11, 10, clone, (0, 9), "runc:[0:PARENT]", &ctr)).is_none());
        assert_eq!(metrics.runtime_init_execs.get(), 2);
        // The init execs the entrypoint: the container's first process.
        t.on_fork(10, 12, None);
        let entry = ev(&mut t, proc(12, 10, "/bin/sh", sh, "sh", &ctr)).unwrap();
        assert_eq!(entry.context, ExecContext::Entrypoint);
        // Inside the container, a name like the runtime's is just a name.
        t.on_fork(12, 13, None);
        let named = ev(
            &mut t,
            proc(13, 12, "/bin/runc:[x", (7, 2), "runc:[x", &ctr),
        )
        .unwrap();
        assert_eq!(
            (named.exe_path.as_str(), named.context),
            ("/bin/runc:[x", ExecContext::Descendant)
        );
        // A shell re-executing its own file, then a memfd: its parent is in the container.
        t.on_fork(12, 14, None);
        assert!(ev(&mut t, proc(14, 12, "/bin/sh", sh, "sh", &ctr)).is_some());
        let payload = ev(&mut t, proc(14, 12, clone, (0, 10), "runc:[2:INIT]", &ctr)).unwrap();
        assert!(payload.exe_memfd);
        // On the host, the same moves are reported too: only a container's runtime init is
        // left out.
        assert!(ev(&mut t, proc(20, 1, "/bin/bash", (1, 200), "bash", HOST)).is_some());
        t.on_fork(20, 21, None);
        assert!(ev(&mut t, proc(21, 20, "/bin/bash", (1, 200), "bash", HOST)).is_some());
        assert!(ev(&mut t, proc(21, 20, "/memfd:x", (0, 11), "x", HOST)).is_some());
        assert_eq!(metrics.runtime_init_execs.get(), 2);
        // runc's detached bind of itself, read while still outside the container: the kernel
        // prints "/", and the file is its parent's, by device and inode.
        t.on_fork(10, 30, None);
        let bind = ev(&mut t, proc(30, 10, "/", runc, "runc:[0:PARENT]", HOST)).unwrap();
        assert_eq!(bind.exe_path, "/usr/sbin/runc");
        assert!(bind.missing.is_empty(), "{:?}", bind.missing);
        // Another file the kernel cannot name stays unknown.
        t.on_fork(10, 31, None);
        let other = ev(&mut t, proc(31, 10, "/", (1, 101), "x", HOST)).unwrap();
        assert_eq!(other.exe_path, UNREADABLE_EXE);
    }

    /// A container's processes read again (the rescan after a loss reads every live process)
    /// keep how they were started: an entrypoint with children stays the entrypoint, and what
    /// it starts afterwards its descendants, not an exec session (a soak under load saw 1,304
    /// false exec-session events after one ring-buffer loss); an exec session stays that
    /// session. A new process reusing a pid is judged afresh.
    #[test]
    fn a_rescan_keeps_how_each_process_was_started() {
        let ctr = format!(
            "0::/kubepods/besteffort/pod3693a8ec-0000-4000-8000-000000000002/{}\n",
            "b".repeat(64)
        );
        let host = "0::/system.slice/containerd.service\n";
        let proc_root = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(ProcReader::new(proc_root.path()), "n1", "c");
        let ev = |t: &mut Tracker, info: ProcInfo| t.event_from(info).unwrap();
        ev(&mut t, proc(10, 1, "/usr/bin/shim", (1, 1), "shim", host));
        t.on_fork(10, 12, None);
        let entry_info = proc(12, 10, "/bin/sh", (7, 1), "sh", &ctr);
        assert_eq!(
            ev(&mut t, entry_info.clone()).context,
            ExecContext::Entrypoint
        );
        t.on_fork(12, 13, None);
        let child = proc(13, 12, "/bin/sleep", (7, 2), "sleep", &ctr);
        assert_eq!(ev(&mut t, child.clone()).context, ExecContext::Descendant);
        t.on_fork(10, 14, None);
        let session_info = proc(14, 10, "/bin/sh", (7, 1), "sh", &ctr);
        let session = ev(&mut t, session_info.clone());
        assert_eq!(session.context, ExecContext::ExecSession);
        // The rescan: every live process read again, as it is.
        for info in [entry_info.clone(), child, session_info] {
            let again = ev(&mut t, info);
            let want = match again.pid {
                12 => ExecContext::Entrypoint,
                13 => ExecContext::Descendant,
                _ => ExecContext::ExecSession,
            };
            assert_eq!(again.context, want, "pid {}", again.pid);
            if again.pid == 14 {
                assert_eq!(again.exec_session, session.exec_session);
            }
        }
        t.on_fork(12, 15, None);
        let later = ev(&mut t, proc(15, 12, "/bin/true", (7, 3), "true", &ctr));
        assert_eq!(later.context, ExecContext::Descendant);
        // A new process with the entrypoint's pid (a later start time) is judged afresh.
        let mut reused = entry_info;
        reused.start_time = reused
            .start_time
            .map(|s| s + std::time::Duration::from_secs(9));
        assert_eq!(ev(&mut t, reused).context, ExecContext::ExecSession);
    }

    /// A parent seen on the host joins a container's cgroup, then forks a child that is gone
    /// before its own cgroup can be read (a proc-shaped directory plays the kernel's part,
    /// so the race is decided, not hoped for). The child takes the parent's cgroup *now*,
    /// marked inherited, and the parent's later children follow.
    #[test]
    fn a_child_gone_early_takes_its_parents_current_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("100");
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::symlink("/bin/sh", p.join("exe")).unwrap();
        std::fs::write(p.join("cmdline"), "sh\0").unwrap();
        std::fs::write(p.join("cgroup"), "0::/system.slice/ssh.service\n").unwrap();
        let mut t = Tracker::new(ProcReader::new(dir.path()), "n1", "c");
        let seen = t.scan();
        assert!(seen[0].event.container.is_none());
        t.on_fork(100, 101, None);
        let id = "a".repeat(64);
        let uid = "3f0c1e2a-1b2c-4d5e-8f90-123456789abc";
        std::fs::write(
            p.join("cgroup"),
            format!("0::/kubepods/besteffort/pod{uid}/{id}\n"),
        )
        .unwrap();
        let ev = t.on_exec(101).expect("event").event;
        let c = ev.container.as_ref().expect("attributed to the container");
        assert_eq!(c.container_id, id);
        assert_eq!(c.pod_uid.as_deref(), Some(uid));
        assert!(
            ev.missing.iter().any(|m| m == "inherited:container"),
            "{ev:?}"
        );
        assert_eq!(ev.completeness, Completeness::Partial);
        // The parent's entry moved too: its next child starts in the container.
        t.on_fork(100, 102, None);
        std::fs::remove_dir_all(&p).unwrap();
        let ev = t.on_exec(102).expect("event").event;
        assert_eq!(ev.container.map(|c| c.container_id), Some(id));
    }

    /// The open of `/proc/<pid>/exe` is skipped only when reading its link found the process
    /// gone (`ENOENT`), never when the link merely cannot be printed: a binary at a path
    /// longer than PATH_MAX (the kernel refuses its link with `ENAMETOOLONG`) is still opened
    /// for its hash. Once the process is gone, nothing is opened.
    /// The kernel's record of the exec names the executable; `/proc`, read after it, counts
    /// only when it shows that very link and file. Here a live `sleep` stands for `/proc`'s
    /// view, and the kernel's record says what was exec'd.
    #[test]
    fn the_kernels_path_stands_over_a_later_read_of_a_same_named_file() {
        use std::os::unix::fs::MetadataExt;
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let exe = std::fs::canonicalize("/bin/sleep").unwrap();
        let exe = exe.to_str().unwrap().to_string();
        let meta = std::fs::metadata(&exe).unwrap();
        let facts = |path: &str, ino: u64| AtExec {
            ppid: std::process::id(),
            uid: 0,
            gid: 0,
            start_boottime_ns: 0,
            comm: "sleep".into(),
            argv: vec!["sleep".into(), "30".into()],
            argv_truncated: false,
            exe_id: (meta.dev(), ino),
            exe_nlink: 1,
            exe_name: "sleep".into(),
            exe_on_overlay: false,
            exe_path: Some(PathAtExec {
                path: path.into(),
                deleted: false,
                memfd: false,
            }),
            cgroup: None,
            mnt_ns: None,
        };
        let mut t = Tracker::new(ProcReader::new("/proc"), "n1", "c");
        // `/proc` shows this exec's image: its opened file is kept for the hash.
        let early = t.with_exec_facts(t.read_early_with(pid, false), facts(&exe, meta.ino()));
        assert!(
            early.info.seen_alive() && early.exe.is_some(),
            "{:?}",
            early.info
        );
        let ob = t.on_exec_read(early).expect("an event");
        assert_eq!(ob.event.exe_path, exe);
        assert!(ob.exe.is_some());
        // The kernel exec'd a same-named file elsewhere, and the process exec'd `sleep` before
        // the read: the kernel's path, and nothing of the file `/proc` showed.
        let early = t.with_exec_facts(
            t.read_early_with(pid, false),
            facts("/dev/shm/x/sleep", meta.ino() + 1),
        );
        assert!(!early.info.seen_alive() && early.exe.is_none());
        let ob = t.on_exec_read(early).expect("an event");
        assert_eq!(ob.event.exe_path, "/dev/shm/x/sleep");
        assert!(ob.exe.is_none(), "never a later program's file to hash");
        assert!(!ob.event.missing.iter().any(|m| m == "exe_path"));
        // The same link, but another file than the one exec'd: not this exec's either.
        let early = t.with_exec_facts(t.read_early_with(pid, false), facts(&exe, meta.ino() + 1));
        assert!(!early.info.seen_alive() && early.exe.is_none());
        // No path recorded whole: the link read later names it, and the event says so.
        let mut f = facts(&exe, meta.ino());
        f.exe_path = None;
        let early = t.with_exec_facts(t.read_early_with(pid, false), f);
        let ob = t.on_exec_read(early).expect("an event");
        assert_eq!(ob.event.exe_path, exe);
        assert!(ob.event.missing.iter().any(|m| m == MISSING_EXE_READ_LATE));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn an_executable_whose_link_cannot_be_printed_is_still_opened() {
        use nix::fcntl::{open, openat, OFlag};
        use nix::sys::stat::{mkdirat, Mode};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        // Inherited by the child (no O_CLOEXEC), which execs through /proc/self/fd/<fd>.
        let mut fd = open(dir.path(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let part = "d".repeat(240);
        for _ in 0..20 {
            mkdirat(&fd, part.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
            fd = openat(&fd, part.as_str(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        }
        {
            let w = openat(
                &fd,
                "sleep",
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            let mut w = std::fs::File::from(w);
            w.write_all(&std::fs::read("/bin/sleep").unwrap()).unwrap();
        }
        let program = format!("/proc/self/fd/{}/sleep", fd.as_raw_fd());
        // Another test's fork may briefly hold the written file open (ETXTBSY).
        let mut child = (0..50)
            .find_map(
                |_| match std::process::Command::new(&program).arg("30").spawn() {
                    Ok(c) => Some(c),
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    Err(e) => panic!("spawn {program}: {e}"),
                },
            )
            .expect("spawned");
        let pid = child.id();
        let t = Tracker::new(ProcReader::new("/proc"), "n1", "c");
        let early = t.read_early_with(pid, false);
        assert!(early.info.exe_link.is_none(), "{:?}", early.info);
        assert!(!early.info.exe_link_gone, "a live process is not gone");
        assert!(early.exe.is_some(), "opened though its link cannot be read");
        assert!(early.info.exe_opened[0].is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        let early = t.read_early_with(pid, false);
        assert!(early.info.exe_link_gone && early.exe.is_none());
    }

    #[test]
    fn scanning_this_host_attributes_this_process() {
        let mut t = Tracker::new(ProcReader::new("/proc"), "n1", "c");
        let events = t.scan();
        let me = events
            .iter()
            .find(|o| o.event.pid == std::process::id())
            .map(|o| &o.event)
            .expect("own process in scan");
        assert!(!me.exe_path.is_empty());
        assert_eq!(me.node_name, "n1");
        assert_eq!(me.workload.cluster, "c");
        assert!(t.len() >= events.len());
    }
}
