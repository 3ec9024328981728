//! fanotify exec identities are on by default wherever the kernel and privileges allow, say
//! so where they do not, and can be required or turned off: the real sensor binary, run once
//! with every capability and once without CAP_SYS_ADMIN (dropped from its bounding set by
//! `capsh`).

use procguard_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Starts the sensor (JSON lines only) with `extra` flags, without CAP_SYS_ADMIN when `drop`.
fn sensor(work: &Path, name: &str, drop: bool, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut args: Vec<String> = [
        "--node-name",
        name,
        "--jsonl",
        &work.join(format!("{name}.jsonl")).display().to_string(),
        "--admin-addr",
        &format!("127.0.0.1:{port}"),
        "--spool-dir",
        &work.join(format!("{name}-spool")).display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let cmd = if drop {
        let mut c = Command::new("capsh");
        c.arg("--drop=cap_sys_admin")
            .arg("--")
            .arg("-c")
            .arg("exec \"$0\" \"$@\"")
            .arg(bin("procguard-sensor"))
            .args(&args);
        c
    } else {
        let mut c = Command::new(bin("procguard-sensor"));
        c.args(&args);
        c
    };
    (Proc::spawn(cmd, work.join(format!("{name}.log"))), port)
}

fn started(p: &Proc) -> bool {
    wait_for(Duration::from_secs(20), || {
        p.log_text()
            .contains("Initial /proc scan done")
            .then_some(())
    })
    .is_some()
}

#[test]
fn fanotify_is_on_where_allowed_and_says_why_where_not() {
    if !require(is_root(), "needs root for the proc connector and fanotify")
        || !require(
            Command::new("capsh").arg("--help").output().is_ok(),
            "needs capsh (apt-get install libcap2-bin) to drop CAP_SYS_ADMIN",
        )
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // With every privilege, by default: on.
    let (on, port) = sensor(work.path(), "full", false, &[]);
    assert!(started(&on), "{}", on.log_text());
    assert_eq!(metric(port, "procguard_sensor_fanotify_enabled"), Some(1.0));
    assert!(!on.log_text().contains("fanotify exec identities are off"));
    // Without CAP_SYS_ADMIN, by default: the sensor runs, and one warning says why and what
    // to grant.
    let (off, port) = sensor(work.path(), "nosysadmin", true, &[]);
    assert!(started(&off), "{}", off.log_text());
    assert_eq!(metric(port, "procguard_sensor_fanotify_enabled"), Some(0.0));
    let log = off.log_text();
    assert_eq!(
        log.matches("fanotify exec identities are off:").count(),
        1,
        "{log}"
    );
    assert!(log.contains("missing CAP_SYS_ADMIN"), "{log}");
    // Required (the DaemonSet's "on", or a bare --fanotify): it refuses to start, saying why.
    let (mut req, _) = sensor(work.path(), "required", true, &["--fanotify"]);
    let status = wait_for(Duration::from_secs(20), || {
        req.child.try_wait().ok().flatten()
    })
    .expect("a sensor that cannot have fanotify but requires it exits");
    assert!(!status.success());
    assert!(
        req.log_text().contains("--fanotify on"),
        "{}",
        req.log_text()
    );
    // Turned off explicitly: off, and said so without a warning.
    let (quiet, port) = sensor(work.path(), "off", false, &["--fanotify", "off"]);
    assert!(started(&quiet), "{}", quiet.log_text());
    assert_eq!(metric(port, "procguard_sensor_fanotify_enabled"), Some(0.0));
    let log = quiet.log_text();
    assert!(log.contains("(--fanotify off)"), "{log}");
    assert!(!log.contains("fanotify exec identities are off:"), "{log}");
}

/// The hashing thread's latency is on `/metrics`: a file the cache has never seen is read and
/// hashed (`hash_duration_seconds`), and its event's wait for that shows as
/// `hash_event_delay_seconds`.
#[test]
fn hashing_latency_is_measured() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (s, port) = sensor(work.path(), "hashing", false, &[]);
    assert!(started(&s), "{}", s.log_text());
    let count = |name: &str| metric(port, name).unwrap_or(0.0);
    let before = count("procguard_sensor_hash_duration_seconds_count");
    // A copy is a new file (its own inode), so no cache knows its hash yet.
    let fresh = work.path().join("fresh-true");
    std::fs::copy("/bin/true", &fresh).unwrap();
    let hashed = wait_for(Duration::from_secs(20), || {
        let _ = Command::new(&fresh).status();
        (count("procguard_sensor_hash_duration_seconds_count") > before
            && count("procguard_sensor_hash_event_delay_seconds_count") > 0.0)
            .then_some(())
    });
    assert!(hashed.is_some(), "{}", s.log_text());
    assert!(count("procguard_sensor_hash_duration_seconds_sum") > 0.0);
}
