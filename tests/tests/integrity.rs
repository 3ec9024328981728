//! Detection integrity against names an attacker chooses: a real container with an enforced
//! baseline, the real sensor and server, and files named to slip past the sensor. A binary
//! named `runc:[x` (once dropped because its command name looked like the runtime's init), a
//! file named `sleep (deleted)` beside an allowed `/bin/sleep` (once read as `/bin/sleep`), and
//! a binary really deleted before it runs (still recognised as deleted, from the kernel's
//! facts) must each raise a deviation. So must an allowed binary replaced in place (same path,
//! new content): a "modified executable".

use procguard_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A development PKI, a server, and a sensor for `node-a` capturing with `backend` that also
/// writes its events as JSON lines (returned: the file).
fn stack(work: &std::path::Path, backend: Backend) -> (Pki, Server, Sensor, std::path::PathBuf) {
    let pki = Pki::create(&work.join("pki"), &["node-a"]);
    let server = Server::start(&pki, work, &[]);
    let jsonl = work.join("events.jsonl");
    let jsonl_arg = jsonl.display().to_string();
    let sensor = Sensor::start(
        &pki,
        &server,
        "node-a",
        work,
        &backend.args(&["--jsonl", &jsonl_arg]),
    );
    (pki, server, sensor, jsonl)
}

per_backend!(names_chosen_by_an_attacker_never_hide_an_executable);
fn names_chosen_by_an_attacker_never_hide_an_executable(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (pki, server, sensor, jsonl) = stack(work.path(), backend);
    let uid = pod_uid();
    // The workload: a shell that runs sleep, over and over.
    let c = Container::run_in_pod(
        &uid,
        &["/bin/sh", "-c", "while true; do /bin/sleep 0.2; done"],
    );
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let learned = wait_for(Duration::from_secs(10), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok()?;
        let paths: Vec<String> = b["elements"]
            .as_array()?
            .iter()
            .filter_map(|e| e["exe_path"].as_str().map(String::from))
            .collect();
        (paths.iter().any(|p| p == "/bin/sleep") && paths.iter().any(|p| p == "/bin/sh"))
            .then_some(paths)
    });
    assert!(
        learned.is_some(),
        "baseline not learned; sensor log:\n{}",
        sensor.proc.log_text()
    );
    approve_and_wait_for_push(&pki, &server, &sensor, &workload);

    // The attacker's moves, from a shell of the container's own (allowed) `/bin/sh`.
    let moves = "cp /bin/sleep '/bin/runc:[x'; exec -a sleep '/bin/runc:[x' 1";
    assert!(c.exec(&["/bin/sh", "-c", moves]).status.success());
    let named = "cp /bin/sleep '/bin/sleep (deleted)'; exec -a sleep '/bin/sleep (deleted)' 1";
    assert!(c.exec(&["/bin/sh", "-c", named]).status.success());
    // Really deleted: opened, unlinked, then executed through its descriptor (a symlink to it
    // keeps argv[0] `sleep`, so busybox runs its sleep applet).
    let gone = "cp /bin/sleep /bin/gone; exec 3</bin/gone; rm /bin/gone; \
                cp -s /proc/self/fd/3 /tmp/sleep; exec /tmp/sleep 1";
    assert!(c.exec(&["/bin/sh", "-c", gone]).status.success());

    let want = ["/bin/runc:[x", "/bin/sleep (deleted)", "/bin/gone"];
    let found = wait_for(Duration::from_secs(10), || {
        let list = incident_list(&pki, &server);
        want.iter()
            .all(|w| {
                list.iter()
                    .any(|i| i["exe_path"] == *w && i["kind"] == "deviation")
            })
            .then_some(list)
    });
    let events = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let list = found.unwrap_or_else(|| {
        panic!(
            "missing incidents; have {:#?}\nevents:\n{events}\nsensor log:\n{}",
            incident_list(&pki, &server),
            sensor.proc.log_text()
        )
    });
    // Deviation incidents: each `docker exec` is also an exec session into the enforced
    // workload, an incident of its own whose subject is the session's first process seen
    // (here that can be the program the shell exec'd into, say `/bin/gone`).
    let by_exe = |exe: &str| {
        list.iter()
            .find(|i| i["exe_path"] == exe && i["kind"] == "deviation")
            .unwrap_or_else(|| panic!("no deviation incident for {exe}: {list:#?}"))
            .clone()
    };
    // Nothing was read as the allowed `/bin/sleep`: the only sleep incident is the named file.
    assert!(
        list.iter().all(|i| i["exe_path"] != "/bin/sleep"),
        "{list:#?}"
    );
    // The really deleted binary is flagged deleted (critical); the named one is not deleted.
    let gone = by_exe("/bin/gone");
    assert_eq!(gone["severity"], "critical", "{gone:#}");
    assert!(
        gone["severity_reason"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{gone:#}"
    );
    let named = by_exe("/bin/sleep (deleted)");
    assert_ne!(named["severity"], "critical", "{named:#}");
    // The event as the sensor wrote it: the name kept, and the command name the attacker chose.
    let evs: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Events of this container only: the test runs once per backend, perhaps beside the
    // other run, whose sensor sees this container's execs too (and this one, the other's).
    // One of ours attributed elsewhere is not found.
    let ev = |exe: &str| {
        evs.iter()
            .find(|e| e["exe_path"] == exe && e["container"]["container_id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("no event for {exe}"))
            .clone()
    };
    let runc = ev("/bin/runc:[x");
    assert_eq!(runc["comm"], "runc:[x", "{runc}");
    assert_eq!(runc["container"]["container_id"], c.id.as_str(), "{runc}");
    assert_eq!(ev("/bin/sleep (deleted)")["exe_deleted"], false);
    let g = ev("/bin/gone");
    assert_eq!(
        (g["exe_deleted"].clone(), g["exe_memfd"].clone()),
        (true.into(), false.into()),
        "{g}"
    );
    // Last, the allowed file itself, deleted from the image (overlayfs hides it behind a
    // whiteout and still reports one link) and run through its descriptor: deleted, at the
    // allowed path, and never allowed for it (a name beside it, `sleep (deleted)`, exists).
    let unlinked = "exec 3</bin/sleep; rm /bin/sleep; exec -a sleep /proc/self/fd/3 1";
    assert!(c.exec(&["/bin/sh", "-c", unlinked]).status.success());
    let sleep = wait_for(Duration::from_secs(10), || {
        incident_list(&pki, &server)
            .into_iter()
            .find(|i| i["exe_path"] == "/bin/sleep" && i["kind"] == "deviation")
    })
    .unwrap_or_else(|| {
        panic!(
            "no incident for the deleted /bin/sleep; events:\n{}",
            std::fs::read_to_string(&jsonl).unwrap_or_default()
        )
    });
    assert_eq!(sleep["severity"], "critical", "{sleep:#}");
    let events = std::fs::read_to_string(&jsonl).unwrap_or_default();
    assert!(
        events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["exe_path"] == "/bin/sleep" && e["exe_deleted"] == true),
        "{events}"
    );
    // The runtime's own init (runc re-executing itself, or its clone) is never the container's.
    let runtime_in_container = evs.iter().any(|e| {
        let exe = e["exe_path"].as_str().unwrap_or("");
        let runtime = exe.ends_with("/runc") || exe.starts_with("/memfd:");
        e["container"]["container_id"] == c.id.as_str() && runtime
    });
    assert!(!runtime_in_container, "{events}");
    // The container's entrypoint is the container's first process, not the runtime's init.
    assert!(
        evs.iter()
            .any(|e| e["container"]["container_id"] == c.id.as_str()
                && e["context"] == "entrypoint"
                && e["exe_path"] == "/bin/sh"),
        "{events}"
    );
}

per_backend!(a_binary_replaced_at_an_allowed_path_is_a_modified_executable);
/// Content identity: an allowed binary replaced in place (same path, new content) is a
/// "modified executable" deviation, high, while the binaries left alone raise nothing. The
/// real sensor and server, a real container; the replacement is made from inside the
/// container, as an attacker with a shell there would: `/bin/cat` (busybox) with bytes
/// appended (still a working busybox, so it keeps running as `cat`), put back at `/bin/cat`
/// after the old file is unlinked. Every process of the workload lives 0.2 s (the pipe from
/// `sleep` holds `cat`), so the sensor reads each one's argv and the elements stay the ones
/// learned. The workload pauses its `cat` while `/tmp/pause` exists, so no `cat` is running
/// when its file is unlinked (one would be a deleted executable, another incident).
///
/// The content verdict is `modified` in `incidents list`/`get` (`-o json` and the table) and
/// in each SIEM format; allowing the incident approves exactly the contents its samples ran
/// with (the audit record names them), and a second, different replacement is `modified`
/// again.
fn a_binary_replaced_at_an_allowed_path_is_a_modified_executable(backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (pki, server, sensor, jsonl) = stack(work.path(), backend);
    let uid = pod_uid();
    let c = Container::run_in_pod(
        &uid,
        &[
            "/bin/sh",
            "-c",
            "while true; do if [ -e /tmp/pause ]; then /bin/sleep 0.1; \
             else /bin/sleep 0.2 | /bin/cat > /dev/null; fi; done",
        ],
    );
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let pinned = |b: &Value, exe: &str| -> Option<Vec<String>> {
        let e = b["elements"]
            .as_array()?
            .iter()
            .find(|e| e["exe_path"] == exe && e["applet"] == "" && e["script_path"] == "")?;
        let hashes: Vec<String> = e["approved_sha256"]
            .as_array()?
            .iter()
            .filter_map(|h| h.as_str().map(String::from))
            .collect();
        (!hashes.is_empty()).then_some(hashes)
    };
    // Learned, each element pinned to the content it ran with.
    let learned = wait_for(Duration::from_secs(10), || {
        let b = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok()?;
        ["/bin/sleep", "/bin/cat"]
            .iter()
            .all(|exe| pinned(&b, exe).is_some())
            .then_some(b)
    })
    .unwrap_or_else(|| {
        panic!(
            "baseline not learned with contents; sensor log:\n{}",
            sensor.proc.log_text()
        )
    });
    let busybox_sha = pinned(&learned, "/bin/cat").unwrap();
    assert_eq!(busybox_sha.len(), 1, "{learned:#}");
    assert_eq!(busybox_sha[0].len(), 64);
    approve_and_wait_for_push(&pki, &server, &sensor, &workload);
    // The table shows each element's approved content, short.
    let table = ctl(&pki, &server, "viewer", &["baselines", "get", &workload]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("SHA256"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("/bin/cat") && l.contains(&busybox_sha[0][..12])),
        "{table}"
    );
    // The unmodified binaries, run over and over, raise nothing.
    std::thread::sleep(Duration::from_secs(2));
    // (A sensor finding, such as a partial event at start-up, is not about content.)
    let deviations = || -> Vec<Value> {
        incident_list(&pki, &server)
            .into_iter()
            .filter(|i| i["kind"] == "deviation")
            .collect()
    };
    let before = deviations();
    assert!(before.is_empty(), "{before:#?}");
    let deviations_before = sensor
        .metric("procguard_sensor_deviations_total")
        .unwrap_or(0.0);
    assert_eq!(deviations_before, 0.0);

    // The attacker's move: same path, new content.
    let replace = "echo > /tmp/pause; /bin/sleep 0.5; cp /bin/cat /tmp/t; echo pwned >> /tmp/t; \
                   rm /bin/cat; cp /tmp/t /bin/cat; rm /tmp/pause";
    let out = c.exec(&["/bin/sh", "-c", replace]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let modified = wait_for(Duration::from_secs(10), || {
        incident_list(&pki, &server)
            .into_iter()
            .find(|i| i["exe_path"] == "/bin/cat" && i["applet"] == "" && i["kind"] == "deviation")
    })
    .unwrap_or_else(|| {
        panic!(
            "no incident for the replaced /bin/cat; have {:#?}\nevents:\n{}",
            incident_list(&pki, &server),
            std::fs::read_to_string(&jsonl).unwrap_or_default()
        )
    });
    assert_eq!(modified["severity"], "high", "{modified:#}");
    let reason = modified["severity_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("modified executable"), "{modified:#}");
    // The sensor decided it too, from the content it hashed.
    let events = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let replaced: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["exe_path"] == "/bin/cat"
                && e["exe_sha256"]
                    .as_str()
                    .is_some_and(|h| h != busybox_sha[0])
        })
        .collect();
    assert!(!replaced.is_empty(), "{events}");
    let sha = replaced[0]["exe_sha256"].as_str().unwrap();
    assert!(reason.contains(&sha[..12]), "{reason} / {sha}");
    assert!(
        wait_for(Duration::from_secs(5), || sensor
            .metric("procguard_sensor_deviations_total")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "the sensor counted no deviation"
    );
    // The binary left alone still raises nothing, however often it ran meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let list = deviations();
    assert!(
        list.iter().all(|i| i["exe_path"] != "/bin/sleep"),
        "{list:#?}"
    );

    // The content verdict, a field of its own in every output: `modified`, with the content
    // that ran and the one approved.
    let id = modified["id"].as_str().unwrap().to_string();
    let verdict = |c: &Value| {
        (
            c["verdict"].as_str().unwrap_or_default().to_string(),
            c["sha256"].as_str().unwrap_or_default().to_string(),
            c["approved_sha256"].clone(),
        )
    };
    let want = ("modified".to_string(), sha.to_string(), json!(busybox_sha));
    assert_eq!(verdict(&modified["content"]), want, "{modified:#}");
    let full = ctl_json(&pki, &server, "viewer", &["incidents", "get", &id]).unwrap();
    assert_eq!(verdict(&full["content"]), want, "{full:#}");
    for s in full["samples"].as_array().unwrap() {
        // Each sample its own verdict, on its own content.
        let ran = s["process"]["exe_sha256"].as_str().unwrap_or_default();
        assert_eq!(s["content"]["verdict"], "modified", "{s:#}");
        assert_eq!(s["content"]["sha256"], ran, "{s:#}");
    }
    let table = ctl(&pki, &server, "viewer", &["incidents", "get", &id]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains(&format!("Content:   modified (ran sha256 {}", &sha[..12])),
        "{table}"
    );
    // Each SIEM format, on the stream's deviation record of the replaced binary.
    let record = |format: &str, is: &dyn Fn(&str) -> bool| {
        let args = ["--oldest", "--kind", "deviation", "--format", format];
        watch_until(&pki, &server, &args, Duration::from_secs(10), is)
            .unwrap_or_else(|| panic!("no {format} deviation record of /bin/cat {sha}"))
    };
    let line = record("jsonl", &|l| l.contains("\"/bin/cat\"") && l.contains(sha));
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(verdict(&line["deviation"]["content"]), want, "{line:#}");
    let line = record("ocsf", &|l| l.contains("\"/bin/cat\"") && l.contains(sha));
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(verdict(&line["unmapped"]["content"]), want, "{line:#}");
    let line = record("cef", &|l| {
        l.contains("filePath=/bin/cat ") && l.contains(sha)
    });
    for field in [
        "procguardContentVerdict=modified".to_string(),
        format!("procguardApprovedSha256={}", busybox_sha[0]),
        format!("fileHash={sha}"),
    ] {
        assert!(line.contains(&field), "{field} not in {line}");
    }

    // Allowing the incident approves exactly the contents it ran with (the samples'), and
    // records them in the audit log.
    let sample_shas: Vec<String> = full["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["process"]["exe_sha256"].as_str().map(String::from))
        .fold(Vec::new(), |mut v, h| {
            if !v.contains(&h) {
                v.push(h);
            }
            v
        });
    let allowed = ctl_json(
        &pki,
        &server,
        "approver",
        &["incidents", "allow", &id, "--reason", "rebuilt cat"],
    )
    .unwrap();
    assert_eq!(allowed["state"], "allowed", "{allowed:#}");
    let after = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).unwrap();
    let mut want_pinned = busybox_sha.clone();
    want_pinned.extend(sample_shas.iter().cloned());
    assert_eq!(pinned(&after, "/bin/cat"), Some(want_pinned), "{after:#}");
    assert_eq!(pinned(&after, "/bin/sleep"), pinned(&learned, "/bin/sleep"));
    let audit = ctl_json(
        &pki,
        &server,
        "admin",
        &["audit", "list", "--limit", "1000"],
    )
    .unwrap();
    let allow = audit
        .as_array()
        .unwrap()
        .iter()
        // Newest first: the latest such record.
        .find(|r| r["action"] == "AllowIncident" && r["result"] == "ok")
        .unwrap_or_else(|| panic!("{audit:#}"))
        .clone();
    let detail = allow["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("allowed /bin/cat") && detail.contains(sha),
        "{allow:#}"
    );
    // The allowed content runs on (the loop) and raises nothing; a second, different
    // replacement is modified again: allowing approved that content, not any content.
    std::thread::sleep(Duration::from_secs(1));
    let cat_incidents = || -> Vec<Value> {
        deviations()
            .into_iter()
            .filter(|i| i["exe_path"] == "/bin/cat" && i["applet"] == "")
            .collect()
    };
    assert_eq!(cat_incidents().len(), 1, "{:#?}", cat_incidents());
    let again = "echo > /tmp/pause; /bin/sleep 0.5; cp /bin/cat /tmp/t2; echo again >> /tmp/t2; \
                 rm /bin/cat; cp /tmp/t2 /bin/cat; rm /tmp/pause";
    let out = c.exec(&["/bin/sh", "-c", again]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = wait_for(Duration::from_secs(10), || {
        cat_incidents().into_iter().find(|i| i["state"] == "open")
    })
    .unwrap_or_else(|| {
        panic!(
            "the second replacement raised nothing: {:#?}",
            cat_incidents()
        )
    });
    let (v, ran, approved) = verdict(&second["content"]);
    assert_eq!(v, "modified", "{second:#}");
    assert!(!sample_shas.contains(&ran) && ran.len() == 64, "{second:#}");
    assert!(
        approved.as_array().unwrap().iter().any(|h| h == sha),
        "{second:#}"
    );

    // Export carries the approved contents, and an import on a fresh server restores them.
    let learned = ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).unwrap();
    let export = ctl(&pki, &server, "viewer", &["baselines", "export"]);
    assert!(export.status.success(), "{export:?}");
    let yaml = String::from_utf8(export.stdout).unwrap();
    assert!(yaml.contains(&busybox_sha[0]), "{yaml}");
    let file = work.path().join("baselines.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let fresh = work.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let second = Server::start(&pki, &fresh, &[]);
    let file = file.to_str().unwrap();
    ctl_json(&pki, &second, "admin", &["baselines", "import", file]).unwrap();
    let imported = ctl_json(&pki, &second, "viewer", &["baselines", "get", &workload]).unwrap();
    for exe in ["/bin/sleep", "/bin/cat"] {
        assert_eq!(pinned(&imported, exe), pinned(&learned, exe), "{exe}");
    }
    let again = ctl_json(
        &pki,
        &second,
        "admin",
        &["baselines", "import", file, "--dry-run"],
    )
    .unwrap();
    let action = |v: &Value| {
        v["changes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["workload"] == workload.as_str()))
            .map(|c| c["action"].clone())
    };
    assert_eq!(action(&again), Some("unchanged".into()), "{again}");
    let change = again["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["workload"] == workload.as_str()))
        .unwrap();
    for list in ["added", "removed", "changed", "content_changed"] {
        assert_eq!(change[list], json!([]), "{again}");
    }
    let unpinned = work.path().join("unpinned.yaml");
    // The same document without any `sha256:` list (as exported before content identity).
    let is_hash_item = |l: &str| {
        l.trim_start()
            .strip_prefix("- ")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    let without: String = yaml
        .lines()
        .filter(|l| l.trim() != "sha256:" && !is_hash_item(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!without.contains(&busybox_sha[0]), "{without}");
    std::fs::write(&unpinned, without).unwrap();
    let dropped = ctl_json(
        &pki,
        &second,
        "admin",
        &[
            "baselines",
            "import",
            unpinned.to_str().unwrap(),
            "--dry-run",
        ],
    )
    .unwrap();
    assert_eq!(action(&dropped), Some("update".into()), "{dropped}");
}

/// A partial event reaches every output as partial: the real server, a sensor stream sending
/// an exec session whose argv and container were not seen, and `procguardctl` in every format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_event_is_partial_in_every_output() {
    use procguard_proto::v1 as pb;
    use procguard_tests::grpc;
    let grpc::EnforcedStack {
        work: _work,
        pki,
        server,
        mut sensor,
        workload: w,
    } = grpc::EnforcedStack::start().await;
    let mut evs = sensor.events(&w, &["/usr/bin/id"]);
    let p = evs[0].process.as_mut().unwrap();
    p.context = pb::ExecContext::ExecSession as i32;
    p.completeness = pb::Completeness::Partial as i32;
    p.missing = vec!["argv".into(), "container".into()];
    sensor.send_acked(evs).await.unwrap();

    let watch = |format: &str| {
        let out = ctl(
            &pki,
            &server,
            "siem",
            &[
                "watch",
                "--oldest",
                "--kind",
                "deviation",
                "--count",
                "1",
                "--format",
                format,
            ],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let line: Value = serde_json::from_str(watch("jsonl").trim()).unwrap();
    let p = &line["deviation"]["process"];
    assert_eq!(
        (&p["context"], &p["completeness"], &p["missing"]),
        (
            &Value::from("exec-session"),
            &Value::from("partial"),
            &serde_json::json!(["argv", "container"])
        ),
        "{line}"
    );
    let ocsf: Value = serde_json::from_str(watch("ocsf").trim()).unwrap();
    assert_eq!(ocsf["unmapped"]["context"], "exec-session", "{ocsf}");
    assert_eq!(ocsf["unmapped"]["completeness"], "partial", "{ocsf}");
    assert_eq!(ocsf["unmapped"]["missing"][1], "container", "{ocsf}");
    let cef = watch("cef");
    for want in [
        "cs6=exec-session",
        "flexString1=partial",
        "flexString2=argv,container",
    ] {
        assert!(cef.contains(want), "{want} not in {cef}");
    }
    // The incident's samples, through `incidents get -o json`.
    let list = ctl_json(&pki, &server, "viewer", &["incidents", "list"]).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let full = ctl_json(&pki, &server, "viewer", &["incidents", "get", &id]).unwrap();
    let s = &full["samples"][0]["process"];
    assert_eq!(s["context"], "exec-session", "{full}");
    assert_eq!(s["completeness"], "partial", "{full}");
    assert_eq!(
        s["missing"],
        serde_json::json!(["argv", "container"]),
        "{full}"
    );
}
