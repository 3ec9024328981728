//! The fault suite: the real sensor and server under faults, each ending with a count proof.
//!
//! Every fault ends the same way: the sensor is stopped cleanly (it sends what it holds and
//! waits for the acks), and then, over the whole run,
//!
//! `events appended to the sensor's spool = events stored on the server + events the sensor
//! counted as dropped + events still spooled`
//!
//! and the same in executions (a summary event stands for several: `executions` in
//! `state.json`, `procguard_server_executions_ingested_total` on the server). The storms repeat
//! one executable, so most of their executions travel in summaries.
//!
//! where the left side and the drops come from the spool's `state.json` (lifetime counters that
//! survive restarts and `SIGKILL`), and the stored count from the server's
//! `procguard_server_events_ingested_total` (a lifetime count kept in the database, so it too
//! survives a killed server; replays are not counted twice). The server serves this one sensor
//! only, so nothing else adds to it. Kernel-side losses (proc connector overruns) happen before
//! an event exists and are reported separately.
//!
//! Loopback and network namespaces only; each test is bounded in time. The default run is the
//! short form; `PROCGUARD_FAULTS_LONG=1` runs the long form (larger storms, a partition long
//! enough for HTTP/2 keepalive to break the connection, a longer outage).

use procguard_tests::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("PROCGUARD_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// Storm size: execs of `/bin/true` from one shell loop.
fn storm_size(short: usize, long_n: usize) -> usize {
    if long() {
        long_n
    } else {
        short
    }
}

/// A server whose ports stay fixed across kills and restarts.
struct FaultServer {
    pki_dir: PathBuf,
    ip: IpAddr,
    grpc_port: u16,
    admin_port: u16,
    data_dir: PathBuf,
    work: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl FaultServer {
    fn new(pki: &Pki, work: &Path, ip: IpAddr) -> Self {
        let mut s = Self {
            pki_dir: pki.dir.clone(),
            ip,
            grpc_port: free_port(),
            admin_port: free_port(),
            data_dir: work.join("server-data"),
            work: work.to_path_buf(),
            proc: None,
            starts: 0,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        self.starts += 1;
        let f = |n: &str| self.pki_dir.join(n);
        let mut cmd = Command::new(bin("procguard-server"));
        cmd.arg("--grpc-addr")
            .arg(format!("{}:{}", self.ip, self.grpc_port))
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--tls-cert")
            .arg(f("server.crt"))
            .arg("--tls-key")
            .arg(f("server.key"))
            .arg("--tls-client-ca")
            .arg(f("ca.crt"))
            .arg("--tokens-file")
            .arg(f("tokens.yaml"));
        let p = Proc::spawn(cmd, self.work.join(format!("server-{}.log", self.starts)));
        let admin = self.admin_port;
        assert!(
            wait_for(Duration::from_secs(20), || http_ok(admin, "/readyz")
                .then_some(()))
            .is_some(),
            "server not ready; log:\n{}",
            p.log_text()
        );
        self.proc = Some(p);
    }

    /// SIGKILL: no shutdown, no final flush.
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    fn url(&self) -> String {
        format!("https://{}:{}", self.ip, self.grpc_port)
    }

    fn stored(&self) -> u64 {
        metric(self.admin_port, "procguard_server_events_ingested_total").expect("server metric")
            as u64
    }

    fn stored_executions(&self) -> u64 {
        metric(
            self.admin_port,
            "procguard_server_executions_ingested_total",
        )
        .expect("server metric") as u64
    }
}

/// How a sensor is reached and run.
struct FaultSensor {
    node: String,
    pki_dir: PathBuf,
    spool: PathBuf,
    admin_ip: IpAddr,
    admin_port: u16,
    /// Command prefix, e.g. `ip netns exec NS`.
    wrapper: Vec<String>,
    extra: Vec<String>,
    work: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl FaultSensor {
    fn new(pki: &Pki, node: &str, work: &Path, extra: &[&str]) -> Self {
        Self {
            node: node.into(),
            pki_dir: pki.dir.clone(),
            spool: work.join("spool"),
            admin_ip: "127.0.0.1".parse().unwrap(),
            admin_port: free_port(),
            wrapper: vec![],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            work: work.to_path_buf(),
            proc: None,
            starts: 0,
        }
    }

    fn start(&mut self, server_url: &str) {
        self.starts += 1;
        let f = |n: &str| self.pki_dir.join(n);
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(bin("procguard-sensor"))
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(bin("procguard-sensor"));
            c
        };
        cmd.arg("--server")
            .arg(server_url)
            .arg("--node-name")
            .arg(&self.node)
            .arg("--tls-ca")
            .arg(f("ca.crt"))
            .arg("--tls-cert")
            .arg(f(&format!("sensor-{}.crt", self.node)))
            .arg("--tls-key")
            .arg(f(&format!("sensor-{}.key", self.node)))
            .arg("--tls-server-name")
            .arg("localhost")
            .arg("--admin-addr")
            .arg(format!("{}:{}", self.admin_ip, self.admin_port))
            .arg("--spool-dir")
            .arg(&self.spool)
            .args(&self.extra);
        self.proc = Some(Proc::spawn(
            cmd,
            self.work.join(format!("sensor-{}.log", self.starts)),
        ));
        let ok = wait_for(Duration::from_secs(15), || {
            self.metric("procguard_sensor_spool_bytes").map(|_| ())
        });
        assert!(ok.is_some(), "sensor did not start; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }

    fn metric(&self, name: &str) -> Option<f64> {
        metric_at(self.admin_ip, self.admin_port, name)
    }

    fn wait_connected(&self, within: Duration) {
        assert!(
            wait_for(within, || self
                .metric("procguard_sensor_connected")
                .filter(|v| *v >= 1.0))
            .is_some(),
            "sensor did not (re)connect; log:\n{}",
            self.log()
        );
    }

    /// Peak resident memory so far, in KiB (the sensor itself, not the wrapper).
    fn peak_rss_kib(&self) -> u64 {
        let Some(p) = &self.proc else { return 0 };
        // `ip netns exec` execs the sensor in place: the same pid either way.
        let pid = p.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(
                p.terminate(Duration::from_secs(20)).is_some(),
                "sensor did not stop within 20s; log:\n{}",
                p.log_text()
            );
        }
    }

    fn state(&self) -> serde_json::Value {
        let raw = std::fs::read(self.spool.join("state.json")).expect("spool state.json");
        serde_json::from_slice(&raw).expect("state.json parses")
    }
}

/// `procguardctl ... -o json` against `url`.
fn ctl_at(pki: &Pki, url: &str, role: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(bin("procguardctl"))
        .arg("--server")
        .arg(url)
        .arg("--tls-ca")
        .arg(pki.file("ca.crt"))
        .arg("--tls-server-name")
        .arg("localhost")
        .arg("--token")
        .arg(pki.token(role))
        .args(args)
        .args(["-o", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// `n` execs of `/bin/true` from one shell, in the background.
fn storm(n: usize) -> std::process::Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
        ))
        .spawn()
        .expect("storm shell")
}

/// The figures of one fault, printed for docs/BENCHMARKS.md.
#[derive(Debug)]
struct Tally {
    appended: u64,
    stored: u64,
    dropped: u64,
    spooled: u64,
    /// The same four in executions.
    executions: [u64; 4],
}

/// The last lines of every log of a fault's run, for failure messages.
fn logs(work: &Path) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(work)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out += &format!("==== {}\n", f.display());
        out += &lines[lines.len().saturating_sub(25)..].join("\n");
        out += "\n";
    }
    out
}

/// Stops the sensor cleanly and proves the counts.
fn prove(name: &str, sensor: &mut FaultSensor, server: &FaultServer, peak_kib: u64) -> Tally {
    sensor.stop();
    let st = sensor.state();
    let n = |k: &str| st[k].as_u64().unwrap_or(0);
    let t = Tally {
        appended: n("appended"),
        stored: server.stored(),
        dropped: n("dropped_observations") + n("dropped_deviations"),
        spooled: n("unacked_at_exit"),
        executions: [
            st["executions"]["appended"].as_u64().unwrap_or(0),
            server.stored_executions(),
            st["executions"]["dropped"].as_u64().unwrap_or(0),
            st["executions"]["unacked_at_exit"].as_u64().unwrap_or(0),
        ],
    };
    let uncertain = st["uncertain"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(
        uncertain, 0,
        "{name}: events dropped in flight were never settled: {st}"
    );
    eprintln!(
        "FAULT {name}: generated={} stored={} dropped_and_counted={} still_spooled={} unaccounted={} sensor_peak_rss_kib={peak_kib}",
        t.appended,
        t.stored,
        t.dropped,
        t.spooled,
        t.appended as i64 - (t.stored + t.dropped + t.spooled) as i64
    );
    assert_eq!(
        t.appended,
        t.stored + t.dropped + t.spooled,
        "{name}: unaccounted events: {t:?}\nstate.json: {st}\n{}",
        logs(&server.work)
    );
    assert_eq!(
        t.spooled,
        0,
        "{name}: the clean stop left events: {t:?}\n{}",
        logs(&server.work)
    );
    let [appended, stored, dropped, spooled] = t.executions;
    eprintln!(
        "FAULT {name} in executions: generated={appended} stored={stored} dropped_and_counted={dropped} still_spooled={spooled} unaccounted={} (in {} events)",
        appended as i64 - (stored + dropped + spooled) as i64,
        t.appended
    );
    assert!(
        appended >= t.appended,
        "{name}: fewer executions than events: {t:?}"
    );
    assert_eq!(
        appended,
        stored + dropped + spooled,
        "{name}: unaccounted executions: {t:?}\nstate.json: {st}\n{}",
        logs(&server.work)
    );
    t
}

/// One fault at a time: every sensor sees every process on the machine, and the figures are
/// clearer without another fault's storm in them.
fn setup(nodes: &[&str]) -> Option<(tempfile::TempDir, Pki)> {
    if !require(
        is_root(),
        "the fault suite needs root (proc connector, mounts, netns)",
    ) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), nodes);
    Some((work, pki))
}

#[test]
fn server_killed_and_restarted_during_a_storm_loses_nothing() {
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let mut sensor = FaultSensor::new(&pki, "node-f", work.path(), &[]);
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));
    let seen_before = sensor
        .metric("procguard_sensor_events_seen_total")
        .unwrap_or(0.0);

    let n = storm_size(3_000, 50_000);
    let mut s = storm(n);
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    std::thread::sleep(Duration::from_secs(if long() { 30 } else { 2 }));
    server.start();
    assert!(s.wait().unwrap().success());
    sensor.wait_connected(Duration::from_secs(20));
    let seen = sensor
        .metric("procguard_sensor_events_seen_total")
        .unwrap_or(0.0)
        - seen_before;
    // Either every exec became an event, or the sensor says it lost some in the kernel's queue
    // (short-lived processes gone before the rescan cannot be recovered, only counted).
    let kernel = sensor
        .metric("procguard_sensor_kernel_losses_total")
        .unwrap_or(0.0)
        + sensor
            .metric("procguard_sensor_queue_drops_total")
            .unwrap_or(0.0);
    let lost = sensor
        .metric("procguard_sensor_exec_lost_total")
        .unwrap_or(0.0);
    eprintln!(
        "storm of {n}: {seen} events seen, {lost} execs gone before /proc could be read, kernel-side losses counted: {kernel}"
    );
    assert!(
        seen + lost >= n as f64 || kernel > 0.0,
        "the sensor saw {seen} events and lost {lost} for a storm of {n}, and counted no kernel loss"
    );
    // Let the replay catch up before the clean stop (the sensor keeps seeing the machine's
    // other processes, so "caught up" is a short backlog, not zero); the stop drains the rest.
    let backlog = wait_for(Duration::from_secs(60), || {
        sensor
            .metric("procguard_sensor_pending_events")
            .filter(|p| *p < 100.0)
    });
    assert!(
        backlog.is_some(),
        "the replay did not catch up within 60 s; logs:\n{}",
        logs(work.path())
    );
    let peak = sensor.peak_rss_kib();
    let t = prove("server-down-during-storm", &mut sensor, &server, peak);
    assert!(t.stored > 0);
}

#[test]
fn a_sensor_killed_mid_spool_replays_after_restart() {
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let mut sensor = FaultSensor::new(&pki, "node-f", work.path(), &[]);
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));
    // Server down: everything from here on goes to the spool.
    server.kill();
    let n = storm_size(2_000, 30_000);
    let mut s = storm(n);
    std::thread::sleep(Duration::from_millis(700));
    let spooled = sensor
        .metric("procguard_sensor_pending_events")
        .unwrap_or(0.0);
    assert!(spooled > 0.0, "nothing spooled before the kill");
    let peak1 = sensor.peak_rss_kib();
    sensor.kill();
    sensor.start(&server.url());
    assert!(s.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    server.start();
    sensor.wait_connected(Duration::from_secs(30));
    let peak = peak1.max(sensor.peak_rss_kib());
    let t = prove("sensor-restart-mid-spool", &mut sensor, &server, peak);
    assert!(t.stored > 0);
}

/// Unmounts a tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_spool_drops_and_counts() {
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    let spool = work.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // 1 MiB of disk under a spool allowed 64 MiB: the disk fills first.
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&spool)
        .status()
        .is_ok_and(|s| s.success());
    if !require(ok, "mount -t tmpfs failed (needs root and CAP_SYS_ADMIN)") {
        return;
    }
    let _mount = Mount(spool.clone());
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let mut sensor = FaultSensor::new(
        &pki,
        "node-f",
        work.path(),
        // Every execution its own event, as for a fleet of distinct executables: this fault
        // is the spool filling, which the storm's repeats would not do in summaries.
        &[
            "--spool-bytes",
            &(64 * 1024 * 1024).to_string(),
            "--summary-interval",
            "0",
        ],
    );
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));
    server.kill();
    let n = storm_size(6_000, 40_000);
    assert!(storm(n).wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let errors = sensor
        .metric("procguard_sensor_spool_io_errors_total")
        .unwrap_or(0.0);
    assert!(
        errors > 0.0,
        "the disk never filled; log:\n{}",
        sensor.log()
    );
    server.start();
    sensor.wait_connected(Duration::from_secs(30));
    // The drops reach the server in the health report sent on reconnect.
    let dropped = sensor
        .metric("procguard_sensor_buffer_drops_total")
        .unwrap_or(0.0);
    let reported = wait_for(Duration::from_secs(10), || {
        metric(
            server.admin_port,
            "procguard_server_sensor_reported_drops{node=\"node-f\"}",
        )
        .filter(|r| *r >= dropped)
    });
    assert!(
        reported.is_some(),
        "the server never heard of the {dropped} drops"
    );
    let peak = sensor.peak_rss_kib();
    let t = prove("disk-full-on-spool", &mut sensor, &server, peak);
    assert!(t.dropped > 0, "{t:?}");
}

/// A network namespace with a veth pair to the host; deleted (with the pair) when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: IpAddr,
    ns_ip: IpAddr,
}

impl Netns {
    fn create() -> Option<Self> {
        let id = std::process::id() % 50_000;
        let name = format!("pgf{id}");
        let host_if = format!("pgh{id}");
        let ns_if = format!("pgn{id}");
        let octet = (id % 250) + 1;
        let host_ip: IpAddr = format!("10.231.{octet}.1").parse().unwrap();
        let ns_ip: IpAddr = format!("10.231.{octet}.2").parse().unwrap();
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
        };
        let run = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = run(&["netns", "add", &name])
            && run(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ])
            && run(&["link", "set", &ns_if, "netns", &name])
            && run(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])
            && run(&["link", "set", &host_if, "up"])
            && run(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ])
            && run(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])
            && run(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    fn link(&self, up: bool) {
        let st = Command::new("ip")
            .args(["link", "set", &self.host_if, if up { "up" } else { "down" }])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_network_partition_between_sensor_and_server_loses_nothing() {
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    let have_ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(have_ip, "needs iproute2 (`ip`) for network namespaces") {
        return;
    }
    let ns = Netns::create();
    if !require(
        ns.is_some(),
        "cannot create a network namespace with a veth pair",
    ) {
        return;
    }
    let ns = ns.unwrap();
    let server = FaultServer::new(&pki, work.path(), ns.host_ip);
    let mut sensor = FaultSensor::new(
        &pki,
        "node-f",
        work.path(),
        // The kernel sends process events to the initial network namespace only.
        &[
            "--netlink-netns",
            &format!("/proc/{}/ns/net", std::process::id()),
        ],
    );
    sensor.wrapper = vec!["ip".into(), "netns".into(), "exec".into(), ns.name.clone()];
    sensor.admin_ip = ns.ns_ip;
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));

    let n = storm_size(2_000, 30_000);
    let mut s = storm(n);
    std::thread::sleep(Duration::from_millis(300));
    ns.link(false);
    // Long enough in the long form for HTTP/2 keepalive (20 s + 20 s) to end the stream.
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(if long() { 60 } else { 4 }));
    assert!(s.wait().unwrap().success());
    let stored_during = server.stored();
    ns.link(true);
    eprintln!("partition lasted {:?}", started.elapsed());
    sensor.wait_connected(Duration::from_secs(60));
    // Everything the storm produced reaches the server after the partition heals.
    let _ = wait_for(Duration::from_secs(30), || {
        (sensor.metric("procguard_sensor_pending_events")? == 0.0).then_some(())
    });
    let peak = sensor.peak_rss_kib();
    let t = prove("network-partition", &mut sensor, &server, peak);
    assert!(
        t.stored > stored_during,
        "nothing arrived after the partition healed"
    );
}

#[test]
fn a_deviation_is_detected_by_a_restarted_sensor_while_the_server_is_down() {
    let _serial = serial();
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-f"]);
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let jsonl = work.path().join("events.jsonl");
    let mut sensor = FaultSensor::new(
        &pki,
        "node-f",
        work.path(),
        &["--jsonl", jsonl.to_str().unwrap()],
    );
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));

    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "300"]);
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let url = server.url();
    assert!(
        wait_for(Duration::from_secs(10), || ctl_at(
            &pki,
            &url,
            "viewer",
            &["baselines", "get", &workload]
        )
        .ok())
        .is_some(),
        "no baseline for {workload}"
    );
    let approved = ctl_at(
        &pki,
        &url,
        "approver",
        &["baselines", "approve", &workload, "--reason", "fault suite"],
    )
    .unwrap();
    assert_eq!(approved["state"], "enforced");
    assert!(wait_for(Duration::from_secs(10), || sensor
        .metric("procguard_sensor_baselines")
        .filter(|n| *n >= 1.0))
    .is_some());

    // Server down, sensor restarted: the baseline comes from the spool directory.
    server.kill();
    sensor.stop();
    sensor.start(&server.url());
    assert!(
        wait_for(Duration::from_secs(10), || sensor
            .metric("procguard_sensor_baselines")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "the restarted sensor has no baseline; log:\n{}",
        sensor.log()
    );
    assert_eq!(sensor.metric("procguard_sensor_connected"), Some(0.0));
    // A shell that stays a second: a process gone before /proc is read cannot be matched (it
    // is counted in procguard_sensor_exec_lost_total instead).
    assert!(c.exec(&["/bin/sh", "-c", "sleep 1; true"]).status.success());
    assert!(
        wait_for(Duration::from_secs(10), || sensor
            .metric("procguard_sensor_deviations_total")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "no local deviation while the server was down; events:\n{}\nlog:\n{}",
        std::fs::read_to_string(&jsonl)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/bin/sh") || l.contains(&uid))
            .collect::<Vec<_>>()
            .join("\n"),
        sensor.log()
    );
    // When the server is back, the spooled deviation is stored.
    server.start();
    sensor.wait_connected(Duration::from_secs(30));
    assert!(
        wait_for(Duration::from_secs(15), || metric(
            server.admin_port,
            "procguard_server_deviations_total"
        )
        .filter(|n| *n >= 1.0))
        .is_some(),
        "the deviation never reached the server; sensor log:\n{}",
        sensor.log()
    );
    let peak = sensor.peak_rss_kib();
    prove("deviation-while-server-down", &mut sensor, &server, peak);
}

/// The spool's records in order, as (offset, whole length) pairs, read with the current
/// on-disk format (magic, length, sequence, CRC-32, payload).
fn spool_records(seg: &Path) -> Vec<(usize, usize)> {
    let b = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 20 <= b.len() {
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        assert_eq!(
            &b[at..at + 4],
            b"PGr2",
            "a record starts at {at} in {seg:?}"
        );
        out.push((at, 20 + len));
        at += 20 + len;
    }
    out
}

/// One record's bytes damaged on disk while the sensor is stopped (a bad sector, a bit flip):
/// it is a loss, counted once, and never a reason to stop: every event after it is delivered
/// and the count proof holds with exactly that one loss.
#[test]
fn a_corrupted_spool_record_is_a_counted_loss_and_everything_after_it_is_delivered() {
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let mut sensor = FaultSensor::new(&pki, "node-f", work.path(), &[]);
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));
    server.kill();
    let mut s = storm(300);
    assert!(s.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    sensor.stop();
    // The observation segment with the most records; one in its middle is damaged.
    let seg = std::fs::read_dir(&sensor.spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".v2.seg"))
        .max_by_key(|p| spool_records(p).len())
        .expect("a spool segment");
    let records = spool_records(&seg);
    assert!(records.len() >= 3, "{} records in {seg:?}", records.len());
    let (at, len) = records[records.len() / 2];
    let mut bytes = std::fs::read(&seg).unwrap();
    for b in &mut bytes[at + 24..at + len.min(40)] {
        *b ^= 0xa5;
    }
    std::fs::write(&seg, bytes).unwrap();

    sensor.start(&server.url());
    server.start();
    sensor.wait_connected(Duration::from_secs(30));
    assert_eq!(
        sensor.metric("procguard_sensor_spool_corrupt_records_total"),
        Some(1.0),
        "log:\n{}",
        sensor.log()
    );
    assert!(
        wait_for(Duration::from_secs(60), || sensor
            .metric("procguard_sensor_pending_events")
            .filter(|p| *p < 100.0))
        .is_some(),
        "the replay stopped at the damaged record; logs:\n{}",
        logs(work.path())
    );
    let t = prove("corrupt-spool-record", &mut sensor, &server, 0);
    assert_eq!(t.dropped, 1, "exactly the damaged record is lost: {t:?}");
    assert!(t.stored + 1 >= records.len() as u64, "{t:?}");
}

/// Batches that would not fit the server's message limit: execs with maximum argv (64
/// entries of 1 KiB each, 64 KiB an event) and the execs of a pod with a megabyte of labels,
/// all spooled while the server is down. Before batches were capped by bytes, 500 such events
/// made one batch far over `--max-message-bytes`, refused, and replayed for ever. Now every
/// one of them is delivered when the server comes back, nothing refused, nothing lost.
#[test]
fn maximum_argv_and_a_megabyte_of_pod_labels_are_delivered_after_an_outage() {
    use procguard_tests::fake_kube::{FakeKube, PodBuilder};
    let _serial = serial();
    let Some((work, pki)) = setup(&["node-f"]) else {
        return;
    };
    if !require(docker_available(), "the pod's container needs Docker") {
        return;
    }
    let api = FakeKube::start();
    let uid = pod_uid();
    let c = Container::run_in_pod(&uid, &["/bin/sleep", "600"]);
    // 16,000 labels of 63-character values: about 1.1 MB, every one carried by each event
    // of the pod before labels were capped.
    let mut pod = PodBuilder::new("shop", "web-1", &uid, "node-f")
        .owned_by("DaemonSet", "web")
        .container("web", busybox_image(), Some(&c.id), None);
    for i in 0..16_000 {
        pod = pod.label(&format!("label-{i:05}"), &"v".repeat(63));
    }
    api.apply(pod.build());
    let kubeconfig = api.kubeconfig(work.path());
    let mut server = FaultServer::new(&pki, work.path(), "127.0.0.1".parse().unwrap());
    let mut sensor = FaultSensor::new(
        &pki,
        "node-f",
        work.path(),
        // Every execution its own event: the point is 500 maximal events in the spool,
        // which repeats summarised would not make.
        &[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--summary-interval",
            "0",
        ],
    );
    sensor.start(&server.url());
    sensor.wait_connected(Duration::from_secs(15));
    assert!(
        wait_for(Duration::from_secs(20), || sensor
            .metric("procguard_sensor_pods_known")
            .filter(|v| *v >= 1.0))
        .is_some(),
        "the pod never became known; log:\n{}",
        sensor.log()
    );
    server.kill();
    // 200 execs with maximum argv: 13 MB of argv, three times the server's message limit.
    let arg = "a".repeat(1100);
    for _ in 0..200 {
        Command::new("/bin/true")
            .args(std::iter::repeat_n(&arg, 70))
            .status()
            .unwrap();
    }
    // 100 execs in the pod, each carrying its labels.
    let out = c.exec(&[
        "/bin/sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done",
    ]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_secs(1));
    let spooled_bytes = sensor.metric("procguard_sensor_spool_bytes").unwrap_or(0.0);
    assert!(
        spooled_bytes > 8.0 * 1024.0 * 1024.0,
        "the spool holds {spooled_bytes} bytes: the maximum-argv events did not reach it"
    );
    server.start();
    sensor.wait_connected(Duration::from_secs(30));
    assert!(
        wait_for(Duration::from_secs(90), || sensor
            .metric("procguard_sensor_pending_events")
            .filter(|p| *p < 100.0))
        .is_some(),
        "the replay did not get through; logs:\n{}",
        logs(work.path())
    );
    let refused = metric_at(
        server.ip,
        server.admin_port,
        "procguard_server_limit_exceeded_total{limit=\"message_bytes\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(refused, 0.0, "a batch over the limit was sent");
    assert!(
        sensor
            .metric("procguard_sensor_pod_labels_capped_total")
            .unwrap_or(0.0)
            >= 1.0,
        "the pod's events carried their labels whole"
    );
    let t = prove("max-argv-and-labels", &mut sensor, &server, 0);
    assert_eq!(t.dropped, 0, "{t:?}");
}
