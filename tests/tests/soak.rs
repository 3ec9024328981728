//! The benign soak: a Deployment that does nothing wrong, watched for `PROCGUARD_SOAK_SECS`
//! seconds (600 by default; at least 60) after its baseline was learned and enforced, must
//! raise no deviation, no exec-session incident and no sensor-blind incident, and keep its
//! baseline enforced and unchanged.
//!
//! Everything is real but the API server and the kubelet: the sensor, the server and
//! `procguardctl` binaries, real Docker containers in kubelet-shaped cgroups, and a fake
//! Kubernetes API speaking the real list/watch protocol to the sensor's `kube` client, fed by
//! a kubelet stand-in ([`procguard_tests::kubelet`]). The workload is a `FROM scratch`
//! busybox image whose own loop runs several applets (some by bare name, which busybox's
//! shell runs as applets of its own file; `/bin/date` by path) and a script shipped in the
//! image, every two seconds; two replicas; exec liveness and readiness probes from the pod
//! spec, run by `docker exec` as the kubelet runs them.
//!
//! Learning follows a policy rule for the namespace (auto-enforce, short windows, two pods).
//! During the soak: the container of one replica dies and is restarted in its pod (new
//! container ID), the Deployment scales out to three replicas, then rolls out to an image
//! with the very same binaries and another digest (another file and label): a new
//! ReplicaSet, whose pods replace the old ones one at a time. The re-learning window the new
//! digest opens is short (20 s), so the rest of the soak runs the new pods against the
//! enforced baseline.
//!
//! The test prints what it measured (with `--nocapture`): the workload's execs during the
//! soak, how many were partial and why, and how many had an applet or script that could not
//! be read (its process gone before `/proc` was read) — the events issue 12's item 7 is
//! about. On failure it prints the incidents with their samples and the tail of the sensor's
//! log.

use procguard_tests::fake_kube::FakeKube;
use procguard_tests::images::{Image, Spec};
use procguard_tests::kubelet::{Deployment, ExecProbe, Kubelet};
use procguard_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The soak's length: `PROCGUARD_SOAK_SECS`, 600 s by default.
fn soak_length() -> Duration {
    let secs = match std::env::var("PROCGUARD_SOAK_SECS") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
            panic!("PROCGUARD_SOAK_SECS must be a whole number of seconds (e.g. 600); got '{v}'")
        }),
        Err(_) => 600,
    };
    assert!(
        secs >= 60,
        "PROCGUARD_SOAK_SECS must be at least 60 (a restart, a scale-out and a rollout take place during it); got {secs}"
    );
    Duration::from_secs(secs)
}

/// The workload's loop: several applets and a script every two seconds. SIGTERM (its pod
/// deleted) ends it; it never writes into `/bin` or runs anything it wrote.
const LOOP: &str = r#"# The service's own loop.
trap 'exit 0' TERM
echo ok > /tmp/healthy
: > /tmp/ready
i=0
while :; do
    i=$((i + 1))
    /bin/date +%s > /tmp/now
    cat /tmp/now | tr 0-9 a-j | wc -c > /dev/null
    grep -c name /app/config.txt > /dev/null
    head -n 2 /app/config.txt > /dev/null
    sh /app/tick.sh "$i"
    sleep 2
done
"#;

/// One tick of bookkeeping, a script shipped in the image.
const TICK: &str = r#"# Logs the tick and keeps the log short.
echo "tick $1 $(date +%T)" >> /tmp/ticks
tail -n 20 /tmp/ticks > /tmp/ticks.new
cat /tmp/ticks.new > /tmp/ticks
grep -q tick /tmp/ticks
"#;

const APPLETS: &[&str] = &[
    "sh", "cat", "date", "grep", "head", "tail", "tr", "wc", "sleep",
];

/// The workload's image, release `release`: the same binaries and scripts in every release,
/// another release file and label (so another digest).
fn image(tag: &str, release: &str) -> Image {
    let release_file = format!("release={release}\n");
    Image::build(&Spec {
        tag,
        applets: &[("bin", APPLETS)],
        files: &[
            ("/app/loop.sh", LOOP),
            ("/app/tick.sh", TICK),
            ("/app/config.txt", "name=web\nport=8080\n"),
            ("/app/release", &release_file),
        ],
        labels: &[("org.opencontainers.image.version", release)],
        cmd: &["/bin/sh", "/app/loop.sh"],
    })
}

/// The learning policy for the soak's namespace: learning ends by stability (30 s at least,
/// 15 s without a new element, both replicas seen; 3 min at most) and is enforced at once.
const POLICY: &str = "rules:
  - namespace: soak
    mode: auto-enforce
    min_window: 30s
    quiet_period: 15s
    max_window: 3m
    min_pods: 2
";
/// How long the new image's digest reopens learning for new elements.
const RELEARN_WINDOW: &str = "20s";

/// An element as `baselines get -o json` shows it: executable, applet, script, status.
type ElementRow = (String, String, String, String);

fn elements(b: &Value) -> BTreeSet<ElementRow> {
    b["elements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("exe_path"), s("applet"), s("script_path"), s("status"))
        })
        .collect()
}

fn show_elements(rows: &BTreeSet<ElementRow>) -> String {
    rows.iter()
        .map(|(exe, applet, script, status)| {
            let applet = if applet.is_empty() {
                String::new()
            } else {
                format!(" ({applet})")
            };
            format!("  {exe}{applet} {script} [{status}]\n")
        })
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Copies `files` into `PROCGUARD_SOAK_ARTIFACTS` (a directory), when set: the sensor's JSON
/// lines and both logs, for a look after the test's own directory is gone.
fn keep_artifacts(files: &[&std::path::Path]) {
    let Ok(dir) = std::env::var("PROCGUARD_SOAK_ARTIFACTS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!(
            "PROCGUARD_SOAK_ARTIFACTS: cannot create {}: {e}",
            dir.display()
        );
        return;
    }
    for f in files {
        if let Some(name) = f.file_name() {
            if let Err(e) = std::fs::copy(f, dir.join(name)) {
                eprintln!("PROCGUARD_SOAK_ARTIFACTS: cannot copy {}: {e}", f.display());
            }
        }
    }
}

/// What the workload's execs during the soak looked like, from the sensor's JSON lines.
#[derive(Debug, Default)]
struct Measure {
    execs: u64,
    by_context: BTreeMap<String, u64>,
    partial: u64,
    /// Partial events by their sorted `missing` list.
    by_missing: BTreeMap<String, u64>,
    /// `[unreadable]` in the applet or script slot.
    unreadable_slot: u64,
    /// `missing` names `applet`, `script` or `argv`.
    unreadable_missing: u64,
    /// Unreadable events by element (`exe (applet) script`) and context.
    unreadable_by_element: BTreeMap<String, u64>,
    /// Events sent again under the workload once their pod was known.
    attributed_late: u64,
    /// Full events with an empty argv (a process gone before its command line was read,
    /// taken for one run without arguments).
    empty_argv_full: u64,
}

impl Measure {
    fn add(&mut self, e: &Value) {
        self.execs += 1;
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        *self.by_context.entry(s("context")).or_default() += 1;
        let missing: Vec<String> = e["missing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(String::from))
            .collect();
        if e["completeness"] == "partial" {
            self.partial += 1;
            let mut m = missing.clone();
            m.sort();
            *self.by_missing.entry(m.join(",")).or_default() += 1;
        }
        let slot = s("applet") == "[unreadable]" || s("script_path") == "[unreadable]";
        let gone = missing
            .iter()
            .any(|m| m == "applet" || m == "script" || m == "argv");
        self.unreadable_slot += u64::from(slot);
        self.unreadable_missing += u64::from(gone);
        if slot || gone {
            let applet = if s("applet").is_empty() {
                String::new()
            } else {
                format!(" ({})", s("applet"))
            };
            let key = format!(
                "{}{applet} {} [{}]",
                s("exe_path"),
                s("script_path"),
                s("context")
            );
            *self.unreadable_by_element.entry(key).or_default() += 1;
        }
        self.attributed_late += u64::from(!e["attributed_late_ms"].is_null());
        let empty = e["argv"].as_array().is_some_and(|a| a.is_empty());
        self.empty_argv_full += u64::from(empty && e["completeness"] == "full");
    }

    fn report(&self) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.execs.max(1) as f64;
        let mut r = String::new();
        let _ = writeln!(r, "workload execs during the soak: {}", self.execs);
        let _ = writeln!(r, "  by context: {:?}", self.by_context);
        let _ = writeln!(r, "  partial: {} ({:.2}%)", self.partial, pct(self.partial));
        for (m, n) in &self.by_missing {
            let _ = writeln!(r, "    missing [{m}]: {n}");
        }
        let _ = writeln!(
            r,
            "  applet/script unreadable: {} in the slot ({:.2}%), {} with applet/script/argv missing ({:.2}%)",
            self.unreadable_slot,
            pct(self.unreadable_slot),
            self.unreadable_missing,
            pct(self.unreadable_missing)
        );
        for (el, n) in &self.unreadable_by_element {
            let _ = writeln!(r, "    {el}: {n}");
        }
        let probes = self.by_context.get("probe").copied().unwrap_or(0);
        let sessions = self.by_context.get("exec-session").copied().unwrap_or(0);
        let _ = writeln!(
            r,
            "  probe runs seen: {} as probes, {sessions} as exec sessions ({:.1}%; this workload starts no exec session: each is a probe whose argv could not be read)",
            probes,
            100.0 * sessions as f64 / (probes + sessions).max(1) as f64
        );
        let _ = writeln!(
            r,
            "  sent again once the pod was known: {}; full with an empty argv: {}",
            self.attributed_late, self.empty_argv_full
        );
        r
    }
}

#[test]
fn a_benign_deployment_soaks_without_a_single_deviation() {
    if !require_root_and_docker() {
        return;
    }
    let soak = soak_length();
    let work = tempfile::tempdir().unwrap();
    let node = "node-soak";
    // Unique tags: another run of this test on the same engine keeps its own images.
    let repo = format!("procguard-soak-{}", std::process::id());
    let v1 = image(&format!("{repo}:1"), "1");
    let v2 = image(&format!("{repo}:2"), "2");
    assert_ne!(
        v1.digest, v2.digest,
        "the two releases must differ in digest"
    );

    let pki = Pki::create(&work.path().join("pki"), &[node]);
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let server = Server::start(
        &pki,
        work.path(),
        &[
            "--policy-file",
            policy.to_str().unwrap(),
            "--relearn-window",
            RELEARN_WINDOW,
        ],
    );
    let api = FakeKube::start();
    let kubeconfig = api.kubeconfig(work.path());
    let jsonl = work.path().join("events.jsonl");
    let sensor = Sensor::start(
        &pki,
        &server,
        node,
        work.path(),
        &[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--jsonl",
            jsonl.to_str().unwrap(),
        ],
    );
    let deployment = Deployment {
        namespace: "soak".into(),
        name: "web".into(),
        container: "app".into(),
        liveness: ExecProbe::new(&["/bin/cat", "/tmp/healthy"], Duration::from_secs(10)),
        readiness: ExecProbe::new(&["sh", "-c", "test -f /tmp/ready"], Duration::from_secs(5)),
    };
    let workload = deployment.workload();
    let mut kubelet = Kubelet::start(&api, node, deployment);

    // Learning: two replicas, their loops and their probes, until the policy enforces.
    let rs1 = kubelet.replica_set(&v1.tag, &v1.digest);
    let first = kubelet.create_pod(&rs1);
    let second = kubelet.create_pod(&rs1);
    for p in [&first, &second] {
        assert!(
            kubelet.wait_ready(p, Duration::from_secs(60)),
            "pod {p} never passed its readiness probe; probes: {:?}",
            kubelet.probe_counts()
        );
    }
    let get = || ctl_json(&pki, &server, "viewer", &["baselines", "get", &workload]).ok();
    let enforced = wait_for(Duration::from_secs(300), || {
        get().filter(|b| b["state"] == "enforced")
    })
    .unwrap_or_else(|| {
        panic!(
            "{workload} was never enforced: {:#?}\nbaselines: {:?}\nsensor log:\n{}",
            get(),
            ctl_json(&pki, &server, "viewer", &["baselines", "list"]),
            tail(&sensor.proc.log_text(), 100)
        )
    });
    let learned = elements(&enforced);
    assert!(
        wait_for(Duration::from_secs(10), || sensor
            .metric("procguard_sensor_baselines")
            .filter(|n| *n >= 1.0))
        .is_some(),
        "the enforced baseline never reached the sensor"
    );
    println!(
        "learned and enforced ({}), {} elements:\n{}",
        enforced["learning"]["end_reason"],
        learned.len(),
        show_elements(&learned)
    );

    // The soak.
    let probes_before = kubelet.probe_counts();
    let soak_from = std::fs::metadata(&jsonl).map(|m| m.len()).unwrap_or(0) as usize;
    let start = Instant::now();
    let at = |fraction: f64| start + soak.mul_f64(fraction);
    let sleep_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));

    sleep_until(at(0.2));
    let restarted = kubelet.pods()[0].name.clone();
    kubelet.restart_container(&restarted);
    let restarted_id = kubelet.pods()[0].container_ids.last().unwrap().clone();
    println!(
        "{:>4} s: restarted the container of {restarted}",
        start.elapsed().as_secs()
    );

    sleep_until(at(0.35));
    let third = kubelet.create_pod(&rs1);
    kubelet.wait_ready(&third, Duration::from_secs(60));
    println!(
        "{:>4} s: scaled out with {third}",
        start.elapsed().as_secs()
    );

    sleep_until(at(0.5));
    let rs2 = kubelet.replica_set(&v2.tag, &v2.digest);
    for old in kubelet.pods() {
        let new = kubelet.create_pod(&rs2);
        kubelet.wait_ready(&new, Duration::from_secs(60));
        kubelet.delete_pod(&old.name);
    }
    println!(
        "{:>4} s: rolled out {} ({})",
        start.elapsed().as_secs(),
        rs2.name,
        v2.digest
    );
    sleep_until(at(1.0));

    // Everything the sensor saw is on the server before anything is judged.
    std::thread::sleep(Duration::from_secs(3));
    let drained = wait_for(Duration::from_secs(30), || {
        sensor
            .metric("procguard_sensor_pending_events")
            .filter(|n| *n == 0.0)
    });

    // Measure.
    let uids: HashSet<String> = kubelet.every_pod().into_iter().map(|p| p.uid).collect();
    let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let ours = |e: &Value| {
        e["container"]["pod_uid"]
            .as_str()
            .is_some_and(|u| uids.contains(u))
    };
    let soak_events: Vec<Value> = text
        .get(soak_from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(ours)
        .collect();
    let mut m = Measure::default();
    soak_events.iter().for_each(|e| m.add(e));
    let probes: String = kubelet
        .probe_counts()
        .iter()
        .map(|(kind, c)| {
            let before = probes_before.get(kind).copied().unwrap_or_default();
            format!(
                "{kind} {} ({} failed) ",
                c.runs - before.runs,
                c.failed - before.failed
            )
        })
        .collect();
    let sensor_metrics: Vec<String> = [
        "events_seen",
        "events_partial",
        "kernel_losses",
        "exec_lost",
        "queue_drops",
        "sequence_gaps",
        "late_forks",
        "deviations",
        "fanotify_enabled",
        "pod_metadata_missing",
    ]
    .iter()
    .map(|k| {
        let v = sensor.metric(&format!("procguard_sensor_{k}"));
        let v = v.or_else(|| sensor.metric(&format!("procguard_sensor_{k}_total")));
        format!("{k}={}", v.map_or("?".into(), |v| v.to_string()))
    })
    .collect();
    let mut report = format!(
        "soak of {} s ({} pods, {} containers)\n{}  kubelet probe runs during the soak: {probes}\n  sensor (whole node, whole test): {}\n",
        soak.as_secs(),
        kubelet.every_pod().len(),
        kubelet
            .every_pod()
            .iter()
            .map(|p| p.container_ids.len())
            .sum::<usize>(),
        m.report(),
        sensor_metrics.join(" ")
    );

    // Judge.
    let incidents: Vec<Value> = ctl_json(
        &pki,
        &server,
        "viewer",
        &["incidents", "list", "--limit", "1000"],
    )
    .ok()
    .and_then(|v| v.as_array().cloned())
    .unwrap_or_default();
    let mut failures: Vec<String> = Vec::new();
    // The incidents that must not exist, grouped by what they are about (kind, element,
    // reason): a probe that raises one incident per run is one line, with its count, and the
    // contexts and missing fields of its first incident's samples.
    let mut groups: BTreeMap<String, (u64, u64, String)> = BTreeMap::new();
    for i in &incidents {
        let kind = i["kind"].as_str().unwrap_or_default();
        let ours = i["workload"] == workload.as_str();
        if !matches!(
            (kind, ours),
            ("deviation" | "exec-session", true) | ("sensor-blind", _)
        ) {
            continue;
        }
        let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
        let reason = if kind == "sensor-blind" {
            // The counts in the reason change with every report; the last one is printed below.
            "partial, dropped or lost events, or silence".to_string()
        } else {
            s("severity_reason")
        };
        let applet = if s("applet").is_empty() {
            String::new()
        } else {
            format!(" ({})", s("applet"))
        };
        let key = format!(
            "{kind}: {}{applet} {} — {reason} [{}]",
            s("exe_path"),
            s("script_path"),
            s("severity"),
        );
        let g = groups.entry(key).or_insert((0, 0, s("id")));
        g.0 += 1;
        g.1 += i["count"].as_u64().unwrap_or(0);
    }
    let mut full_incidents: Vec<Value> = Vec::new();
    for (key, (n, events, id)) in &groups {
        let full = ctl_json(&pki, &server, "viewer", &["incidents", "get", id])
            .unwrap_or_else(Value::String);
        let mut missing: BTreeSet<String> = BTreeSet::new();
        let mut contexts: BTreeSet<String> = BTreeSet::new();
        for sample in full["samples"].as_array().into_iter().flatten() {
            let p = &sample["process"];
            contexts.insert(p["context"].as_str().unwrap_or_default().to_string());
            for m in p["missing"].as_array().into_iter().flatten() {
                missing.insert(m.as_str().unwrap_or_default().to_string());
            }
        }
        failures.push(format!(
            "{n} incident(s), {events} event(s): {key}; samples (incident {id}): contexts {contexts:?}, missing {missing:?}"
        ));
        full_incidents.push(full);
    }
    let blind: Vec<String> = incidents
        .iter()
        .filter(|i| i["kind"] == "sensor-blind")
        .map(|i| format!("{} (last: {})", i["id"], i["severity_reason"]))
        .collect();
    let now = get().unwrap_or_default();
    if now["state"] != "enforced" {
        failures.push(format!("{workload} is {} now, not enforced", now["state"]));
    }
    let after = elements(&now);
    if after != learned {
        failures.push(format!(
            "{workload}'s elements changed during the soak (the binaries did not):\nadded or changed:\n{}removed or changed:\n{}",
            show_elements(&after.difference(&learned).cloned().collect()),
            show_elements(&learned.difference(&after).cloned().collect())
        ));
    }
    let unreadable: Vec<&ElementRow> = after
        .iter()
        .filter(|(exe, applet, script, _)| {
            [exe, applet, script].iter().any(|s| *s == "[unreadable]")
        })
        .collect();
    if !unreadable.is_empty() {
        failures.push(format!(
            "{workload}'s baseline holds elements nobody saw (learned from execs whose applet or script could not be read): {unreadable:?}"
        ));
    }
    // The workload really ran, through every phase, under the new digest at the end.
    let digests = now["image_digests"].to_string();
    if !digests.contains(&v2.digest) {
        failures.push(format!(
            "the rollout's digest {} never reached the baseline: {digests}",
            v2.digest
        ));
    }
    let ran = |pred: &dyn Fn(&Value) -> bool| soak_events.iter().any(pred);
    if !ran(&|e| e["container"]["container_id"] == restarted_id.as_str()) {
        failures.push(format!(
            "no event of the restarted container {restarted_id}"
        ));
    }
    if !ran(&|e| {
        e["container"]["image_digest"] == v2.digest.as_str() && e["context"] == "descendant"
    }) {
        failures.push("no event of the rolled-out pods under the new digest".into());
    }
    if !ran(&|e| e["context"] == "probe") {
        failures.push("no probe seen during the soak".into());
    }
    if m.execs < soak.as_secs() {
        failures.push(format!(
            "only {} workload execs in {} s: the workload or the sensor stalled",
            m.execs,
            soak.as_secs()
        ));
    }
    if m.empty_argv_full > 0 {
        failures.push(format!(
            "{} events with an empty argv were reported full (a process gone before its command line was read)",
            m.empty_argv_full
        ));
    }
    if drained.is_none() {
        failures.push("the sensor still had events to send 30 s after the soak".into());
    }

    if !blind.is_empty() {
        let _ = writeln!(report, "sensor-blind incidents: {}", blind.join("; "));
    }
    println!("{report}");
    keep_artifacts(&[&jsonl, &sensor.proc.log, &server.proc.log]);
    if failures.is_empty() {
        return;
    }
    // One full incident of each group, with its samples.
    for full in full_incidents.iter().take(12) {
        let _ = writeln!(report, "incident {}:\n{full:#}", full["id"]);
    }
    panic!(
        "the benign soak was not quiet:\n- {}\n\n{report}\nsensor log (tail):\n{}\nserver log (tail):\n{}",
        failures.join("\n- "),
        tail(&sensor.proc.log_text(), 150),
        tail(&server.proc.log_text(), 40)
    );
}
