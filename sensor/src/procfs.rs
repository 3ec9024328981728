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
    /// Executable path with any " (deleted)" suffix removed.
    pub exe: Option<String>,
    /// The executable was deleted.
    pub exe_deleted: bool,
    /// The executable is a memfd.
    pub exe_memfd: bool,
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
}

/// Splits a raw cmdline into bounded argv.
pub fn parse_cmdline(raw: &[u8]) -> (Vec<String>, bool) {
    let mut truncated = false;
    let mut argv = Vec::new();
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return (argv, false);
    }
    for arg in raw.split(|b| *b == 0) {
        if argv.len() == MAX_ARGS {
            truncated = true;
            break;
        }
        let mut s = String::from_utf8_lossy(arg).into_owned();
        if s.len() > MAX_ARG_LEN {
            let mut cut = MAX_ARG_LEN;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            truncated = true;
        }
        argv.push(s);
    }
    (argv, truncated)
}

/// Reads (comm, ppid, starttime in clock ticks) from `/proc/<pid>/stat`. The command name is
/// between the first '(' and the last ')' and may itself hold spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Fields after the name start at field 3 (state); ppid is field 4, starttime field 22.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// Interprets an `exe` link target: strips " (deleted)" and spots memfds.
pub fn parse_exe_link(target: &str) -> (String, bool, bool) {
    let (path, deleted) = match target.strip_suffix(" (deleted)") {
        Some(p) => (p.to_string(), true),
        None => (target.to_string(), false),
    };
    let memfd = path.starts_with("/memfd:");
    (path, deleted && !memfd, memfd)
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
                    .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            });
        Self {
            root,
            boot_time,
            ticks: procfs::ticks_per_second().max(1),
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
        let mut info = ProcInfo {
            pid,
            ..Default::default()
        };
        // exe and cmdline first: they are what a short-lived process loses soonest.
        if let Ok(t) = std::fs::read_link(self.path(pid, "exe")) {
            let (p, deleted, memfd) = parse_exe_link(&t.to_string_lossy());
            info.exe = Some(p);
            info.exe_deleted = deleted;
            info.exe_memfd = memfd;
        }
        if let Ok(raw) = std::fs::read(self.path(pid, "cmdline")) {
            let (argv, truncated) = parse_cmdline(&raw);
            info.argv = Some(argv);
            info.argv_truncated = truncated;
        }
        info.cgroup = std::fs::read_to_string(self.path(pid, "cgroup")).ok();
        // stat and status are parsed by hand for the few fields needed: this runs for every
        // exec, and a full parse of either file costs more than the read itself.
        if let Ok(stat) = std::fs::read_to_string(self.path(pid, "stat")) {
            if let Some((comm, ppid, start)) = parse_stat(&stat) {
                info.comm = Some(comm);
                // A task being torn down reports parent 0: that is not its parent, so it counts
                // as unread (the fork event still knows the parent).
                info.ppid = (ppid != 0 || pid <= 1).then_some(ppid);
                info.start_time = self
                    .boot_time
                    .map(|b| b + Duration::from_millis(start * 1000 / self.ticks));
            }
        }
        if let Ok(status) = std::fs::read_to_string(self.path(pid, "status")) {
            let real = |prefix: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            };
            info.uid = real("Uid:");
            info.gid = real("Gid:");
        }
        info
    }
}

/// sha256 of executables, cached by (device, inode, mtime, size) so a hot binary is hashed
/// once. The cache is bounded; when full it starts over, which costs re-hashing, never memory.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: HashMap<(u64, u64, i64, u64), String>,
}

/// Most executables remembered by [`HashCache`].
pub const HASH_CACHE_ENTRIES: usize = 4096;

impl HashCache {
    /// The hash of a file already hashed under `key` (device, inode, mtime, size).
    pub fn lookup(&self, key: (u64, u64, i64, u64)) -> Option<String> {
        self.entries.get(&key).cloned()
    }

    /// Hashes an executable opened through `/proc/<pid>/exe`, which reaches the file even
    /// when it lives in another mount namespace or was deleted, and keeps reaching it after the
    /// process exits.
    pub fn hash(&mut self, mut f: &std::fs::File) -> Option<String> {
        let meta = f.metadata().ok()?;
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.size());
        if let Some(h) = self.entries.get(&key) {
            return Some(h.clone());
        }
        if meta.size() > MAX_HASH_BYTES {
            return None;
        }
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher).ok()?;
        let h = hex::encode(hasher.finalize());
        if self.entries.len() >= HASH_CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key, h.clone());
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(("a b) (c)".to_string(), 4100, 987654))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn exe_links_flag_deleted_and_memfd() {
        assert_eq!(
            parse_exe_link("/usr/bin/id"),
            ("/usr/bin/id".into(), false, false)
        );
        assert_eq!(
            parse_exe_link("/tmp/x (deleted)"),
            ("/tmp/x".into(), true, false)
        );
        assert_eq!(
            parse_exe_link("/memfd:payload (deleted)"),
            ("/memfd:payload".into(), false, true)
        );
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
}
