//! Load: 500 simulated sensors streaming to one server at once (real mTLS sessions from the
//! `fleet` driver), and the real sensor under an exec storm and under a fork bomb confined to a
//! container-like cgroup with a pids limit. Each prints its figures for docs/BENCHMARKS.md and
//! asserts the bounds.

use procguard_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// (VmRSS, VmHWM) of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 overall (utime, stime) are 11 and 12 after the command name.
    let ticks: u64 = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[test]
fn five_hundred_sensors_stream_at_once() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create_with(&work.path().join("pki"), &["node-a"], &["fleet"], &[]);
    let server = Server::start(&pki, work.path(), &["--sensor-fleet-names", "fleet"]);
    let pid = server.proc.child.id();
    let (idle_rss, _) = memory_kib(pid);
    let sensors = std::env::var("PROCGUARD_FLEET_SENSORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500u64);
    let seconds = 10;
    let mut fleet = Command::new(bin("fleet"))
        .arg("--server")
        .arg(server.url())
        .arg("--ca")
        .arg(pki.file("ca.crt"))
        .arg("--cert")
        .arg(pki.file("sensor-fleet.crt"))
        .arg("--key")
        .arg(pki.file("sensor-fleet.key"))
        .args(["--sensors", &sensors.to_string()])
        .args(["--events", "5", "--seconds", &seconds.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("fleet driver");
    let started = Instant::now();
    let mut peak_connected = 0.0f64;
    let mut peak_rss = 0;
    while fleet.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "fleet did not finish"
        );
        peak_connected = peak_connected
            .max(metric(server.admin_port, "procguard_server_sensors_connected").unwrap_or(0.0));
        peak_rss = peak_rss.max(memory_kib(pid).0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = fleet.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("fleet prints one JSON line");
    let (_, hwm) = memory_kib(pid);
    let stored = metric(server.admin_port, "procguard_server_events_ingested_total").unwrap();
    eprintln!(
        "LOAD fleet: sensors={sensors} peak_connected={peak_connected} server_idle_rss_kib={idle_rss} server_peak_rss_kib={peak_rss} server_hwm_kib={hwm} stored={stored} report={report}"
    );
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["welcomed"], sensors, "{report}");
    assert_eq!(report["events_acked"], report["events_sent"], "{report}");
    assert_eq!(stored as u64, report["events_sent"].as_u64().unwrap());
    assert!(
        peak_connected >= sensors as f64 * 0.95,
        "only {peak_connected} streams were open at once"
    );
}

/// A cgroup v1 `pids` cgroup shaped like a container's, with `pids.max`; every process in it
/// is killed and the cgroup removed when dropped.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn create(max: u32) -> Option<Self> {
        let root = Path::new("/sys/fs/cgroup/pids");
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        // The leaf is named like a container ID, so the sensor attributes it as one.
        let id = format!("{}{}", pod_uid(), pod_uid()).replace('-', "");
        let dir = root.join(format!("kubepods/besteffort/pod{}/{id}", pod_uid()));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("pids.max"), max.to_string()).ok()?;
        Some(Self(dir))
    }

    fn kill_all(&self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                return;
            }
            for p in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        self.kill_all();
        // The leaf, then the kubepods-shaped parents this test created.
        let mut d = self.0.clone();
        for _ in 0..4 {
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            if !d.pop() {
                break;
            }
        }
    }
}

/// Runs `script` in `sh` inside the cgroup for at most `secs` seconds.
fn run_in_cgroup(cg: &PidsCgroup, secs: u64, script: &str) -> std::process::Child {
    let procs = cg.0.join("cgroup.procs");
    Command::new("timeout")
        .args(["-s", "KILL", &secs.to_string(), "/bin/sh", "-c"])
        .arg(format!("echo $$ > {}; {script}", procs.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sh")
}

#[test]
fn the_sensor_stays_bounded_under_an_exec_storm_and_a_fork_bomb() {
    let _serial = serial();
    if !require(is_root(), "needs root for the proc connector and cgroups") {
        return;
    }
    let cg = PidsCgroup::create(64);
    if !require(
        cg.is_some(),
        "needs a writable cgroup v1 pids hierarchy at /sys/fs/cgroup/pids",
    ) {
        return;
    }
    let cg = cg.unwrap();
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-l"]);
    let server = Server::start(&pki, work.path(), &[]);
    let sensor = Sensor::start(&pki, &server, "node-l", work.path(), &[]);
    let pid = sensor.proc.child.id();
    let (rss0, _) = memory_kib(pid);
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();

    // Exec storm: four shells execing as fast as they can for 5 s.
    let storm: Vec<_> = (0..4)
        .map(|_| run_in_cgroup(&cg, 5, "while :; do /bin/true; done"))
        .collect();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(6) {
        peak = peak.max(memory_kib(pid).0);
        std::thread::sleep(Duration::from_millis(100));
    }
    for mut c in storm {
        let _ = c.wait();
    }
    cg.kill_all();
    let storm_cpu = cpu_time(pid) - cpu0;
    let storm_wall = t0.elapsed();

    // Fork bomb: every process forks two more until pids.max (64) refuses, for 5 s.
    let t1 = Instant::now();
    let cpu1 = cpu_time(pid);
    let mut bomb = run_in_cgroup(&cg, 5, "b() { b | b & }; b; sleep 6");
    while t1.elapsed() < Duration::from_secs(6) {
        peak = peak.max(memory_kib(pid).0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = bomb.wait();
    cg.kill_all();
    let bomb_cpu = cpu_time(pid) - cpu1;
    let bomb_wall = t1.elapsed();

    // Let the sensor catch up, then read what it saw and what it could not process.
    std::thread::sleep(Duration::from_secs(2));
    let m = |n: &str| sensor.metric(n).unwrap_or(0.0);
    let (_, hwm) = memory_kib(pid);
    eprintln!(
        "LOAD sensor: rss_start_kib={rss0} rss_peak_kib={peak} hwm_kib={hwm} storm_cpu={:.2}cores bomb_cpu={:.2}cores seen={} exec_lost={} queue_drops={} kernel_losses={} resyncs={} spool_drops={} acked={}",
        storm_cpu.as_secs_f64() / storm_wall.as_secs_f64(),
        bomb_cpu.as_secs_f64() / bomb_wall.as_secs_f64(),
        m("procguard_sensor_events_seen_total"),
        m("procguard_sensor_exec_lost_total"),
        m("procguard_sensor_queue_drops_total"),
        m("procguard_sensor_kernel_losses_total"),
        m("procguard_sensor_resyncs_total"),
        m("procguard_sensor_buffer_drops_total"),
        m("procguard_sensor_events_acked_total"),
    );
    assert!(m("procguard_sensor_events_seen_total") > 1_000.0);
    // Bounded memory: the queues are bounded and the spool is on disk.
    assert!(hwm < 256 * 1024, "sensor peak RSS {hwm} KiB");
    // Bounded CPU: the sensor is one process thread and one hash thread doing real work.
    assert!(
        storm_cpu.as_secs_f64() / storm_wall.as_secs_f64() < 1.9,
        "storm CPU {storm_cpu:?} over {storm_wall:?}"
    );
    assert_eq!(m("procguard_sensor_capture_failed_total"), 0.0);
    assert!(
        sensor
            .proc
            .log_text()
            .lines()
            .all(|l| !l.contains("panicked")),
        "{}",
        sensor.proc.log_text()
    );
}
