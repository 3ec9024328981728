//! eBPF capture: the kernel's own exec, fork and exit tracepoints, read through one BPF ring
//! buffer.
//!
//! The kernel side is `bpf/exec.bpf.c` (C, CO-RE, compiled by clang in `build.rs` and embedded
//! in the binary); this module loads it with aya, attaches its three `tp_btf` programs, and
//! turns the ring buffer's records into [`Record`]s. An exec record carries what the proc
//! connector cannot: argv (bounded, truncation flagged), the cgroup ID, the real IDs, the
//! parent, the start time, the name as invoked and the executed file's identity and path
//! ([`ExePath`]), all read in the exec'ing task before it can exit or exec again.
//!
//! Loss is never silent: a record the ring buffer had no room for is counted by the kernel
//! side in a per-CPU map, which [`Capture::take_losses`] reads.
//!
//! Cgroup IDs are turned into paths by [`CgroupIds`], which walks the cgroup-v2 mount: a
//! cgroup's ID is its directory's inode number there. The path is written as the kernel
//! writes the `0::` line of `/proc/<pid>/cgroup` for this sensor (relative to its cgroup
//! namespace, as the mount's root in `mountinfo` is), so the tracker reads it exactly as a
//! `/proc` read.
//!
//! No `unsafe` here: aya maps the ring buffer; records are parsed as byte slices with every
//! length checked.

use crate::procfs::CmdlineParser;
use procguard_runtime::repeated::Repeated;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether this binary carries the eBPF program (clang was found at build time).
pub const BUILT: bool = cfg!(procguard_ebpf);

/// The compiled kernel side (empty when [`BUILT`] is false).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec.bpf.o"));

/// Ring buffer size when not overridden. An exec record is 624 bytes plus its executable's
/// path and its argv (a few dozen bytes each usually, 4 KiB and 64 KiB at most): about 3,000
/// ordinary execs, three seconds of a 1,000 execs/s storm. The kernel side wakes the reader
/// when a quarter of it waits, or [`WAKE_AFTER`] after the last wake-up while records keep
/// coming. Past it records are counted lost. Its pages are mapped into the sensor (twice, for
/// wrap-around), so it is most of what eBPF adds to the sensor's RSS: 8 MiB cost 16 MiB
/// (docs/BENCHMARKS.md).
pub const RING_BYTES: u32 = 2 * 1024 * 1024;

/// While records keep coming, the kernel side wakes the reader at most this long after the
/// last wake-up (`WAKE_AFTER_NS` in exec.bpf.c), or sooner when a quarter of the ring waits: a
/// steady stream costs one wake-up per period, and a record waits at most this long (or the
/// reader's own timeout, [`crate::capture::TICK`], when it came just after a wake-up and no
/// record followed it).
pub const WAKE_AFTER: Duration = Duration::from_millis(40);

/// Records taken from the ring buffer per round at most, so that forks and exits between
/// rounds are applied while a storm lasts.
pub const RECORDS_PER_ROUND: usize = 4_096;

const KIND_EXEC: u32 = 1;
const KIND_FORK: u32 = 2;
const KIND_EXIT: u32 = 3;
const FLAG_ARGV_TRUNCATED: u32 = 1;
const FLAG_FILENAME_TRUNCATED: u32 = 2;
const FLAG_PATH_TRUNCATED: u32 = 4;
const FLAG_PATH_DELETED: u32 = 8;
const FLAG_PATH_PSEUDO: u32 = 16;
const FLAG_PATH_UNREACHABLE: u32 = 32;
/// `sizeof(struct exec_record)` (the path, then argv, follow it) and `sizeof(struct
/// task_record)` in exec.bpf.c.
const EXEC_RECORD: usize = 624;
const TASK_RECORD: usize = 40;
const NAME_BYTES: usize = 256;

/// Why eBPF capture cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary was built without clang.
    #[error("this sensor was built without the eBPF program (clang was not found at build time; install clang and libbpf-dev and rebuild)")]
    NotBuilt,
    /// The kernel has no BTF.
    #[error("the kernel exposes no BTF at /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF, Linux 5.8+)")]
    NoBtf(#[source] aya::BtfError),
    /// Loading failed (privileges, verifier, or a kernel type the program needs changed).
    #[error(
        "the kernel refused the eBPF program (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
    )]
    Load(#[source] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("cannot attach the eBPF program {program} (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, and BTF tracepoints, Linux 5.8+)")]
    Attach {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The ring buffer cannot be watched.
    #[error("cannot watch the eBPF ring buffer")]
    Wait(#[source] std::io::Error),
    /// A map is missing or unusable.
    #[error("the eBPF program's map {map} is unusable")]
    Map {
        /// The map.
        map: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
}

impl Error {
    /// What to do about it, for the log line that says why capture fell back.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::NotBuilt => "rebuild with clang and libbpf-dev installed",
            Error::NoBtf(_) => "run on a kernel built with CONFIG_DEBUG_INFO_BTF",
            Error::Wait(_) => "check the sensor's open-file limit",
            Error::Load(_) | Error::Attach { .. } | Error::Map { .. } => {
                "grant CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN"
            }
        }
    }
}

/// One record from the kernel side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A process replaced its image.
    Exec(Box<Exec>),
    /// A new process (not a thread).
    Fork {
        /// Parent's process ID.
        ppid: u32,
        /// The new process's ID.
        pid: u32,
        /// CLOCK_MONOTONIC when the kernel wrote it.
        ktime_ns: u64,
    },
    /// A process's main thread exited.
    Exit {
        /// Process ID.
        pid: u32,
        /// CLOCK_MONOTONIC when the kernel wrote it.
        ktime_ns: u64,
    },
}

/// What the kernel recorded at an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Process ID (the exec'ing thread is its process's leader after exec).
    pub pid: u32,
    /// Parent's process ID (`real_parent`, as `/proc/<pid>/stat` shows).
    pub ppid: u32,
    /// Real user ID.
    pub uid: u32,
    /// Real group ID.
    pub gid: u32,
    /// The process's start, nanoseconds of CLOCK_BOOTTIME (what `/proc/<pid>/stat` counts).
    pub start_boottime_ns: u64,
    /// CLOCK_MONOTONIC when the kernel wrote it.
    pub ktime_ns: u64,
    /// cgroup-v2 ID of the process at exec.
    pub cgroup_id: u64,
    /// The executed file's device, as `stat` reports it (`st_dev`).
    pub exe_dev: u64,
    /// The executed file's inode.
    pub exe_ino: u64,
    /// The executed file's link count at exec (0: unlinked, or a memfd).
    pub exe_nlink: u32,
    /// The executed file's file system magic (`statfs`'s `f_type`).
    pub exe_magic: u64,
    /// The executed file's own name (its dentry's, not the name it was invoked by).
    pub exe_name: String,
    /// The command name after exec.
    pub comm: String,
    /// The file name as passed to exec (may be relative, or a symbolic link).
    pub filename: String,
    /// The file name was longer than the kernel side records.
    pub filename_truncated: bool,
    /// argv, bounded as `/proc` reads are ([`CmdlineParser`]).
    pub argv: Vec<String>,
    /// argv was cut (by the kernel side's bound or the parser's).
    pub argv_truncated: bool,
    /// The executed file's path as the kernel walked it at the exec.
    pub exe_path: ExePath,
    /// The exec'ing task's mount namespace: the inode `/proc/<pid>/ns/mnt` links to (0: not
    /// read).
    pub mnt_ns: u32,
}

/// The executed file's path as the kernel side walked it at the exec, from the exec's own
/// open file (`bprm->file`) up through its dentries and mounts to the mount namespace's root:
/// what `/proc/<pid>/exe` showed a reader in that root (the sensor on the host) at that
/// moment, with d_path's marker as a flag rather than text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExePath {
    /// The path walked (for a pseudo file, `/` and its own name). Never to be taken as the
    /// path when `truncated`.
    pub path: String,
    /// Longer than the kernel side records (4 KiB, 64 names and mount crossings), or the walk
    /// failed: `path` is not the path.
    pub truncated: bool,
    /// The file was unlinked when exec'd (d_path would append " (deleted)").
    pub deleted: bool,
    /// A pseudo file the kernel names itself (a memfd): `path` is `/` and its dentry's name.
    pub pseudo: bool,
    /// The walk met a dentry below its mount's root that is its own parent; d_path prints "/".
    pub unreachable: bool,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// A NUL-terminated string in a fixed field.
fn c_str(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The kernel's internal device number (`MKDEV`: major << 20 | minor) as `stat` reports it.
fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// Parses one ring buffer record. A record of an unknown kind or a size that does not match
/// its kind is `None` (never read past its end).
pub fn parse(b: &[u8]) -> Option<Record> {
    if b.len() < 8 {
        return None;
    }
    match u32_at(b, 0) {
        KIND_FORK | KIND_EXIT if b.len() == TASK_RECORD => {
            let (pid, ppid, ktime_ns) = (u32_at(b, 8), u32_at(b, 16), u64_at(b, 32));
            Some(if u32_at(b, 0) == KIND_FORK {
                Record::Fork {
                    ppid,
                    pid,
                    ktime_ns,
                }
            } else {
                Record::Exit { pid, ktime_ns }
            })
        }
        KIND_EXEC if b.len() >= EXEC_RECORD => {
            let flags = u32_at(b, 4);
            let var = &b[EXEC_RECORD..];
            let path_len = (u32_at(b, 616) as usize).min(var.len());
            let (path, var) = var.split_at(path_len);
            let argv_len = (u32_at(b, 76) as usize).min(var.len());
            let (argv, cut) = CmdlineParser::parse_whole(&var[..argv_len]);
            Some(Record::Exec(Box::new(Exec {
                pid: u32_at(b, 12),
                ppid: u32_at(b, 16),
                uid: u32_at(b, 20),
                gid: u32_at(b, 24),
                exe_dev: user_dev(u32_at(b, 28)),
                start_boottime_ns: u64_at(b, 32),
                cgroup_id: u64_at(b, 40),
                exe_ino: u64_at(b, 48),
                exe_magic: u64_at(b, 56),
                ktime_ns: u64_at(b, 64),
                mnt_ns: u32_at(b, 620),
                exe_nlink: u32_at(b, 72),
                comm: c_str(&b[88..104]),
                exe_name: c_str(&b[104..104 + NAME_BYTES]),
                filename: c_str(&b[360..360 + NAME_BYTES]),
                filename_truncated: flags & FLAG_FILENAME_TRUNCATED != 0,
                argv,
                argv_truncated: cut || flags & FLAG_ARGV_TRUNCATED != 0,
                exe_path: ExePath {
                    path: String::from_utf8_lossy(path).into_owned(),
                    // An empty path is no path (the kernel side writes at least "/").
                    truncated: flags & FLAG_PATH_TRUNCATED != 0 || path.is_empty(),
                    deleted: flags & FLAG_PATH_DELETED != 0,
                    pseudo: flags & FLAG_PATH_PSEUDO != 0,
                    unreachable: flags & FLAG_PATH_UNREACHABLE != 0,
                },
            })))
        }
        _ => None,
    }
}

/// The loaded and attached kernel side. Dropping it detaches the programs.
pub struct Capture {
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    losses: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    /// Losses already reported by [`Capture::take_losses`].
    reported: u64,
    /// The ring buffer, watched edge-triggered: a wait ends on the kernel side's wake-up
    /// (`wake_flags` in exec.bpf.c), not merely because records are waiting.
    woken: nix::sys::epoll::Epoll,
    /// The descriptor `woken` watches (the ring buffer's, duplicated).
    _watched: std::os::fd::OwnedFd,
    /// Keeps the programs attached.
    _ebpf: aya::Ebpf,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("reported", &self.reported)
            .finish()
    }
}

impl Capture {
    /// Loads the kernel side with a ring buffer of `ring_bytes` (a power of two, at least a
    /// page) and attaches it. From here every exec, fork and exit is recorded.
    pub fn open(ring_bytes: u32) -> Result<Self, Error> {
        if !BUILT {
            return Err(Error::NotBuilt);
        }
        let btf = aya::Btf::from_sys_fs().map_err(Error::NoBtf)?;
        // One scratch slot per possible CPU (the kernel side indexes it by CPU).
        let cpus = aya::util::nr_cpus()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1024);
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(&btf))
            .set_max_entries("events", ring_bytes)
            .set_max_entries("scratch", cpus)
            .load(OBJECT)
            .map_err(Error::Load)?;
        for (program, tracepoint) in [
            ("on_fork", "sched_process_fork"),
            ("on_exit", "sched_process_exit"),
            ("on_exec", "sched_process_exec"),
        ] {
            let attach = |ebpf: &mut aya::Ebpf| -> Result<(), aya::programs::ProgramError> {
                let p: &mut aya::programs::BtfTracePoint = ebpf
                    .program_mut(program)
                    .ok_or(aya::programs::ProgramError::NotLoaded)?
                    .try_into()?;
                p.load(tracepoint, &btf)?;
                p.attach()?;
                Ok(())
            };
            attach(&mut ebpf).map_err(|source| Error::Attach { program, source })?;
        }
        let map = |ebpf: &mut aya::Ebpf, map: &'static str| {
            ebpf.take_map(map).ok_or(Error::Map {
                map,
                source: aya::maps::MapError::InvalidName { name: map.into() },
            })
        };
        let events = map(&mut ebpf, "events")?;
        // A second descriptor of the ring buffer, for the edge-triggered watch below (aya's
        // ring buffer lends out only its raw descriptor).
        let watched = match &events {
            aya::maps::Map::RingBuf(data) => Some(
                std::os::fd::AsFd::as_fd(data.fd())
                    .try_clone_to_owned()
                    .map_err(Error::Wait)?,
            ),
            _ => None,
        };
        let ring = aya::maps::RingBuf::try_from(events).map_err(|source| Error::Map {
            map: "events",
            source,
        })?;
        let losses =
            aya::maps::PerCpuArray::try_from(map(&mut ebpf, "losses")?).map_err(|source| {
                Error::Map {
                    map: "losses",
                    source,
                }
            })?;
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        // RingBuf::try_from checked the map's type, so `watched` is there.
        let watched = watched.ok_or(Error::Map {
            map: "events",
            source: aya::maps::MapError::InvalidName {
                name: "events".into(),
            },
        })?;
        let woken = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .and_then(|e| {
                e.add(
                    &watched,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
                )?;
                Ok(e)
            })
            .map_err(|e| Error::Wait(e.into()))?;
        Ok(Self {
            ring,
            losses,
            reported: 0,
            woken,
            _watched: watched,
            _ebpf: ebpf,
        })
    }

    /// Waits up to `timeout` for the kernel side to wake the reader: when a quarter of the
    /// ring buffer waits, or for a record that came [`WAKE_AFTER`] or more after the last
    /// wake-up. Records that came between two wake-ups wait for the next one, or for the
    /// timeout. `true` when woken.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut ready = [nix::sys::epoll::EpollEvent::empty()];
        match self.woken.wait(&mut ready, ms) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes up to `max` records, in the ring buffer's (the kernel's commit) order.
    pub fn drain(&mut self, into: &mut Vec<Record>, max: usize) {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.ring.next() else {
                return;
            };
            taken += 1;
            match parse(&item) {
                Some(r) => into.push(r),
                None => {
                    static UNPARSABLE: Repeated = Repeated::new(Duration::from_secs(60));
                    if let Some(held_back) = UNPARSABLE.admit() {
                        tracing::warn!(
                            message = "Unparsable eBPF record skipped.",
                            bytes = item.len(),
                            held_back
                        );
                    }
                }
            }
        }
    }

    /// Records lost (no room in the ring buffer) since the last call.
    pub fn take_losses(&mut self) -> u64 {
        let total = match self.losses.get(&0, 0) {
            Ok(per_cpu) => per_cpu.iter().sum::<u64>(),
            Err(error) => {
                static UNREAD: Repeated = Repeated::new(Duration::from_secs(60));
                if let Some(held_back) = UNREAD.admit() {
                    tracing::warn!(message = "Cannot read the eBPF loss counters.", %error, held_back);
                }
                return 0;
            }
        };
        let new = total.saturating_sub(self.reported);
        self.reported = total;
        new
    }
}

/// Directories held in the ID → path map at most (a node has a few thousand cgroups).
pub const MAX_CGROUPS: usize = 65_536;
/// The cgroup-v2 tree is walked again on a miss at most this often; an ID still unknown
/// (a cgroup created and removed in between) is read from `/proc` instead.
pub const REWALK_EVERY: Duration = Duration::from_millis(50);

/// cgroup-v2 IDs to paths, from the v2 mount's directory inodes.
#[derive(Debug)]
pub struct CgroupIds {
    /// Where cgroup2 is mounted.
    mount: PathBuf,
    /// The mount's root as `mountinfo` shows it to this sensor (relative to its cgroup
    /// namespace, as `/proc/<pid>/cgroup` is).
    root: String,
    /// Each cgroup's `/proc/<pid>/cgroup` line by ID, written once at the walk rather than
    /// at every exec.
    lines: HashMap<u64, String>,
    walked: Option<Instant>,
    /// cgroup v2 is mounted beside v1 controllers (under `--cgroup-root`, not at it).
    hybrid: bool,
}

impl CgroupIds {
    /// The cgroup-v2 hierarchy mounted at `cgroup_root` or under it (a hybrid host's
    /// `unified`), read from `mountinfo`. `None` on a cgroup-v1-only host.
    pub fn find(proc_root: &Path, cgroup_root: &Path) -> Option<Self> {
        let info = std::fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
        let (mount, root) = cgroup2_mount(&info, cgroup_root)?;
        let hybrid = mount != cgroup_root;
        let mut ids = Self {
            mount,
            root,
            lines: HashMap::new(),
            walked: None,
            hybrid,
        };
        ids.walk();
        Some(ids)
    }

    /// The mount point walked.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The `/proc/<pid>/cgroup` line the kernel would show for the cgroup `id`, when it is
    /// (still) in the tree. On a hybrid host, not for the v2 root: a runtime that places its
    /// containers in the v1 controllers only leaves them there, and only `/proc` (every
    /// hierarchy's line) can say where they are.
    pub fn line(&mut self, id: u64) -> Option<String> {
        if !self.lines.contains_key(&id) && self.walked.is_none_or(|t| t.elapsed() >= REWALK_EVERY)
        {
            self.walk();
        }
        let line = self.lines.get(&id)?;
        if self.hybrid
            && line.strip_prefix("0::").and_then(|l| l.strip_suffix('\n')) == Some(&self.root)
        {
            return None;
        }
        Some(line.clone())
    }

    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        self.lines.clear();
        let mut stack = vec![(self.mount.clone(), self.root.clone())];
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            if self.lines.len() >= MAX_CGROUPS {
                tracing::warn!(
                    message = "More cgroups than the ID map holds; the rest are read from /proc.",
                    limit = MAX_CGROUPS
                );
                return;
            }
            self.lines.insert(meta.ino(), format!("0::{path}\n"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((e.path(), child));
                }
            }
        }
    }
}

/// The cgroup2 mount at or under `cgroup_root` in a `mountinfo` text, with its root.
fn cgroup2_mount(mountinfo: &str, cgroup_root: &Path) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|l| {
        // ID parent major:minor root mount-point options... - fstype source super-options
        let (left, right) = l.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split(' ');
        let root = unescape(f.nth(3)?);
        let point = PathBuf::from(unescape(f.next()?));
        point.starts_with(cgroup_root).then_some((point, root))
    })
}

/// `mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_record(argv: &[u8], argv_len: u32, flags: u32) -> Vec<u8> {
        exec_record_with_path(b"", argv, argv_len, flags)
    }

    fn exec_record_with_path(path: &[u8], argv: &[u8], argv_len: u32, flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; EXEC_RECORD + path.len() + argv.len()];
        b[0..4].copy_from_slice(&KIND_EXEC.to_ne_bytes());
        b[4..8].copy_from_slice(&flags.to_ne_bytes());
        b[12..16].copy_from_slice(&42u32.to_ne_bytes());
        b[16..20].copy_from_slice(&7u32.to_ne_bytes());
        // 8:1 (sda1) as the kernel encodes it.
        b[28..32].copy_from_slice(&((8u32 << 20) | 1).to_ne_bytes());
        b[40..48].copy_from_slice(&1234u64.to_ne_bytes());
        b[76..80].copy_from_slice(&argv_len.to_ne_bytes());
        b[88..92].copy_from_slice(b"sh\0\0");
        b[620..624].copy_from_slice(&4026531841u32.to_ne_bytes());
        b[616..620].copy_from_slice(&(path.len() as u32).to_ne_bytes());
        b[EXEC_RECORD..EXEC_RECORD + path.len()].copy_from_slice(path);
        b[EXEC_RECORD + path.len()..].copy_from_slice(argv);
        b
    }

    #[test]
    fn the_executables_path_is_read_before_argv_with_its_flags() {
        let r = exec_record_with_path(b"/tmp/x (deleted)", b"x\0-c\0", 5, FLAG_PATH_DELETED);
        let Some(Record::Exec(e)) = parse(&r) else {
            panic!("an exec");
        };
        // A file named so and deleted: the flag says deleted, the name stays as it is.
        assert_eq!(e.exe_path.path, "/tmp/x (deleted)");
        assert!(e.exe_path.deleted && !e.exe_path.truncated && !e.exe_path.pseudo);
        assert_eq!(e.argv, ["x", "-c"]);
        // No path at all is never a path; a truncated one is flagged.
        let Some(Record::Exec(e)) = parse(&exec_record(b"x\0", 2, 0)) else {
            panic!("an exec");
        };
        assert!(e.exe_path.truncated);
        let Some(Record::Exec(e)) =
            parse(&exec_record_with_path(b"/a/b", b"", 0, FLAG_PATH_TRUNCATED))
        else {
            panic!("an exec");
        };
        assert!(e.exe_path.truncated);
        // A path length past the record is bounded by it.
        let mut r = exec_record_with_path(b"/a", b"", 0, 0);
        r[616..620].copy_from_slice(&u32::MAX.to_ne_bytes());
        let Some(Record::Exec(e)) = parse(&r) else {
            panic!("an exec");
        };
        assert_eq!((e.exe_path.path.as_str(), e.argv.len()), ("/a", 0));
    }

    #[test]
    fn an_exec_record_reads_as_the_kernel_wrote_it() {
        let Some(Record::Exec(e)) = parse(&exec_record(b"sh\0-c\0id\0", 9, 0)) else {
            panic!("an exec");
        };
        assert_eq!((e.pid, e.ppid, e.cgroup_id), (42, 7, 1234));
        assert_eq!(e.mnt_ns, 4026531841);
        assert_eq!(e.argv, ["sh", "-c", "id"]);
        assert!(!e.argv_truncated);
        assert_eq!(e.comm, "sh");
        assert_eq!(e.exe_dev, libc::makedev(8, 1));
    }

    #[test]
    fn truncation_is_flagged_and_lengths_never_read_past_the_record() {
        let Some(Record::Exec(e)) = parse(&exec_record(b"a\0b", 3, FLAG_ARGV_TRUNCATED)) else {
            panic!("an exec");
        };
        assert!(e.argv_truncated);
        // A length past the record is bounded by it.
        assert!(matches!(
            parse(&exec_record(b"x\0", u32::MAX, 0)),
            Some(Record::Exec(_))
        ));
        assert_eq!(
            parse(&exec_record(b"x\0", 2, 0)[..EXEC_RECORD - 1]),
            None,
            "short record"
        );
        assert_eq!(parse(&[9, 0, 0, 0, 0, 0, 0, 0]), None, "unknown kind");
    }

    #[test]
    fn the_cgroup2_mount_is_found_under_the_cgroup_root() {
        let info = "30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                    31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    40 30 0:35 /../.. /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info, Path::new("/sys/fs/cgroup")),
            Some(("/sys/fs/cgroup/unified".into(), "/../..".into()))
        );
        assert_eq!(cgroup2_mount(info, Path::new("/elsewhere")), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    /// This process's own cgroup ID is the inode of its cgroup-v2 directory, and resolves
    /// to the line `/proc/self/cgroup` shows.
    #[test]
    fn a_cgroup_id_resolves_to_the_line_proc_shows() {
        let Some(mut ids) = CgroupIds::find(Path::new("/proc"), Path::new("/sys/fs/cgroup")) else {
            eprintln!("SKIP: no cgroup2 mount under /sys/fs/cgroup");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            eprintln!("SKIP: no cgroup-v2 line");
            return;
        };
        let rel = path.trim_start_matches('/');
        let dir = ids.mount().join(rel);
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let want = (!ids.hybrid || path != "/").then(|| format!("0::{path}\n"));
        assert_eq!(ids.line(ino), want);
        // The root itself is left to /proc on a hybrid host.
        let root = std::fs::metadata(ids.mount()).unwrap().ino();
        assert_eq!(ids.line(root).is_none(), ids.hybrid);
    }
}
