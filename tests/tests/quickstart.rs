//! The quickstart as a newcomer runs it: `scripts/quickstart` starts a server and a sensor for
//! this host, and the commands it prints, run as printed with the tokens they name, list the
//! host's baseline, approve it, watch a deviation arrive on the SIEM stream, read the audit
//! log and round-trip the baselines through export and import. SIGTERM then stops it with
//! exit 0, leaving nothing behind, and no sensor-blind incident opened on the way.

use procguard_tests::*;
use std::io::BufRead;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The workload of processes outside any container, as the quickstart prints it.
const HOST: &str = "default//host/host/";
/// The ports the quickstart serves on: API, server admin, sensor admin.
const PORTS: [u16; 3] = [8443, 9090, 9091];

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// The commands the quickstart printed for "another shell", one per line, as printed.
struct Hints(Vec<String>);

impl Hints {
    fn parse(log: &str) -> Self {
        let block = log
            .split_once("In another shell:")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        Self(
            block
                .lines()
                .take_while(|l| !l.starts_with("----"))
                .filter_map(|l| l.strip_prefix("  "))
                .map(str::to_string)
                .collect(),
        )
    }

    /// The one printed line that contains `needle`.
    fn line(&self, needle: &str) -> &str {
        let found: Vec<&String> = self.0.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one printed command with {needle:?}: {:#?}",
            self.0
        );
        found[0]
    }

    /// A shell running `command` after the printed `export` line, in `dir`.
    fn shell(&self, dir: &Path, command: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "set -e\n{}\n{command}",
                self.line("export PROCGUARD_")
            ))
            .current_dir(dir)
            .env_remove("PROCGUARD_TOKEN_FILE")
            .env_remove("PROCGUARD_TLS_CA")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, dir: &Path, command: &str) -> Output {
        self.shell(dir, command).output().expect("run bash")
    }

    fn json(&self, dir: &Path, command: &str) -> Result<serde_json::Value, String> {
        let out = self.run(dir, &format!("{command} -o json"));
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }
}

fn blind_incidents(incidents: &serde_json::Value) -> Vec<serde_json::Value> {
    incidents
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["kind"] == "sensor-blind")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_quickstart_works_as_printed_and_stops_cleanly() {
    if !require(
        is_root(),
        "scripts/quickstart needs root for the proc connector",
    ) {
        return;
    }
    for port in PORTS {
        assert!(
            !port_open(port),
            "port {port} is taken: is a quickstart or procguard already running here?"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let shell_dir = work.path().join("shell");
    std::fs::create_dir_all(&shell_dir).unwrap();
    let mut cmd = Command::new("bash");
    // A user's shell, not cargo test's environment: the script's own `cargo build` must find
    // the binaries the suite built up to date rather than rebuild them under other settings.
    cmd.arg(repo::root().join("scripts/quickstart"))
        .current_dir(repo::root())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| {
            [
                "PATH",
                "HOME",
                "USER",
                "LANG",
                "RUSTUP_HOME",
                "CARGO_HOME",
                "TMPDIR",
            ]
            .contains(&k.as_str())
        }))
        .env("PROCGUARD_QUICKSTART_DIR", &data);
    let mut quickstart = Proc::spawn(cmd, work.path().join("quickstart.log"));
    let log = || {
        format!(
            "quickstart output:\n{}\nserver log:\n{}\nsensor log:\n{}",
            quickstart_text(work.path()),
            std::fs::read_to_string(data.join("server.log")).unwrap_or_default(),
            std::fs::read_to_string(data.join("sensor.log")).unwrap_or_default()
        )
    };
    // The build inside the script is a no-op here (the suite built the binaries first).
    let started = wait_for(Duration::from_secs(300), || {
        quickstart_text(work.path())
            .contains("procguard is running")
            .then_some(())
    });
    assert!(started.is_some(), "the quickstart did not start\n{}", log());
    let hints = Hints::parse(&quickstart_text(work.path()));
    // The hints name the token each command needs.
    assert!(
        hints.line("export PROCGUARD_").contains("approver.token"),
        "{:?}",
        hints.0
    );
    assert!(
        hints.line(" watch ").contains("siem.token"),
        "{:?}",
        hints.0
    );
    assert!(
        hints.line(" audit list").contains("siem.token"),
        "{:?}",
        hints.0
    );
    assert!(
        hints.line("baselines import").contains("admin.token"),
        "{:?}",
        hints.0
    );

    // The host's baseline is learning within seconds.
    let listed = wait_for(Duration::from_secs(30), || {
        let list = hints.json(&shell_dir, hints.line("baselines list")).ok()?;
        list.as_array()?
            .iter()
            .any(|b| b["workload"] == HOST)
            .then_some(())
    });
    assert!(listed.is_some(), "no host baseline listed\n{}", log());
    let got = hints.run(&shell_dir, hints.line("baselines get"));
    assert!(got.status.success(), "{got:?}");

    // Approve as printed; the sensor receives the approved baseline.
    let approved = hints.run(&shell_dir, hints.line("baselines approve"));
    assert!(approved.status.success(), "{approved:?}\n{}", log());
    let pushed = wait_for(Duration::from_secs(15), || {
        metric(9091, "procguard_sensor_baselines").filter(|n| *n >= 1.0)
    });
    assert!(
        pushed.is_some(),
        "the sensor never got the baseline\n{}",
        log()
    );

    // The SIEM stream, as printed, with the token it names.
    let mut watch = hints
        .shell(&shell_dir, &format!("exec env {}", hints.line(" watch ")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the printed watch");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch prints only records after it connected; give it a moment to subscribe.
    std::thread::sleep(Duration::from_secs(2));

    // Something this host never ran: a copy of `true` under a new name.
    let novel = work.path().join("quickstart-novel");
    std::fs::copy("/bin/true", &novel).unwrap();
    let novel_path = novel.to_str().unwrap().to_string();
    assert!(Command::new(&novel).status().unwrap().success());

    let mut streamed = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&novel_path) => {
                streamed = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let watch_out = watch.wait_with_output().unwrap();
    let streamed = streamed.unwrap_or_else(|| {
        panic!(
            "the deviation of {novel_path} never reached the printed watch (stderr: {})\n{}",
            String::from_utf8_lossy(&watch_out.stderr),
            log()
        )
    });
    let record: serde_json::Value = serde_json::from_str(&streamed).unwrap();
    assert!(
        ["deviation", "incident"].contains(&record["kind"].as_str().unwrap_or_default()),
        "{record}"
    );

    // The deviation is an incident on the host's workload.
    // procguardctl as the printed commands call it.
    let ctl = hints
        .line("baselines list")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let incidents = format!("{ctl} incidents list");
    let incident = wait_for(Duration::from_secs(10), || {
        let list = hints.json(&shell_dir, &incidents).ok()?;
        list.as_array()?
            .iter()
            .find(|i| i["exe_path"] == novel_path.as_str())
            .cloned()
    });
    let incident = incident.unwrap_or_else(|| panic!("no incident for {novel_path}\n{}", log()));
    assert_eq!(incident["workload"], HOST, "{incident}");

    // The audit log, as printed, shows who approved.
    let audit = hints.json(&shell_dir, hints.line(" audit list")).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "ApproveBaseline"
                && r["result"] == "ok"
                && r["actor"] == "dev-approver"
                && r["target"] == HOST),
        "{audit}"
    );

    // Export, then the printed import (admin token) finds nothing to change.
    let exported = hints.run(&shell_dir, hints.line("baselines export"));
    assert!(exported.status.success(), "{exported:?}");
    let file = std::fs::read_to_string(shell_dir.join("baselines.yaml")).unwrap();
    assert!(
        file.contains("kind: BaselineList") && file.contains("kind: host"),
        "{file}"
    );
    let dry = hints
        .json(&shell_dir, hints.line("baselines import"))
        .unwrap_or_else(|e| panic!("the printed import failed: {e}\n{}", log()));
    assert_eq!(dry["dry_run"], true, "{dry}");
    let host_change = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["workload"] == HOST)
        .cloned()
        .unwrap_or_else(|| panic!("the host baseline is not in the import: {dry}"));
    assert_eq!(host_change["action"], "unchanged", "{dry}");

    // Nothing was lost on this host, so no sensor-blind incident may have opened. Partial
    // events (processes gone before /proc was read) once opened one within 10 s and again after
    // each resolve: let the quickstart print two rounds of its listing (20 s) first.
    let rounds = wait_for(Duration::from_secs(60), || {
        (quickstart_text(work.path()).matches(" baselines\n").count() >= 2).then_some(())
    });
    assert!(
        rounds.is_some(),
        "the quickstart printed no listing\n{}",
        log()
    );
    let incidents = hints.json(&shell_dir, &incidents).unwrap();
    assert!(
        blind_incidents(&incidents).is_empty(),
        "a sensor-blind incident opened during the quickstart: {:#?}\n{}",
        blind_incidents(&incidents),
        log()
    );

    // A newcomer's sensor has nothing to warn about on a bare host (it once warned that it
    // could not reach the node's root filesystem, which it runs in).
    let sensor_log = std::fs::read_to_string(data.join("sensor.log")).unwrap_or_default();
    let warnings: Vec<&str> = sensor_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        // Deviations are logged as warnings: they are the product's output, not a problem.
        .filter(|l| !l.contains("Deviation."))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}\n{}", log());

    // SIGTERM: a clean stop, exit 0, and both components gone.
    let status = quickstart
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the quickstart did not stop on SIGTERM\n{}", log()));
    assert_eq!(status.code(), Some(0), "{}", log());
    let text = quickstart_text(work.path());
    assert!(text.contains("stopped; state kept in"), "{text}");
    assert!(
        wait_for(Duration::from_secs(10), || PORTS
            .iter()
            .all(|p| !port_open(*p))
            .then_some(()))
        .is_some(),
        "a component outlived the quickstart\n{}",
        log()
    );
}

fn quickstart_text(work: &Path) -> String {
    std::fs::read_to_string(work.join("quickstart.log")).unwrap_or_default()
}
