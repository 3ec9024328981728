//! What only the eBPF backend promises, against the real kernel with the real sensor binary:
//! names a process chooses (argv[0], its file's name) never decide what ran or where; an
//! exec's executable is the file the kernel executed at that exec, even when the process
//! exec'd a same-named file elsewhere before the sensor looked (and a path too deep for the
//! kernel side to record whole is read late and said so); a process gone before its
//! container's mount table was read is placed through one of its own mount namespace; a ring
//! buffer too small for a storm counts every record it loses, never silently; `--capture auto`
//! without the privileges to load BPF falls back to the proc connector with one line saying
//! why, and `--capture ebpf` refuses to start.

use procguard_tests::cgroups::FakeContainerCgroup;
use procguard_tests::jsonl::{argv_has, JsonlSensor};
use procguard_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn busybox() -> &'static str {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (apt-get install busybox-static)")
}

/// A shell snippet that moves the shell into `cg` (every hierarchy).
fn join(cg: &FakeContainerCgroup) -> String {
    cg.procs_files()
        .iter()
        .map(|f| format!("echo $$ > {};", f.display()))
        .collect()
}

#[test]
fn names_the_process_chooses_do_not_decide_what_ran_or_where() {
    if !Backend::Ebpf.require() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // A copy of a real (not multi-call) program under a harmless-looking name, run under
    // another argv[0] and gone within a millisecond or so.
    let evil = work.path().join("evil");
    std::fs::copy("/bin/true", &evil).unwrap();
    let cg = FakeContainerCgroup::random().unwrap();
    let sensor = JsonlSensor::start(work.path(), "names-node", &Backend::Ebpf.args(&[]));
    let script = format!(
        "{join} exec {bb} sh -c 'exec -a /usr/sbin/sshd {evil} pg-lie-marker'",
        join = join(&cg),
        bb = busybox(),
        evil = evil.display()
    );
    assert!(Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    let e = sensor.wait_event(Duration::from_secs(10), "the renamed exec", |e| {
        e["argv"][1] == "pg-lie-marker"
    });
    // What ran is the file the kernel executed, under its own name; argv[0] is recorded as
    // what the process said, and nothing more.
    assert_eq!(e["exe_path"], evil.display().to_string(), "{e}");
    assert_eq!(e["argv"][0], "/usr/sbin/sshd", "{e}");
    assert_eq!(e["comm"], "evil", "{e}");
    // Where it ran is the cgroup the kernel recorded at the exec.
    assert_eq!(e["container"]["container_id"], cg.id.as_str(), "{e}");
    // Read, not inherited or guessed (its origin stays unknown: a hand-made cgroup has no
    // container root to place the file in).
    let missing = e["missing"].as_array().cloned().unwrap_or_default();
    for field in [
        "argv",
        "exe_path",
        "container",
        "inherited:container",
        "ppid",
    ] {
        assert!(!missing.iter().any(|m| m == field), "{field} missing: {e}");
    }
}

/// A process gone before its container's mount table was read is placed through another
/// process still in the mount namespace the kernel recorded at its exec: here a shell that
/// moved itself into a container's cgroup without exec-ing (as `runc exec` and a shell
/// joining a pod's cgroup do), so the sensor never saw it start there, runs programs that are
/// gone within a millisecond. Each one's origin is read, never left missing (the stand-in's
/// namespace is checked: `origin::tests`).
#[test]
fn a_process_gone_before_its_containers_mount_table_was_read_still_has_its_origin() {
    if !Backend::Ebpf.require() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cg = FakeContainerCgroup::random().unwrap();
    let sensor = JsonlSensor::start(work.path(), "standin-node", &Backend::Ebpf.args(&[]));
    let n = 40;
    let script = format!(
        "sleep 0.3; {join} i=0; while [ $i -lt {n} ]; do /bin/true pg-standin-$i; i=$((i+1)); done; sleep 1",
        join = join(&cg)
    );
    assert!(Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    let ours = |e: &serde_json::Value| {
        e["argv"][1]
            .as_str()
            .is_some_and(|a| a.starts_with("pg-standin-"))
    };
    sensor.wait_event(Duration::from_secs(10), "the last short exec", |e| {
        e["argv"][1] == format!("pg-standin-{}", n - 1).as_str()
    });
    let events: Vec<_> = sensor.events().into_iter().filter(ours).collect();
    assert_eq!(events.len(), n, "one event per exec");
    for e in &events {
        assert_eq!(e["container"]["container_id"], cg.id.as_str(), "{e}");
        let missing = e["missing"].as_array().cloned().unwrap_or_default();
        assert!(
            !missing.iter().any(|m| m == "origin"),
            "origin missing (its container's table was never read through a stand-in): {e}"
        );
    }
}

/// The race an attacker who read the sensor's code would run: exec an allowed program, then at
/// once exec a file of the same name from a writable directory, so that a read of
/// `/proc/<pid>/exe` after the first exec finds the second file under the name the kernel
/// recorded for the first. Every event must name the file the kernel executed at its own exec.
#[test]
fn a_same_named_file_exec_d_at_once_after_does_not_take_the_first_exec_s_path() {
    if !Backend::Ebpf.require() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // A real shell (not multi-call), and a copy of it by the same file name elsewhere: on a
    // tmpfs anyone can write, which fanotify does not watch (it marks the root's file system
    // and containers'), so that only the kernel's record of each exec can tell the two apart.
    let allowed = std::fs::canonicalize("/bin/sh").unwrap();
    let name = allowed.file_name().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let dir = shm.path().join("x");
    std::fs::create_dir(&dir).unwrap();
    let copy = dir.join(name);
    std::fs::copy(&allowed, &copy).unwrap();
    let sensor = JsonlSensor::start(work.path(), "race-node", &Backend::Ebpf.args(&[]));
    let n = 40;
    // Each runs the allowed shell, which replaces itself with the copy at once; the copy stays
    // a little, so that a late read of the first exec finds it alive under the same name.
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(&allowed)
                .args([
                    "-c",
                    &format!("exec {} -c 'sleep 0.3' pg-race-b-{i}", copy.display()),
                    &format!("pg-race-a-{i}"),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let marker = |e: &serde_json::Value| {
        (0..n).find_map(|i| {
            if argv_has(e, &format!("pg-race-a-{i}")) {
                Some((i, &allowed))
            } else if argv_has(e, &format!("pg-race-b-{i}")) {
                Some((i, &copy))
            } else {
                None
            }
        })
    };
    let all = wait_for(Duration::from_secs(20), || {
        let evs: Vec<_> = sensor
            .events()
            .into_iter()
            .filter(|e| marker(e).is_some())
            .collect();
        (evs.len() >= 2 * n).then_some(evs)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every exec was reported: {} of {}\n{}",
            sensor
                .events()
                .iter()
                .filter(|e| marker(e).is_some())
                .count(),
            2 * n,
            sensor.proc.log_text()
        )
    });
    let wrong: Vec<String> = all
        .iter()
        .filter_map(|e| {
            let (i, want) = marker(e)?;
            let missing = e["missing"].as_array().cloned().unwrap_or_default();
            (e["exe_path"] != want.display().to_string() || missing.iter().any(|m| m == "exe_path"))
                .then(|| {
                    format!(
                        "#{i}: want {}, got {} (missing {:?}): {e}",
                        want.display(),
                        e["exe_path"],
                        missing
                    )
                })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} events name another file than the kernel executed:\n{}",
        wrong.len(),
        all.len(),
        wrong.join("\n")
    );
}

/// A path deeper than the kernel side walks (64 names and mounts) is flagged as cut there and
/// never sent as if whole: the exe link read later names it, and the event says so.
#[test]
fn a_path_deeper_than_the_kernel_side_walks_is_read_late_and_says_so() {
    if !Backend::Ebpf.require() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut dir = work.path().to_path_buf();
    for _ in 0..70 {
        dir.push("d");
    }
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("deep");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let sensor = JsonlSensor::start(work.path(), "deep-node", &Backend::Ebpf.args(&[]));
    // Alive at the sensor's read, so that the link can name it.
    let mut child = Command::new(&exe).arg("1.5").spawn().unwrap();
    let e = sensor.wait_event(Duration::from_secs(10), "the deep exec", |e| {
        argv_has(e, "1.5") && e["argv"][0] == exe.display().to_string()
    });
    assert!(child.wait().unwrap().success());
    assert_eq!(e["exe_path"], exe.display().to_string(), "{e}");
    let missing = e["missing"].as_array().cloned().unwrap_or_default();
    assert!(missing.iter().any(|m| m == "late:exe_path"), "{e}");
}

#[test]
fn a_ring_buffer_too_small_for_a_storm_counts_every_record_it_loses() {
    if !Backend::Ebpf.require() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // One page, and each exec's record about 3.7 KiB (three arguments of 1,000 bytes): the
    // kernel side wakes the reader for each record (a quarter of the ring is waiting), so only
    // a storm can fill it, but any two records waiting at once do. (Four pages of short
    // records were drained in time by a release sensor woken at each quarter.)
    let sensor = JsonlSensor::start(
        work.path(),
        "overflow-node",
        &Backend::Ebpf.args(&["--ebpf-ring-bytes", "4096"]),
    );
    let padding = ["a", "b", "c"].map(|c| c.repeat(1_000)).join(" ");
    let n = 400;
    let seen = || {
        sensor
            .events()
            .iter()
            .filter(|e| {
                e["argv"][2]
                    .as_str()
                    .is_some_and(|a| a.starts_with("pg-storm-"))
            })
            .count() as f64
    };
    let lost = || sensor.metric("procguard_sensor_ebpf_ring_losses_total");
    // Whether a storm overflows the ring depends on how fast the shell forks on a loaded
    // machine: storms are repeated (at most 5) until one does. After each, every exec is
    // either reported or counted lost (a lost fork or exit counts too, so the sum may exceed
    // the execs, never fall short).
    let mut sent = 0;
    let mut ring_losses = 0.0;
    for round in 0..5 {
        let script = format!(
            "i=0; while [ $i -lt {n} ]; do {bb} true pg-storm-{round}-$i {padding} & i=$((i+1)); done; wait",
            bb = busybox()
        );
        assert!(Command::new("/bin/sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
        sent += n;
        let settled = wait_for(Duration::from_secs(15), || {
            let l = lost()?;
            (seen() + l >= sent as f64).then_some(l)
        });
        ring_losses = lost().unwrap_or(0.0);
        assert!(
            settled.is_some(),
            "{} of {sent} execs reported and {ring_losses} records counted lost: some vanished silently\n{}",
            seen(),
            sensor.proc.log_text()
        );
        if ring_losses > 0.0 {
            break;
        }
    }
    assert!(
        ring_losses > 0.0,
        "five storms of {n} never overflowed one page"
    );
    let n = sent;
    // The losses reach the health report's kernel losses, and say so in the log.
    let kernel = sensor
        .metric("procguard_sensor_kernel_losses_total")
        .unwrap_or(0.0);
    assert!(kernel >= ring_losses, "{kernel} < {ring_losses}");
    assert!(sensor
        .proc
        .log_text()
        .contains("eBPF ring buffer full: events lost"));
    eprintln!(
        "storm of {n}: {} reported, {ring_losses} records counted lost",
        seen()
    );
}

/// Starts the sensor with `capture` and without the capabilities that load BPF programs
/// (dropped from its bounding set by `capsh`; CAP_SYS_ADMIN too, which would grant them).
fn without_bpf(work: &Path, name: &str, capture: &str) -> (Proc, u16) {
    let port = free_port();
    let mut c = Command::new("capsh");
    c.arg("--drop=cap_bpf,cap_perfmon,cap_sys_admin")
        .arg("--")
        .arg("-c")
        .arg("exec \"$0\" \"$@\"")
        .arg(bin("procguard-sensor"))
        .args(["--node-name", name, "--jsonl"])
        .arg(work.join(format!("{name}.jsonl")))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--spool-dir")
        .arg(work.join(format!("{name}-spool")))
        .args(["--capture", capture]);
    (Proc::spawn(c, work.join(format!("{name}.log"))), port)
}

#[test]
fn without_the_privileges_auto_falls_back_to_netlink_and_ebpf_refuses() {
    if !require(is_root(), "needs root for the proc connector")
        || !require(
            Command::new("capsh").arg("--help").output().is_ok(),
            "needs capsh (apt-get install libcap2-bin) to drop CAP_BPF",
        )
        || !Backend::Ebpf.require()
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (auto, port) = without_bpf(work.path(), "auto", "auto");
    assert!(
        wait_for(Duration::from_secs(20), || auto
            .log_text()
            .contains("Initial /proc scan done")
            .then_some(()))
        .is_some(),
        "{}",
        auto.log_text()
    );
    assert_eq!(
        metric(
            port,
            "procguard_sensor_capture_backend{backend=\"netlink\"}"
        ),
        Some(1.0)
    );
    let log = auto.log_text();
    assert_eq!(
        log.matches("Capturing with the netlink proc connector")
            .count(),
        1,
        "one line says why: {log}"
    );
    assert!(log.contains("CAP_BPF"), "and what to grant: {log}");
    // It captures.
    assert!(Command::new("/bin/sh")
        .args(["-c", "sleep 0.3", "pg-fallback-marker"])
        .status()
        .unwrap()
        .success());
    let out = work.path().join("auto.jsonl");
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.contains("pg-fallback-marker"))
            .map(|_| ()))
        .is_some(),
        "the netlink backend reported nothing; log:\n{}",
        auto.log_text()
    );
    // Required: it refuses to start and says why.
    let (mut required, _) = without_bpf(work.path(), "required", "ebpf");
    let status = wait_for(Duration::from_secs(20), || {
        required.child.try_wait().ok().flatten()
    })
    .expect("a sensor that cannot load eBPF but requires it exits");
    assert!(!status.success());
    let log = required.log_text();
    assert!(log.contains("--capture ebpf"), "{log}");
    assert!(log.contains("CAP_BPF"), "{log}");
}
