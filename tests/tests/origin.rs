//! The origin of every exec, against an attacker with a shell in a real container: the real
//! sensor (classifying through the node's view of the container's overlay) and server, an
//! enforced baseline, and each way of running something that did not come from the image.
//!
//! - during training, a binary written into the writable layer is held for review, never
//!   learned (`drift-writable-layer`);
//! - a binary written into the writable layer at a path never learned: a deviation, origin
//!   `writable-layer`, high, named drift;
//! - `chmod` of an allowed image binary (overlayfs copies it up to the writable layer with the
//!   same content), then run it: origin `image`, no deviation;
//! - an allowed binary replaced in place with other content: `writable-layer` and "modified
//!   executable";
//! - a binary run from a host directory bind-mounted into the container: `volume`, high.
//!
//! The origin is asserted in the sensor's events, in `incidents get`, and in the SIEM stream
//! (JSON lines and CEF); the held element's origin in `baselines get` and in an export. The
//! whole is run twice: with fanotify (the kernel hands over the layer's own file as well as
//! the overlay's, whose identity must match the layer found) and without (the overlay's file,
//! opened through `/proc/<pid>/exe`, and the layers' paths alone).

use procguard_tests::*;
use serde_json::Value;
use std::time::Duration;

/// The container's events the sensor wrote from line `from` on.
fn events_of(jsonl: &std::path::Path, container: &str, from: usize) -> Vec<Value> {
    repo::jsonl_from(jsonl, from)
        .into_iter()
        .filter(|e| e["container"]["container_id"] == container)
        .collect()
}

per_backend!(every_exec_not_from_the_image_is_drift);
fn every_exec_not_from_the_image_is_drift(backend: Backend) {
    drift_scenario("auto", backend);
}

per_backend!(every_exec_not_from_the_image_is_drift_without_fanotify);
fn every_exec_not_from_the_image_is_drift_without_fanotify(backend: Backend) {
    drift_scenario("off", backend);
}

fn drift_scenario(fanotify: &str, backend: Backend) {
    if !require_root_and_docker() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    let jsonl = work.path().join("events.jsonl");
    let jsonl_arg = jsonl.display().to_string();
    let sensor = Sensor::start(
        &pki,
        &server,
        "node-a",
        work.path(),
        &backend.args(&["--jsonl", &jsonl_arg, "--fanotify", fanotify]),
    );
    // A host directory with a binary in it, bind-mounted read-only into the container.
    let host_dir = work.path().join("hostdir");
    std::fs::create_dir_all(&host_dir).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(busybox, host_dir.join("tool")).unwrap();
    let mount = format!("{}:/mnt:ro", host_dir.display());
    let uid = pod_uid();
    // The workload runs sleep and cat from its image, over and over (0.2 s each, so the
    // sensor reads every one whole).
    let c = Container::run_in_pod_with(
        &uid,
        &["-v", &mount],
        &[
            "/bin/sh",
            "-c",
            "while true; do /bin/sleep 0.2 | /bin/cat > /dev/null; done",
        ],
    );
    let workload = format!("default//pod/pod-{uid}/{}", c.short());
    let element = |b: &Value, exe: &str| -> Option<Value> {
        b["elements"]
            .as_array()?
            .iter()
            .find(|e| e["exe_path"] == exe)
            .cloned()
    };
    let get = || ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]);
    let sh = |script: &str| {
        let out = c.exec(&["/bin/sh", "-c", script]);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // (e) Training: the image's binaries are learned from the image; one written into the
    // writable layer is held for review, with its origin.
    sh("cp /bin/sleep /tmp/dropped; exec -a sleep /tmp/dropped 0.3");
    let learned = wait_for(Duration::from_secs(10), || {
        let b = get().ok()?;
        ["/bin/sleep", "/bin/cat", "/tmp/dropped"]
            .iter()
            .all(|exe| element(&b, exe).is_some())
            .then_some(b)
    })
    .unwrap_or_else(|| panic!("not learned; sensor log:\n{}", sensor.proc.log_text()));
    for exe in ["/bin/sleep", "/bin/cat"] {
        let e = element(&learned, exe).unwrap();
        assert_eq!(e["status"], "learned", "{e:#}");
        assert_eq!(e["origins"], serde_json::json!(["image"]), "{e:#}");
    }
    let dropped = element(&learned, "/tmp/dropped").unwrap();
    assert_eq!(dropped["status"], "needs-review", "{dropped:#}");
    assert!(
        dropped["review_reasons"]
            .as_array()
            .unwrap()
            .contains(&"drift-writable-layer".into()),
        "{dropped:#}"
    );
    assert_eq!(
        dropped["origins"],
        serde_json::json!(["writable-layer"]),
        "{dropped:#}"
    );
    let table = ctl(&pki, &server, "viewer", &["baselines", "get", &workload]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("/tmp/dropped") && l.contains("writable-layer")),
        "{table}"
    );
    let export = ctl(&pki, &server, "viewer", &["baselines", "export"]);
    let yaml = String::from_utf8_lossy(&export.stdout).to_string();
    assert!(
        yaml.contains("origins:") && yaml.contains("writable-layer"),
        "{yaml}"
    );
    approve_and_wait_for_push(&pki, &server, &sensor, &workload);
    let enforced = get().unwrap();
    assert_eq!(
        element(&enforced, "/tmp/dropped").unwrap()["status"],
        "needs-review",
        "approving the baseline does not sweep drift in"
    );

    // (b) chmod of an allowed image binary: overlayfs copies it up, same content. The
    // workload keeps running it: the image's, no deviation.
    sh("chmod 755 /bin/cat");
    let upper = c.upper_dir();
    assert!(
        upper.join("bin/cat").exists(),
        "the chmod copied /bin/cat up into {}",
        upper.display()
    );
    let after_chmod = repo::line_count(&jsonl);
    let cats = wait_for(Duration::from_secs(10), || {
        let cats: Vec<Value> = events_of(&jsonl, &c.id, after_chmod)
            .into_iter()
            .filter(|e| e["exe_path"] == "/bin/cat")
            .collect();
        (cats.len() >= 3).then_some(cats)
    })
    .expect("the workload's /bin/cat, after the chmod");
    for e in &cats {
        assert_eq!(e["origin"], "image", "{e}");
        assert_eq!(e["exe_writable_location"], false, "{e}");
    }

    // (a) A binary written into the writable layer at a path never learned.
    sh("cp /bin/sleep /usr/bin/fresh; exec -a sleep /usr/bin/fresh 0.3");
    // (d) A binary from a host directory mounted into the container.
    sh("exec -a sleep /mnt/tool 0.3");
    // (c) An allowed binary replaced with other content (a working busybox with bytes
    // appended, renamed over the original): the workload runs it next.
    sh("cp /bin/sleep /tmp/s; echo pwned >> /tmp/s; mv /tmp/s /bin/sleep");

    let want = ["/usr/bin/fresh", "/mnt/tool", "/bin/sleep"];
    let list = wait_for(Duration::from_secs(15), || {
        let list = incident_list(&pki, &server);
        want.iter()
            .all(|w| {
                list.iter()
                    .any(|i| i["exe_path"] == *w && i["kind"] == "deviation")
            })
            .then_some(list)
    })
    .unwrap_or_else(|| {
        panic!(
            "missing incidents; have {:#?}\nevents:\n{:#?}",
            incident_list(&pki, &server),
            events_of(&jsonl, &c.id, 0)
        )
    });
    let incident = |exe: &str| {
        // The deviation's incident: an exec session may also name the executable (the list
        // is newest first, so which comes first is not fixed).
        let id = list
            .iter()
            .find(|i| i["exe_path"] == exe && i["kind"] == "deviation")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        ctl_json(&pki, &server, "viewer", &["incidents", "get", &id]).unwrap()
    };
    let fresh = incident("/usr/bin/fresh");
    assert_eq!(fresh["origin"], "writable-layer", "{fresh:#}");
    assert_eq!(fresh["severity"], "high", "{fresh:#}");
    assert_eq!(
        fresh["severity_reason"], "drift: executable from the container's writable layer",
        "{fresh:#}"
    );
    assert_eq!(
        fresh["samples"][0]["process"]["origin"], "writable-layer",
        "{fresh:#}"
    );
    assert_eq!(fresh["samples"][0]["process"]["drift"], true, "{fresh:#}");
    let tool = incident("/mnt/tool");
    assert_eq!(tool["origin"], "volume", "{tool:#}");
    assert_eq!(tool["severity"], "high", "{tool:#}");
    assert!(
        tool["severity_reason"]
            .as_str()
            .unwrap()
            .starts_with("drift: executable from a volume"),
        "{tool:#}"
    );
    // The replaced /bin/sleep. Its first execution after the replacement may have been read
    // partly (gone before its hash or origin could be read), or a `sleep` started just before
    // the replacement runs the deleted file (fileless, critical): the incident groups them
    // all, its severity only rises, so what is asserted is an execution read whole among its
    // samples, and the incident's own fields when that execution was its first.
    let read_whole = |i: &Value| {
        i["samples"].as_array().is_some_and(|s| {
            s.iter().any(|x| {
                x["process"]["origin"] == "writable-layer"
                    && x["process"]["drift"] == true
                    && x["content"]["verdict"] == "modified"
            })
        })
    };
    let sleep = wait_for(Duration::from_secs(15), || {
        Some(incident("/bin/sleep")).filter(|i| read_whole(i))
    })
    .unwrap_or_else(|| incident("/bin/sleep"));
    assert!(read_whole(&sleep), "{sleep:#}");
    let first = &sleep["samples"][0];
    if first["process"]["completeness"] == "full" && first["process"]["exe_deleted"] == false {
        assert_eq!(sleep["origin"], "writable-layer", "{sleep:#}");
        assert_eq!(sleep["severity"], "high", "{sleep:#}");
        let reason = sleep["severity_reason"].as_str().unwrap();
        assert!(
            reason.starts_with("modified executable") && reason.contains("writable layer"),
            "{sleep:#}"
        );
    } else {
        assert!(
            sleep["severity"] == "high" || sleep["severity"] == "critical",
            "{sleep:#}"
        );
    }
    // The copied-up /bin/cat raised nothing, however often it ran.
    assert!(
        incident_list(&pki, &server)
            .iter()
            .all(|i| i["exe_path"] != "/bin/cat"),
        "{list:#?}"
    );
    // The sensor decided each of them too, from the same origin.
    assert!(
        sensor
            .metric("procguard_sensor_deviations_total")
            .is_some_and(|n| n >= 3.0),
        "the sensor counted fewer deviations"
    );

    // The SIEM stream: every deviation carries its origin. (The attacker's shell commands,
    // `cp`, `chmod`, `mv`, are deviations too: all stored so far are read, oldest first.)
    let stored: u64 = incident_list(&pki, &server)
        .iter()
        .filter(|i| i["kind"] == "deviation")
        .map(|i| i["count"].as_u64().unwrap_or(0))
        .sum();
    let count = stored.to_string();
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
                &count,
                "--format",
                format,
            ],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let origins: Vec<(String, String)> = watch("jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let p = &v["deviation"]["process"];
            (
                p["exe_path"].as_str().unwrap_or("").to_string(),
                p["origin"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (exe, origin) in [
        ("/usr/bin/fresh", "writable-layer"),
        ("/mnt/tool", "volume"),
        ("/bin/sleep", "writable-layer"),
    ] {
        assert!(
            origins.contains(&(exe.to_string(), origin.to_string())),
            "{exe} {origin} not in {origins:?}"
        );
    }
    let cef = watch("cef");
    assert!(
        cef.lines()
            .any(|l| l.contains("filePath=/mnt/tool") && l.contains("procguardOrigin=volume")),
        "{cef}"
    );
}
