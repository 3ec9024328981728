//! The quickstart as a newcomer runs it: `scripts/quickstart` starts a server and a sensor for
//! this host, and the commands it prints, run as printed with the tokens they name, list the
//! host's baseline, approve it, watch a deviation arrive on the SIEM stream, read the audit
//! log and round-trip the baselines through export and import. SIGTERM then stops it with
//! exit 0, leaving nothing behind, and no sensor-blind incident opened on the way.
//!
//! A second quickstart beside a running one is refused (exit 1, naming the taken port) and
//! leaves the first unharmed; Ctrl-C (SIGINT to the whole process group, as a terminal sends
//! it) stops the first as cleanly as SIGTERM. The sensor is named after the host.

use procguard_tests::*;
use std::io::BufRead;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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

/// What the quickstart and its components said so far, for a failure's message.
fn outputs(work: &Path, data: &Path) -> String {
    format!(
        "quickstart output:\n{}\nserver log:\n{}\nsensor log:\n{}",
        quickstart_text(work),
        std::fs::read_to_string(data.join("server.log")).unwrap_or_default(),
        std::fs::read_to_string(data.join("sensor.log")).unwrap_or_default()
    )
}

/// Waits until the quickstart says it runs (its build inside is a no-op here: the suite built
/// the binaries first); fails the test, with what it said, if it never does.
fn wait_started(work: &Path, data: &Path) {
    let started = wait_for(Duration::from_secs(300), || {
        quickstart_text(work)
            .contains("procguard is running")
            .then_some(())
    });
    assert!(
        started.is_some(),
        "the quickstart did not start\n{}",
        outputs(work, data)
    );
}

/// What a quickstart test needs before it starts one: root (or the skip, said), and the
/// quickstart's fixed ports free. The guard keeps other quickstart tests waiting: one
/// quickstart at a time.
fn exclusive() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !require(
        is_root(),
        "scripts/quickstart needs root for the proc connector",
    ) {
        return None;
    }
    let one = serial();
    for port in PORTS {
        assert!(
            !port_open(port),
            "port {port} is taken: is a quickstart or procguard already running here?"
        );
    }
    Some(one)
}

#[test]
fn the_quickstart_works_as_printed_and_stops_cleanly() {
    let Some(_one) = exclusive() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let shell_dir = work.path().join("shell");
    std::fs::create_dir_all(&shell_dir).unwrap();
    let mut quickstart = Proc::spawn(quickstart(&data), work.path().join("quickstart.log"));
    let log = || outputs(work.path(), &data);
    wait_started(work.path(), &data);
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
    // Seen on the node named after the host (not `localhost`, which the PKI also has).
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        incident["nodes"],
        serde_json::json!([hostname.trim()]),
        "{incident}"
    );

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
    // And for real: importing what was just exported changes nothing, not even a version.
    let version = || {
        hints
            .json(&shell_dir, hints.line("baselines get"))
            .unwrap_or_else(|e| panic!("the printed get failed: {e}\n{}", log()))["version"]
            .as_u64()
            .unwrap()
    };
    let before = version();
    let import = hints.line("baselines import").replace(" --dry-run", "");
    let real = hints
        .json(&shell_dir, &format!("{import} --reason 'round trip'"))
        .unwrap_or_else(|e| panic!("the import failed: {e}\n{}", log()));
    assert_eq!(real["dry_run"], false, "{real}");
    let host_change = real["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["workload"] == HOST)
        .cloned()
        .unwrap_or_else(|| panic!("the host baseline is not in the import: {real}"));
    assert_eq!(host_change["action"], "unchanged", "{real}");
    assert_eq!(version(), before, "a round trip made a version");

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
    let stop = Stop::begin(work.path(), &data, &quickstart);
    let status = quickstart
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "the quickstart did not stop on SIGTERM\n{}\n{}",
                group_state(quickstart.child.id()),
                log()
            )
        });
    stop.assert_clean(status, &log());
}

#[test]
fn a_second_quickstart_is_refused_and_ctrl_c_stops_the_first_cleanly() {
    let Some(_one) = exclusive() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut first = Proc::spawn(quickstart(&data), work.path().join("quickstart.log"));
    let log = || outputs(work.path(), &data);
    wait_started(work.path(), &data);
    let connected = wait_for(Duration::from_secs(15), || {
        metric(9091, "procguard_sensor_connected").filter(|v| *v >= 1.0)
    });
    assert!(connected.is_some(), "the sensor never connected\n{}", log());

    // The sensor is named after the host, not `localhost` (the server's dev PKI has
    // certificates for both): the server learns the host's executables from that node.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let ctl = |args: &[&str]| {
        Command::new(bin("procguardctl"))
            .args(args)
            .args(["-o", "json"])
            .env("PROCGUARD_TLS_CA", data.join("pki/ca.crt"))
            .env("PROCGUARD_TOKEN_FILE", data.join("pki/viewer.token"))
            .env_remove("PROCGUARD_TOKEN")
            .env_remove("PROCGUARD_SERVER")
            .output()
            .expect("run procguardctl")
    };
    let nodes = wait_for(Duration::from_secs(30), || {
        let out = ctl(&["baselines", "get", HOST]);
        let b: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut nodes: Vec<String> = b["elements"]
            .as_array()?
            .iter()
            .flat_map(|e| {
                e["provenance"]["nodes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        nodes.sort();
        nodes.dedup();
        (!nodes.is_empty()).then_some(nodes)
    })
    .unwrap_or_else(|| panic!("the host's baseline learned nothing\n{}", log()));
    assert_eq!(nodes, vec![hostname.clone()], "{}", log());

    // A second quickstart, beside it: refused at once, naming the port, touching nothing.
    let second_data = work.path().join("second");
    let mut second = Proc::spawn(
        quickstart(&second_data),
        work.path().join("second-quickstart.log"),
    );
    let refused = wait_for(Duration::from_secs(30), || {
        second.child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "a second quickstart did not stop at once: {}",
            second.log_text()
        )
    });
    let said = second.log_text();
    assert_eq!(refused.code(), Some(1), "{said}");
    assert!(
        said.contains("quickstart: port 8443 is taken (another quickstart or procguard already runs?); stop it first."),
        "{said}"
    );
    assert!(
        !second_data.exists(),
        "the refused quickstart made its state directory"
    );
    // The first runs on, unharmed: ready, its sensor connected, its listing still printed.
    let rounds = |text: &str| text.matches(" baselines\n").count();
    let before = rounds(&quickstart_text(work.path()));
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first quickstart stopped\n{}",
        log()
    );
    assert!(http_ok(9090, "/readyz"), "{}", log());
    assert_eq!(
        metric(9091, "procguard_sensor_connected"),
        Some(1.0),
        "{}",
        log()
    );
    let printed = wait_for(Duration::from_secs(25), || {
        (rounds(&quickstart_text(work.path())) > before).then_some(())
    });
    assert!(
        printed.is_some(),
        "the first quickstart stopped printing\n{}",
        log()
    );
    let listed = ctl(&["baselines", "list"]);
    assert!(listed.status.success(), "{listed:?}");

    // Ctrl-C, as a terminal sends it: SIGINT to the quickstart's whole process group.
    let stop = Stop::begin(work.path(), &data, &first);
    let group = format!("-{}", first.child.id());
    let sent = Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_for(Duration::from_secs(20), || {
        first.child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "the quickstart did not stop on Ctrl-C\n{}\n{}",
            group_state(first.child.id()),
            log()
        )
    });
    stop.assert_clean(status, &log());
}

/// What a quickstart that did not stop was doing: each process of its group (what it waits
/// in) and the signals its shell has pending, blocked and caught, so that a failure says
/// where the signal went.
fn group_state(pgid: u32) -> String {
    let ps = Command::new("ps")
        .args([
            "-o",
            "pid,stat,wchan:32,etime,args",
            "-g",
            &pgid.to_string(),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ps: {e}"));
    let signals: String = std::fs::read_to_string(format!("/proc/{pgid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Sig") || l.starts_with("ShdPnd") || l.starts_with("State"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("the quickstart's process group {pgid}:\n{ps}its shell:\n{signals}")
}

/// `scripts/quickstart` with its state in `data`, as a user's shell runs it: with a user's
/// environment, in a process group of its own (a terminal's Ctrl-C signals the whole group).
fn quickstart(data: &Path) -> Command {
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
                // How the suite built them: another setting is another build.
                "CARGO_INCREMENTAL",
            ]
            .contains(&k.as_str())
        }))
        .env("PROCGUARD_QUICKSTART_DIR", data)
        .process_group(0);
    cmd
}

/// A stop as it begins: the quickstart's processes, and where its output and the
/// components' logs ended, so that what the stop logs can be read apart.
struct Stop {
    /// Log files and their lengths when the stop began.
    logs: Vec<(PathBuf, usize)>,
    /// The quickstart's own children (the server, the sensor, its waits): pid and name.
    children: Vec<(u32, String)>,
}

impl Stop {
    fn begin(work: &Path, data: &Path, quickstart: &Proc) -> Self {
        let logs = [
            work.join("quickstart.log"),
            data.join("server.log"),
            data.join("sensor.log"),
        ]
        .into_iter()
        .map(|f| {
            let len = std::fs::read(&f).map(|b| b.len()).unwrap_or(0);
            (f, len)
        })
        .collect();
        let children = children_of(quickstart.child.id());
        for name in ["procguard-serve", "procguard-senso"] {
            assert!(
                children.iter().any(|(_, n)| n == name),
                "no {name} among the quickstart's processes: {children:?}"
            );
        }
        Self { logs, children }
    }

    /// What `file` got after the stop began.
    fn since(&self, file: &str) -> String {
        let (path, from) = self
            .logs
            .iter()
            .find(|(p, _)| p.ends_with(file))
            .expect("a log of the stop");
        let all = std::fs::read(path).unwrap_or_default();
        String::from_utf8_lossy(all.get(*from..).unwrap_or_default()).into_owned()
    }

    /// Exit 0, "stopped" said, both components stopped as on a single signal (each logs its
    /// graceful end; a second signal would have ended them at once), nothing logged as an
    /// error after the stop began, no process of the quickstart's left and its ports free.
    fn assert_clean(&self, status: std::process::ExitStatus, log: &str) {
        assert_eq!(status.code(), Some(0), "{status:?}\n{log}");
        let said = self.since("quickstart.log");
        assert!(said.contains("stopped; state kept in"), "{said}\n{log}");
        let complaints: Vec<&str> = said
            .lines()
            .filter(|l| l.starts_with("quickstart:") || l.starts_with("procguardctl:"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:#?}\n{log}");
        for (file, end) in [
            ("server.log", "procguard-server stopped."),
            ("sensor.log", "procguard-sensor stopped."),
        ] {
            let logged = self.since(file);
            assert!(
                logged.contains(end),
                "{file} does not end with a graceful stop after the signal:\n{logged}\n{log}"
            );
            let errors: Vec<&str> = logged
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("Second signal"))
                .collect();
            assert!(errors.is_empty(), "{file}: {errors:#?}\n{log}");
        }
        // At once: the quickstart waits for what it stops before it exits.
        let left: Vec<_> = self
            .children
            .iter()
            .filter(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        assert!(
            left.is_empty(),
            "processes outlived the quickstart: {left:?}\n{log}"
        );
        assert!(
            wait_for(Duration::from_secs(10), || PORTS
                .iter()
                .all(|p| !port_open(*p))
                .then_some(()))
            .is_some(),
            "a port of the quickstart is still open\n{log}"
        );
    }
}

/// The children of `parent`: pid and name (`comm`, at most 15 characters).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the
        // last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            out.push((pid, comm.to_string()));
        }
    }
    out
}

fn quickstart_text(work: &Path) -> String {
    std::fs::read_to_string(work.join("quickstart.log")).unwrap_or_default()
}
