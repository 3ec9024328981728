//! The netlink process connector: fork, exec and exit events straight from the kernel.
//!
//! This is the one module that uses `unsafe`: the connector has no safe wrapper in `nix` or
//! `libc`, so the socket is opened, bound, configured and read with raw `libc` calls. Each
//! `unsafe` block is a single syscall on a file descriptor this module owns, with buffers whose
//! sizes are passed alongside. Message parsing is safe code over byte slices and checks every
//! length, because a truncated datagram must not become an out-of-bounds read.
//!
//! The module also raises the scheduling priority of the capture threads
//! ([`raise_thread_priority`]): they race every process's exit, and under CPU contention a
//! default-priority thread loses that race for short-lived processes. It is a single
//! `setpriority(2)` on the calling thread.
//!
//! Listening needs CAP_NET_ADMIN in the initial user namespace and the initial PID namespace
//! (a DaemonSet with `hostPID: true`). On kernels from 6.6 the subscription carries an event
//! filter, so the kernel sends only fork, exec and exit events.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;

/// Kernel event type bits (`enum proc_cn_event`).
pub const PROC_EVENT_FORK: u32 = 0x0000_0001;
/// Exec.
pub const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// Exit.
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// User ID change.
pub const PROC_EVENT_UID: u32 = 0x0000_0004;
/// Group ID change.
pub const PROC_EVENT_GID: u32 = 0x0000_0040;
/// Command name change.
pub const PROC_EVENT_COMM: u32 = 0x0000_0200;
/// Every event kind the kernel reports (fork 0x1, exec 0x2, uid 0x4, gid 0x40, sid 0x80,
/// ptrace 0x100, comm 0x200, coredump 0x4000_0000, exit 0x8000_0000); the "non-zero exits
/// only" modifier (0x2000_0000) is left out.
pub const PROC_EVENT_ALL: u32 = 0xc000_03c7;

/// One event from the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A task was created. For a new process `child_pid == child_tgid`.
    Fork {
        /// Parent thread group ID.
        parent_tgid: u32,
        /// Child thread ID.
        child_pid: u32,
        /// Child thread group ID.
        child_tgid: u32,
    },
    /// A process replaced its image.
    Exec {
        /// Thread group ID (the process ID).
        tgid: u32,
    },
    /// A task exited.
    Exit {
        /// Thread ID.
        pid: u32,
        /// Thread group ID.
        tgid: u32,
    },
    /// A process's real and effective user IDs changed (also sent by a set-user-ID exec).
    Uid {
        /// Thread ID.
        pid: u32,
        /// Thread group ID.
        tgid: u32,
        /// Real UID.
        ruid: u32,
        /// Effective UID.
        euid: u32,
    },
    /// A process's real and effective group IDs changed.
    Gid {
        /// Thread ID.
        pid: u32,
        /// Thread group ID.
        tgid: u32,
        /// Real GID.
        rgid: u32,
        /// Effective GID.
        egid: u32,
    },
    /// A task's command name was set through `prctl(PR_SET_NAME)` or `/proc/<pid>/comm`
    /// (an exec changes it too, but without this event).
    Comm {
        /// Thread ID.
        pid: u32,
        /// Thread group ID.
        tgid: u32,
        /// The name, NUL-padded (at most 15 bytes and a NUL in the kernel).
        comm: [u8; 16],
    },
    /// Any other event kind (ignored).
    Other,
}

impl ProcEvent {
    /// The command name of a [`ProcEvent::Comm`] as text.
    pub fn comm_text(comm: &[u8; 16]) -> String {
        let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
        String::from_utf8_lossy(&comm[..end]).into_owned()
    }
}

/// An event with the per-CPU sequence number the kernel stamped on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    /// CPU that emitted the event.
    pub cpu: u32,
    /// Per-CPU sequence number (`cn_msg.seq`).
    pub seq: u32,
    /// Kernel monotonic timestamp in nanoseconds.
    pub timestamp_ns: u64,
    /// The event.
    pub event: ProcEvent,
}

/// What one `recv` produced.
#[derive(Debug)]
pub enum Received {
    /// Events, in kernel order.
    Events(Vec<Stamped>),
    /// The socket buffer overflowed: events were lost (ENOBUFS).
    Overrun,
}

/// Datagrams taken per [`ProcConnector::recv_many`] call.
pub const RECV_SLOTS: usize = 64;
/// Bytes per datagram slot: a connector datagram is under 100 bytes.
const RECV_SLOT: usize = 1024;

/// What one [`ProcConnector::recv_many`] call received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Datagrams received; fewer than [`RECV_SLOTS`] means the socket was emptied.
    pub datagrams: usize,
    /// The kernel reported lost events (ENOBUFS).
    pub overrun: bool,
}

/// A subscribed proc connector socket.
#[derive(Debug)]
pub struct ProcConnector {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Event kinds subscribed to (`PROC_EVENT_*` bits), where the kernel filters.
    events: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
}

/// Parses one datagram into events. Malformed or truncated messages are skipped, never read
/// past their end.
pub fn parse_datagram(buf: &[u8]) -> Received {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let Some(len) = u32_at(buf, off).map(|l| l as usize) else {
            break;
        };
        let ty = u16_at(buf, off + 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        if ty == NLMSG_OVERRUN {
            return Received::Overrun;
        }
        let msg = &buf[off + NLMSG_HDRLEN..off + len];
        if ty != NLMSG_ERROR {
            if let Some(ev) = parse_cn_msg(msg) {
                out.push(ev);
            }
        }
        // Netlink messages are 4-byte aligned.
        off += (len + 3) & !3;
    }
    Received::Events(out)
}

fn parse_cn_msg(msg: &[u8]) -> Option<Stamped> {
    let idx = u32_at(msg, 0)?;
    let val = u32_at(msg, 4)?;
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return None;
    }
    let seq = u32_at(msg, 8)?;
    let data_len = u16_at(msg, 16)? as usize;
    let data = msg.get(CN_MSG_LEN..CN_MSG_LEN + data_len)?;
    let what = u32_at(data, 0)?;
    let cpu = u32_at(data, 4)?;
    let timestamp_ns = u64_at(data, 8)?;
    let d = 16;
    let event = match what {
        PROC_EVENT_FORK => ProcEvent::Fork {
            parent_tgid: u32_at(data, d + 4)?,
            child_pid: u32_at(data, d + 8)?,
            child_tgid: u32_at(data, d + 12)?,
        },
        PROC_EVENT_EXEC => ProcEvent::Exec {
            tgid: u32_at(data, d + 4)?,
        },
        PROC_EVENT_EXIT => ProcEvent::Exit {
            pid: u32_at(data, d)?,
            tgid: u32_at(data, d + 4)?,
        },
        PROC_EVENT_UID => ProcEvent::Uid {
            pid: u32_at(data, d)?,
            tgid: u32_at(data, d + 4)?,
            ruid: u32_at(data, d + 8)?,
            euid: u32_at(data, d + 12)?,
        },
        PROC_EVENT_GID => ProcEvent::Gid {
            pid: u32_at(data, d)?,
            tgid: u32_at(data, d + 4)?,
            rgid: u32_at(data, d + 8)?,
            egid: u32_at(data, d + 12)?,
        },
        PROC_EVENT_COMM => ProcEvent::Comm {
            pid: u32_at(data, d)?,
            tgid: u32_at(data, d + 4)?,
            comm: data.get(d + 8..d + 24)?.try_into().ok()?,
        },
        _ => ProcEvent::Other,
    };
    Some(Stamped {
        cpu,
        seq,
        timestamp_ns,
        event,
    })
}

/// Whether the running kernel understands the event filter (Linux 6.6 and later).
/// Whether the kernel filters proc connector events per socket (6.6 and later). Without it
/// every socket receives every event.
pub fn kernel_has_filter() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 6)
}

fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the socket inside the network namespace at `netns` (for a pod without host
/// networking: the kernel sends proc events only to sockets of the initial network namespace).
/// A short-lived thread enters the namespace, so no other thread of the sensor ever leaves its
/// own; a socket keeps the namespace it was created in.
fn socket_in(netns: &std::path::Path) -> io::Result<OwnedFd> {
    let ns = std::fs::File::open(netns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {}: {e}", netns.display()),
        )
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::other(format!(
                    "cannot enter network namespace {} (needs CAP_SYS_ADMIN): {e}",
                    netns.display()
                ))
            })?;
            raw_socket()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

impl ProcConnector {
    /// Opens the socket (in `netns` when given), grows its receive buffer to `rcvbuf` bytes,
    /// and subscribes to the `events` kinds (`PROC_EVENT_*` bits; on kernels without the
    /// per-socket filter, to everything).
    pub fn open(rcvbuf: usize, netns: Option<&std::path::Path>, events: u32) -> io::Result<Self> {
        let fd = match netns {
            Some(ns) => socket_in(ns)?,
            None => raw_socket()?,
        };
        let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: setsockopt(2) with a pointer to a live c_int and its exact size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        addr.nl_pid = 0;
        // SAFETY: bind(2) with a pointer to a live sockaddr_nl and its exact size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut conn = Self {
            fd,
            buf: vec![0u8; 64 * 1024],
            events,
        };
        conn.control(PROC_CN_MCAST_LISTEN)?;
        Ok(conn)
    }

    fn control(&mut self, op: u32) -> io::Result<()> {
        let filter = kernel_has_filter();
        let payload: Vec<u8> = if filter {
            let mut p = op.to_ne_bytes().to_vec();
            p.extend_from_slice(&self.events.to_ne_bytes());
            p
        } else {
            op.to_ne_bytes().to_vec()
        };
        let total = NLMSG_HDRLEN + CN_MSG_LEN + payload.len();
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&std::process::id().to_ne_bytes());
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(payload.len() as u16).to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&payload);
        // SAFETY: send(2) of a live buffer with its exact length.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until the kernel delivers a datagram, or the read timeout passes.
    pub fn recv(&mut self) -> io::Result<Received> {
        self.recv_flags(0)
    }

    /// Like [`ProcConnector::recv`], without waiting: `WouldBlock` when nothing is queued.
    /// The draining thread calls it after each blocking receive to take everything queued in
    /// one wake-up.
    pub fn recv_nowait(&mut self) -> io::Result<Received> {
        self.recv_flags(libc::MSG_DONTWAIT)
    }

    fn recv_flags(&mut self, flags: libc::c_int) -> io::Result<Received> {
        // SAFETY: recv(2) into our own buffer with its exact length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                flags,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(Received::Overrun);
            }
            return Err(err);
        }
        Ok(parse_datagram(&self.buf[..n as usize]))
    }

    /// Receives up to [`RECV_SLOTS`] datagrams in one `recvmmsg(2)`, appending their events
    /// to `out`: when `wait`, blocks for the first (up to the read timeout) and takes the rest
    /// without waiting; otherwise never blocks. `WouldBlock`/`TimedOut` when nothing came.
    pub fn recv_many(&mut self, wait: bool, out: &mut Vec<Stamped>) -> io::Result<Batch> {
        const _: () = assert!(RECV_SLOTS * RECV_SLOT <= 64 * 1024);
        // SAFETY: iovec and mmsghdr are plain data; zeroed is a valid value for both.
        let mut iov: [libc::iovec; RECV_SLOTS] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; RECV_SLOTS] = unsafe { std::mem::zeroed() };
        let base = self.buf.as_mut_ptr();
        for (i, (v, h)) in iov.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            // SAFETY: slot `i` lies within `buf` (asserted above: all slots fit in it).
            v.iov_base = unsafe { base.add(i * RECV_SLOT) }.cast();
            v.iov_len = RECV_SLOT;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: recvmmsg(2) with RECV_SLOTS headers, each pointing at its own RECV_SLOT-byte
        // slot of our buffer; all of them outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                RECV_SLOTS as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(Batch {
                    datagrams: 0,
                    overrun: true,
                });
            }
            return Err(err);
        }
        let mut overrun = false;
        for (i, h) in hdrs.iter().take(n as usize).enumerate() {
            let len = (h.msg_len as usize).min(RECV_SLOT);
            let slot = &self.buf[i * RECV_SLOT..i * RECV_SLOT + len];
            match parse_datagram(slot) {
                Received::Events(e) => out.extend(e),
                Received::Overrun => overrun = true,
            }
        }
        Ok(Batch {
            datagrams: n as usize,
            overrun,
        })
    }

    /// A second descriptor of the same socket, for [`wait_readable`] from another thread.
    pub fn watch_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Sets the timeout of blocking receives.
    pub fn set_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt(2) with a pointer to a live timeval and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        let _ = self.control(PROC_CN_MCAST_IGNORE);
    }
}

/// Waits up to `timeout` for a datagram (or, for the eBPF ring buffer, a record) to be queued
/// on `fd`, without receiving it. `false` when the time passed.
pub fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll(2) on one pollfd we own, length 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    match rc {
        0 => Ok(false),
        r if r > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// The kernel's monotonic clock in nanoseconds, the clock of [`Stamped::timestamp_ns`].
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Sets the calling thread's nice value (negative is more favoured). Needs CAP_SYS_NICE for
/// values below 0; the caller decides what to do when it is refused.
pub fn raise_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: setpriority(2) on our own thread id, plain integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How far behind its CPU's newest sequence number an event may arrive and still fill its
/// gap. Events arrive out of order: execs and the other kinds come on two sockets read at
/// different moments (during a burst, a CPU numbers thousands of events between them), and the
/// kernel stamps an event's time before it takes the per-CPU sequence number. 4,096 missing
/// numbers per CPU at most are remembered (16 KiB).
pub const GAP_WINDOW: u32 = 4_096;

/// Detects lost events from the per-CPU sequence numbers. The kernel numbers every event it
/// sends on a CPU, whatever its kind, so the sensor's subscriptions must cover every kind
/// together for a jump to mean a loss (see [`crate::capture`]).
#[derive(Debug, Default)]
pub struct GapDetector {
    cpus: std::collections::HashMap<u32, CpuSeq>,
}

#[derive(Debug)]
struct CpuSeq {
    /// Newest sequence number seen.
    high: u32,
    /// Numbers within [`GAP_WINDOW`] of `high` not seen yet (at most that many).
    missing: Vec<u32>,
}

impl GapDetector {
    /// Records one event; returns how many events of its CPU are now known lost: numbers
    /// skipped and not filled within [`GAP_WINDOW`] later numbers. Sequence numbers wrap.
    pub fn observe(&mut self, cpu: u32, seq: u32) -> u64 {
        let Some(c) = self.cpus.get_mut(&cpu) else {
            self.cpus.insert(
                cpu,
                CpuSeq {
                    high: seq,
                    missing: Vec::new(),
                },
            );
            return 0;
        };
        let mut lost = 0u64;
        let ahead = seq.wrapping_sub(c.high) as i32;
        if ahead > 0 {
            let skipped = ahead as u32 - 1;
            if skipped > GAP_WINDOW {
                lost += u64::from(skipped - GAP_WINDOW);
            }
            let from = seq.wrapping_sub(skipped.min(GAP_WINDOW));
            let mut n = from;
            while n != seq {
                c.missing.push(n);
                n = n.wrapping_add(1);
            }
            c.high = seq;
            let high = c.high;
            let before = c.missing.len();
            c.missing.retain(|m| high.wrapping_sub(*m) <= GAP_WINDOW);
            lost += (before - c.missing.len()) as u64;
        } else if let Some(i) = c.missing.iter().position(|m| *m == seq) {
            // A late arrival fills its gap.
            c.missing.swap_remove(i);
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(what: u32, seq: u32, fields: &[u32]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&what.to_ne_bytes());
        data.extend_from_slice(&1u32.to_ne_bytes());
        data.extend_from_slice(&42u64.to_ne_bytes());
        for f in fields {
            data.extend_from_slice(&f.to_ne_bytes());
        }
        let mut cn = Vec::new();
        cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        cn.extend_from_slice(&seq.to_ne_bytes());
        cn.extend_from_slice(&0u32.to_ne_bytes());
        cn.extend_from_slice(&(data.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&data);
        let mut nl = Vec::new();
        nl.extend_from_slice(&((NLMSG_HDRLEN + cn.len()) as u32).to_ne_bytes());
        nl.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        nl.extend_from_slice(&[0u8; 10]);
        nl.extend_from_slice(&cn);
        nl
    }

    fn events(r: Received) -> Vec<Stamped> {
        match r {
            Received::Events(e) => e,
            Received::Overrun => panic!("unexpected overrun"),
        }
    }

    #[test]
    fn parses_fork_exec_exit() {
        let f = events(parse_datagram(&datagram(
            PROC_EVENT_FORK,
            7,
            &[10, 10, 11, 11],
        )));
        assert_eq!(
            f[0].event,
            ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            }
        );
        assert_eq!((f[0].cpu, f[0].seq, f[0].timestamp_ns), (1, 7, 42));
        let e = events(parse_datagram(&datagram(PROC_EVENT_EXEC, 8, &[11, 11])));
        assert_eq!(e[0].event, ProcEvent::Exec { tgid: 11 });
        let x = events(parse_datagram(&datagram(
            PROC_EVENT_EXIT,
            9,
            &[11, 11, 0, 17, 10, 10],
        )));
        assert_eq!(x[0].event, ProcEvent::Exit { pid: 11, tgid: 11 });
    }

    #[test]
    fn truncated_datagrams_never_read_past_their_end() {
        let full = datagram(PROC_EVENT_EXEC, 8, &[11, 11]);
        for cut in 0..full.len() {
            let got = events(parse_datagram(&full[..cut]));
            assert!(got.is_empty(), "cut at {cut} produced {got:?}");
        }
        // A length field that lies is skipped, not trusted.
        let mut lying = full.clone();
        lying[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(events(parse_datagram(&lying)).is_empty());
    }

    #[test]
    fn id_and_comm_events_parse() {
        let u = events(parse_datagram(&datagram(
            PROC_EVENT_UID,
            3,
            &[7, 7, 1000, 0],
        )));
        assert_eq!(
            u[0].event,
            ProcEvent::Uid {
                pid: 7,
                tgid: 7,
                ruid: 1000,
                euid: 0
            }
        );
        let g = events(parse_datagram(&datagram(
            PROC_EVENT_GID,
            4,
            &[7, 7, 10, 11],
        )));
        assert!(matches!(
            g[0].event,
            ProcEvent::Gid {
                rgid: 10,
                egid: 11,
                ..
            }
        ));
        let name = u32::from_ne_bytes(*b"true");
        let c = events(parse_datagram(&datagram(
            PROC_EVENT_COMM,
            5,
            &[8, 9, name, 0, 0, 0],
        )));
        match c[0].event {
            ProcEvent::Comm { pid, tgid, comm } => {
                assert_eq!((pid, tgid), (8, 9));
                assert_eq!(ProcEvent::comm_text(&comm), "true");
            }
            other => panic!("{other:?}"),
        }
        // A comm event cut short is skipped, not read past its end.
        let short = events(parse_datagram(&datagram(PROC_EVENT_COMM, 6, &[8, 9, name])));
        assert!(short.is_empty());
    }

    #[test]
    fn gaps_are_counted_per_cpu() {
        let mut g = GapDetector::default();
        assert_eq!(g.observe(0, 5), 0);
        assert_eq!(g.observe(0, 6), 0);
        assert_eq!(g.observe(1, 100), 0);
        // 7, 8, 9 skipped: not lost yet, they may still arrive.
        assert_eq!(g.observe(0, 10), 0);
        assert_eq!(g.observe(1, 101), 0);
        // 8 arrives late and fills its gap; 7 and 9 are lost once the window has passed.
        assert_eq!(g.observe(0, 8), 0);
        assert_eq!(g.observe(0, 7 + GAP_WINDOW), 0);
        assert_eq!(g.observe(0, 9 + GAP_WINDOW + 1), 2);
        // A jump far beyond the window counts what lies beyond it at once.
        assert_eq!(g.observe(1, 101 + GAP_WINDOW + 11), 10);
        // Sequence numbers wrap.
        assert_eq!(g.observe(2, u32::MAX), 0);
        assert_eq!(g.observe(2, 0), 0);
        assert_eq!(g.observe(2, 1), 0);
    }
}
