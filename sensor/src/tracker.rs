//! The process table: turns kernel events plus `/proc` reads into attributed
//! [`ProcessEvent`]s.
//!
//! Fork events give every new process its parent's container and context before it can be
//! read, so a child that exits before `/proc` is read still inherits the right container; the
//! fields it inherited are listed as missing. Exec events read `/proc` at once.

use crate::cgroup::{self, ContainerRef, Placement};
use crate::procfs::{ProcInfo, ProcReader};
use procguard_core::process::{Ancestor, UNREADABLE_EXE};
use procguard_core::{
    Completeness, ContainerInfo, ExecContext, ProcessEvent, WorkloadIdentity, WorkloadKind,
};
use std::collections::HashMap;

/// Most processes tracked; past it the oldest-inserted entries of exited processes are
/// forgotten first (a fork bomb cannot grow the table without bound).
pub const MAX_TRACKED: usize = 131_072;
/// Ancestors recorded per event.
pub const MAX_ANCESTORS: usize = 5;

#[derive(Debug, Clone)]
struct Entry {
    ppid: u32,
    exe: String,
    placement: Placement,
    context: ExecContext,
}

/// Writable locations: an executable here is suspicious by itself.
const WRITABLE_DIRS: &[&str] = &["/tmp/", "/dev/shm/", "/var/tmp/", "/run/shm/"];

/// Interpreters whose first non-option argument is the script that matters.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "python", "python2", "python3", "perl", "ruby",
    "node", "php", "lua",
];

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// For an interpreter, the script it runs: the first argument that is not an option, unless
/// the code comes inline (`-c`, `-e`).
pub fn script_of(exe: &str, argv: &[String]) -> Option<String> {
    let name = basename(exe);
    let is_interp = INTERPRETERS.iter().any(|i| {
        name == *i
            || name
                .strip_prefix(i)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    });
    // A multi-call binary (busybox) run under another name is that applet, not the shell.
    let invoked = argv.first().map(|a| basename(a)).unwrap_or(name);
    let invoked_interp = INTERPRETERS.iter().any(|i| {
        invoked == *i
            || invoked
                .strip_prefix(i)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    });
    if !is_interp || !(invoked == name || invoked_interp) {
        return None;
    }
    for a in argv.iter().skip(1) {
        if a == "-c" || a == "-e" || a == "-m" {
            return None;
        }
        if a.starts_with('-') {
            continue;
        }
        return Some(a.clone());
    }
    None
}

/// A process event with its executable held open, so it can be hashed after the process is
/// gone.
#[derive(Debug)]
pub struct Observed {
    /// The event, without its hash yet.
    pub event: ProcessEvent,
    /// The executable, when it could be opened.
    pub exe: Option<std::fs::File>,
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
}

impl Tracker {
    /// A tracker over `reader`.
    pub fn new(reader: ProcReader, node: &str, cluster: &str) -> Self {
        Self {
            reader,
            table: HashMap::new(),
            node: node.to_string(),
            cluster: cluster.to_string(),
            live_in_container: HashMap::new(),
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

    fn container_of(p: &Placement) -> Option<&ContainerRef> {
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
            *self.live_in_container.entry(c.id.clone()).or_default() += 1;
        }
        if let Some(old) = self.table.insert(pid, e) {
            if let Some(c) = Self::container_of(&old.placement) {
                self.dec_container(&c.id.clone());
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
                self.dec_container(&c.id.clone());
            }
        }
    }

    /// A new process: it inherits its parent's placement and context until it execs.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let inherited = self.table.get(&parent).cloned().map(|p| Entry {
            ppid: parent,
            exe: p.exe,
            placement: p.placement,
            context: match p.context {
                ExecContext::Entrypoint => ExecContext::Descendant,
                c => c,
            },
        });
        if let Some(e) = inherited {
            self.insert(child, e);
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
                    None => WorkloadIdentity::new(
                        &self.cluster,
                        "",
                        WorkloadKind::Container,
                        format!(
                            "{}-{short}",
                            c.runtime.map(|r| r.as_str()).unwrap_or("container")
                        ),
                        "",
                    ),
                }
            }
            Placement::Host { unit } => WorkloadIdentity::new(
                &self.cluster,
                "",
                WorkloadKind::Host,
                unit.clone().unwrap_or_else(|| "host".into()),
                "",
            ),
            Placement::Unattributed => {
                WorkloadIdentity::new(&self.cluster, "", WorkloadKind::Host, "unattributed", "")
            }
        }
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
        let exe = self.reader.open_exe(pid);
        let info = self.reader.read(pid);
        self.event_from(info).map(|event| Observed { event, exe })
    }

    /// Builds the event for an already-read process (without its hash).
    pub fn event_from(&mut self, info: ProcInfo) -> Option<ProcessEvent> {
        let pid = info.pid;
        let known = self.table.get(&pid).cloned();
        let mut missing = Vec::new();
        // Kernel threads have no exe and an empty cmdline; they are not workload processes.
        if info.exe.is_none() && info.argv.as_ref().is_some_and(|a| a.is_empty()) {
            return None;
        }
        let placement = match info.cgroup.as_deref().map(cgroup::parse) {
            Some(p) => p,
            None => {
                missing.push("container");
                known
                    .as_ref()
                    .map(|k| k.placement.clone())
                    .unwrap_or(Placement::Unattributed)
            }
        };
        let ppid = info
            .ppid
            .or(known.as_ref().map(|k| k.ppid))
            .unwrap_or_else(|| {
                missing.push("ppid");
                0
            });
        // The container runtime's own init process (runc re-executing itself before it execs
        // the entrypoint) is not a workload process.
        if info
            .comm
            .as_deref()
            .is_some_and(|c| c.starts_with("runc:["))
        {
            return None;
        }
        let exe = match &info.exe {
            // "/" is what the kernel prints for an image unreachable from the process's root.
            Some(e) if e != "/" && !e.is_empty() => e.clone(),
            _ => {
                // Never guess (the image before the exec would be a lie an attacker could hide
                // behind): the event says the executable is unknown, and learning holds it for
                // review.
                missing.push("exe_path");
                UNREADABLE_EXE.to_string()
            }
        };
        let parent = self.table.get(&ppid);
        let my_container = Self::container_of(&placement).map(|c| c.id.clone());
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
        };
        let argv = info.argv.clone().unwrap_or_else(|| {
            missing.push("argv");
            Vec::new()
        });
        let script = script_of(&exe, &argv);
        let in_writable = |p: &str| WRITABLE_DIRS.iter().any(|d| p.starts_with(d));
        let writable =
            info.exe_memfd || in_writable(&exe) || script.as_deref().is_some_and(in_writable);
        let container = Self::container_of(&placement).map(|c| ContainerInfo {
            container_id: c.id.clone(),
            runtime: c.runtime,
            pod_uid: c.pod_uid.clone(),
            pod_name: None,
            qos: c.qos,
            image: None,
            image_digest: None,
        });
        let ev = ProcessEvent {
            pid,
            ppid,
            ancestors: self.ancestors(ppid),
            start_time: info.start_time,
            uid: info.uid.unwrap_or(u32::MAX),
            gid: info.gid.unwrap_or(u32::MAX),
            comm: info.comm.clone().unwrap_or_default(),
            script_path: script,
            exe_path: exe.clone(),
            argv,
            argv_truncated: info.argv_truncated,
            exe_sha256: None,
            exe_memfd: info.exe_memfd,
            exe_deleted: info.exe_deleted,
            exe_writable_location: writable,
            container,
            workload: self.identity(&placement),
            context,
            completeness: if missing.is_empty() {
                Completeness::Full
            } else {
                Completeness::Partial
            },
            missing: missing.iter().map(|s| s.to_string()).collect(),
            node_name: self.node.clone(),
        };
        self.insert(
            pid,
            Entry {
                ppid,
                exe,
                placement,
                context,
            },
        );
        Some(ev)
    }

    /// Reads every process now running, parents before children, and returns their events.
    pub fn scan(&mut self) -> Vec<Observed> {
        let mut infos: Vec<(ProcInfo, Option<std::fs::File>)> = self
            .reader
            .pids()
            .into_iter()
            .map(|p| (self.reader.read(p), self.reader.open_exe(p)))
            .collect();
        // Parents first, so children find their parent's container and context.
        infos.sort_by_key(|(i, _)| (i.start_time, i.pid));
        infos
            .into_iter()
            .filter_map(|(i, exe)| self.event_from(i).map(|event| Observed { event, exe }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn scripts_are_found_behind_interpreters() {
        assert_eq!(
            script_of(
                "/usr/bin/python3.11",
                &s(&["python3", "-u", "/app/main.py"])
            ),
            Some("/app/main.py".into())
        );
        assert_eq!(script_of("/bin/sh", &s(&["sh", "-c", "echo"])), None);
        assert_eq!(
            script_of("/bin/bash", &s(&["bash", "/entry.sh", "x"])),
            Some("/entry.sh".into())
        );
        assert_eq!(script_of("/usr/bin/id", &s(&["id", "x"])), None);
        assert_eq!(script_of("/usr/bin/shred", &s(&["shred", "x"])), None);
        // busybox: /bin/sh invoked as "sleep" is the sleep applet.
        assert_eq!(script_of("/bin/sh", &s(&["sleep", "0.2"])), None);
        assert_eq!(script_of("/bin/busybox", &s(&["sh", "/entry.sh"])), None);
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
