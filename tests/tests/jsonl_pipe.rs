//! `procguard-sensor --jsonl - | head`: a sensor without a server whose only output is stdout
//! stops, cleanly, when its reader goes away; with a server, stdout is a side output and a
//! closed pipe stops nothing.

use procguard_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn sensor(work: &std::path::Path, extra: &[String]) -> std::process::Child {
    Command::new(bin("procguard-sensor"))
        .args(["--node-name", "pipe-node", "--jsonl", "-", "--admin-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--spool-dir")
        .arg(work.join("spool"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sensor")
}

/// Reads one line of the sensor's stdout, then closes it, and keeps the host busy so that the
/// sensor has more to write.
fn read_one_line_and_close(child: &mut std::process::Child) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Something to report even on an idle host.
    let busy = std::thread::spawn(|| {
        for _ in 0..50 {
            let _ = Command::new("/bin/true").status();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with('{'), "{line}");
    drop(out);
    busy.join().unwrap();
}

#[test]
fn a_standalone_sensor_stops_when_its_reader_goes_away() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut child = sensor(work.path(), &[]);
    read_one_line_and_close(&mut child);
    let status = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
    let mut stderr = String::new();
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    let status = status.unwrap_or_else(|| panic!("still running after its reader left:\n{stderr}"));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("The reader of the JSON lines went away"),
        "{stderr}"
    );
}

#[test]
fn a_sensor_with_a_server_keeps_running_when_stdout_closes() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["pipe-node"]);
    let server = Server::start(&pki, work.path(), &[]);
    let extra: Vec<String> = vec![
        "--server".into(),
        server.url(),
        "--tls-server-name".into(),
        "localhost".into(),
        "--tls-ca".into(),
        pki.file("ca.crt").display().to_string(),
        "--tls-cert".into(),
        pki.file("sensor-pipe-node.crt").display().to_string(),
        "--tls-key".into(),
        pki.file("sensor-pipe-node.key").display().to_string(),
    ];
    let mut child = sensor(work.path(), &extra);
    read_one_line_and_close(&mut child);
    std::thread::sleep(Duration::from_secs(2));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        running,
        "a sensor with a server stopped because stdout closed"
    );
}
