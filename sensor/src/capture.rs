//! Capture: a dedicated thread drains the proc connector into a bounded queue, and a second
//! thread turns kernel events into attributed process events.
//!
//! The draining thread does nothing else, so the kernel's socket buffer empties as fast as
//! the kernel fills it. When the queue is full the event is dropped and counted; when the
//! kernel reports an overrun (ENOBUFS) the loss is counted and the processing thread rescans
//! `/proc`, so processes that started during the loss are still reported.

use crate::metrics::Metrics;
use crate::netlink::{GapDetector, ProcConnector, ProcEvent, Received};
use crate::procfs::HashCache;
use crate::tracker::{Observed, Tracker};
use procguard_core::ProcessEvent;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Kernel events queued between the draining and the processing thread. At ~1,500 execs/s
/// (each with a fork and an exit) this holds over 10 s of backlog.
pub const KERNEL_QUEUE: usize = 65_536;
/// Events waiting for their executable's hash. Hashing a new binary can take milliseconds;
/// this queue keeps `/proc` reads (which race process exit) from waiting behind it.
pub const HASH_QUEUE: usize = 8_192;
/// Requested socket receive buffer: room for bursts while the drain thread is descheduled.
pub const SOCKET_BUFFER: usize = 16 * 1024 * 1024;

enum Item {
    Event(ProcEvent),
    Resync,
}

/// Starts capture. Process events go to `out` (bounded; the caller sizes it). Returns when
/// both threads are running, or the error that prevented subscribing.
pub fn start(
    mut tracker: Tracker,
    out: tokio::sync::mpsc::Sender<ProcessEvent>,
    metrics: Metrics,
    netns: Option<&std::path::Path>,
    nice: i32,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let conn = ProcConnector::open(SOCKET_BUFFER, netns)?;
    conn.set_timeout(Duration::from_millis(250))?;
    let (tx, rx) = sync_channel::<Item>(KERNEL_QUEUE);

    // Subscribe before scanning, so nothing starting during the scan is missed; duplicates
    // between scan and stream are harmless (the server is idempotent per element).
    let drain = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("pg-netlink".into())
            .spawn(move || {
                favour(nice, "pg-netlink");
                drain(conn, tx, metrics, shutdown)
            })?
    };
    let (hash_tx, hash_rx) = sync_channel::<Observed>(HASH_QUEUE);
    let process = {
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("pg-process".into())
            .spawn(move || {
                favour(nice, "pg-process");
                for ob in tracker.scan() {
                    if hash_tx.send(ob).is_err() {
                        return;
                    }
                }
                tracing::info!(
                    message = "Initial /proc scan done.",
                    processes = tracker.len()
                );
                process(&mut tracker, rx, &hash_tx, &metrics, &shutdown)
            })?
    };
    let hasher = std::thread::Builder::new()
        .name("pg-hash".into())
        .spawn(move || hash(hash_rx, &out, &metrics))?;
    Ok(vec![drain, process, hasher])
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

fn drain(
    mut conn: ProcConnector,
    tx: SyncSender<Item>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut gaps = GapDetector::default();
    while !shutdown.is_cancelled() {
        let mut need_resync = false;
        match conn.recv() {
            Ok(Received::Events(events)) => {
                for e in events {
                    let gap = gaps.observe(e.cpu, e.seq);
                    if gap > 0 {
                        metrics.sequence_gaps.inc_by(gap);
                    }
                    match tx.try_send(Item::Event(e.event)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            metrics.queue_drops.inc();
                            need_resync = true;
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Ok(Received::Overrun) => {
                metrics.kernel_losses.inc();
                tracing::warn!(message = "Proc connector overrun: events lost; rescanning /proc.");
                need_resync = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::error!(message = "Proc connector read failed; capture stopped.", error = %e);
                metrics.capture_failed.inc();
                return;
            }
        }
        // A blocking send: the resync must not be lost as well.
        if need_resync && tx.send(Item::Resync).is_err() {
            return;
        }
    }
}

fn process(
    tracker: &mut Tracker,
    rx: Receiver<Item>,
    out: &SyncSender<Observed>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let item = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(i) => i,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => return,
        };
        let events: Vec<Observed> = match item {
            Item::Event(ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            }) => {
                // Threads share their process's entry; only new processes are tracked.
                if child_pid == child_tgid {
                    tracker.on_fork(parent_tgid, child_tgid);
                }
                continue;
            }
            Item::Event(ProcEvent::Exec { tgid }) => match tracker.on_exec(tgid) {
                Some(ob) => vec![ob],
                None => {
                    // Gone (or a zombie) before /proc could be read, with nothing known to
                    // build an event from: counted, never silent.
                    metrics.exec_lost.inc();
                    continue;
                }
            },
            Item::Event(ProcEvent::Exit { pid, tgid }) => {
                if pid == tgid {
                    tracker.on_exit(tgid);
                }
                continue;
            }
            Item::Event(ProcEvent::Other) => continue,
            Item::Resync => {
                metrics.resyncs.inc();
                tracker.scan()
            }
        };
        for ob in events {
            if out.send(ob).is_err() {
                return;
            }
        }
    }
}

fn hash(rx: Receiver<Observed>, out: &tokio::sync::mpsc::Sender<ProcessEvent>, metrics: &Metrics) {
    let mut cache = HashCache::default();
    // Ends when the processing thread ends (its sender drops).
    for Observed {
        mut event,
        exe,
        exe_key,
    } in rx
    {
        event.exe_sha256 = match (&exe, exe_key) {
            (Some(f), _) => cache.hash(f),
            // Gone before it could be opened: known only if this very file (same device,
            // inode, mtime and size) was hashed before.
            (None, Some(key)) => cache.lookup(key),
            (None, None) => None,
        };
        if event.exe_sha256.is_none() {
            event.mark_missing("exe_sha256");
        }
        metrics.events_seen.inc();
        if event.completeness == procguard_core::Completeness::Partial {
            metrics.events_partial.inc();
        }
        if out.blocking_send(event).is_err() {
            return;
        }
    }
}
