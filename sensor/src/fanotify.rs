//! fanotify `FAN_OPEN_EXEC`: the kernel's own identity of every executed file, for processes
//! that exit before `/proc/<pid>/exe` can be read.
//!
//! The proc connector says *that* a pid exec'd; by the time the sensor reads `/proc`, a
//! sub-millisecond process may be gone. fanotify reports the exec as the file is opened for
//! execution, with the pid and an open descriptor of the very file, so the executable is known
//! as fact even when `/proc` is empty. The descriptor's link in `/proc/self/fd` names the file
//! as seen from its own mount namespace's root when that root is not reachable from the
//! sensor's, which is how container runtimes mount a container's root (pivot_root): the path
//! is the one inside the container.
//!
//! Marks are per filesystem: one on the node's root (PID 1's, see [`ExecWatch::start`]), and
//! one on each container root (an overlayfs of its
//! own) as containers appear, found through `/proc/<pid>/root`. The first process of a new
//! container runs before its root can be marked; it lives long enough for `/proc`. (On kernels
//! where overlayfs opens its layers as backing files, the events arrive through the mark on
//! the layers' own filesystem, still naming the path inside the container.)
//!
//! The event also tells *where* a vanished process ran: the descriptor's mount is either the
//! container's root mount or one of the private layer mounts overlayfs keeps per overlay, so
//! it belongs to one container. Root mounts are learned when a container's root is marked,
//! layer mounts from processes whose cgroup was read; the sensor's own mount table (the host's
//! `/`, shared volumes) is never used this way. An exec session's process is forked outside
//! the container and joins its cgroup just before its exec, so without this its parent would
//! name the wrong place.
//!
//! This module uses `unsafe` (besides [`crate::netlink`]) because neither `libc` nor the
//! workspace's `nix` features offer a safe fanotify API: `fanotify_init`, `fanotify_mark`,
//! and `read` are called on a descriptor this module owns, with buffer lengths passed
//! alongside, and each event's descriptor is taken into an `OwnedFd` exactly once. Parsing the
//! event buffer is safe code over a byte slice that checks every length.
//!
//! A file of an overlay (a container's root) whose layers lie on a marked filesystem (the
//! node's root, as usual) yields two events per exec: first the layer's own file (overlayfs
//! opens it as a backing file; its mount is one of the overlay's private layer mounts), then
//! the overlay's file (its mount is the container's root mount). Both name the same path and
//! belong to one exec: they are taken together ([`Claimed::also`], [`ExecFile::also`]), so
//! the second is never mistaken for the next exec of the same pid, and both identities serve
//! to tell where the file lies ([`crate::origin`]).
//!
//! Each exec of a dynamically linked binary yields two events: the binary, then its loader
//! (`ld-linux*.so*`, `ld-musl*`), both opened for execution by the kernel. A loader, once
//! seen, gets an ignore mark, so the kernel stops reporting it; until then its event is
//! skipped when the binary's is there. For a live process the identity is matched to the exe
//! link by path ([`ExecWatch::claim_exec`]), and its descriptor and key stand in for opening
//! `/proc/<pid>/exe`. Events are kept per pid for [`KEEP_FOR`] and at most
//! [`MAX_ENTRIES`] in all; a kernel queue overflow is counted, never hidden.
//!
//! No thread reads the descriptor: the process thread drains it ([`ExecWatch::pump`]) when it
//! looks an exec up and on its idle tick (with eBPF, once per batch of exec records and again
//! only after a `/proc` read: [`ExecWatch::set_batched`]). The kernel queues the fanotify
//! event during the `execve`, before the proc connector's exec event, so it is there when it
//! is needed, and a reader thread would cost one wake-up per exec (the largest cost in
//! capture, measured in docs/BENCHMARKS.md).
#![allow(unsafe_code)]

use crate::metrics::Metrics;
use crate::procfs::{classify_exe, exe_facts, plain_link, ExeFacts, FileKey, Opened};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an exec identity waits to be claimed. The process thread normally claims it within
/// milliseconds; two seconds covers a backlog without letting a reused pid match an old entry
/// for long.
pub const KEEP_FOR: Duration = Duration::from_secs(2);
/// Most identities held, each with its open descriptor. The process thread claims an exec's
/// identities within microseconds of reading them, so only a backlog fills this; past the
/// bound the oldest are forgotten (and the processes they named fall back to inherited,
/// partial identities), so the sensor's descriptor count stays bounded.
pub const MAX_ENTRIES: usize = 1_024;
/// Files whose kind (loader or not) is remembered, so that a hot binary's path is not read
/// at every exec.
const MAX_KINDS: usize = 4_096;
/// Per pid: a process rarely execs more than a few times before the process thread catches up.
const PER_PID: usize = 8;
/// Loaders whose exec events the kernel is told to drop (an ignore mark on each; a node has
/// one loader per libc per image, a few dozen at most).
const MAX_IGNORED_LOADERS: usize = 256;

/// What is remembered of a file seen before, by (device, inode).
#[derive(Debug, Clone)]
struct Kind {
    loader: bool,
    /// Its path when first seen, if that was a plain path (not deleted, not a memfd): what the
    /// exe link of a process running it reads, as long as the file stays where it was.
    path: Option<Arc<str>>,
}

/// What a claim says of an exec already read from `/proc`.
#[derive(Debug)]
pub struct Claimed {
    /// (device, inode, ctime, size): the hash cache key.
    pub key: (u64, u64, i64, u64),
    /// The mount the file was executed from.
    pub mount: Option<u64>,
    /// The same exec's other view of the file, when the kernel reported two (a layer's file,
    /// then the overlay's).
    pub also: Option<Opened>,
    /// The executed file, open: it can be hashed even after the process is gone.
    pub file: Option<std::fs::File>,
}

/// The executable of one exec, from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFile {
    /// Path as seen from the process's mount namespace (the deleted marker stripped only
    /// where the file's facts say it was unlinked, see [`classify_exe`]).
    pub path: String,
    /// The file was deleted.
    pub deleted: bool,
    /// The file is a memfd.
    pub memfd: bool,
    /// The link ends in the deleted marker and the file still has links: whether it was
    /// unlinked or is named so cannot be told without its process (gone).
    pub deleted_unknown: bool,
    /// (device, inode, ctime, size): the hash cache key.
    pub key: (u64, u64, i64, u64),
    /// The mount the file was executed from (a container's root mount for its files).
    pub mount: Option<u64>,
    /// The same exec's other view of the file, when the kernel reported two.
    pub also: Option<Opened>,
    at: Instant,
}

/// The ID of the mount `path` (relative to `dirfd`, or `dirfd` itself when `path` is empty)
/// is on. Mount IDs are unique across mount namespaces, so a container's root mount is told
/// apart from every other even when the files underneath share one filesystem.
/// Identities hold descriptors until claimed ([`MAX_ENTRIES`]): the soft limit on open files
/// (often 1,024) is raised towards the hard one, up to 65,536. A refusal only leaves the limit
/// as it was; the bound on held identities still applies.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2)/setrlimit(2) with a pointer to an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = lim.rlim_max.min(65_536);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The hash cache key and mount ID of an open file, in one `statx`: what [`stat_file`] says.
fn file_stat(fd: &impl AsRawFd) -> Option<(FileKey, Option<u64>)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the empty path is NUL-terminated and static; `stx` is a writable statx buffer
    // the kernel fills; it is read only after a successful return.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx succeeded, so the buffer is initialised (it was zeroed before anyway).
    let stx = unsafe { stx.assume_init() };
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    // The change time, not the modification time: a process can set the latter back
    // (`touch -r`) after rewriting a file in place, never the former.
    let ctime =
        stx.stx_ctime.tv_sec.saturating_mul(1_000_000_000) + i64::from(stx.stx_ctime.tv_nsec);
    let key = (dev, stx.stx_ino, ctime, stx.stx_size);
    let mount = (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id);
    Some((key, mount))
}

/// The hash cache key (device, inode, ctime in nanoseconds, size) and mount ID of an open
/// file, in one `statx` (the mount ID where the kernel reports it, 5.8 and later). Safe to
/// call from anywhere: it lives here only because `statx` with `STATX_MNT_ID` has no safe
/// wrapper in `libc` or `nix`.
pub fn stat_file(f: &std::fs::File) -> Option<(FileKey, Option<u64>)> {
    file_stat(f)
}

fn mount_id(dirfd: libc::c_int, path: &std::ffi::CStr) -> Option<u64> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let flags = if path.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: `path` is NUL-terminated and outlives the call; `stx` is a writable statx buffer
    // the kernel fills; it is read only after a successful return.
    let rc = unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx succeeded, so the buffer is initialised (it was zeroed before anyway).
    let stx = unsafe { stx.assume_init() };
    (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// (mount ID, superblock device) of every line of a `mountinfo`.
pub fn parse_mount_devs(mountinfo: &str) -> Vec<(u64, u64)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id: u64 = f.next()?.parse().ok()?;
            let (major, minor) = f.nth(1)?.split_once(':')?;
            Some((id, libc::makedev(major.parse().ok()?, minor.parse().ok()?)))
        })
        .collect()
}

/// What a refusal of [`ExecWatch::start`] means, for the log line that says what to grant.
pub fn refusal_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "missing CAP_SYS_ADMIN: add it to the sensor's capabilities"
        }
        Some(libc::ENOSYS) => "the kernel was built without fanotify (CONFIG_FANOTIFY)",
        Some(libc::EINVAL) => {
            "the kernel lacks FAN_OPEN_EXEC or filesystem marks (needs Linux 5.0+)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "too many open files or fanotify groups: raise the limits"
        }
        _ => "see the error",
    }
}

/// Whether `path` is a dynamic loader, opened for execution after the binary it loads.
pub fn is_loader(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("ld-linux")
        || base.starts_with("ld-musl")
        || base.starts_with("ld.so")
        || (base.starts_with("ld-") && base.contains(".so"))
}

/// Parses a buffer of `fanotify_event_metadata` records into (mask, fd, pid). Safe code: a
/// record that claims more bytes than remain ends parsing.
pub fn parse_events(buf: &[u8]) -> impl Iterator<Item = (u64, i32, i32)> + '_ {
    const META: usize = 24;
    let mut off = 0;
    std::iter::from_fn(move || {
        let rec = buf.get(off..).filter(|r| r.len() >= META)?;
        let event_len = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
        if event_len < META || event_len > rec.len() {
            return None;
        }
        let mask = u64::from_ne_bytes(rec[8..16].try_into().unwrap_or([0; 8]));
        let fd = i32::from_ne_bytes(rec[16..20].try_into().unwrap_or([0; 4]));
        let pid = i32::from_ne_bytes(rec[20..24].try_into().unwrap_or([0; 4]));
        off += event_len;
        Some((mask, fd, pid))
    })
}

/// One exec identity as read from the queue: the kernel's descriptor of the file, kept open
/// until the identity is claimed, with what one `statx` said of it. The path is read only
/// when it is needed (a process gone from `/proc`) or when the file was not seen before.
#[derive(Debug)]
struct Held {
    fd: Option<OwnedFd>,
    key: (u64, u64, i64, u64),
    mount: Option<u64>,
    loader: bool,
    /// The descriptor's link target, when it was read.
    link: Option<String>,
    /// The file's path as remembered from its first sighting ([`Kind::path`]).
    known_path: Option<Arc<str>>,
    /// The same exec's second view of the file, taken with it ([`Table::take_through`]).
    also: Option<Opened>,
    at: Instant,
}

impl Held {
    /// Whether the file is an interpreted script (starts with `#!`), read through the kernel's
    /// descriptor. Unreadable counts as a script: the caller then keeps to the older reading.
    fn is_script(&self) -> bool {
        let Some(fd) = &self.fd else {
            return true;
        };
        let mut head = [0u8; 2];
        match nix::sys::uio::pread(fd, &mut head, 0) {
            Ok(2) => head == *b"#!",
            _ => true,
        }
    }

    /// What a claim hands over: the key, the mount and the open file.
    fn into_claimed(self) -> Claimed {
        Claimed {
            key: self.key,
            mount: self.mount,
            also: self.also,
            file: self.fd.map(std::fs::File::from),
        }
    }

    /// The identity with its path (read now if it was not), and the open file.
    fn resolve(self) -> Option<(ExecFile, Option<std::fs::File>)> {
        let link = match self.link {
            Some(l) => l,
            None => link_of(self.fd.as_ref()?)?,
        };
        let file = self.fd.map(std::fs::File::from);
        // The process is gone: its root cannot be searched for the printed name, so only an
        // unlinked file (no link left) reads as deleted. A plain link (no deleted marker) is
        // the path as it is whatever the facts say, so they are read (a `statx` and an
        // `fstatfs`) only for a marked one.
        let facts = match plain_link(&link) {
            Some(_) => ExeFacts::default(),
            None => exe_facts(file.as_ref(), None, &link),
        };
        let name = classify_exe(&link, facts);
        Some((
            ExecFile {
                path: name.path,
                deleted: name.deleted,
                memfd: name.memfd,
                deleted_unknown: name.deleted_unknown,
                key: self.key,
                mount: self.mount,
                also: self.also,
                at: self.at,
            },
            file,
        ))
    }
}

/// Whether two identities are the same file, possibly reached through two mounts (inode,
/// change time and size equal; the device may differ).
fn same_file(a: &(u64, u64, i64, u64), b: &(u64, u64, i64, u64)) -> bool {
    (a.1, a.2, a.3) == (b.1, b.2, b.3)
}

fn link_of(fd: &OwnedFd) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

#[derive(Debug, Default)]
struct Table {
    by_pid: HashMap<u32, VecDeque<Held>>,
    total: usize,
    order: VecDeque<(Instant, u32)>,
    /// Execs whose file was opened through `/proc` before fanotify's record of them was
    /// read: (pid, (device, inode), when). That record, arriving later, is of an exec already
    /// reported, never an earlier exec still to name (see [`Table::superseded`]).
    read_first: VecDeque<(u32, (u64, u64), Instant)>,
}

impl Table {
    /// `pid`'s exec of the file `id` (device, inode) was read through `/proc`: its queued
    /// identity, if any, is dropped; one still to arrive will be.
    fn read_from_proc(&mut self, pid: u32, id: (u64, u64)) {
        if let Some(q) = self.by_pid.get_mut(&pid) {
            if let Some(i) = q.iter().position(|f| !f.loader && (f.key.0, f.key.1) == id) {
                let key = q[i].key;
                q.remove(i);
                self.total -= 1;
                while q
                    .get(i)
                    .is_some_and(|n| n.loader || same_file(&n.key, &key))
                {
                    q.remove(i);
                    self.total -= 1;
                }
                if q.is_empty() {
                    self.by_pid.remove(&pid);
                }
                return;
            }
        }
        let now = Instant::now();
        while self
            .read_first
            .front()
            .is_some_and(|(_, _, at)| now.duration_since(*at) >= KEEP_FOR)
            || self.read_first.len() >= MAX_ENTRIES
        {
            self.read_first.pop_front();
        }
        self.read_first.push_back((pid, id, now));
    }

    fn insert(&mut self, pid: u32, f: Held) {
        if !f.loader {
            if let Some(i) = self
                .read_first
                .iter()
                .position(|(p, id, _)| *p == pid && *id == (f.key.0, f.key.1))
            {
                self.read_first.remove(i);
                return;
            }
        }
        let q = self.by_pid.entry(pid).or_default();
        if q.len() >= PER_PID {
            q.pop_front();
            self.total -= 1;
        }
        self.order.push_back((f.at, pid));
        q.push_back(f);
        self.total += 1;
        self.prune(Instant::now());
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, pid)) = self.order.front() {
            if now.duration_since(at) < KEEP_FOR && self.total <= MAX_ENTRIES {
                break;
            }
            self.order.pop_front();
            if let Some(q) = self.by_pid.get_mut(&pid) {
                while q.front().is_some_and(|f| f.at <= at) {
                    q.pop_front();
                    self.total -= 1;
                }
                if q.is_empty() {
                    self.by_pid.remove(&pid);
                }
            }
        }
    }

    /// The exec of `pid` whose file is known to be at `exe` (the exe link just read, a plain
    /// path), with every identity queued before it (an interpreted script's own file comes
    /// first) and the loader right after it. `None`, taking nothing, when no queued file is
    /// known to be at that path.
    fn take_matching(&mut self, pid: u32, exe: &str) -> Option<Held> {
        let idx = self
            .by_pid
            .get(&pid)?
            .iter()
            .position(|f| !f.loader && f.known_path.as_deref() == Some(exe))?;
        self.take_through(pid, idx)
    }

    /// Whether the exe link of `pid` reading `exe` belongs to a later exec than the oldest one
    /// queued: an identity known to be at `exe` is queued, and before it a binary (neither a
    /// loader nor an interpreted script, whose own file the kernel opens before its
    /// interpreter's in one exec). The process then exec'd again before `/proc` was read
    /// (`sh -c 'cmd'` runs `cmd` in place within microseconds), and what `/proc` shows is the
    /// later program, not this exec's.
    fn superseded(&self, pid: u32, exe: &str) -> bool {
        let Some(q) = self.by_pid.get(&pid) else {
            return false;
        };
        let Some(idx) = q
            .iter()
            .position(|f| !f.loader && f.known_path.as_deref() == Some(exe))
        else {
            return false;
        };
        let this = &q[idx].key;
        q.iter()
            .take(idx)
            .any(|f| !f.loader && !same_file(&f.key, this) && !f.is_script())
    }

    /// The binary of the oldest unclaimed exec of `pid`, skipping its loader.
    fn take(&mut self, pid: u32) -> Option<Held> {
        let idx = self
            .by_pid
            .get(&pid)?
            .iter()
            .position(|f| !f.loader)
            .unwrap_or(0);
        self.take_through(pid, idx)
    }

    /// Takes `pid`'s identities up to and including the one at `idx` (returned), the same
    /// exec's other view of that file right after it (same path, another mount: a layer's
    /// file, then the overlay's), and the loader after them when it is a binary: they belong
    /// to the same exec.
    fn take_through(&mut self, pid: u32, idx: usize) -> Option<Held> {
        let q = self.by_pid.get_mut(&pid)?;
        let mut found = None;
        for _ in 0..=idx {
            found = q.pop_front();
            self.total -= 1;
        }
        // The loader that followed this binary belongs to the same exec, and so does the same
        // file reported again through another mount (one exec of a container's file can be
        // seen on the filesystem beneath its overlay, then on the overlay: same inode, or, for
        // a file copied up, the same path). The first other view is kept ([`Held::also`]).
        if let Some(f) = found.as_mut().filter(|f| !f.loader) {
            while let Some(n) = q.front() {
                let other_mount = n.mount != f.mount || n.key.0 != f.key.0;
                let same_path = f.known_path.is_some() && n.known_path == f.known_path;
                let other_view =
                    !n.loader && other_mount && (same_file(&n.key, &f.key) || same_path);
                if !n.loader && !other_view {
                    break;
                }
                if other_view && f.also.is_none() {
                    f.also = Some(Opened {
                        key: n.key,
                        mount: n.mount,
                    });
                }
                q.pop_front();
                self.total -= 1;
            }
        }
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        found
    }
}

/// fanotify exec watch: the descriptor, the identities it produced, and the marked filesystems.
#[derive(Debug)]
pub struct ExecWatch {
    fd: OwnedFd,
    table: Mutex<Table>,
    /// Whether each file seen (device, inode) is a loader, and where it was.
    kinds: Mutex<HashMap<(u64, u64), Kind>>,
    /// Loaders the kernel no longer reports (ignore marks), by (device, inode).
    ignored: Mutex<HashSet<(u64, u64)>>,
    marked: Mutex<HashSet<u64>>,
    /// Container root filesystems (the overlay superblock's device) by device: a file executed
    /// through one of them was executed in that container. Bounded by [`MAX_ROOTS`].
    roots: Mutex<HashMap<u64, String>>,
    /// Container root mounts (in the containers' own mount namespaces) by mount ID.
    root_mounts: Mutex<HashMap<u64, String>>,
    /// Overlay layer mounts (private to one overlay) by mount ID, learned from processes whose
    /// cgroup was read; see [`ExecWatch::learn`].
    learned: Mutex<HashMap<u64, String>>,
    /// Superblock device of each mount ID, from `/proc/self/mountinfo`, re-read on a miss.
    mount_devs: Mutex<HashMap<u64, u64>>,
    /// Device of the sensor's own root, never a container's.
    host_dev: Option<u64>,
    /// Set by a caller that pumps once per batch of exec records ([`ExecWatch::set_batched`]):
    /// lookups then read the queue only when `/proc` was read since the last pump.
    batched: AtomicBool,
    /// The last pump emptied the queue and no exe link was read from `/proc` since
    /// ([`ExecWatch::proc_read`]).
    fresh: AtomicBool,
    /// The identities of one read, before they go into the table: kept between reads, so that
    /// a busy queue costs no allocation per read (growing a fresh vector was 4 % of the
    /// sensor's CPU at an exec storm, most of it glibc consolidating its free chunks).
    scratch: Mutex<Vec<(u32, Held)>>,
    metrics: Metrics,
}

/// Most container roots remembered (a node runs a few hundred containers at most); past it the
/// map starts over and roots are learned again as their containers exec.
const MAX_ROOTS: usize = 4_096;

impl ExecWatch {
    /// Opens fanotify and marks the filesystem of `/`. There is no reader thread: the process
    /// thread calls [`ExecWatch::pump`] before each lookup and on its idle tick. The kernel
    /// queues an exec's fanotify event before the proc connector's exec event, so a lookup made
    /// after the exec event always finds it, and a thread of its own would only cost a wake-up
    /// per exec.
    ///
    /// `node_root` is the node's root filesystem (`--host-root`: by default PID 1's root,
    /// reached through the proc root, in a DaemonSet `/host/proc/1/root`; the sensor's own `/`
    /// is then its image). Where it cannot be opened (some sandboxes refuse PID 1's root even
    /// to root), the sensor's own `/` is marked instead, with a warning: container roots are
    /// still marked as they appear, but host executables outside the sensor's mount namespace
    /// are not watched.
    pub fn start(metrics: Metrics, node_root: &Path) -> io::Result<Arc<Self>> {
        // SAFETY: plain syscall with constant flags; the result is checked before use.
        let raw = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        raise_open_file_limit();
        let host_root = match std::fs::metadata(node_root) {
            Ok(_) => node_root.to_path_buf(),
            Err(error) => {
                tracing::warn!(
                    message = "Cannot open the node's root filesystem; fanotify watches this mount namespace's root instead (host executables outside it are not named when /proc is too late).",
                    path = %node_root.display(),
                    %error,
                    hint = "grant CAP_SYS_PTRACE and point --host-root at <host proc>/1/root"
                );
                Path::new("/").to_path_buf()
            }
        };
        let watch = Arc::new(Self {
            fd,
            table: Mutex::default(),
            kinds: Mutex::default(),
            ignored: Mutex::default(),
            marked: Mutex::default(),
            roots: Mutex::default(),
            mount_devs: Mutex::default(),
            root_mounts: Mutex::default(),
            learned: Mutex::default(),
            host_dev: std::fs::metadata(&host_root).ok().map(|m| m.dev()),
            batched: AtomicBool::new(false),
            fresh: AtomicBool::new(false),
            scratch: Mutex::default(),
            metrics,
        });
        watch.mark(&host_root)?;
        Ok(watch)
    }

    /// Marks the filesystem holding `path` (once per device).
    pub fn mark(&self, path: &Path) -> io::Result<()> {
        let dev = std::fs::metadata(path)?.dev();
        let mut marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        if marked.contains(&dev) {
            return Ok(());
        }
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        marked.insert(dev);
        Ok(())
    }

    /// Marks the root filesystem of process `pid` of `container`, read under `proc_root`, and
    /// remembers that filesystem as that container's. Returns whether the process had a root
    /// filesystem of its own (not the host's).
    pub fn mark_root_of(&self, proc_root: &Path, pid: u32, container: &str) -> bool {
        let root = proc_root.join(pid.to_string()).join("root");
        // The root directory's device is the overlay superblock's, the same in every mount of
        // it (the runtime's `merged` mount and the container's own root).
        let Ok(dev) = std::fs::metadata(&root).map(|m| m.dev()) else {
            return false;
        };
        // A "container" sharing the host's root (no root filesystem of its own) says nothing.
        if Some(dev) == self.host_dev {
            return false;
        }
        if let Err(error) = self.mark(&root) {
            tracing::debug!(message = "Cannot mark a container root for fanotify.", pid, %error);
            return false;
        }
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if roots.len() >= MAX_ROOTS && !roots.contains_key(&dev) {
            roots.clear();
        }
        roots.insert(dev, container.to_string());
        drop(roots);
        // The container's own root mount (in its mount namespace) is reached by its mount ID.
        if let Some(m) = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
            .ok()
            .and_then(|c| mount_id(libc::AT_FDCWD, &c))
        {
            let mut rm = self.root_mounts.lock().unwrap_or_else(|e| e.into_inner());
            if rm.len() >= MAX_ROOTS {
                rm.clear();
            }
            rm.insert(m, container.to_string());
        }
        // Mount IDs are reused once unmounted: learn them afresh as containers come.
        self.mount_devs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::debug!(message = "Container root marked.", pid, dev, container);
        true
    }

    /// The container whose root filesystem holds the file executed through mount `mount`.
    /// The descriptor fanotify hands over may be the overlay's backing file (its own device is
    /// the lower filesystem's), but its mount is an overlay mount: that mount's superblock
    /// names the container.
    pub fn container_of_mount(&self, mount: u64) -> Option<String> {
        if let Some(c) = self
            .root_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mount)
        {
            return Some(c.clone());
        }
        if let Some(c) = self
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mount)
        {
            return Some(c.clone());
        }
        let dev = {
            let mut devs = self.mount_devs.lock().unwrap_or_else(|e| e.into_inner());
            if !devs.contains_key(&mount) {
                let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                if devs.len() > MAX_ROOTS {
                    devs.clear();
                }
                devs.extend(parse_mount_devs(&mi));
            }
            devs.get(&mount).copied()?
        };
        self.roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dev)
            .cloned()
    }

    /// Reads every exec identity the kernel has queued, without blocking.
    pub fn pump(&self) {
        self.read_queue();
        self.fresh.store(true, Ordering::Release);
    }

    /// Lookups no longer read the queue each time: the caller pumps after it took each batch
    /// of exec records (eBPF), and the kernel queued every fanotify event of those execs
    /// before their records (the file is opened for execution before the exec completes). A
    /// lookup after an exe link was read from `/proc` ([`ExecWatch::proc_read`]) still reads
    /// the queue first, so that a later exec `/proc` may show has its identity queued too
    /// ([`ExecWatch::take_superseded`]). Without this (the proc connector), every lookup reads
    /// the queue: its exec events are read one at a time, as they come.
    pub fn set_batched(&self) {
        self.batched.store(true, Ordering::Release);
    }

    /// An exe link was read from `/proc`: the next lookup reads the queue first.
    pub fn proc_read(&self) {
        self.fresh.store(false, Ordering::Release);
    }

    /// Reads the queue before a lookup, unless batched and nothing was read from `/proc`
    /// since the last pump (see [`ExecWatch::set_batched`]).
    fn refresh(&self) {
        if !(self.batched.load(Ordering::Acquire) && self.fresh.load(Ordering::Acquire)) {
            self.pump();
        }
    }

    fn read_queue(&self) {
        // Room for ~680 events per read.
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; the kernel writes at most that. The
            // descriptor is non-blocking: an empty queue returns EAGAIN.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let now = Instant::now();
            let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
            let got = &mut *scratch;
            for (mask, fd, pid) in parse_events(&buf[..n as usize]) {
                if mask & libc::FAN_Q_OVERFLOW != 0 {
                    self.metrics.fanotify_overflows.inc();
                    tracing::warn!(message = "fanotify queue overflow: exec identities lost.");
                }
                if fd < 0 {
                    continue;
                }
                // SAFETY: the kernel opened `fd` for this event and hands it to us alone.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                if mask & libc::FAN_OPEN_EXEC == 0 || pid <= 0 {
                    continue;
                }
                let Some((key, mount)) = file_stat(&fd) else {
                    continue;
                };
                self.metrics.fanotify_events.inc();
                // A file seen before needs no path now: its kind is known.
                let mut link = None;
                let known = self
                    .kinds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&(key.0, key.1))
                    .cloned();
                let kind = match known {
                    Some(k) => k,
                    None => {
                        let Some(l) = link_of(&fd) else { continue };
                        // Only a plain link is remembered as the file's path (to match a
                        // live process's exe link by it); a marked one is left to the facts.
                        let kind = Kind {
                            loader: is_loader(&l),
                            path: plain_link(&l).map(Arc::from),
                        };
                        if kind.loader {
                            self.ignore_loader(&fd, (key.0, key.1));
                        }
                        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
                        if kinds.len() >= MAX_KINDS {
                            kinds.clear();
                        }
                        kinds.insert((key.0, key.1), kind.clone());
                        link = Some(l);
                        kind
                    }
                };
                got.push((
                    pid as u32,
                    Held {
                        fd: Some(fd),
                        key,
                        mount,
                        loader: kind.loader,
                        link,
                        known_path: kind.path,
                        also: None,
                        at: now,
                    },
                ));
            }
            if !got.is_empty() {
                let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
                for (pid, f) in got.drain(..) {
                    t.insert(pid, f);
                }
            }
            drop(scratch);
            if (n as usize) < buf.len() / 2 {
                // A short read emptied the queue.
                return;
            }
        }
    }

    /// Tells the kernel to stop reporting execs of the loader open as `fd`: every dynamically
    /// linked exec opens its loader for execution right after its binary, and that second
    /// event (a descriptor created for the sensor, a `statx`, a `close`) says nothing the
    /// binary's did not. An ignore mark on the loader's inode drops it in the kernel. What is
    /// given up: a process that runs the loader itself (`ld.so ./prog`) and is gone before
    /// `/proc` is read is reported with its executable unknown (partial), not as the loader.
    /// At most [`MAX_IGNORED_LOADERS`]; past it, loader events are read and skipped as before.
    fn ignore_loader(&self, fd: &OwnedFd, inode: (u64, u64)) {
        let mut ignored = self.ignored.lock().unwrap_or_else(|e| e.into_inner());
        if ignored.len() >= MAX_IGNORED_LOADERS || ignored.contains(&inode) {
            return;
        }
        // SAFETY: a NULL path marks the object `fd` refers to; `fd` is open for the call.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD
                    | libc::FAN_MARK_IGNORED_MASK
                    | libc::FAN_MARK_IGNORED_SURV_MODIFY,
                libc::FAN_OPEN_EXEC,
                fd.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc == 0 {
            ignored.insert(inode);
        } else {
            tracing::debug!(message = "Cannot ignore a loader's exec events.", error = %io::Error::last_os_error());
        }
    }

    /// The executable of `pid`'s exec, when a queued identity is known to be at `exe`, the
    /// path its exe link just read (plain: not deleted, not a memfd). The kernel's descriptor
    /// then stands for opening `/proc/<pid>/exe`, and its `statx` for the cache key: the same
    /// file, reached without a path walk through `/proc`. `None` (nothing taken) otherwise.
    pub fn claim_exec(&self, pid: u32, exe: &str) -> Option<Claimed> {
        self.refresh();
        let held = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_matching(pid, exe)?;
        Some(held.into_claimed())
    }

    /// `pid`'s exec of the file `id` (device, inode) was read through `/proc`, not claimed:
    /// see [`Table::read_from_proc`].
    pub fn read_from_proc(&self, pid: u32, id: (u64, u64)) {
        self.refresh();
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_from_proc(pid, id);
    }

    /// Whether `/proc` showing `exe` for `pid` is a later exec's view (see
    /// [`Table::superseded`]): this exec's program is then the oldest queued identity, named
    /// as for a process gone, and `/proc`'s argv and command name are not its.
    /// When it is, the oldest identity is taken at once (so that the later exec, read next,
    /// finds its own first) and returned.
    pub fn take_superseded(
        &self,
        pid: u32,
        exe: &str,
    ) -> Option<(ExecFile, Option<std::fs::File>)> {
        self.refresh();
        let held = {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if !t.superseded(pid, exe) {
                return None;
            }
            t.take(pid)?
        };
        self.metrics.execs_superseded.inc();
        held.resolve()
    }

    /// The executable of the oldest unclaimed exec of `pid`. Called when `/proc` had nothing
    /// left, after the proc connector's exec event (the kernel queued the fanotify event
    /// before it), so each success is counted as a rescue.
    pub fn take(&self, pid: u32) -> Option<(ExecFile, Option<std::fs::File>)> {
        self.refresh();
        let held = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(pid)?;
        let (f, file) = held.resolve()?;
        tracing::debug!(message = "Exec identity from fanotify.", pid, path = %f.path, mount = ?f.mount);
        self.metrics.fanotify_rescues.inc();
        Some((f, file))
    }

    /// Takes the identity of `pid`'s latest exec without waiting (it was read from `/proc`
    /// instead, and serves to learn which container its mount belongs to).
    pub fn claim(&self, pid: u32) -> Option<Claimed> {
        self.refresh();
        let held = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(pid)?;
        Some(held.into_claimed())
    }

    /// Learns that files executed through `mount` run in `container`, from a process whose
    /// cgroup was read. Only for mounts outside the sensor's mount table: overlayfs reaches its
    /// layers through private mounts of its own, one set per overlay, so such a mount belongs
    /// to one container; a mount in the table (the host's `/`, a shared volume) may serve many.
    pub fn learn(&self, mount: u64, container: &str) {
        if self.in_mount_table(mount) {
            return;
        }
        let mut l = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= MAX_ROOTS * 4 && !l.contains_key(&mount) {
            l.clear();
        }
        l.insert(mount, container.to_string());
    }

    fn in_mount_table(&self, mount: u64) -> bool {
        let mut devs = self.mount_devs.lock().unwrap_or_else(|e| e.into_inner());
        if !devs.contains_key(&mount) {
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            if devs.len() > MAX_ROOTS {
                devs.clear();
            }
            devs.extend(parse_mount_devs(&mi));
        }
        devs.contains_key(&mount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> Held {
        // A distinct file per path, as the kernel would give.
        let ino = path
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        Held {
            fd: None,
            key: (0, ino, 0, 0),
            mount: None,
            loader: is_loader(path),
            link: Some(path.into()),
            known_path: Some(Arc::from(path)),
            also: None,
            at: Instant::now(),
        }
    }

    /// `path` as reached through mount `mount`.
    fn on(path: &str, mount: u64) -> Held {
        Held {
            mount: Some(mount),
            key: (mount, mount, 0, 0),
            ..f(path)
        }
    }

    #[test]
    fn a_layers_file_and_the_overlays_are_one_exec() {
        let mut t = Table::default();
        // `sh -c 'exec sleep'` in a container whose layers lie on a marked filesystem: each
        // exec is reported through the layer's private mount (46), then the root mount (75).
        t.insert(9, on("/bin/sh", 46));
        t.insert(9, on("/bin/sh", 75));
        t.insert(9, on("/bin/sleep", 46));
        t.insert(9, on("/bin/sleep", 75));
        let sh = t.take_matching(9, "/bin/sh").unwrap();
        assert_eq!(sh.mount, Some(46));
        assert_eq!(sh.also.map(|o| o.mount), Some(Some(75)));
        // The process is gone by its second exec: the next identity is sleep's, not sh's.
        let sleep = t.take(9).unwrap();
        assert_eq!(sleep.known_path.as_deref(), Some("/bin/sleep"));
        assert_eq!(sleep.also.map(|o| o.mount), Some(Some(75)));
        assert_eq!(t.total, 0);
        // One file executed twice through one mount is two execs.
        t.insert(3, on("/bin/sh", 27));
        t.insert(3, on("/bin/sh", 27));
        assert!(t.take(3).unwrap().also.is_none());
        assert!(t.take(3).is_some());
    }

    #[test]
    fn loaders_are_skipped_and_execs_claimed_in_order() {
        let mut t = Table::default();
        t.insert(7, f("/usr/bin/sh"));
        t.insert(7, f("/lib64/ld-linux-x86-64.so.2"));
        t.insert(7, f("/usr/bin/true"));
        t.insert(7, f("/lib/ld-musl-x86_64.so.1"));
        assert_eq!(t.take(7).unwrap().resolve().unwrap().0.path, "/usr/bin/sh");
        assert_eq!(
            t.take(7).unwrap().resolve().unwrap().0.path,
            "/usr/bin/true"
        );
        assert!(t.take(7).is_none());
        assert_eq!(t.total, 0);
        assert!(is_loader("/lib/ld-2.31.so"));
        assert!(!is_loader("/usr/bin/ldd"));
    }

    #[test]
    fn an_exec_is_matched_by_its_path_with_the_script_before_it() {
        let mut t = Table::default();
        // A script's exec: the script, its interpreter, the interpreter's loader.
        t.insert(9, f("/app/run.sh"));
        t.insert(9, f("/usr/bin/sh"));
        t.insert(9, f("/lib64/ld-linux-x86-64.so.2"));
        t.insert(9, f("/usr/bin/true"));
        // Nothing queued is known to be at this path: nothing is taken.
        assert!(t.take_matching(9, "/usr/bin/bash").is_none());
        assert_eq!(t.total, 4);
        let got = t.take_matching(9, "/usr/bin/sh").unwrap();
        assert_eq!(got.known_path.as_deref(), Some("/usr/bin/sh"));
        // The script before it and the loader after it went with it; the next exec stays.
        assert_eq!(t.total, 1);
        assert_eq!(
            t.take(9).unwrap().resolve().unwrap().0.path,
            "/usr/bin/true"
        );
        assert_eq!(t.total, 0);
        // A file whose path was not plain when first seen is never matched by path.
        let mut deleted = f("/tmp/x");
        deleted.known_path = None;
        t.insert(3, deleted);
        assert!(t.take_matching(3, "/tmp/x").is_none());
    }

    #[test]
    fn a_later_exec_in_proc_is_told_from_a_script_before_its_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, head: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, head).unwrap();
            let mut h = f(p.to_str().unwrap());
            let file = std::fs::File::open(&p).unwrap();
            let m = file.metadata().unwrap();
            h.key = (m.dev(), m.ino(), 0, 0);
            h.fd = Some(OwnedFd::from(file));
            h
        };
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        // `sh -c 'cmd'` exec'd cmd in place before /proc was read: /proc shows cmd, and the
        // shell's own exec, a binary, is queued before it.
        let mut t = Table::default();
        t.insert(5, file("sh", b"\x7fELF"));
        t.insert(5, f("/lib64/ld-linux-x86-64.so.2"));
        t.insert(5, file("cmd", b"\x7fELF"));
        assert!(t.superseded(5, &path("cmd")));
        assert!(!t.superseded(5, &path("sh")));
        // Once the shell's exec is taken, /proc showing cmd is cmd's own exec.
        assert_eq!(
            t.take(5).unwrap().known_path.as_deref(),
            Some(path("sh").as_str())
        );
        assert!(!t.superseded(5, &path("cmd")));
        // A script and its interpreter are one exec: the script before it is no earlier exec.
        let mut t = Table::default();
        t.insert(6, file("run.sh", b"#!/bin/sh\n"));
        t.insert(6, file("sh", b"\x7fELF"));
        assert!(!t.superseded(6, &path("sh")));
        // Nothing known at the path: nothing to say.
        assert!(!t.superseded(6, "/elsewhere"));
        // The shell's exec was read through /proc before its record arrived: the record, late,
        // is of that exec, not an earlier one, and /proc showing cmd next is cmd's own.
        let mut t = Table::default();
        let sh = file("sh", b"\x7fELF");
        t.read_from_proc(7, (sh.key.0, sh.key.1));
        t.insert(7, sh);
        t.insert(7, file("cmd", b"\x7fELF"));
        assert!(!t.superseded(7, &path("cmd")));
        assert_eq!(t.total, 1);
        // One exec reported twice (its file through two marked mounts: same inode, another
        // device) is one exec: taking it takes both, and no earlier exec is seen in the copy.
        let mut t = Table::default();
        let sh = file("sh", b"\x7fELF");
        let mut again = file("sh", b"\x7fELF");
        again.key.0 += 1;
        t.insert(8, sh);
        t.insert(8, again);
        t.insert(8, file("cmd", b"\x7fELF"));
        assert!(t.superseded(8, &path("cmd")));
        assert!(t.take(8).is_some());
        assert!(!t.superseded(8, &path("cmd")));
        assert_eq!(t.total, 1);
    }

    #[test]
    fn mountinfo_gives_each_mounts_superblock() {
        let mi = "27 1 254:0 / / rw - ext4 /dev/vda rw\n47 42 0:39 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw\n";
        assert_eq!(
            parse_mount_devs(mi),
            vec![(27, libc::makedev(254, 0)), (47, libc::makedev(0, 39))]
        );
    }

    #[test]
    fn truncated_buffers_do_not_parse_past_their_end() {
        let mut rec = vec![0u8; 24];
        rec[..4].copy_from_slice(&24u32.to_ne_bytes());
        rec[8..16].copy_from_slice(&libc::FAN_OPEN_EXEC.to_ne_bytes());
        rec[16..20].copy_from_slice(&5i32.to_ne_bytes());
        rec[20..24].copy_from_slice(&42i32.to_ne_bytes());
        let mut two = rec.clone();
        two.extend_from_slice(&rec[..10]);
        assert_eq!(
            parse_events(&two).collect::<Vec<_>>(),
            vec![(libc::FAN_OPEN_EXEC, 5, 42)]
        );
        let mut bad = rec.clone();
        bad[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse_events(&bad).count(), 0);
    }

    #[test]
    fn the_kernel_names_every_exec() {
        // Needs CAP_SYS_ADMIN; without it there is nothing to test here (the end-to-end tests
        // enforce it under PROCGUARD_STRICT_TESTS).
        let Ok(w) = ExecWatch::start(Metrics::default(), Path::new("/proc/1/root")) else {
            eprintln!("SKIP: fanotify needs CAP_SYS_ADMIN");
            return;
        };
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let (got, file) = w.take(pid).expect("exec identity");
        assert!(file.is_some(), "the executed file comes open");
        assert!(got.path.ends_with("/true"), "{got:?}");
    }

    /// A process gone before `/proc` was read is named from fanotify's descriptor. Its
    /// facts (link count, file system) are read only for a link with the deleted marker; the
    /// marker decides nothing by itself: a file merely named so keeps its name (deletion
    /// unknown), a file really unlinked after it ran reads as deleted, a plain path as it is.
    #[test]
    fn a_gone_process_is_named_from_the_descriptor_and_the_facts_decide_deletion() {
        let Ok(w) = ExecWatch::start(Metrics::default(), Path::new("/proc/1/root")) else {
            eprintln!("SKIP: fanotify needs CAP_SYS_ADMIN");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let run = |name: &str, unlink: bool| {
            let bin = dir.path().join(name);
            std::fs::copy("/bin/true", &bin).unwrap();
            let mut child = std::process::Command::new(&bin).spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            if unlink {
                std::fs::remove_file(&bin).unwrap();
            }
            let (got, file) = w.take(pid).expect("exec identity");
            assert!(file.is_some(), "the executed file comes open");
            (bin.to_string_lossy().into_owned(), got)
        };
        let (path, plain) = run("plain", false);
        assert_eq!(plain.path, path);
        assert!(!plain.deleted && !plain.memfd && !plain.deleted_unknown);

        let (path, gone) = run("gone", true);
        assert_eq!(gone.path, path, "the marker stripped once");
        assert!(gone.deleted && !gone.memfd && !gone.deleted_unknown);

        let (path, named) = run("named (deleted)", false);
        assert_eq!(named.path, path, "a name chosen so is kept as it is");
        assert!(!named.deleted && !named.memfd && named.deleted_unknown);
    }

    /// Spawns `/bin/true`, waits for it, and returns the identities fanotify queued for it.
    fn identities_of_one_exec(w: &ExecWatch) -> usize {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        w.pump();
        let t = w.table.lock().unwrap();
        t.by_pid.get(&pid).map_or(0, |q| q.len())
    }

    #[test]
    fn a_loader_once_seen_is_no_longer_reported() {
        let Ok(w) = ExecWatch::start(Metrics::default(), Path::new("/proc/1/root")) else {
            eprintln!("SKIP: fanotify needs CAP_SYS_ADMIN");
            return;
        };
        let first = identities_of_one_exec(&w);
        let second = identities_of_one_exec(&w);
        assert_eq!(
            first, 2,
            "/bin/true (dynamically linked) and its loader, the first time"
        );
        assert!(
            !w.ignored.lock().unwrap().is_empty(),
            "the loader is ignored"
        );
        assert_eq!(second, 1, "then the binary alone");
    }

    #[test]
    fn a_live_exec_is_claimed_by_its_path_with_the_same_file() {
        let Ok(w) = ExecWatch::start(Metrics::default(), Path::new("/proc/1/root")) else {
            eprintln!("SKIP: fanotify needs CAP_SYS_ADMIN");
            return;
        };
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        // `spawn` returns once the exec succeeded.
        let link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let link = link.to_string_lossy().into_owned();
        let claimed = w.claim_exec(pid, &link).expect("claimed by path");
        let opened = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
        let want = crate::procfs::HashCache::key_of(&opened).unwrap();
        assert_eq!(claimed.key, want, "the same file as /proc/<pid>/exe");
        assert!(claimed.file.is_some());
        assert!(w.claim_exec(pid, &link).is_none(), "claimed once");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Batched (eBPF): a lookup after the batch's pump does not read the queue again, so an
    /// exec queued after the pump is not found (its record comes in the next batch, after the
    /// next pump), but once an exe link was read from `/proc` the next lookup reads the queue
    /// first: a process that exec'd again before its link was read (the later program is what
    /// `/proc` shows) must have that later exec queued, or its earlier exec would take the
    /// later one's file (the superseding check).
    #[test]
    fn batched_lookups_read_the_queue_again_only_after_a_proc_read() {
        let Ok(w) = ExecWatch::start(Metrics::default(), Path::new("/proc/1/root")) else {
            eprintln!("SKIP: fanotify needs CAP_SYS_ADMIN");
            return;
        };
        w.set_batched();
        w.pump();
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(w.claim(pid).is_none(), "not read before the next pump");
        w.proc_read();
        let claimed = w.claim(pid).expect("read after a /proc read");
        assert!(claimed.file.is_some());

        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        w.pump();
        let (got, _) = w.take(pid).expect("read by the batch's pump");
        assert!(got.path.ends_with("/true"), "{got:?}");
    }
}
