//! A baseline element is what actually ran: re-routing through an allowed file does not pass.
//!
//! A real busybox container (every applet a copy of the one binary, as images that copy
//! rather than link it are built) with an enforced baseline learned from its own loop (`sh
//! -c` inline code and `/bin/sleep`), then the attacker's moves through those allowed files:
//! another applet through a symlink to the allowed `sleep`, another through `busybox APPLET`
//! under an allowed file, and a script run by the allowed shell. (The applets read a pipe
//! held open 300 ms, so that their argv is read: an applet gone before that is reported with
//! an `[unreadable]` applet, never as the allowed file; unit-tested in `sensor::multicall`.) Each must raise a deviation
//! naming exactly that element, while the workload's own loop raises nothing; and each exec
//! session into the enforced workload, even one that runs only an allowed binary, is one
//! "interactive session" incident. Allowing one applet's incident allows that applet with
//! the content it ran, and the file's other applets still deviate; the learned baseline
//! (applets, inline code, a relative script, contents) exports and imports back unchanged.
//! On the host, the
//! loader run directly and an interpreter's one-liner are named as what they run.

use procguard_tests::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn element_of(i: &Value) -> (String, String, String) {
    let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
    (s("exe_path"), s("applet"), s("script_path"))
}

#[test]
fn re_routing_through_allowed_files_raises_what_really_ran() {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    let sensor = Sensor::start(&pki, &server, "node-a", work.path(), &[]);
    let uid = pod_uid();
    // The loop: inline code, and a script named relative to the working directory.
    let c = Container::run_in_pod(
        &uid,
        &[
            "/bin/sh",
            "-c",
            "cd /tmp; echo '/bin/sleep 0.2' > loop.sh; \
             while true; do /bin/sleep 0.2; /bin/sh loop.sh; done",
        ],
    );
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let learned = wait_for(Duration::from_secs(15), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok()?;
        let els: Vec<(String, String, String)> =
            b["elements"].as_array()?.iter().map(element_of).collect();
        let has = |e: &str, s: &str| els.iter().any(|x| x.0 == e && x.1.is_empty() && x.2 == s);
        (has("/bin/sleep", "") && has("/bin/sh", "[inline]") && has("/bin/sh", "loop.sh"))
            .then_some(els)
    });
    assert!(
        learned.is_some(),
        "baseline not learned as (/bin/sleep), (/bin/sh [inline]) and (/bin/sh loop.sh); \
         sensor log:\n{}",
        sensor.proc.log_text()
    );
    approve_and_wait_for_push(&pki, &server, &sensor, &workload);

    // The moves, as a script copied in and run by the allowed shell (itself a move: a script
    // the workload never ran).
    let moves = work.path().join("moves.sh");
    std::fs::write(
        &moves,
        "ln -s /bin/sleep /tmp/cat\n\
         (sleep 0.3) | /tmp/cat >/dev/null\n\
         (sleep 0.3) | (exec -a busybox /bin/sleep head -n 1 >/dev/null)\n\
         echo 'sleep 0.3' > /tmp/x.sh\n\
         /bin/sh /tmp/x.sh\n\
         sleep 0.5\n",
    )
    .unwrap();
    let st = Command::new("docker")
        .args([
            "cp",
            moves.to_str().unwrap(),
            &format!("{}:/tmp/moves.sh", c.id),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "docker cp");
    let out = c.exec(&["/bin/sh", "/tmp/moves.sh"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let want = [
        ("/bin/sleep", "cat", ""),
        ("/bin/sleep", "head", ""),
        ("/bin/sh", "", "/tmp/x.sh"),
        ("/bin/sh", "", "/tmp/moves.sh"),
    ];
    let found = wait_for(Duration::from_secs(15), || {
        let list = incident_list(&pki, &server);
        let els: Vec<_> = list.iter().map(element_of).collect();
        want.iter()
            .all(|(e, a, s)| els.iter().any(|x| x.0 == *e && x.1 == *a && x.2 == *s))
            .then_some(list)
    });
    let list = found.unwrap_or_else(|| {
        panic!(
            "missing deviations; want {want:?}, have {:#?}\nsensor log:\n{}",
            incident_list(&pki, &server)
                .iter()
                .map(element_of)
                .collect::<Vec<_>>(),
            sensor.proc.log_text()
        )
    });
    // An exec session that runs only an allowed binary is still an incident of its own:
    // one per session (the moves' session is the other), medium, whatever it ran.
    let quiet = c.exec(&["/bin/sleep", "0.3"]);
    assert!(quiet.status.success());
    let sessions = wait_for(Duration::from_secs(15), || {
        let s: Vec<Value> = incident_list(&pki, &server)
            .into_iter()
            .filter(|i| i["kind"] == "exec-session")
            .collect();
        (s.len() >= 2).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "want two exec-session incidents, have {:#?}",
            incident_list(&pki, &server)
        )
    });
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    for i in &sessions {
        assert_eq!(i["severity"], "medium", "{i:#}");
        assert_eq!(i["workload"], workload.as_str(), "{i:#}");
    }
    assert!(
        sessions
            .iter()
            .any(|i| i["exe_path"] == "/bin/sleep" && i["count"] == 1),
        "the quiet session: {sessions:#?}"
    );
    assert!(
        sessions
            .iter()
            .any(|i| i["exe_path"] == "/bin/sh" && i["count"].as_u64() > Some(1)),
        "the moves' session groups all its processes: {sessions:#?}"
    );
    // The workload's own elements never alerted: neither the loop's sleep nor its shells.
    for i in &list {
        let (e, a, s) = element_of(i);
        assert!(
            !(a.is_empty()
                && ((e == "/bin/sleep" && s.is_empty())
                    || (e == "/bin/sh" && (s == "[inline]" || s == "loop.sh")))),
            "an allowed element raised an incident: {i:#}"
        );
    }

    // Allowing the `cat` applet's incident allows exactly that applet of that file, with the
    // content it ran: the file's other applets still deviate.
    let incident = |applet: &str| {
        incident_list(&pki, &server).into_iter().find(|i| {
            i["kind"] == "deviation"
                && element_of(i) == ("/bin/sleep".into(), applet.into(), "".into())
        })
    };
    let cat = incident("cat").unwrap();
    assert_eq!(cat["content"]["verdict"], "new-element", "{cat:#}");
    let cat_id = cat["id"].as_str().unwrap().to_string();
    let head_count = incident("head").unwrap()["count"].as_u64().unwrap();
    let allowed = ctl_json(
        &pki,
        &server,
        "approver",
        &["incidents", "allow", &cat_id, "--reason", "cat is ours"],
    )
    .unwrap();
    assert_eq!(allowed["state"], "allowed", "{allowed:#}");
    let ran = allowed["samples"][0]["process"]["exe_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).unwrap();
    let cat_el = b["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| element_of(e) == ("/bin/sleep".into(), "cat".into(), "".into()))
        .unwrap_or_else(|| panic!("{b:#}"))
        .clone();
    assert_eq!(cat_el["status"], "approved", "{cat_el}");
    assert_eq!(
        cat_el["approved_sha256"],
        serde_json::json!([ran]),
        "{cat_el}"
    );
    // (The server decides incidents on its own baseline, whatever the sensor holds yet.)
    let again = "(sleep 0.3) | /tmp/cat >/dev/null; \
                 (sleep 0.3) | (exec -a busybox /bin/sleep head -n 1 >/dev/null)";
    assert!(c.exec(&["/bin/sh", "-c", again]).status.success());
    let head = wait_for(Duration::from_secs(10), || {
        incident("head").filter(|i| i["count"].as_u64() > Some(head_count))
    });
    assert!(head.is_some(), "the head applet no longer deviates");
    let cats: Vec<Value> = incident_list(&pki, &server)
        .into_iter()
        .filter(|i| {
            element_of(i) == ("/bin/sleep".into(), "cat".into(), "".into()) && i["state"] == "open"
        })
        .collect();
    assert!(
        cats.is_empty(),
        "the allowed applet raised again: {cats:#?}"
    );

    // Export → import of this real learned baseline (applets, inline code, a relative script,
    // contents) changes nothing: the dry run reports no change of any kind.
    let export = ctl(&pki, &server, "viewer", &["baselines", "export"]);
    assert!(export.status.success(), "{export:?}");
    let yaml = String::from_utf8(export.stdout).unwrap();
    for want in ["applet: cat", "script: loop.sh", "script: '[inline]'", &ran] {
        assert!(yaml.contains(want), "{want} not in\n{yaml}");
    }
    let file = work.path().join("learned.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let dry = ctl_json(
        &pki,
        &server,
        "admin",
        &["baselines", "import", file.to_str().unwrap(), "--dry-run"],
    )
    .unwrap();
    let change = dry["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["workload"] == workload.as_str()))
        .unwrap_or_else(|| panic!("{dry:#}"));
    assert_eq!(change["action"], "unchanged", "{dry:#}");
    for list in ["added", "removed", "changed", "content_changed"] {
        assert_eq!(change[list], serde_json::json!([]), "{dry:#}");
    }
}

/// The sensor's JSON lines for one host exec, found by a marker in its argv.
fn host_event(marker: &str, run: &mut Command) -> Value {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events.jsonl");
    let mut cmd = Command::new(bin("procguard-sensor"));
    cmd.args(["--node-name", "ident", "--jsonl"])
        .arg(&out)
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--spool-dir")
        .arg(work.path().join("spool"));
    let sensor = Proc::spawn(cmd, work.path().join("sensor.log"));
    assert!(wait_for(Duration::from_secs(15), || sensor
        .log_text()
        .contains("Initial /proc scan done")
        .then_some(()))
    .is_some());
    assert!(run.status().unwrap().success());
    wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["argv"].to_string().contains(marker))
    })
    .unwrap_or_else(|| panic!("no event for {marker}; log:\n{}", sensor.log_text()))
}

#[test]
fn the_loader_run_directly_is_the_program_it_loads() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(loader) = loader else {
        assert!(
            !strict(),
            "no glibc dynamic loader at a known path on this machine"
        );
        eprintln!("SKIP: no glibc dynamic loader at a known path");
        return;
    };
    // `sleep` through the loader: the executable is the loader, the element names sleep.
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let ev = host_event("0.31", Command::new(loader).arg(&sleep).arg("0.31"));
    assert!(
        ev["exe_path"].as_str().unwrap().contains("ld-linux"),
        "{ev}"
    );
    assert_eq!(ev["script_path"], sleep.display().to_string(), "{ev}");
}

#[test]
fn a_shell_one_liner_is_inline_code_and_a_script_is_its_file() {
    if !require(is_root(), "needs root for the proc connector") {
        return;
    }
    let ev = host_event(
        "procguard-one-liner",
        Command::new("/bin/sh").args(["-c", "sleep 0.3; : procguard-one-liner"]),
    );
    assert_eq!(ev["script_path"], "[inline]", "{ev}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("procguard-script.sh");
    std::fs::write(&script, "sleep 0.3\n").unwrap();
    let ev = host_event(
        "procguard-script.sh",
        Command::new("/bin/sh").arg("-e").arg(&script),
    );
    assert_eq!(ev["script_path"], script.display().to_string(), "{ev}");
}
