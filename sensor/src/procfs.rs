//! Reading one process from `/proc` (under a configurable root, so a DaemonSet can mount the
//! host's `/proc` elsewhere).
//!
//! Every read may fail because the process already exited; callers treat each field as
//! optional and mark what they could not read. argv is bounded in count and length so that a
//! hostile command line cannot grow the sensor's memory.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most argv entries kept.
pub const MAX_ARGS: usize = 64;
/// Most bytes kept of one argv entry.
pub const MAX_ARG_LEN: usize = 1024;
/// Most bytes read of `/proc/<pid>/cgroup`: a v1 host has about a dozen lines of at most
/// `PATH_MAX`; anything beyond is cut, never buffered.
pub const MAX_CGROUP_FILE: usize = 64 * 1024;
/// Largest executable hashed; bigger ones are reported without a hash.
pub const MAX_HASH_BYTES: u64 = 256 * 1024 * 1024;

/// What `/proc/<pid>` said, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: Option<u32>,
    /// Command name.
    pub comm: Option<String>,
    /// Executable path: the exe link, with the kernel's " (deleted)" marker removed only
    /// where the kernel's facts about the file say it was unlinked ([`classify_exe`]).
    pub exe: Option<String>,
    /// The exe link exactly as the kernel printed it.
    pub exe_link: Option<String>,
    /// The executable was deleted (the kernel's facts say so, see [`classify_exe`]).
    pub exe_deleted: bool,
    /// The executable is a memfd.
    pub exe_memfd: bool,
    /// The link ends in " (deleted)" and the facts that tell a deleted file from one named so
    /// could not be read: `exe` is the link as printed and deletion is unknown.
    pub exe_deleted_unknown: bool,
    /// The kernel recorded, at the exec, that the executed file still had links (eBPF
    /// capture): it was not a deleted file when it ran, whatever a later read shows.
    pub linked_at_exec: bool,
    /// Reading the exe link failed with `ENOENT`: the process is gone (no `/proc/<pid>`) or
    /// has no executable left (exiting, a zombie). Neither comes back, so opening
    /// `/proc/<pid>/exe` would fail too and is not tried. Any other failure (a path too long
    /// for the link, say, which an open still reaches) leaves it false.
    pub exe_link_gone: bool,
    /// (device, inode) of the executable as opened.
    pub exe_id: Option<(u64, u64)>,
    /// The executable as the kernel opened it: its identity and mount (see [`Opened`]), from
    /// the `statx` that reads its cache key. With fanotify on a layered root, the second view
    /// of the same exec is the second entry.
    pub exe_opened: [Option<Opened>; 2],
    /// argv (bounded).
    pub argv: Option<Vec<String>>,
    /// argv was cut.
    pub argv_truncated: bool,
    /// Real UID.
    pub uid: Option<u32>,
    /// Real GID.
    pub gid: Option<u32>,
    /// Start time.
    pub start_time: Option<SystemTime>,
    /// Raw `/proc/<pid>/cgroup`.
    pub cgroup: Option<String>,
    /// The process exec'd again before `/proc` was read: the executable and argv read were
    /// the later program's and were dropped (the executable comes from fanotify).
    pub superseded: bool,
    /// argv, command name, parent, IDs and start time were recorded by the kernel at the exec
    /// itself (eBPF capture), not read from `/proc`: no exit or later exec changed them.
    pub at_exec: bool,
    /// Likewise the cgroup (resolved from the cgroup ID the kernel recorded at exec).
    pub cgroup_at_exec: bool,
    /// The executable's path (and its deleted or memfd flag) is the kernel's record of the
    /// exec itself (eBPF capture), not the exe link read after it.
    pub exe_at_exec: bool,
    /// With [`ProcInfo::exe_at_exec`]: `/proc` did not show this exec's image when it was read
    /// (the process was gone, or ran a later program, or the ID was reused), so nothing read
    /// there about the executable is this exec's, and the process counts as not alive.
    pub exe_unseen: bool,
    /// The kernel recorded the exec but not its executable's path whole (truncated, or a
    /// pseudo file it could not name): the path is the exe link read after the exec.
    pub exe_read_late: bool,
    /// The executed file as the kernel recorded it at the exec: (device, unless the file is on
    /// overlayfs, whose `stat` may report a layer's device; inode). What a file opened later
    /// must match to be taken for it ([`ProcInfo::is_exec_file`]).
    pub exe_id_at_exec: Option<(Option<u64>, u64)>,
    /// The mount namespace the kernel recorded at the exec (the inode `/proc/<pid>/ns/mnt`
    /// links to): another process's mount table is this exec's only if it links to the same.
    pub mnt_ns_at_exec: Option<u32>,
}

impl ProcInfo {
    /// Whether the file with cache key `key` (as its `statx` read it) is the one the kernel
    /// recorded at the exec; true when no record was made.
    pub fn is_exec_file(&self, key: &FileKey) -> bool {
        match self.exe_id_at_exec {
            None => true,
            Some((dev, ino)) => key.1 == ino && dev.is_none_or(|d| d == key.0),
        }
    }

    /// [`ProcInfo::is_exec_file`] for a file seen in one or two views (a layered root's
    /// file as fanotify reports it: the layer's file, then the overlay's, whose inode numbers
    /// differ once the file was copied up).
    pub fn is_exec_file_seen_as(&self, key: &FileKey, also: Option<&Opened>) -> bool {
        self.is_exec_file(key) || also.is_some_and(|a| self.is_exec_file(&a.key))
    }

    /// Whether `/proc` showed this exec's process (running its image) when it was read.
    pub fn seen_alive(&self) -> bool {
        self.exe.is_some() && !self.exe_unseen
    }
}

/// Splits a raw cmdline into bounded argv.
pub fn parse_cmdline(raw: &[u8]) -> (Vec<String>, bool) {
    let mut p = CmdlineParser::default();
    p.feed(raw);
    p.finish()
}

/// Splits a command line into bounded argv as it is read, so that memory stays bounded
/// whatever its length: at most [`MAX_ARGS`] entries of at most [`MAX_ARG_LEN`] bytes.
#[derive(Debug, Default)]
pub struct CmdlineParser {
    argv: Vec<String>,
    /// The entry being read, raw, kept up to `MAX_ARG_LEN + 3` bytes (room for the last
    /// character that may straddle the cut).
    cur: Vec<u8>,
    /// Bytes of the current entry beyond what is kept.
    cur_cut: bool,
    /// Bytes seen since the last NUL (whether the command line ended with one).
    open: bool,
    truncated: bool,
}

impl CmdlineParser {
    const KEEP: usize = MAX_ARG_LEN + 3;

    /// Takes the next bytes. `false` once nothing more can be kept (then the rest only
    /// marks the result truncated).
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.argv.len() == MAX_ARGS {
                self.truncated = true;
                return false;
            }
            let (part, rest, ended) = match bytes.iter().position(|b| *b == 0) {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &bytes[bytes.len()..], false),
            };
            let room = Self::KEEP.saturating_sub(self.cur.len());
            self.cur.extend_from_slice(&part[..part.len().min(room)]);
            self.cur_cut |= part.len() > room;
            self.open = !ended;
            if ended {
                self.push();
            }
            bytes = rest;
        }
        self.argv.len() < MAX_ARGS
    }

    fn push(&mut self) {
        let (s, cut) = Self::entry(&self.cur, self.cur_cut);
        self.truncated |= cut;
        self.argv.push(s);
        self.cur.clear();
        self.cur_cut = false;
    }

    /// One entry from its kept bytes (`raw`, at most [`Self::KEEP`]) and whether bytes past
    /// them were dropped: the text, cut to [`MAX_ARG_LEN`] bytes at a character boundary, and
    /// whether it was cut.
    fn entry(raw: &[u8], dropped: bool) -> (String, bool) {
        let mut s = String::from_utf8_lossy(raw).into_owned();
        if dropped || s.len() > MAX_ARG_LEN {
            let mut cut = MAX_ARG_LEN.min(s.len());
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            return (s, true);
        }
        (s, false)
    }

    /// What [`CmdlineParser::feed`] of `bytes` and then [`CmdlineParser::finish`] give, for a
    /// command line already whole in memory (the eBPF record's argv): each entry is made once,
    /// at its size, without the copy a read in pieces needs.
    pub fn parse_whole(bytes: &[u8]) -> (Vec<String>, bool) {
        let entries = bytes.iter().filter(|b| **b == 0).count() + 1;
        let mut argv = Vec::with_capacity(entries.min(MAX_ARGS));
        let mut truncated = false;
        let mut rest = bytes;
        while !rest.is_empty() {
            if argv.len() == MAX_ARGS {
                truncated = true;
                break;
            }
            let (part, next) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            match std::str::from_utf8(part) {
                Ok(text) if part.len() <= MAX_ARG_LEN => argv.push(text.to_owned()),
                _ => {
                    let kept = &part[..part.len().min(Self::KEEP)];
                    let (s, cut) = Self::entry(kept, part.len() > Self::KEEP);
                    truncated |= cut;
                    argv.push(s);
                }
            }
            rest = next;
        }
        (argv, truncated)
    }

    /// The argv, and whether anything was cut. A last entry without its NUL counts.
    pub fn finish(mut self) -> (Vec<String>, bool) {
        if self.open && self.argv.len() < MAX_ARGS {
            self.push();
        } else if self.open {
            self.truncated = true;
        }
        (self.argv, self.truncated)
    }
}

/// First read of a `/proc` file: one `read` takes all of `stat`, `status`, a typical
/// `cgroup` or `cmdline`.
const FIRST_READ: usize = 4096;

/// Most bytes read of `/proc/<pid>/cmdline` to find its first [`MAX_ARGS`] entries: the
/// kernel caps one argument at 128 KiB, so this reaches the last kept entry of any command
/// line. It is read in [`FIRST_READ`]-then-64 KiB pieces, never held whole.
pub const MAX_CMDLINE_READ: usize = MAX_ARGS * 128 * 1024;

/// Reads a command line, parsing as it goes (memory stays bounded, see [`CmdlineParser`]).
pub(crate) fn read_cmdline(path: &Path) -> Option<(Vec<String>, bool)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; FIRST_READ];
    let mut p = CmdlineParser::default();
    let mut total = 0;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        total += n;
        let more = p.feed(&buf[..n]);
        // `/proc` generates the file in one go: a read that did not fill the buffer ended it.
        if n < buf.len() {
            return Some(p.finish());
        }
        if !more || total >= MAX_CMDLINE_READ {
            let (argv, _) = p.finish();
            return Some((argv, true));
        }
        if buf.len() == FIRST_READ {
            buf.resize(64 * 1024, 0);
        }
    }
}

/// Reads at most `max` bytes of a file, in as few `read` calls as it can: `/proc` generates a
/// file in one go, so a read that does not fill the buffer has reached its end (each extra
/// call is a system call on the path that races process exit).
fn read_bounded_raw(path: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; FIRST_READ.min(max)];
    let mut len = 0;
    loop {
        let n = match f.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        len += n;
        if n == 0 || len < buf.len() || buf.len() >= max {
            break;
        }
        buf.resize((buf.len() * 2).min(max), 0);
    }
    buf.truncate(len);
    Some(buf)
}

/// Reads at most `max` bytes of a file as text.
pub(crate) fn read_bounded(path: &Path, max: usize) -> Option<String> {
    read_bounded_raw(path, max).map(|raw| String::from_utf8_lossy(&raw).into_owned())
}

/// The fields of `/proc/<pid>/stat` the sensor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Parent PID.
    pub ppid: u32,
    /// Command name (at most 64 bytes; the kernel's is 16).
    pub comm: String,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    /// Virtual memory size in bytes (`None` when the line stops before it): 0 once the
    /// process has no address space (exiting, a zombie, a kernel thread).
    pub vsize: Option<u64>,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid ... starttime(22nd) vsize ...`. The command
/// name may itself hold spaces and parentheses, so it runs from the first `(` to the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let mut comm = text[open + 1..close].to_string();
    if comm.len() > 64 {
        let mut cut = 64;
        while !comm.is_char_boundary(cut) {
            cut -= 1;
        }
        comm.truncate(cut);
    }
    let rest: Vec<&str> = text[close + 1..].split_whitespace().take(21).collect();
    Some(Stat {
        ppid: rest.get(1)?.parse::<i64>().ok()?.clamp(0, u32::MAX as i64) as u32,
        comm,
        start_ticks: rest.get(19)?.parse().ok()?,
        vsize: rest.get(20).and_then(|v| v.parse().ok()),
    })
}

/// Real UID and GID from `/proc/<pid>/status` (`Uid:` and `Gid:` lines: real, effective,
/// saved, filesystem).
pub fn parse_status_ids(text: &str) -> (Option<u32>, Option<u32>) {
    let first = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    (first("Uid:"), first("Gid:"))
}

/// The marker the kernel appends to the path of an unlinked file (`d_path`). A file may also
/// simply be *named* so: the text alone never says that a file was deleted.
pub const DELETED_MARK: &str = " (deleted)";

/// The link of a file the kernel calls neither deleted nor anonymous: a path that can be
/// compared with other paths as it is. `None` when the link ends in [`DELETED_MARK`] (the
/// file was unlinked, or is named so; only [`classify_exe`] can tell).
pub fn plain_link(link: &str) -> Option<&str> {
    (!link.ends_with(DELETED_MARK)).then_some(link)
}

/// What the kernel says about an executed file, beyond the text of its link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExeFacts {
    /// `st_nlink` of the open file: 0 once every name of it is gone.
    pub nlink: Option<u64>,
    /// The open file lives on shmem (tmpfs or hugetlbfs), where memfds live.
    pub shmem: Option<bool>,
    /// Whether the file named exactly as the link reads, looked up in the process's own root,
    /// is this very file (same device and inode). `Some(false)` when no such name exists or
    /// it is another file; `None` when the lookup could not be made (the process is gone).
    pub same_at_link_path: Option<bool>,
}

/// What [`classify_exe`] concluded about an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeName {
    /// The path to report.
    pub path: String,
    /// Unlinked.
    pub deleted: bool,
    /// An anonymous memory file.
    pub memfd: bool,
    /// The link ends in the deleted marker and the facts could not tell why.
    pub deleted_unknown: bool,
}

/// Interprets an exe link with the kernel's facts about the file. The marker
/// [`DELETED_MARK`] is stripped (once) only when the facts say the file was unlinked: no link
/// left (`st_nlink` 0), or no file by the printed name in the process's root while the file
/// still has links elsewhere (another hard link, or an image-layer file that overlayfs hides
/// behind a whiteout and still reports with one link). A file merely *named* `x (deleted)` is
/// found at that name and keeps it, so it never reads as `x`. A memfd is an unlinked file on
/// shmem whose link reads `/memfd:NAME (deleted)` (the name is the creator's choice, so the
/// facts decide, not the prefix alone). When the facts could not be read, the link is kept as
/// printed, deletion unknown: an unreadable case never turns into a shorter, allowed path.
pub fn classify_exe(link: &str, facts: ExeFacts) -> ExeName {
    let keep = |deleted_unknown| ExeName {
        path: link.to_string(),
        deleted: false,
        memfd: false,
        deleted_unknown,
    };
    let Some(stripped) = link.strip_suffix(DELETED_MARK) else {
        return keep(false);
    };
    let unlinked = match (facts.nlink, facts.same_at_link_path) {
        (Some(0), _) => true,
        (_, Some(true)) => false,
        (Some(_), Some(false)) => true,
        _ => return keep(true),
    };
    if !unlinked {
        return keep(false);
    }
    let memfd =
        facts.nlink == Some(0) && facts.shmem == Some(true) && stripped.starts_with("/memfd:");
    ExeName {
        path: stripped.to_string(),
        deleted: !memfd,
        memfd,
        deleted_unknown: false,
    }
}

/// [`ExeFacts`] of an open executable whose link printed with the deleted marker; the printed
/// name is looked up under `root` when given (the process's `/proc/<pid>/root`, opened first
/// so the lookup stays in that root even if the process exits meanwhile). Only the last
/// component is not followed: the link is a kernel-printed path, free of symbolic links.
pub fn exe_facts(file: Option<&std::fs::File>, root: Option<&Path>, link: &str) -> ExeFacts {
    use std::os::fd::AsRawFd;
    let meta = file.and_then(|f| f.metadata().ok());
    let shmem = file
        .and_then(|f| nix::sys::statfs::fstatfs(f).ok())
        .map(|s| {
            let t = s.filesystem_type();
            t == nix::sys::statfs::TMPFS_MAGIC || t == nix::sys::statfs::HUGETLBFS_MAGIC
        });
    let nlink = meta.as_ref().map(|m| m.nlink());
    let same_at_link_path = match (&meta, nlink) {
        (Some(m), Some(n)) if n > 0 => root
            .and_then(|root| std::fs::File::open(root).ok())
            .and_then(|r| {
                let name = format!(
                    "/proc/self/fd/{}/{}",
                    r.as_raw_fd(),
                    link.trim_start_matches('/')
                );
                match std::fs::symlink_metadata(name) {
                    Ok(at) => Some(at.dev() == m.dev() && at.ino() == m.ino()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
                    Err(_) => None,
                }
            }),
        _ => None,
    };
    ExeFacts {
        nlink,
        shmem,
        same_at_link_path,
    }
}

/// Reader of `/proc` under `root`.
#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
    boot_time: Option<SystemTime>,
    ticks: u64,
}

impl ProcReader {
    /// A reader of `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let boot_time = std::fs::read_to_string(root.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            });
        Self {
            root,
            boot_time,
            ticks: ::procfs::ticks_per_second().max(1),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// PIDs of every process now.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Path of a file of a process.
    pub fn path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// Opens the executable of `pid`, for hashing later.
    pub fn open_exe(&self, pid: u32) -> Option<std::fs::File> {
        std::fs::File::open(self.path(pid, "exe")).ok()
    }

    /// Reads everything that can still be read.
    pub fn read(&self, pid: u32) -> ProcInfo {
        let mut info = self.read_urgent(pid);
        self.read_cgroup(&mut info);
        self.read_stat(&mut info);
        self.read_status(&mut info);
        info
    }

    /// Reads what a process loses soonest and what no kernel event carries: its executable's
    /// link and its command line.
    pub fn read_urgent(&self, pid: u32) -> ProcInfo {
        let mut info = self.read_exe_link(pid);
        if let Some((argv, truncated)) = read_cmdline(&self.path(pid, "cmdline")) {
            // An exiting process (or a zombie) has lost its address space, and the kernel then
            // shows its command line as empty: its argv is gone, not empty. Only a process
            // that still has one ran with no arguments at all (argc 0).
            if !argv.is_empty() || self.has_address_space(pid) {
                info.argv = Some(argv);
                info.argv_truncated = truncated;
            }
        }
        info
    }

    /// Reads only the executable's link (when argv is known without `/proc`: recorded by the
    /// kernel at the exec).
    pub fn read_exe_link(&self, pid: u32) -> ProcInfo {
        let mut info = ProcInfo {
            pid,
            ..Default::default()
        };
        match std::fs::read_link(self.path(pid, "exe")) {
            Ok(t) => {
                let link = t.to_string_lossy().into_owned();
                // Until [`ProcReader::resolve_exe`] reads the facts, a marked link stands as
                // printed, deletion unknown (never a shorter path).
                info.exe_deleted_unknown = plain_link(&link).is_none();
                info.exe = Some(link.clone());
                info.exe_link = Some(link);
            }
            Err(e) => info.exe_link_gone = e.kind() == std::io::ErrorKind::NotFound,
        }
        info
    }

    /// Whether `pid` still has an address space (`vsize` in `/proc/<pid>/stat` above 0); false
    /// when that cannot be read.
    pub fn has_address_space(&self, pid: u32) -> bool {
        read_bounded(&self.path(pid, "stat"), 4096)
            .and_then(|t| parse_stat(&t))
            .and_then(|s| s.vsize)
            .is_some_and(|v| v > 0)
    }

    /// Settles the executable's path and flags from the kernel's facts about `file`, the
    /// executable as opened (through `/proc/<pid>/exe` or fanotify's descriptor), see
    /// [`classify_exe`]. Also records its (device, inode).
    pub fn resolve_exe(&self, info: &mut ProcInfo, file: Option<&std::fs::File>) {
        if info.exe_opened[0].is_none() {
            // One `statx` for the identity, the hash cache key and the mount.
            if let Some((key, mount)) = file.and_then(crate::fanotify::stat_file) {
                info.exe_opened[0] = Some(Opened { key, mount });
            }
        }
        if info.exe_id.is_none() {
            info.exe_id = info.exe_opened[0].map(|o| (o.key.0, o.key.1));
        }
        let Some(link) = info.exe_link.as_deref() else {
            return;
        };
        let name = if plain_link(link).is_some() {
            classify_exe(link, ExeFacts::default())
        } else {
            classify_exe(
                link,
                exe_facts(file, Some(&self.path(info.pid, "root")), link),
            )
        };
        info.exe = Some(name.path);
        info.exe_deleted = name.deleted;
        info.exe_memfd = name.memfd;
        info.exe_deleted_unknown = name.deleted_unknown;
    }

    /// The start time of a process that started at `boottime_ns` (CLOCK_BOOTTIME), computed
    /// as [`ProcReader::read_stat`] computes it from `/proc/<pid>/stat` (clock ticks after the
    /// boot time), so both give the same time for the same process.
    pub fn start_time_of_boottime(&self, boottime_ns: u64) -> Option<SystemTime> {
        let ticks = boottime_ns / (1_000_000_000 / self.ticks.max(1));
        let ms = ticks.checked_mul(1000)? / self.ticks;
        self.boot_time?.checked_add(Duration::from_millis(ms))
    }

    /// Reads `/proc/<pid>/cgroup`, which decides whose process it is.
    pub fn read_cgroup(&self, info: &mut ProcInfo) {
        info.cgroup = read_bounded(&self.path(info.pid, "cgroup"), MAX_CGROUP_FILE);
    }

    /// Reads `/proc/<pid>/cgroup` only if it is still the file of the process `info` describes,
    /// whose start time the kernel recorded at its exec: read after that process exited, the
    /// ID may already be a new process's (another container's, say), and the file is then
    /// left unread rather than taken for it. The start time is checked after the read, so a
    /// file read before the ID was reused and one read after are told apart.
    pub fn read_cgroup_of_same_process(&self, info: &mut ProcInfo) {
        let Some(expected) = info.start_time else {
            info.cgroup = None;
            return;
        };
        let cgroup = read_bounded(&self.path(info.pid, "cgroup"), MAX_CGROUP_FILE);
        let now = self
            .stat(info.pid)
            .and_then(|s| self.start_time_of_ticks(s.start_ticks));
        info.cgroup = cgroup.filter(|_| now == Some(expected));
    }

    fn stat(&self, pid: u32) -> Option<Stat> {
        // Parsed here rather than with the procfs crate, whose stat parser panics on a
        // malformed line (found by tests/hostile_input.rs).
        read_bounded(&self.path(pid, "stat"), 4096).and_then(|t| parse_stat(&t))
    }

    fn start_time_of_ticks(&self, start_ticks: u64) -> Option<SystemTime> {
        let ms = start_ticks.checked_mul(1000)? / self.ticks;
        self.boot_time?.checked_add(Duration::from_millis(ms))
    }

    /// Reads parent, command name and start time from `/proc/<pid>/stat`.
    pub fn read_stat(&self, info: &mut ProcInfo) {
        let pid = info.pid;
        if let Some(stat) = self.stat(pid) {
            // A task being torn down reports parent 0: that is not its parent, so it counts as
            // unread (the fork event still knows the parent).
            info.ppid = (stat.ppid != 0 || pid <= 1).then_some(stat.ppid);
            info.comm = Some(stat.comm);
            info.start_time = self.start_time_of_ticks(stat.start_ticks);
        }
    }

    /// Reads the command name from `/proc/<pid>/comm` (an exec sets it without a kernel event,
    /// so it is read at every exec; `stat` would say the same at a higher cost).
    pub fn read_comm(&self, info: &mut ProcInfo) {
        if let Some(c) = read_bounded(&self.path(info.pid, "comm"), 64) {
            info.comm = Some(c.trim_end_matches('\n').to_string());
        }
    }

    /// Reads the real user and group IDs from `/proc/<pid>/status`.
    pub fn read_status(&self, info: &mut ProcInfo) {
        if let Some(status) = read_bounded(&self.path(info.pid, "status"), 16 * 1024) {
            let (uid, gid) = parse_status_ids(&status);
            info.uid = uid;
            info.gid = gid;
        }
    }
}

/// sha256 of executables, cached by (device, inode, ctime, size) ([`FileKey`]) so a hot binary is hashed
/// once. The cache is bounded in two generations: when the current one is full it becomes the
/// previous one (the older previous is forgotten), and a hit in the previous generation moves
/// back to the current one. Binaries in use stay cached however many new ones a node builds
/// (a CI node execs thousands of fresh binaries), at a cost of re-hashing, never memory.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: HashMap<(u64, u64, i64, u64), String>,
    previous: HashMap<(u64, u64, i64, u64), String>,
}

/// An executed file as the kernel opened it: its hash cache key (device, inode, ctime, size)
/// and the ID of the mount it was reached through (`None` before Linux 5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// (device, inode, ctime in nanoseconds, size).
    pub key: FileKey,
    /// Mount ID, as `/proc/<pid>/mountinfo` numbers mounts.
    pub mount: Option<u64>,
}

/// Most executables remembered by [`HashCache`].
pub const HASH_CACHE_ENTRIES: usize = 4096;

/// (device, inode, ctime in nanoseconds, size): a file's identity and version. The change
/// time, not the modification time: a process can set the latter back after rewriting a file
/// in place (`touch -r`), never the former.
pub type FileKey = (u64, u64, i64, u64);

impl HashCache {
    /// The cache key of an open file.
    pub fn key_of(f: &std::fs::File) -> Option<FileKey> {
        let meta = f.metadata().ok()?;
        Some(Self::key_of_meta(&meta))
    }

    /// The cache key of a file whose metadata was read.
    pub fn key_of_meta(meta: &std::fs::Metadata) -> FileKey {
        let ctime = meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec();
        (meta.dev(), meta.ino(), ctime, meta.size())
    }

    /// The hash of a file already hashed under `key` (device, inode, ctime, size).
    pub fn lookup(&mut self, key: FileKey) -> Option<String> {
        if let Some(h) = self.entries.get(&key) {
            return Some(h.clone());
        }
        let h = self.previous.remove(&key)?;
        self.insert(key, h.clone());
        Some(h)
    }

    /// Remembers the hash of the file under `key`.
    pub fn insert(&mut self, key: FileKey, hash: String) {
        if self.entries.len() >= HASH_CACHE_ENTRIES / 2 && !self.entries.contains_key(&key) {
            self.previous = std::mem::take(&mut self.entries);
        }
        self.entries.insert(key, hash);
    }

    /// Executables remembered now.
    pub fn len(&self) -> usize {
        self.entries.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes an executable opened through `/proc/<pid>/exe`, which reaches the file even
    /// when it lives in another mount namespace or was deleted, and keeps reaching it after the
    /// process exits.
    pub fn hash(&mut self, f: &std::fs::File) -> Option<String> {
        let key = Self::key_of(f)?;
        if let Some(h) = self.lookup(key) {
            return Some(h);
        }
        let h = hash_file(f, key)?;
        self.insert(key, h.clone());
        Some(h)
    }
}

/// The sha256 of an open file whose cache key is `key` (`None` when it is larger than
/// [`MAX_HASH_BYTES`] or cannot be read). Does not touch any cache, so it can run without a
/// lock held.
pub fn hash_file(mut f: &std::fs::File, key: FileKey) -> Option<String> {
    if key.3 > MAX_HASH_BYTES {
        return None;
    }
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_read_after_the_id_was_reused_is_left_unread() {
        // A proc-shaped directory: pid 4242 started 500 ticks after boot, in a container.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("stat"), "cpu 0\nbtime 1800000000\n").unwrap();
        let pid_dir = root.path().join("4242");
        std::fs::create_dir(&pid_dir).unwrap();
        let stat = |ticks: u64| {
            format!("4242 (sh) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {ticks} 0 0")
        };
        std::fs::write(pid_dir.join("stat"), stat(500)).unwrap();
        std::fs::write(pid_dir.join("cgroup"), "0::/kubepods/pod1/abc\n").unwrap();
        let reader = ProcReader::new(root.path());
        let started = reader.start_time_of_ticks(500);
        assert!(started.is_some());
        // The process the kernel recorded is still there: its cgroup is read.
        let mut same = ProcInfo {
            pid: 4242,
            start_time: started,
            ..Default::default()
        };
        reader.read_cgroup_of_same_process(&mut same);
        assert_eq!(same.cgroup.as_deref(), Some("0::/kubepods/pod1/abc\n"));
        // The ID now names a process that started later: not the exec's cgroup.
        std::fs::write(pid_dir.join("stat"), stat(900)).unwrap();
        let mut reused = ProcInfo {
            pid: 4242,
            start_time: started,
            ..Default::default()
        };
        reader.read_cgroup_of_same_process(&mut reused);
        assert_eq!(reused.cgroup, None);
        // No recorded start time: nothing to check against, nothing taken.
        let mut unknown = ProcInfo {
            pid: 4242,
            ..Default::default()
        };
        reader.read_cgroup_of_same_process(&mut unknown);
        assert_eq!(unknown.cgroup, None);
    }

    #[test]
    fn cmdline_is_bounded() {
        let (argv, t) = parse_cmdline(b"/bin/sh\0-c\0echo hi\0");
        assert_eq!(argv, vec!["/bin/sh", "-c", "echo hi"]);
        assert!(!t);
        let many: Vec<u8> = (0..100).flat_map(|_| b"x\0".to_vec()).collect();
        let (argv, t) = parse_cmdline(&many);
        assert_eq!(argv.len(), MAX_ARGS);
        assert!(t);
        let long = vec![b'a'; MAX_ARG_LEN * 3];
        let (argv, t) = parse_cmdline(&long);
        assert_eq!(argv[0].len(), MAX_ARG_LEN);
        assert!(t);
        assert_eq!(parse_cmdline(b""), (vec![], false));
        // Invalid UTF-8 survives lossily rather than failing the event.
        assert_eq!(parse_cmdline(b"\xff\xfe\0").0.len(), 1);
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let stat = "4242 (a b) (c)) S 4100 4242 4100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 4100,
                comm: "a b) (c)".to_string(),
                start_ticks: 987654,
                vsize: Some(1000),
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    /// A process that has exited but is not reaped yet (a zombie) has no address space, and
    /// the kernel shows its command line as empty: its argv is unreadable, never an empty
    /// argv read as a fact (which would name the bare executable, not the applet or script
    /// that ran). A live process's argv is read as it is.
    #[test]
    fn a_zombies_empty_command_line_is_unreadable_not_empty() {
        let reader = ProcReader::new("/proc");
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        // Read once its exec has completed (right after spawn it may still be the forked
        // test process, or mid-exec), as the sensor reads after the kernel's exec event.
        let want = Some(vec!["sleep".to_string(), "30".to_string()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut info = reader.read_urgent(live.id());
        while info.argv != want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            info = reader.read_urgent(live.id());
        }
        assert_eq!(info.argv, want);
        assert!(reader.has_address_space(live.id()));
        let _ = live.kill();
        let _ = live.wait();

        let mut zombie = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = zombie.id();
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| t[t.rfind(')')? + 2..].chars().next())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state() != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
            b"",
            "the kernel shows a zombie's command line as empty"
        );
        assert!(!reader.has_address_space(pid));
        let info = reader.read_urgent(pid);
        assert_eq!(info.argv, None, "{info:?}");
        assert!(!info.argv_truncated);
        let _ = zombie.wait();
    }

    /// Each case: the link, the facts, and (path, deleted, memfd, unknown).
    #[test]
    fn exe_links_are_read_with_the_kernels_facts() {
        fn check(link: &str, facts: ExeFacts, want: (&str, bool, bool, bool)) {
            let got = classify_exe(link, facts);
            assert_eq!(
                (
                    got.path.as_str(),
                    got.deleted,
                    got.memfd,
                    got.deleted_unknown
                ),
                want,
                "{link} {facts:?}"
            );
        }
        let facts = |nlink, shmem, same| ExeFacts {
            nlink,
            shmem,
            same_at_link_path: same,
        };
        check(
            "/usr/bin/id",
            facts(Some(1), Some(false), None),
            ("/usr/bin/id", false, false, false),
        );
        // Unlinked: no name left.
        check(
            "/tmp/x (deleted)",
            facts(Some(0), Some(false), None),
            ("/tmp/x", true, false, false),
        );
        // A file merely named "x (deleted)", present at that name: it keeps its name.
        check(
            "/bin/x (deleted)",
            facts(Some(1), Some(false), Some(true)),
            ("/bin/x (deleted)", false, false, false),
        );
        // Named so and then deleted: one marker is the kernel's, the other the name's.
        check(
            "/bin/x (deleted) (deleted)",
            facts(Some(0), Some(false), None),
            ("/bin/x (deleted)", true, false, false),
        );
        // Unlinked here but alive under another name (a hard link, or an image file behind an
        // overlayfs whiteout, which still reports one link).
        check(
            "/app/run (deleted)",
            facts(Some(1), Some(false), Some(false)),
            ("/app/run", true, false, false),
        );
        // Facts unreadable (the process was gone): the printed link stands, deletion unknown.
        check(
            "/bin/x (deleted)",
            facts(Some(1), None, None),
            ("/bin/x (deleted)", false, false, true),
        );
        check(
            "/bin/x (deleted)",
            ExeFacts::default(),
            ("/bin/x (deleted)", false, false, true),
        );
        // A memfd: unlinked, on shmem, with the memfd: prefix.
        check(
            "/memfd:payload (deleted)",
            facts(Some(0), Some(true), None),
            ("/memfd:payload", false, true, false),
        );
        check(
            "/memfd:runc_cloned:/proc/self/exe (deleted)",
            facts(Some(0), Some(true), None),
            ("/memfd:runc_cloned:/proc/self/exe", false, true, false),
        );
        // A deleted regular file that someone named "memfd:..." is a deleted file, not a memfd.
        check(
            "/memfd:x (deleted)",
            facts(Some(0), Some(false), None),
            ("/memfd:x", true, false, false),
        );
        assert_eq!(plain_link("/bin/x (deleted)"), None);
        assert_eq!(plain_link("/bin/x"), Some("/bin/x"));
    }

    #[test]
    fn a_file_named_deleted_is_told_from_a_deleted_one() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("x (deleted)");
        std::fs::write(&named, b"#!/bin/sh\n").unwrap();
        let f = std::fs::File::open(&named).unwrap();
        let link = format!("{} (deleted)", named.display());
        // Looked up from "/": the printed link is "<dir>/x (deleted)" for the file itself.
        let printed = named.display().to_string();
        let facts = exe_facts(Some(&f), Some(Path::new("/")), &printed);
        assert_eq!(facts.nlink, Some(1));
        assert_eq!(facts.same_at_link_path, Some(true));
        assert_eq!(classify_exe(&printed, facts).path, printed);
        // The same file, unlinked: the kernel would print "<dir>/x (deleted) (deleted)".
        std::fs::remove_file(&named).unwrap();
        let facts = exe_facts(Some(&f), Some(Path::new("/")), &link);
        assert_eq!(facts.nlink, Some(0));
        let got = classify_exe(&link, facts);
        assert_eq!((got.path.as_str(), got.deleted), (printed.as_str(), true));
    }

    #[test]
    fn reads_itself() {
        let r = ProcReader::new("/proc");
        let me = r.read(std::process::id());
        assert!(me.exe.is_some());
        assert!(me.ppid.is_some());
        assert!(me.start_time.is_some());
        assert!(me.cgroup.is_some());
        let mut cache = HashCache::default();
        let f = r.open_exe(std::process::id()).unwrap();
        let h1 = cache.hash(&f).unwrap();
        assert_eq!(h1.len(), 64);
        assert_eq!(cache.hash(&f).unwrap(), h1);
    }

    #[test]
    fn a_binary_in_use_stays_cached_through_a_flood_of_new_ones() {
        let mut cache = HashCache::default();
        let hot = (1, 1, 0, 10);
        cache.insert(hot, "hot".into());
        for i in 0..(HASH_CACHE_ENTRIES as u64 * 4) {
            cache.insert((2, i, 0, 10), format!("{i}"));
            if i % 100 == 0 {
                assert_eq!(cache.lookup(hot).as_deref(), Some("hot"), "after {i}");
            }
            assert!(cache.len() <= HASH_CACHE_ENTRIES);
        }
        // One not used again is forgotten.
        assert!(cache.lookup((2, 0, 0, 10)).is_none());
    }

    proptest::proptest! {
        /// The whole-buffer parse is the streaming parse, entry for entry and flag for flag,
        /// for any bytes: NULs anywhere, entries past the length bound, invalid UTF-8 (also
        /// where the bound cuts a character), and more entries than are kept.
        #[test]
        fn parsing_a_whole_command_line_is_parsing_it_in_pieces(
            parts in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::collection::vec(0x20u8..0x7f, 1..6),
                        proptest::collection::vec(proptest::num::u8::ANY, 0..6),
                        proptest::strategy::Just("é€".as_bytes().to_vec()),
                    ],
                    // Around the bound as often as anywhere else.
                    proptest::prop_oneof![0usize..40, 1018usize..1032, 0usize..1100],
                    proptest::bool::ANY,
                ),
                0..80,
            ),
            tail in proptest::bool::ANY,
        ) {
            let mut bytes = Vec::new();
            for (seed, len, nul) in &parts {
                // Runs of a seed's bytes (possibly invalid UTF-8) up to past MAX_ARG_LEN.
                let seed: Vec<u8> = seed.iter().map(|b| if *b == 0 { b'x' } else { *b }).collect();
                let mut entry: Vec<u8> = if seed.is_empty() { Vec::new() } else {
                    seed.iter().cycle().take(*len).copied().collect()
                };
                if *nul || entry.is_empty() {
                    entry.push(0);
                }
                bytes.extend(entry);
            }
            if tail {
                bytes.extend_from_slice("é tail".as_bytes());
            }
            let mut streamed = CmdlineParser::default();
            for piece in bytes.chunks(97) {
                streamed.feed(piece);
            }
            proptest::prop_assert_eq!(CmdlineParser::parse_whole(&bytes), streamed.finish());
        }
    }
}
