//! Capture: kernel process events in, attributed process events out.
//!
//! Two proc connector sockets split the kernel's events (where the kernel filters per
//! socket, 6.6 and later):
//!
//! - the **exec socket** carries only execs. The processing thread (`pg-process`) blocks on it
//!   and reads `/proc/<pid>` the moment an exec arrives: that read races the process's exit,
//!   so nothing stands between the kernel and it (no hand-off to another thread, no wait for
//!   other events);
//! - the **event socket** carries every other kind (fork, exit, comm, uid, ...), three or more
//!   per exec and all of a fork bomb. A dedicated thread (`pg-netlink`) does nothing but drain
//!   it into a bounded queue. It wakes when events arrive, takes everything queued, then
//!   sleeps [`DRAIN_EVERY`] so that a steady stream costs at most one wake-up per period
//!   rather than one per event, with the socket's 16 MiB buffer holding what arrives
//!   meanwhile. The processing thread also drains it before it applies an exec, so the exec's
//!   fork is always in hand.
//!
//! Wake-ups, not work, were the largest cost of capture: each exec is three kernel events,
//! and handing each from thread to thread cost a context switch per thread (measured in
//! docs/BENCHMARKS.md). This layout costs one wake-up per exec.
//!
//! Events are applied in kernel order: the processing thread merges the exec socket's and the
//! queue's events by their kernel timestamp. A fork or exit stamped after the moment the exec
//! socket was last found empty may precede an exec not received yet; it waits for the next
//! round, so that no process is forgotten (exit) before its exec is read. Between them the two
//! sockets receive every event kind, so each CPU's sequence numbers are complete and a gap is
//! a real loss ([`GapDetector`]). Losses are counted: kernel overruns (ENOBUFS), queue drops,
//! and sequence gaps; an overrun or a drop is followed by a full `/proc` rescan, so processes
//! that started during the loss are still reported. On kernels without the filter a single
//! socket carries everything and is read by the processing thread.
//!
//! After the `/proc` read, the processing thread looks the executable's hash up in the shared
//! cache; only a file not hashed yet goes to the hashing thread (`pg-hash`; hashing takes
//! milliseconds and must not delay `/proc` reads). A file of a container's writable layer over
//! an image file of the same size is a copy of the image's only if their contents are the
//! same: the image file's hash is looked up (or made) the same way, and the origin settled
//! once both are known ([`crate::origin::settle_copy_up`]). fanotify has no thread of its own (see
//! [`crate::fanotify`]). Process events leave for the uplink in batches, at most
//! [`OUTPUT_EVERY`] after they were built (the uplink batches for longer anyway).

use crate::metrics::Metrics;
use crate::multicall::MultiCall;
use crate::netlink::{
    self, GapDetector, ProcConnector, ProcEvent, Stamped, PROC_EVENT_ALL, PROC_EVENT_EXEC,
};
use crate::origin::{settle_copy_up, CopyUp};
use crate::procfs::{hash_file, HashCache};
use crate::tracker::{AtExec, EarlyRead, Observed, PathAtExec, Tracker};
use procguard_core::{Completeness, ProcessEvent};
use procguard_runtime::repeated::Repeated;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Events queued between the draining and the processing thread. At ~1,500 execs/s (each
/// with a fork, a comm change and an exit) this holds over 10 s of backlog.
pub const KERNEL_QUEUE: usize = 65_536;
/// Events waiting for their executable's hash. Hashing a new binary can take milliseconds;
/// this queue keeps `/proc` reads (which race process exit) from waiting behind it.
pub const HASH_QUEUE: usize = 8_192;
/// Requested receive buffer of each socket: room for bursts while a thread is descheduled.
pub const SOCKET_BUFFER: usize = 16 * 1024 * 1024;
/// The processing thread applies queued forks and exits at least this often when no exec
/// arrives.
pub const TICK: Duration = Duration::from_millis(100);
/// The draining thread's pause after each drain while events keep coming. At 100,000 events/s
/// (a fork bomb) 10 ms is 1,000 datagrams, a small part of the socket buffer.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Process events wait at most this long before they are handed to the uplink (which
/// batches for 50 ms itself).
pub const OUTPUT_EVERY: Duration = Duration::from_millis(20);
/// ... or until this many are waiting.
pub const OUTPUT_BATCH: usize = 256;
/// Datagrams received from the exec socket per round at most.
const EXEC_BATCH: usize = 1_024;

/// Proc connector overruns, logged once a minute (each is counted in `kernel_losses`).
static OVERRUN: Repeated = Repeated::new(Duration::from_secs(60));
/// How long an exec of a process already gone waits for its late fork (see
/// [`Tracker::awaits_fork`]) before it is reported without it.
pub const FORK_WAIT: Duration = Duration::from_millis(200);
/// Execs waiting for their fork at most; past it they are reported at once.
const FORK_WAITERS: usize = 1_024;

/// The event socket and the queue it drains into, shared by both threads: whoever holds the
/// lock appends in the socket's order.
struct EventQueue {
    conn: ProcConnector,
    events: VecDeque<Stamped>,
    /// Events lost since the processing thread last looked (overrun or queue full): it
    /// rescans `/proc`.
    lost: bool,
}

impl EventQueue {
    /// Moves everything the socket holds into the queue, without blocking. Returns an error
    /// only when the socket failed for good.
    fn fill(&mut self, metrics: &Metrics) -> std::io::Result<()> {
        let mut got = Vec::new();
        loop {
            got.clear();
            let batch = match self.conn.recv_many(false, &mut got) {
                Ok(b) => b,
                Err(e) if is_transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            for e in got.drain(..) {
                if self.events.len() >= KERNEL_QUEUE {
                    metrics.queue_drops.inc();
                    self.lost = true;
                } else {
                    self.events.push_back(e);
                }
            }
            if batch.overrun {
                metrics.kernel_losses.inc();
                if let Some(held_back) = OVERRUN.admit() {
                    tracing::warn!(
                        message = "Proc connector overrun: events lost; rescanning /proc.",
                        held_back
                    );
                }
                self.lost = true;
            }
            if batch.datagrams < netlink::RECV_SLOTS && !batch.overrun {
                return Ok(());
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

type Shared = Arc<Mutex<EventQueue>>;

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, EventQueue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The eBPF backend: the attached kernel side and the cgroup-v2 ID map (absent on a
/// cgroup-v1-only host, where cgroups are read from `/proc` as with netlink).
#[derive(Debug)]
pub struct EbpfSource {
    /// The attached programs and their ring buffer.
    pub capture: crate::ebpf::Capture,
    /// cgroup IDs to paths.
    pub cgroups: Option<crate::ebpf::CgroupIds>,
}

/// Starts capture, from `ebpf` when given, else from the proc connector. Process events go
/// to `out` (bounded; the caller sizes it). Returns when the threads are running, or the
/// error that prevented subscribing.
pub fn start(
    tracker: Tracker,
    out: tokio::sync::mpsc::Sender<ProcessEvent>,
    metrics: Metrics,
    ebpf: Option<EbpfSource>,
    netns: Option<&std::path::Path>,
    nice: i32,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    // Subscribe before scanning, so nothing starting during the scan is missed; duplicates
    // between scan and stream are harmless (the server is idempotent per element). The eBPF
    // programs are attached already.
    let (exec, queue) = if ebpf.is_some() {
        (None, None)
    } else if netlink::kernel_has_filter() {
        let exec = ProcConnector::open(SOCKET_BUFFER, netns, PROC_EVENT_EXEC)?;
        let rest = ProcConnector::open(SOCKET_BUFFER, netns, PROC_EVENT_ALL & !PROC_EVENT_EXEC)?;
        let queue = Arc::new(Mutex::new(EventQueue {
            conn: rest,
            events: VecDeque::new(),
            lost: false,
        }));
        (Some(exec), Some(queue))
    } else {
        (
            Some(ProcConnector::open(SOCKET_BUFFER, netns, PROC_EVENT_ALL)?),
            None,
        )
    };
    if let Some(exec) = &exec {
        exec.set_timeout(TICK)?;
    }
    // Both subscriptions are live from here: an event stamped earlier may have reached one
    // socket and not the other, which is no loss.
    let gaps_from = netlink::monotonic_ns();
    let mut threads = Vec::new();
    if let Some(queue) = &queue {
        let queue = queue.clone();
        let watch = lock(&queue).conn.watch_fd()?;
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name("pg-netlink".into())
                .spawn(move || {
                    favour(nice, "pg-netlink");
                    drain(&queue, &watch, &metrics, &shutdown);
                })?,
        );
    }
    let cache = Arc::new(Mutex::new(HashCache::default()));
    let multi = Arc::new(Mutex::new(MultiCall::default()));
    let (hash_tx, hash_rx) = sync_channel::<(Observed, Instant)>(HASH_QUEUE);
    let hashing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let hashing = hashing.clone();
        let metrics = metrics.clone();
        let cache = cache.clone();
        let multi = multi.clone();
        let out = out.clone();
        threads.push(
            std::thread::Builder::new()
                .name("pg-process".into())
                .spawn(move || {
                    favour(nice, "pg-process");
                    let mut p = Processor {
                        tracker,
                        exec,
                        ebpf,
                        queue,
                        carried: Vec::new(),
                        awaiting_fork: HashMap::new(),
                        gaps: GapDetector::default(),
                        gaps_from,
                        cache,
                        multi,
                        hash_tx,
                        hashing,
                        out,
                        pending: Vec::new(),
                        since: None,
                        metrics,
                    };
                    let scanned = p.tracker.scan();
                    for ob in scanned {
                        p.finish(ob);
                    }
                    p.flush();
                    crate::heap::release_freed("the initial /proc scan");
                    tracing::info!(
                        message = "Initial /proc scan done.",
                        processes = p.tracker.len()
                    );
                    p.run(&shutdown);
                })?,
        );
    }
    threads.push(
        std::thread::Builder::new()
            .name("pg-hash".into())
            .spawn(move || hash(hash_rx, &cache, &multi, &out, &metrics, &hashing))?,
    );
    Ok(threads)
}

/// Raises this capture thread's priority; a refusal (no CAP_SYS_NICE) is logged, not fatal:
/// capture still works, it only loses more races with short-lived processes under CPU load.
fn favour(nice: i32, thread: &str) {
    if nice == 0 {
        return;
    }
    if let Err(e) = crate::netlink::raise_thread_priority(nice) {
        tracing::warn!(message = "Cannot raise capture thread priority; short-lived processes are more likely to be missed under CPU load.", thread, nice, error = %e);
    }
}

/// The draining thread: waits for the event socket, drains it, pauses.
fn drain(
    queue: &Shared,
    watch: &std::os::fd::OwnedFd,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        // Waits without the lock: the processing thread may drain meanwhile.
        let ready = netlink::wait_readable(watch, Duration::from_millis(250));
        match ready {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::error!(message = "Proc connector wait failed; capture stopped.", error = %e);
                metrics.stop_capture(format!("proc connector wait failed: {e}"));
                return;
            }
        }
        if let Err(e) = lock(queue).fill(metrics) {
            tracing::error!(message = "Proc connector read failed; capture stopped.", error = %e);
            metrics.stop_capture(format!("proc connector read failed: {e}"));
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// The processing thread's state.
struct Processor {
    tracker: Tracker,
    /// The proc connector's exec socket (netlink backend).
    exec: Option<ProcConnector>,
    /// The eBPF backend, instead of the sockets.
    ebpf: Option<EbpfSource>,
    queue: Option<Shared>,
    /// Forks and exits stamped after the last cut, waiting for the next round.
    carried: Vec<Stamped>,
    /// Execs of processes already gone, waiting for a fork the parent reports late, by pid.
    awaiting_fork: HashMap<u32, Waiting>,
    gaps: GapDetector,
    /// Events stamped before both sockets were subscribed are not checked for gaps.
    gaps_from: u64,
    cache: Arc<Mutex<HashCache>>,
    /// Multi-call contents, shared with the hashing thread.
    multi: Arc<Mutex<MultiCall>>,
    /// Events for the hashing thread, each with when it was handed over.
    hash_tx: SyncSender<(Observed, Instant)>,
    /// Events handed to the hashing thread and not yet sent on by it. While any are, later
    /// events follow them through it, so that events leave in the order their execs were
    /// read: a probe's child must never overtake the probe (its context depends on it).
    hashing: Arc<std::sync::atomic::AtomicUsize>,
    out: tokio::sync::mpsc::Sender<ProcessEvent>,
    /// Events built and not yet handed to the uplink, and since when the oldest waits.
    pending: Vec<ProcessEvent>,
    since: Option<Instant>,
    metrics: Metrics,
}

/// An exec waiting for its late fork.
struct Waiting {
    since: Instant,
    early: EarlyRead,
    /// Its exit came first: once the fork made a table entry for it, the entry goes again.
    exited: bool,
}

/// One kernel event with what was read for it: `/proc` of an exec, read the moment it came.
// A round holds a few events at a time; boxing the read would cost an allocation per exec.
#[allow(clippy::large_enum_variant)]
enum Round {
    Exec(Stamped, EarlyRead),
    Other(Stamped),
}

impl Round {
    fn stamped(&self) -> &Stamped {
        match self {
            Round::Exec(s, _) | Round::Other(s) => s,
        }
    }
}

impl Processor {
    fn run(&mut self, shutdown: &CancellationToken) {
        if self.ebpf.is_some() {
            return self.run_ebpf(shutdown);
        }
        let mut execs = Vec::with_capacity(EXEC_BATCH);
        while !shutdown.is_cancelled() {
            let mut lost = false;
            // Blocks for the first exec (or the tick), then takes what else is queued.
            let mut received = self.receive_execs(&mut execs, &mut lost, true);
            // The cut is taken before one more look at the exec socket: every exec stamped
            // before it is then in this round, even if this thread was descheduled between
            // finding the socket empty and taking the cut. (Taken after, an exec stamped in
            // that gap was left for the next round while its own fork and exit, stamped
            // before the cut, were applied in this one: the exec then found no parent.)
            let cut = netlink::monotonic_ns();
            if received.is_ok() {
                received = self.receive_execs(&mut execs, &mut lost, false);
            }
            if let Err(e) = received {
                tracing::error!(message = "Proc connector read failed; capture stopped.", error = %e);
                self.metrics
                    .stop_capture(format!("proc connector read failed: {e}"));
                break;
            }
            // Urgent: each exec'd process is read before anything else is done.
            let mut round: Vec<Round> = execs
                .drain(..)
                .map(|s| match s.event {
                    ProcEvent::Exec { tgid } => Round::Exec(s, self.tracker.read_early(tgid)),
                    _ => Round::Other(s),
                })
                .collect();
            if let Some(queue) = &self.queue {
                let mut q = lock(queue);
                if let Err(e) = q.fill(&self.metrics) {
                    tracing::error!(message = "Proc connector read failed; capture stopped.", error = %e);
                    self.metrics
                        .stop_capture(format!("proc connector read failed: {e}"));
                    break;
                }
                lost |= std::mem::take(&mut q.lost);
                round.extend(q.events.drain(..).map(Round::Other));
            }
            self.count_gaps(&mut round);
            if !self.play(&mut round, cut, lost) {
                return;
            }
        }
        self.release_waiters(true);
        self.flush();
    }

    /// The eBPF backend's loop: waits for the kernel side's wake-up (see
    /// [`crate::ebpf::Capture::wait`] and [`ebpf_wait`]), takes what the ring buffer holds,
    /// and plays it as one round in the ring buffer's order (the kernel's commit order: a
    /// process's fork, exec and exit in the order they happened), then hands the round's
    /// events to the uplink. The kernel side batches the wake-ups: a steady stream wakes this
    /// thread (and, through it, the uplink) once per [`crate::ebpf::WAKE_AFTER`], a burst as a
    /// quarter of the ring fills. Records lost for want of room are counted and followed by a
    /// `/proc` rescan, as a proc connector overrun.
    fn run_ebpf(&mut self, shutdown: &CancellationToken) {
        // Kept from round to round: a round's buffers cost no allocation once warm.
        let mut records = Vec::with_capacity(crate::ebpf::RECORDS_PER_ROUND);
        let mut round: Vec<Round> = Vec::new();
        let mut last = HashMap::new();
        // The loss counters are read at most every TICK while records keep coming (a map read
        // is a system call: 3 % of the sensor's CPU at an exec storm when it ran every round),
        // and at once after a full round or an idle wake.
        let mut losses_read = Instant::now();
        // Records the last round took.
        let mut taken = 0;
        while !shutdown.is_cancelled() {
            let Some(src) = &mut self.ebpf else {
                return;
            };
            if let Err(e) = src.capture.wait(ebpf_wait(taken)) {
                tracing::error!(message = "eBPF ring buffer wait failed; capture stopped.", error = %e);
                self.metrics
                    .stop_capture(format!("eBPF ring buffer wait failed: {e}"));
                break;
            }
            src.capture
                .drain(&mut records, crate::ebpf::RECORDS_PER_ROUND);
            // After the records: every fanotify event of these execs is queued by now.
            if !records.is_empty() {
                self.tracker.pump_exec_watch();
            }
            let due = records.is_empty()
                || records.len() >= crate::ebpf::RECORDS_PER_ROUND
                || losses_read.elapsed() >= TICK;
            let lost = if due {
                losses_read = Instant::now();
                src.capture.take_losses()
            } else {
                0
            };
            if lost > 0 {
                self.metrics.kernel_losses.inc_by(lost);
                self.metrics.ebpf_ring_losses.inc_by(lost);
                static RING_FULL: Repeated = Repeated::new(Duration::from_secs(60));
                if let Some(held_back) = RING_FULL.admit() {
                    tracing::warn!(
                        message = "eBPF ring buffer full: events lost; rescanning /proc.",
                        lost,
                        held_back
                    );
                }
            }
            taken = records.len();
            // Where each process's last exit or exec in this batch is: an exec followed by
            // either had lost its image before this read (the kernel's own order says so), so
            // `/proc` is not asked for it.
            last.clear();
            for (i, r) in records.iter().enumerate() {
                match r {
                    crate::ebpf::Record::Exit { pid, .. } => last.insert(*pid, i),
                    crate::ebpf::Record::Exec(e) => last.insert(e.pid, i),
                    crate::ebpf::Record::Fork { .. } => None,
                };
            }
            for (i, r) in records.drain(..).enumerate() {
                let gone = matches!(&r, crate::ebpf::Record::Exec(e)
                    if last.get(&e.pid).is_some_and(|&l| l > i));
                round.push(self.ebpf_round(r, gone));
            }
            if !self.play(&mut round, u64::MAX, lost > 0) {
                return;
            }
            // What this round built leaves now, not after the next wait.
            if !self.pending.is_empty() && !self.flush() {
                return;
            }
        }
        // Losses since the last read are counted before the stop.
        if let Some(src) = &mut self.ebpf {
            let lost = src.capture.take_losses();
            self.metrics.kernel_losses.inc_by(lost);
            self.metrics.ebpf_ring_losses.inc_by(lost);
        }
        self.release_waiters(true);
        self.flush();
    }

    /// One eBPF record as the round's event: an exec is read at once (the executable, for
    /// its hash and origin) and carries the kernel's own record of it ([`AtExec`]). `gone`:
    /// the same batch holds the process's exit or a later exec, so `/proc` can no longer show
    /// this exec's image; with the kernel's path in hand it is not read
    /// ([`Tracker::read_early_gone`]).
    fn ebpf_round(&mut self, r: crate::ebpf::Record, gone: bool) -> Round {
        use crate::ebpf::Record;
        let at = |timestamp_ns, event| Stamped {
            cpu: 0,
            seq: 0,
            timestamp_ns,
            event,
        };
        match r {
            Record::Fork {
                ppid,
                pid,
                ktime_ns,
            } => Round::Other(at(
                ktime_ns,
                ProcEvent::Fork {
                    parent_tgid: ppid,
                    child_pid: pid,
                    child_tgid: pid,
                },
            )),
            Record::Exit { pid, ktime_ns } => {
                Round::Other(at(ktime_ns, ProcEvent::Exit { pid, tgid: pid }))
            }
            Record::Exec(e) => {
                let cgroup = self
                    .ebpf
                    .as_mut()
                    .and_then(|s| s.cgroups.as_mut())
                    .and_then(|c| c.line(e.cgroup_id));
                // argv is the kernel's: only the executable is read.
                let exe_path = path_at_exec(&e);
                let early = match &exe_path {
                    Some(path) if gone => self.tracker.read_early_gone(e.pid, path),
                    _ => self.tracker.read_early_with(e.pid, false),
                };
                let facts = AtExec {
                    ppid: e.ppid,
                    uid: e.uid,
                    gid: e.gid,
                    start_boottime_ns: e.start_boottime_ns,
                    comm: e.comm,
                    argv: e.argv,
                    argv_truncated: e.argv_truncated,
                    exe_id: (e.exe_dev, e.exe_ino),
                    exe_nlink: e.exe_nlink,
                    exe_on_overlay: e.exe_magic == libc::OVERLAYFS_SUPER_MAGIC as u64,
                    exe_path,
                    exe_name: e.exe_name,
                    cgroup,
                    mnt_ns: (e.mnt_ns != 0).then_some(e.mnt_ns),
                };
                Round::Exec(
                    at(e.ktime_ns, ProcEvent::Exec { tgid: e.pid }),
                    self.tracker.with_exec_facts(early, facts),
                )
            }
        }
    }

    /// Applies one round: the execs read and the other events received, with the events
    /// carried from the last round, in kernel order; forks and exits stamped after `cut` wait
    /// for the next round. `lost`: events were lost, so `/proc` is rescanned. `false` once the
    /// consumers are gone.
    fn play(&mut self, round: &mut Vec<Round>, cut: u64, lost: bool) -> bool {
        round.extend(self.carried.drain(..).map(Round::Other));
        // Usually in order already (eBPF records come in the kernel's commit order): checked
        // first, since the stable sort allocates scratch room for these large elements (6 %
        // of the sensor's CPU at an exec storm when it ran every round).
        if !round.is_sorted_by_key(|r| r.stamped().timestamp_ns) {
            round.sort_by_key(|r| r.stamped().timestamp_ns);
        }
        let idle = !round.iter().any(|r| matches!(r, Round::Exec(..)));
        for r in round.drain(..) {
            let keep_going = match r {
                Round::Exec(_, early)
                    if self.awaiting_fork.len() < FORK_WAITERS
                        && self.tracker.awaits_fork(&early) =>
                {
                    let waiting = Waiting {
                        since: Instant::now(),
                        early,
                        exited: false,
                    };
                    let before = self.awaiting_fork.insert(waiting.early.pid(), waiting);
                    // Two execs of one unknown pid: the older goes out as it is.
                    before.is_none_or(|older| self.exec_read(older.early))
                }
                Round::Exec(_, early) => self.exec_read(early),
                // May precede an exec not received yet: next round.
                Round::Other(s) if self.queue.is_some() && s.timestamp_ns > cut => {
                    self.carried.push(s);
                    true
                }
                Round::Other(s) => self.apply(&s),
            };
            if !keep_going {
                return false;
            }
        }
        if !self.awaiting_fork.is_empty() && !self.release_waiters(false) {
            return false;
        }
        if lost {
            self.metrics.resyncs.inc();
            for ob in self.tracker.scan() {
                if !self.finish(ob) {
                    return false;
                }
            }
        }
        if idle {
            self.tracker.idle();
        }
        if (self.pending.len() >= OUTPUT_BATCH
            || self.since.is_some_and(|t| t.elapsed() >= OUTPUT_EVERY))
            && !self.flush()
        {
            return false;
        }
        true
    }

    /// Builds the event of an exec read from `/proc`, or counts it lost. `false` once the
    /// consumers are gone.
    fn exec_read(&mut self, early: EarlyRead) -> bool {
        match self.tracker.on_exec_read(early) {
            Some(ob) => self.finish(ob),
            // The runtime's own init, recognised and counted by the tracker: not a loss.
            None if self.tracker.last_was_runtime_init() => true,
            None => {
                // Gone (or a zombie) before /proc could be read, with nothing known to build
                // an event from: counted, never silent.
                self.metrics.exec_lost.inc();
                true
            }
        }
    }

    /// Reports the execs that waited [`FORK_WAIT`] for a fork that did not come (or all of
    /// them, at shutdown) with what is known. `false` once the consumers are gone.
    fn release_waiters(&mut self, all: bool) -> bool {
        let due: Vec<u32> = self
            .awaiting_fork
            .iter()
            .filter(|(_, w)| all || w.since.elapsed() >= FORK_WAIT)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            if let Some(w) = self.awaiting_fork.remove(&pid) {
                if !self.exec_read(w.early) {
                    return false;
                }
            }
        }
        true
    }

    /// Receives from the exec socket everything queued, first blocking (up to [`TICK`]) for
    /// a datagram when `wait`.
    fn receive_execs(
        &mut self,
        into: &mut Vec<Stamped>,
        lost: &mut bool,
        wait: bool,
    ) -> std::io::Result<()> {
        let Some(exec) = &mut self.exec else {
            return Ok(());
        };
        let mut first = wait;
        while into.len() < EXEC_BATCH {
            let batch = match exec.recv_many(first, into) {
                Ok(b) => b,
                Err(e) if is_transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            first = false;
            if batch.overrun {
                self.metrics.kernel_losses.inc();
                if let Some(held_back) = OVERRUN.admit() {
                    tracing::warn!(
                        message = "Proc connector overrun: events lost; rescanning /proc.",
                        held_back
                    );
                }
                *lost = true;
            } else if batch.datagrams < netlink::RECV_SLOTS {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Counts sequence gaps over newly received events, per CPU in sequence order.
    fn count_gaps(&mut self, round: &mut [Round]) {
        round.sort_by_key(|r| (r.stamped().cpu, r.stamped().seq));
        for r in round.iter() {
            let s = r.stamped();
            if s.timestamp_ns < self.gaps_from {
                continue;
            }
            let lost = self.gaps.observe(s.cpu, s.seq);
            if lost > 0 {
                self.metrics.sequence_gaps.inc_by(lost);
            }
        }
    }

    /// Applies a fork, an exit, or a change of IDs or name to the process table. Events of
    /// threads other than a process's main thread are ignored (threads share their process's
    /// entry). A fork whose child's exec is waiting for it completes that exec at once, before
    /// anything later (its exit) is applied. `false` once the consumers are gone.
    fn apply(&mut self, stamped: &Stamped) -> bool {
        match stamped.event {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } if child_pid == child_tgid => {
                let start = wall_clock_of(stamped.timestamp_ns);
                self.tracker.on_fork(parent_tgid, child_tgid, start);
                if let Some(w) = self.awaiting_fork.remove(&child_tgid) {
                    self.metrics.late_forks.inc();
                    let sent = self.exec_read(w.early);
                    if w.exited {
                        self.tracker.on_exit(child_tgid);
                    }
                    return sent;
                }
            }
            ProcEvent::Uid {
                pid, tgid, ruid, ..
            } if pid == tgid => {
                self.tracker.on_uid(tgid, ruid);
            }
            ProcEvent::Gid {
                pid, tgid, rgid, ..
            } if pid == tgid => {
                self.tracker.on_gid(tgid, rgid);
            }
            ProcEvent::Comm { pid, tgid, comm } if pid == tgid => {
                self.tracker.on_comm(tgid, ProcEvent::comm_text(&comm));
            }
            ProcEvent::Exit { pid, tgid } if pid == tgid => {
                if let Some(w) = self.awaiting_fork.get_mut(&tgid) {
                    w.exited = true;
                }
                self.tracker.on_exit(tgid);
            }
            // Execs come with their early read (see `run`).
            _ => {}
        }
        true
    }

    /// Completes an observed process with its hash when the cache knows the file, or hands it
    /// to the hashing thread. `false` once the consumers are gone.
    fn finish(&mut self, ob: Observed) -> bool {
        let Observed {
            mut event,
            exe,
            exe_key,
            copy_up,
        } = ob;
        // The `statx` that opened or claimed the file read its key; only a file opened without
        // one (never, in practice) is asked again.
        let key = exe_key.or_else(|| exe.as_ref().and_then(HashCache::key_of));
        let (known, lower) = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            (
                key.and_then(|k| cache.lookup(k)),
                copy_up.as_ref().and_then(|c| cache.lookup(c.key)),
            )
        };
        use std::sync::atomic::Ordering;
        if (known.is_none() && exe.is_some()) || (copy_up.is_some() && lower.is_none()) {
            // A file not hashed yet: hashing takes milliseconds, off this thread. What was
            // read before it leaves first.
            if !self.flush() {
                return false;
            }
            return self.hand_to_hashing(Observed {
                event,
                exe,
                exe_key: key,
                copy_up,
            });
        }
        event.exe_sha256 = known;
        if copy_up.is_some() {
            settle_copy_up(&mut event, lower.as_deref());
        }
        if self.hashing.load(Ordering::Acquire) > 0 {
            // Known already, but an earlier event is still being hashed: it follows that one
            // through the hashing thread (which only counts it), so it cannot overtake it.
            if !self.flush() {
                return false;
            }
            return self.hand_to_hashing(Observed {
                event,
                exe: None,
                exe_key: None,
                copy_up: None,
            });
        }
        count(&mut event, &self.metrics, &self.multi);
        self.since.get_or_insert_with(Instant::now);
        self.pending.push(event);
        if self.pending.len() >= OUTPUT_BATCH {
            return self.flush();
        }
        true
    }

    /// Hands one event to the hashing thread, counted until it sends it on. `false` once it
    /// is gone.
    fn hand_to_hashing(&mut self, ob: Observed) -> bool {
        use std::sync::atomic::Ordering;
        self.hashing.fetch_add(1, Ordering::AcqRel);
        let sent = self.hash_tx.send((ob, Instant::now())).is_ok();
        if !sent {
            self.hashing.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Hands the waiting events to the uplink. `false` once it is gone.
    fn flush(&mut self) -> bool {
        self.since = None;
        for ev in self.pending.drain(..) {
            if self.out.blocking_send(ev).is_err() {
                return false;
            }
        }
        true
    }
}

/// The executable's path an eBPF exec record holds, when it holds it whole. A pseudo file is
/// named only when it is a memfd: an unlinked file on shmem whose dentry is named `memfd:NAME`,
/// which the kernel prints as `/memfd:NAME (deleted)`. Anything else the kernel could not walk
/// whole (too long, unreachable, another pseudo file) is left to the exe link.
fn path_at_exec(e: &crate::ebpf::Exec) -> Option<PathAtExec> {
    let k = &e.exe_path;
    if k.truncated || k.unreachable {
        return None;
    }
    if k.pseudo {
        let shmem =
            e.exe_magic == libc::TMPFS_MAGIC as u64 || e.exe_magic == libc::HUGETLBFS_MAGIC as u64;
        return (shmem && e.exe_nlink == 0 && k.path.starts_with("/memfd:")).then(|| PathAtExec {
            path: k.path.clone(),
            deleted: false,
            memfd: true,
        });
    }
    Some(PathAtExec {
        path: k.path.clone(),
        deleted: k.deleted,
        memfd: false,
    })
}

/// How long the eBPF loop waits for the kernel side's wake-up after a round that took
/// `records`: not at all after a full round (more are waiting), else up to [`TICK`]. The
/// kernel side wakes the reader for a record that comes [`crate::ebpf::WAKE_AFTER`] or more
/// after the last wake-up, and when a quarter of the ring waits; only records that came
/// just after a wake-up, with none after them, wait for the tick. (A timeout of `WAKE_AFTER`
/// here, out of step with the kernel's, doubled the rounds.) A fixed pause after each round,
/// which this replaced, could not be both cheap and safe: 20 ms saved CPU at a storm but lost
/// records in CI's soak, because a burst fills the ring while the reader sleeps through it
/// (docs/BENCHMARKS.md).
fn ebpf_wait(records: usize) -> Duration {
    if records >= crate::ebpf::RECORDS_PER_ROUND {
        Duration::ZERO
    } else {
        TICK
    }
}

/// The wall-clock time of a kernel timestamp (the monotonic clock).
fn wall_clock_of(timestamp_ns: u64) -> Option<std::time::SystemTime> {
    let ago = netlink::monotonic_ns().checked_sub(timestamp_ns)?;
    std::time::SystemTime::now().checked_sub(Duration::from_nanos(ago))
}

/// Names the applet of a multi-call content (see [`MultiCall`]), marks a missing hash, a
/// script in a writable directory (once the element is final), and counts the event.
fn count(event: &mut ProcessEvent, metrics: &Metrics, multi: &Mutex<MultiCall>) {
    if event.exe_sha256.is_none() {
        event.mark_missing("exe_sha256");
    } else {
        multi
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(event);
    }
    crate::tracker::mark_writable_script(event);
    metrics.events_seen.inc();
    if event.completeness == Completeness::Partial {
        metrics.events_partial.inc();
    }
}

/// The hash of the open file `f` under `key`, from the cache or hashed now (and cached).
fn cached_hash(
    cache: &Mutex<HashCache>,
    f: &std::fs::File,
    key: crate::procfs::FileKey,
    metrics: &Metrics,
) -> Option<String> {
    // Another event for the same file may have been hashed while this one waited.
    let known = cache.lock().unwrap_or_else(|e| e.into_inner()).lookup(key);
    known.or_else(|| {
        let started = Instant::now();
        let h = hash_file(f, key);
        metrics
            .hashing
            .file
            .observe(started.elapsed().as_secs_f64());
        let h = h?;
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, h.clone());
        Some(h)
    })
}

/// The hash of the image's file a copy-up is compared with: opened by its path in the lower
/// layer, and hashed under the key of the file actually opened (one `statx`), so a lookup
/// that raced a change never lends its key to other content.
fn image_file_hash(cache: &Mutex<HashCache>, c: &CopyUp, metrics: &Metrics) -> Option<String> {
    if let Some(h) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lookup(c.key)
    {
        return Some(h);
    }
    let f = std::fs::File::open(&c.lower).ok()?;
    let (key, _) = crate::fanotify::stat_file(&f)?;
    cached_hash(cache, &f, key, metrics)
}

/// The hashing thread: files the cache did not know yet.
fn hash(
    rx: Receiver<(Observed, Instant)>,
    cache: &Mutex<HashCache>,
    multi: &Mutex<MultiCall>,
    out: &tokio::sync::mpsc::Sender<ProcessEvent>,
    metrics: &Metrics,
    hashing: &std::sync::atomic::AtomicUsize,
) {
    // Ends when the processing thread ends (its sender drops).
    for (
        Observed {
            mut event,
            exe,
            exe_key,
            copy_up,
        },
        handed_over,
    ) in rx
    {
        if let (Some(f), Some(key)) = (&exe, exe_key) {
            event.exe_sha256 = cached_hash(cache, f, key, metrics);
        }
        if let Some(c) = &copy_up {
            let lower = image_file_hash(cache, c, metrics);
            settle_copy_up(&mut event, lower.as_deref());
        }
        count(&mut event, metrics, multi);
        metrics
            .hashing
            .event_delay
            .observe(handed_over.elapsed().as_secs_f64());
        let sent = out.blocking_send(event);
        hashing.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ebpf_loop_waits_for_the_kernels_wake_up_but_not_after_a_full_round() {
        use super::{ebpf_wait, TICK};
        use crate::ebpf::{RECORDS_PER_ROUND as FULL, WAKE_AFTER};
        use std::time::Duration;
        assert_eq!(ebpf_wait(0), TICK, "idle: a record wakes it at once");
        assert_eq!(ebpf_wait(FULL - 1), TICK);
        assert_eq!(ebpf_wait(FULL), Duration::ZERO, "full: more are waiting");
        // The kernel side's cadence is shorter than the tick, so the tick is the backstop.
        assert!(WAKE_AFTER < TICK);
    }

    use super::*;
    use crate::procfs::ProcReader;

    /// Pids above the kernel's limit (4,194,304): never a live process.
    const GONE: u32 = 0x3fff_fff0;

    /// A processor over a real (idle) exec socket, whose rounds the test plays by hand, with
    /// this host scanned (so this test process is known as a parent).
    fn processor() -> Option<(Processor, tokio::sync::mpsc::Receiver<ProcessEvent>)> {
        let exec = match ProcConnector::open(64 * 1024, None, PROC_EVENT_EXEC) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIP: cannot open a proc connector socket: {e}");
                return None;
            }
        };
        let mut tracker = Tracker::new(ProcReader::new("/proc"), "n", "c");
        let _ = tracker.scan();
        let (out, rx) = tokio::sync::mpsc::channel(64);
        let (hash_tx, _) = sync_channel(64);
        let hashing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = Processor {
            tracker,
            exec: Some(exec),
            ebpf: None,
            queue: None,
            carried: Vec::new(),
            awaiting_fork: HashMap::new(),
            gaps: GapDetector::default(),
            gaps_from: 0,
            cache: Arc::new(Mutex::new(HashCache::default())),
            multi: Default::default(),
            hash_tx,
            hashing,
            out,
            pending: Vec::new(),
            since: None,
            metrics: Metrics::default(),
        };
        Some((p, rx))
    }

    fn at(timestamp_ns: u64, event: ProcEvent) -> Stamped {
        Stamped {
            cpu: 0,
            seq: 0,
            timestamp_ns,
            event,
        }
    }

    fn exec_of(p: &Processor, pid: u32, t: u64) -> Round {
        Round::Exec(
            at(t, ProcEvent::Exec { tgid: pid }),
            p.tracker.read_early(pid),
        )
    }

    fn fork(parent: u32, child: u32, t: u64) -> Round {
        Round::Other(at(
            t,
            ProcEvent::Fork {
                parent_tgid: parent,
                child_pid: child,
                child_tgid: child,
            },
        ))
    }

    fn exit(pid: u32, t: u64) -> Round {
        Round::Other(at(t, ProcEvent::Exit { pid, tgid: pid }))
    }

    fn sent(
        p: &mut Processor,
        rx: &mut tokio::sync::mpsc::Receiver<ProcessEvent>,
    ) -> Vec<ProcessEvent> {
        assert!(p.flush());
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn an_exec_whose_fork_comes_late_waits_for_it() {
        let Some((mut p, mut rx)) = processor() else {
            return;
        };
        let me = std::process::id();
        // The parent was descheduled between starting the child and reporting the fork: the
        // child's exec (read too late: gone) comes first.
        let (a, b) = (GONE, GONE + 1);
        assert!(p.play(
            &mut vec![exec_of(&p, a, 10), exec_of(&p, b, 11)],
            u64::MAX,
            false
        ));
        assert!(sent(&mut p, &mut rx).is_empty(), "both wait for their fork");
        // a: fork, then exit, in one round. b: its exit, then (next round) its fork.
        assert!(p.play(
            &mut vec![fork(me, a, 20), exit(a, 21), exit(b, 22)],
            u64::MAX,
            false
        ));
        let got = sent(&mut p, &mut rx);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].pid, got[0].ppid), (a, me), "{:?}", got[0]);
        assert!(
            !got[0].missing.iter().any(|m| m == "ppid"),
            "{:?}",
            got[0].missing
        );
        assert!(p.play(&mut vec![fork(me, b, 30)], u64::MAX, false));
        let got = sent(&mut p, &mut rx);
        assert_eq!((got[0].pid, got[0].ppid), (b, me), "{:?}", got[0]);
        assert_eq!(p.metrics.late_forks.get(), 2);
        // Both exited: nothing of them stays in the table.
        for pid in [a, b] {
            assert!(
                p.tracker.awaits_fork(&p.tracker.read_early(pid)),
                "{pid} forgotten"
            );
        }
    }

    #[test]
    fn an_exec_whose_fork_never_comes_is_reported_after_the_wait() {
        let Some((mut p, mut rx)) = processor() else {
            return;
        };
        let c = GONE + 2;
        assert!(p.play(&mut vec![exec_of(&p, c, 10)], u64::MAX, false));
        assert!(sent(&mut p, &mut rx).is_empty());
        std::thread::sleep(FORK_WAIT);
        // An empty round (the idle tick) releases it.
        assert!(p.play(&mut Vec::new(), u64::MAX, false));
        let got = sent(&mut p, &mut rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pid, c);
        assert!(
            got[0].missing.iter().any(|m| m == "ppid"),
            "{:?}",
            got[0].missing
        );
        assert_eq!(p.metrics.late_forks.get(), 0);
    }

    /// An exec of `exe` with `argv` on the host as the tracker reports it before the hash
    /// (read from a proc-shaped record, so nothing is left to a race), with `sha256` as the
    /// hash found for it.
    fn tracked(t: &mut Tracker, pid: u32, exe: &str, argv: &[&str], sha256: &str) -> ProcessEvent {
        let info = crate::procfs::ProcInfo {
            pid,
            ppid: Some(1),
            comm: Some(argv[0].into()),
            exe: Some(exe.into()),
            exe_link: Some(exe.into()),
            exe_id: Some((7, u64::from(pid))),
            argv: Some(argv.iter().map(|a| a.to_string()).collect()),
            uid: Some(0),
            gid: Some(0),
            start_time: Some(std::time::SystemTime::now()),
            cgroup: Some("0::/system.slice/app.service\n".into()),
            ..Default::default()
        };
        let mut ev = t.event_from(info).expect("an event");
        ev.exe_sha256 = Some(sha256.into());
        ev
    }

    /// A copy of busybox named `sh` running its `cat` applet on a file in `/tmp` (busybox's
    /// shell runs its applets so): before the hash it reads as a shell running the script
    /// `/tmp/now`, but once the content is known multi-call the element is the `cat` applet,
    /// which runs no script, so nothing writable ran. A shell that does run a script in
    /// `/tmp` is marked.
    #[test]
    fn a_script_in_a_writable_directory_is_judged_on_the_final_element() {
        let proc_root = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(ProcReader::new(proc_root.path()), "n", "c");
        let metrics = Metrics::default();
        let multi = Mutex::new(MultiCall::default());
        // The content is busybox's (seen under its own name).
        let mut busybox = tracked(&mut t, 10, "/bin/busybox", &["busybox"], "bb");
        count(&mut busybox, &metrics, &multi);
        let mut cat = tracked(&mut t, 11, "/bin/sh", &["cat", "/tmp/now"], "bb");
        assert_eq!(
            cat.script_path.as_deref(),
            Some("/tmp/now"),
            "the tracker's reading"
        );
        count(&mut cat, &metrics, &multi);
        assert_eq!(
            (cat.applet.as_deref(), cat.script_path.as_deref()),
            (Some("cat"), None)
        );
        assert!(!cat.exe_writable_location, "{cat:?}");
        let mut script = tracked(&mut t, 12, "/bin/sh", &["sh", "/tmp/run.sh"], "bb");
        count(&mut script, &metrics, &multi);
        assert_eq!(script.script_path.as_deref(), Some("/tmp/run.sh"));
        assert!(script.exe_writable_location, "{script:?}");
        // Without a hash (content unknown) the tracker's reading stands, and is marked.
        let mut unhashed = tracked(&mut t, 13, "/bin/sh", &["sh", "/dev/shm/x"], "bb");
        unhashed.exe_sha256 = None;
        count(&mut unhashed, &metrics, &multi);
        assert!(unhashed.exe_writable_location, "{unhashed:?}");
    }
}
