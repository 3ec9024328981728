//! Benchmark driver for the server's ingest and SIEM stream, over real mTLS gRPC against the
//! real `procguard-server` binary (started from the same target directory, on loopback, with
//! a fresh development PKI and data directory).
//!
//! Scenarios (each prints one line of results):
//! - `ingest`: `--streams` sensor streams send batches of `--batch` observations with up to
//!   4 batches in flight each (as the real sensor does); events/s counts only acknowledged,
//!   hence durable, events.
//! - `latency`: one stream sends deviations at `--rate` per second in 10 ms batches; a
//!   subscriber measures send → receive latency of each deviation record (p50, p99, max).
//! - `fanout`: the `ingest` scenario with deviations, once without subscribers and once with
//!   `--subscribers` subscribers of which one reads one record per 10 ms (slow). It also
//!   reports the CPU time the server and this driver used per 1,000 acknowledged events in
//!   each phase (from `/proc/<pid>/stat`), which does not depend on what else the machine runs.
//!   At saturation the subscribers (and this driver's own clients) take CPU from ingest on a
//!   shared machine, so its ratio measures machine sharing as much as the server.
//! - `steady`: a fixed offered load. `--streams` sensor streams together send `--rate`
//!   deviations per second in 10 ms batches for `--seconds`, in three phases: no subscribers,
//!   `--subscribers` − 1 full-speed subscribers, then the same plus one deliberately slow
//!   subscriber (one record per 10 ms). Each phase reports the offered and acknowledged rates,
//!   the latency from sending a batch to its acknowledgement (p50, p99, max), server CPU per
//!   1,000 acknowledged deviations, records delivered per fast subscriber, the slow
//!   subscriber's lag behind them, and `procguard_server_records_streamed_from_storage_total`.
//!   Ingest keeps up when every phase acknowledges what was offered with a similar p99.
//!   `--subscribers 0` runs only the first phase (to find the rate the machine sustains).
//! - `growth`: disk growth under a sustained stream of distinct deviations of maximum size.
//!   One stream sends `--rate` deviations per second (in 100 ms batches) into an enforced
//!   workload, each a new executable with argv of `--argv-bytes` bytes (default 65,000, just
//!   under the server's 64 KiB argv limit), for `--seconds`; it reports the data directory's
//!   allocated size before and after, per event, and extrapolated to an hour at that rate.
//!
//! Shape of the `ingest` scenario's baselines: `--elements N` executables are learned into
//! each stream's workload first (default 3), and each batch runs the first `--sighted K` of
//! them in turn (default all). The events that learn the baselines carry argv of
//! `--argv-bytes` bytes (default: a short argv), so each element keeps a sample argv up to its
//! bound (2 KiB); the measured batches carry the usual short argv (an element keeps the sample
//! of its first sighting, so later argv only costs the transport, which is not measured here).
//! So `--elements 300 --sighted 10 --argv-bytes 4096` is a big baseline (~0.7 MB of
//! provenance) whose batches are all sightings of a few busy executables.
//!
//! Every loop is bounded by `--seconds`; traffic goes to 127.0.0.1 only.

use procguard_proto::v1 as pb;
use procguard_tests::grpc::{self, SensorStream};
use procguard_tests::{free_port, http_ok, wait_for, Pki, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    scenario: String,
    streams: usize,
    batch: usize,
    seconds: u64,
    rate: u64,
    subscribers: usize,
    shape: Shape,
}

/// The baselines of the `ingest` scenario and the argv of events (see the module docs).
#[derive(Clone, Copy)]
struct Shape {
    elements: usize,
    sighted: usize,
    /// 0: the driver's short default argv.
    argv_bytes: usize,
}

impl Shape {
    /// The executables learned into each workload.
    fn exes(&self) -> Vec<String> {
        let base = ["/app/server", "/bin/sh", "/usr/bin/env"];
        (0..self.elements)
            .map(|i| match base.get(i) {
                Some(e) if self.elements <= base.len() => e.to_string(),
                _ => format!("/usr/bin/tool-{i}"),
            })
            .collect()
    }

    /// `evs` with argv of `argv_bytes` bytes (all entries together), if set.
    fn argv(&self, mut evs: Vec<pb::SensorEvent>) -> Vec<pb::SensorEvent> {
        if self.argv_bytes > 0 {
            for e in &mut evs {
                let p = e.process.as_mut().unwrap();
                let fill = self.argv_bytes.saturating_sub(p.exe_path.len()).max(1);
                p.argv = vec![p.exe_path.clone(), "a".repeat(fill)];
            }
        }
        evs
    }
}

fn parse() -> Args {
    let mut a = Args {
        scenario: "ingest".into(),
        streams: 4,
        batch: 500,
        seconds: 10,
        rate: 1000,
        subscribers: 10,
        shape: Shape {
            elements: 3,
            sighted: 0,
            argv_bytes: 0,
        },
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let num = |v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| panic!("{} needs a number, got '{v}'", argv[i]))
        };
        match argv[i].as_str() {
            "--streams" => a.streams = num(&v) as usize,
            "--batch" => a.batch = num(&v) as usize,
            "--seconds" => a.seconds = num(&v).min(120),
            "--rate" => a.rate = num(&v),
            "--subscribers" => a.subscribers = num(&v) as usize,
            "--elements" => a.shape.elements = (num(&v) as usize).max(1),
            "--sighted" => a.shape.sighted = num(&v) as usize,
            "--argv-bytes" => a.shape.argv_bytes = num(&v) as usize,
            s if !s.starts_with('-') => {
                a.scenario = s.to_string();
                i += 1;
                continue;
            }
            o => panic!("unknown flag {o}; use ingest|latency|fanout|steady|growth [--streams N] [--batch N] [--seconds N] [--rate N] [--subscribers N] [--elements N] [--sighted N] [--argv-bytes N]"),
        }
        i += 2;
    }
    if a.shape.sighted == 0 || a.shape.sighted > a.shape.elements {
        a.shape.sighted = a.shape.elements;
    }
    a
}

/// Starts the server binary next to this one, or `PROCGUARD_BENCH_SERVER` (to measure
/// another build, such as the previous version, with the same driver).
fn start_server(work: &Path, pki: &Pki) -> Server {
    let exe: PathBuf = std::env::var_os("PROCGUARD_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .join("procguard-server")
        });
    let grpc_port = free_port();
    let admin_port = free_port();
    let data_dir = work.join("server-data");
    let mut cmd = Command::new(exe);
    cmd.arg("--grpc-addr")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--dev-pki")
        .arg(&pki.dir)
        .env("RUST_LOG", "warn");
    let proc = procguard_tests::Proc::spawn(cmd, work.join("server.log"));
    let s = Server {
        proc,
        grpc_port,
        admin_port,
        data_dir,
    };
    assert!(
        wait_for(Duration::from_secs(15), || http_ok(admin_port, "/readyz")
            .then_some(()))
        .is_some(),
        "server not ready: {}",
        s.proc.log_text()
    );
    s
}

fn nodes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-{i}")).collect()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Runs `streams` producers for `secs`, sending known executables (of a baseline of
/// `shape`), or with `deviations` executables outside an enforced baseline. Returns
/// acknowledged events per second, and what the server (`server_pid`) spent in the measured
/// window per 1,000 acknowledged events: CPU milliseconds and bytes written to storage.
async fn produce(
    pki: Arc<Pki>,
    url: String,
    a: &Args,
    deviations: bool,
    server_pid: u32,
) -> (f64, f64, f64) {
    let (streams, batch, secs, shape) = (a.streams, a.batch, a.seconds, a.shape);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Open and prepare every stream first, so the measured window is ingest only.
    let mut prepared = Vec::new();
    for (i, node) in nodes(streams).into_iter().enumerate() {
        let mut s = SensorStream::open(&pki, &url, &node).await.unwrap();
        let w = grpc::workload("bench", &format!("app{i}-{}", uuid::Uuid::new_v4()));
        if deviations {
            grpc::enforced_workload(&pki, &url, &mut s, &w)
                .await
                .unwrap();
        } else {
            // Learn the workload's executables once; later batches are known executables.
            let exes = shape.exes();
            for chunk in exes.chunks(100) {
                let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let evs = shape.argv(s.events(&w, &chunk));
                s.send_acked(evs).await.unwrap();
            }
        }
        prepared.push((s, w));
    }
    let started = Instant::now();
    let (cpu0, written0) = (cpu_seconds(server_pid), written_bytes(server_pid));
    for (mut s, w) in prepared {
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let known = shape.exes();
            let exes: Vec<String> = (0..batch)
                .map(|i| {
                    if deviations {
                        format!("/opt/dev{}", i % 50)
                    } else {
                        known[i % shape.sighted].clone()
                    }
                })
                .collect();
            let exes: Vec<&str> = exes.iter().map(String::as_str).collect();
            let mut in_flight = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                let evs = s.events(&w, &exes);
                let last = evs.last().unwrap().sequence;
                s.send(evs).await.unwrap();
                in_flight.push_back(last);
                if in_flight.len() >= 4 {
                    s.wait_ack(in_flight.pop_front().unwrap()).await.unwrap();
                    acked.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            while let Some(seq) = in_flight.pop_front() {
                s.wait_ack(seq).await.unwrap();
                acked.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (cpu1, written1) = (cpu_seconds(server_pid), written_bytes(server_pid));
    let events = acked.load(Ordering::Relaxed) as f64;
    (
        events / started.elapsed().as_secs_f64(),
        1e6 * (cpu1 - cpu0) / events,
        1e3 * written1.saturating_sub(written0) as f64 / events,
    )
}

/// Bytes process `pid` caused to be written to storage so far (`write_bytes` of
/// `/proc/<pid>/io`).
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts them).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // Clock ticks; 100 per second on Linux.
    f.iter().sum::<u64>() as f64 / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = parse();
    let work = tempfile::tempdir().unwrap();
    let pki_dir = work.path().join("pki");
    let names = nodes(a.streams.max(1));
    procguard_runtime::pki::init(
        &pki_dir,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        &names,
    )
    .unwrap();
    let pki = Arc::new(Pki { dir: pki_dir });
    let server = start_server(work.path(), &pki);
    let url = server.url();
    match a.scenario.as_str() {
        "ingest" => {
            let (rate, cpu, written) =
                produce(pki.clone(), url, &a, false, server.proc.child.id()).await;
            println!(
                "ingest: {:.0} events/s acknowledged (durable), {} streams x {} events/batch, {} s, \
                 baselines of {} elements, {} sighted per batch, argv {} bytes; server per 1,000 \
                 events: {cpu:.1} ms CPU, {:.0} KiB written to storage",
                rate,
                a.streams,
                a.batch,
                a.seconds,
                a.shape.elements,
                a.shape.sighted,
                a.shape.argv_bytes,
                written / 1024.0
            );
        }
        "growth" => {
            let mut s = SensorStream::open(&pki, &url, &names[0]).await.unwrap();
            let w = grpc::workload("bench", "growth");
            grpc::enforced_workload(&pki, &url, &mut s, &w)
                .await
                .unwrap();
            let shape = Shape {
                argv_bytes: if a.shape.argv_bytes == 0 {
                    65_000
                } else {
                    a.shape.argv_bytes
                },
                ..a.shape
            };
            let per_tick = (a.rate / 10).max(1) as usize;
            let before = allocated_bytes(&server.data_dir);
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let (mut n, mut last) = (0u64, 0);
            for _ in 0..(10 * a.seconds) {
                tick.tick().await;
                let exes: Vec<String> = (0..per_tick)
                    .map(|i| format!("/tmp/drop-{}-{i}", n))
                    .collect();
                let exes: Vec<&str> = exes.iter().map(String::as_str).collect();
                let evs = shape.argv(s.events(&w, &exes));
                last = evs.last().unwrap().sequence;
                s.send(evs).await.unwrap();
                n += 1;
            }
            s.wait_ack(last).await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let after = allocated_bytes(&server.data_dir);
            let events = n * per_tick as u64;
            let grown = after.saturating_sub(before) as f64;
            println!(
                "growth: {} distinct deviations with argv {} bytes at {}/s for {:.0} s: data dir \
                 {:.1} -> {:.1} MiB, {:.0} bytes/event, {:.0} MiB/hour extrapolated",
                events,
                shape.argv_bytes,
                per_tick * 10,
                secs,
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                grown / events as f64,
                grown / secs * 3600.0 / 1048576.0
            );
        }
        "latency" => {
            let mut s = SensorStream::open(&pki, &url, &names[0]).await.unwrap();
            let w = grpc::workload("bench", "latency");
            grpc::enforced_workload(&pki, &url, &mut s, &w)
                .await
                .unwrap();
            let mut sub = grpc::subscribe(
                &pki,
                &url,
                pb::start_position::Position::Now(true),
                &[pb::RecordKind::Deviation],
            )
            .await
            .unwrap();
            let per_tick = (a.rate / 100).max(1) as usize;
            let total = per_tick as u64 * 100 * a.seconds;
            let reader = tokio::spawn(async move {
                let mut lat = Vec::new();
                while (lat.len() as u64) < total {
                    match tokio::time::timeout(Duration::from_secs(10), sub.message()).await {
                        Ok(Ok(Some(r))) => {
                            if let Some(pb::stream_record::Record::Deviation(d)) = r.record {
                                let sent = d
                                    .process
                                    .as_ref()
                                    .and_then(|p| p.argv.get(2))
                                    .and_then(|t| t.parse::<f64>().ok())
                                    .unwrap_or(0.0);
                                lat.push(now_ms() - sent);
                            }
                        }
                        _ => break,
                    }
                }
                lat
            });
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut last = 0;
            for _ in 0..(100 * a.seconds) {
                tick.tick().await;
                let mut evs = s.events(&w, &vec!["/opt/intruder"; per_tick]);
                for e in &mut evs {
                    // The send time rides in argv so the subscriber can measure it.
                    e.process
                        .as_mut()
                        .unwrap()
                        .argv
                        .push(format!("{:.3}", now_ms()));
                    last = e.sequence;
                }
                s.send(evs).await.unwrap();
            }
            s.wait_ack(last).await.unwrap();
            let mut lat = reader.await.unwrap();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "latency: {} deviations at {}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (received {} of {})",
                total,
                per_tick * 100,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(f64::NAN),
                lat.len(),
                total
            );
        }
        "fanout" => {
            let server_pid = server.proc.child.id();
            let me = std::process::id();
            let (s0, d0) = (cpu_seconds(server_pid), cpu_seconds(me));
            let alone = produce(pki.clone(), url.clone(), &a, true, server_pid)
                .await
                .0;
            let (s1, d1) = (cpu_seconds(server_pid), cpu_seconds(me));
            let received = Arc::new(AtomicU64::new(0));
            let slow_received = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut subs = Vec::new();
            for i in 0..a.subscribers {
                let mut sub =
                    grpc::subscribe(&pki, &url, pb::start_position::Position::Now(true), &[])
                        .await
                        .unwrap();
                let counter = if i == 0 {
                    slow_received.clone()
                } else {
                    received.clone()
                };
                let stop = stop.clone();
                subs.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(500), sub.message()).await
                        {
                            Ok(Ok(Some(_))) => {
                                counter.fetch_add(1, Ordering::Relaxed);
                                if i == 0 {
                                    // The deliberately slow consumer: 100 records/s at most.
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                            Ok(_) => break,
                            Err(_) => {}
                        }
                    }
                }));
            }
            let (s2, d2) = (cpu_seconds(server_pid), cpu_seconds(me));
            let with = produce(pki.clone(), url, &a, true, server_pid).await.0;
            let (s3, d3) = (cpu_seconds(server_pid), cpu_seconds(me));
            stop.store(true, Ordering::Relaxed);
            for s in subs {
                let _ = s.await;
            }
            println!(
                "fanout: ingest of deviations {:.0} events/s alone, {:.0} events/s with {} subscribers (ratio {:.2}); fast subscribers received {} records, the slow one {}",
                alone,
                with,
                a.subscribers,
                with / alone,
                received.load(Ordering::Relaxed),
                slow_received.load(Ordering::Relaxed)
            );
            // CPU milliseconds per 1,000 events.
            let per_k = |cpu: f64, rate: f64| 1e6 * cpu / (rate * a.seconds as f64);
            println!(
                "fanout cpu: server {:.1} ms per 1,000 events alone, {:.1} ms with subscribers; driver {:.1} ms alone, {:.1} ms with (its subscribers decode every record); load average {}",
                per_k(s1 - s0, alone),
                per_k(s3 - s2, with),
                per_k(d1 - d0, alone),
                per_k(d3 - d2, with),
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
            );
        }
        "steady" => steady(&a, pki.clone(), &server).await,
        o => panic!("unknown scenario '{o}'; use ingest, latency, fanout, steady or growth"),
    }
    drop(server);
}

/// What one paced sensor stream saw in a phase.
#[derive(Default)]
struct Paced {
    sent: u64,
    acked: u64,
    /// Send → acknowledgement of each batch, in milliseconds.
    latency: Vec<f64>,
    /// When the last batch was sent and when the last acknowledgement came.
    send_end: Option<Instant>,
    last_ack: Option<Instant>,
}

/// Sends deviations of `w` from `node` at `per_sec` in 10 ms batches for `secs`, timing each
/// batch from its send to the server's acknowledgement of its last event.
async fn paced_stream(
    pki: Arc<Pki>,
    url: String,
    node: String,
    w: pb::WorkloadIdentity,
    per_sec: f64,
    secs: u64,
) -> Paced {
    let s = SensorStream::open(&pki, &url, &node).await.unwrap();
    let (tx, mut rx, mut next_seq) = s.into_parts();
    // Batches in flight: (last sequence, sent at, events).
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<(
        u64,
        Instant,
        u64,
    )>::new()));
    // The last sequence sent once sending is over; the reader stops when it is acknowledged.
    let last_sent = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let (queue, last_sent) = (queue.clone(), last_sent.clone());
        tokio::spawn(async move {
            let mut out = Paced::default();
            let mut acked_seq = 0;
            let deadline = Instant::now() + Duration::from_secs(secs + 60);
            while acked_seq < last_sent.load(Ordering::SeqCst) && Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_millis(200), rx.message()).await {
                    Ok(Ok(Some(m))) => {
                        let Some(pb::server_message::Body::Ack(a)) = m.body else {
                            continue;
                        };
                        let now = Instant::now();
                        let mut q = queue.lock().unwrap();
                        while let Some(&(seq, at, n)) = q.front() {
                            if seq > a.sequence {
                                break;
                            }
                            out.latency.push((now - at).as_secs_f64() * 1000.0);
                            out.acked += n;
                            out.last_ack = Some(now);
                            q.pop_front();
                        }
                        acked_seq = a.sequence;
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            out
        })
    };
    let exes: Vec<String> = (0..50).map(|i| format!("/opt/dev{i}")).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut sent, mut last) = (0u64, 0u64);
    for t in 1..=(100 * secs) {
        tick.tick().await;
        // Whole events due by this tick; fractional rates even out over ticks.
        let due = (per_sec * t as f64 / 100.0) as u64;
        if due <= sent {
            continue;
        }
        let evs: Vec<pb::SensorEvent> = (sent..due)
            .map(|i| {
                let e = grpc::event(next_seq, &node, &w, &exes[(i % 50) as usize]);
                next_seq += 1;
                e
            })
            .collect();
        last = evs.last().unwrap().sequence;
        queue
            .lock()
            .unwrap()
            .push_back((last, Instant::now(), due - sent));
        tx.send(pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Batch(pb::EventBatch {
                events: evs,
            })),
        })
        .await
        .unwrap();
        sent = due;
    }
    let send_end = Instant::now();
    last_sent.store(last, Ordering::SeqCst);
    let mut out = reader.await.unwrap();
    out.sent = sent;
    out.send_end = Some(send_end);
    drop(tx);
    out
}

/// One subscriber's count of records and the last cursor it received.
#[derive(Default)]
struct SubCount {
    received: AtomicU64,
    cursor: AtomicU64,
}

/// One phase of `steady`: `fast` full-speed subscribers and, with `slow`, one reading a
/// record per 10 ms, all subscribed from now before the load starts.
async fn steady_phase(
    a: &Args,
    pki: &Arc<Pki>,
    server: &Server,
    workloads: &[(String, pb::WorkloadIdentity)],
    name: &str,
    fast: usize,
    slow: bool,
) {
    let url = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<SubCount>> = (0..fast + slow as usize).map(|_| Arc::default()).collect();
    let mut subs = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let is_slow = slow && i == fast;
        let mut sub = grpc::subscribe(pki, &url, pb::start_position::Position::Now(true), &[])
            .await
            .unwrap();
        let (count, stop) = (count.clone(), stop.clone());
        subs.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), sub.message()).await {
                    Ok(Ok(Some(r))) => {
                        count.received.fetch_add(1, Ordering::Relaxed);
                        count.cursor.store(r.cursor, Ordering::Relaxed);
                        if is_slow {
                            // The deliberately slow consumer: 100 records/s at most.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
        }));
    }
    let storage_metric = "procguard_server_records_streamed_from_storage_total";
    let from_storage0 = procguard_tests::metric(server.admin_port, storage_metric);
    let server_pid = server.proc.child.id();
    let (s0, d0) = (cpu_seconds(server_pid), cpu_seconds(std::process::id()));
    let started = Instant::now();
    let per_stream = a.rate as f64 / workloads.len() as f64;
    let streams: Vec<_> = workloads
        .iter()
        .map(|(node, w)| {
            tokio::spawn(paced_stream(
                pki.clone(),
                url.clone(),
                node.clone(),
                w.clone(),
                per_stream,
                a.seconds,
            ))
        })
        .collect();
    let mut paced = Vec::new();
    for s in streams {
        paced.push(s.await.unwrap());
    }
    let (s1, d1) = (cpu_seconds(server_pid), cpu_seconds(std::process::id()));
    let sent: u64 = paced.iter().map(|p| p.sent).sum();
    let acked: u64 = paced.iter().map(|p| p.acked).sum();
    let send_end = paced.iter().filter_map(|p| p.send_end).max().unwrap();
    let last_ack = paced
        .iter()
        .filter_map(|p| p.last_ack)
        .max()
        .unwrap_or(send_end);
    let mut lat: Vec<f64> = paced.iter().flat_map(|p| p.latency.clone()).collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let offered = sent as f64 / (send_end - started).as_secs_f64();
    let acked_rate = acked as f64 / (last_ack - started).as_secs_f64();
    // Fast subscribers keep up: give them a moment to receive the last records.
    let fast_counts = &counts[..fast];
    let newest = || {
        fast_counts
            .iter()
            .map(|c| c.cursor.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    };
    let mut settled = newest();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = newest();
        if n == settled
            && fast_counts
                .iter()
                .all(|c| c.cursor.load(Ordering::Relaxed) == n)
        {
            break;
        }
        settled = n;
    }
    let from_storage1 = procguard_tests::metric(server.admin_port, storage_metric);
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    let per_k = |cpu: f64| 1e6 * cpu / acked.max(1) as f64;
    println!(
        "steady {name}: offered {offered:.0}/s (target {}), acknowledged {acked_rate:.0}/s ({acked} of {sent} deviations, ratio {:.3}); ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {:.1} ms per 1,000 deviations, driver {:.1} ms",
        a.rate,
        acked_rate / offered,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        per_k(s1 - s0),
        per_k(d1 - d0),
    );
    if fast > 0 {
        let got: Vec<u64> = fast_counts
            .iter()
            .map(|c| c.received.load(Ordering::Relaxed))
            .collect();
        let newest = newest();
        let slow_part = if slow {
            let c = &counts[fast];
            format!(
                "; slow subscriber received {} records, at cursor {} ({} behind the fast ones)",
                c.received.load(Ordering::Relaxed),
                c.cursor.load(Ordering::Relaxed),
                newest.saturating_sub(c.cursor.load(Ordering::Relaxed))
            )
        } else {
            String::new()
        };
        println!(
            "steady {name}: {fast} fast subscribers received {}..{} records each (newest cursor {newest}){slow_part}; records streamed from storage during the phase: {}",
            got.iter().min().unwrap(),
            got.iter().max().unwrap(),
            match (from_storage0, from_storage1) {
                (Some(x), Some(y)) => format!("{:.0}", y - x),
                _ => "not scraped".into(),
            }
        );
    }
}

/// The fixed-load scenario (see the module docs).
async fn steady(a: &Args, pki: Arc<Pki>, server: &Server) {
    let url = server.url();
    let mut workloads = Vec::new();
    for (i, node) in nodes(a.streams).into_iter().enumerate() {
        let mut s = SensorStream::open(&pki, &url, &node).await.unwrap();
        let w = grpc::workload("bench", &format!("steady{i}-{}", uuid::Uuid::new_v4()));
        grpc::enforced_workload(&pki, &url, &mut s, &w)
            .await
            .unwrap();
        workloads.push((node, w));
    }
    let fast = a.subscribers.saturating_sub(1);
    steady_phase(a, &pki, server, &workloads, "alone", 0, false).await;
    if a.subscribers > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let name = format!("{fast}-fast");
        steady_phase(a, &pki, server, &workloads, &name, fast, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let name = format!("{fast}-fast+slow");
        steady_phase(a, &pki, server, &workloads, &name, fast, true).await;
    }
    println!(
        "steady: load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
