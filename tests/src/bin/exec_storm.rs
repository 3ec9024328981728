//! The capture benchmark's load and its scoring (see docs/BENCHMARKS.md and
//! `bench/exec_storm.sh`).
//!
//! `exec_storm run` spreads an exec storm of a short binary (`/bin/true`, about a millisecond)
//! across container-like cgroups (`kubepods/besteffort/pod<uid>/<id>` in every v1 hierarchy but
//! memory and cpuset, and in the v2 hierarchy): one worker per cgroup joins it and then execs
//! itself, as a container's processes are born inside it. Each worker spawns the binary at its
//! share of the rate (or as fast as it can, for a burst) and records the ground truth of every
//! exec: parent pid, child pid, container ID and how long spawn-to-reap took.
//!
//! `--shape joined` is the other way processes enter containers (`runc exec`, a shell that
//! moves itself into a pod's cgroup): each worker starts on the host, is seen there, then
//! writes itself into its cgroup *without* exec-ing again and spawns from there, so the
//! sensor's table still holds the host placement it saw first. `exec_storm score` compares the truth with the sensor's JSON lines and, optionally, `forkstat`'s output.

use procguard_tests::cgroups::FakeContainerCgroup;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn usage() -> ! {
    eprintln!(
        "usage:\n  exec_storm run --truth FILE [--rate EXECS_PER_S --duration S | --burst N] [--cgroups 10] [--binary /bin/true] [--shape exec|joined]\n  exec_storm score --truth FILE --events SENSOR.jsonl [--forkstat FORKSTAT.txt]"
    );
    std::process::exit(64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args),
        Some("worker") => worker(&args),
        Some("score") => score(&args),
        _ => usage(),
    }
}

fn run(args: &[String]) {
    let truth: String = arg(args, "--truth").unwrap_or_else(|| usage());
    let n_cg: usize = arg(args, "--cgroups").unwrap_or(10);
    let binary: String = arg(args, "--binary").unwrap_or_else(|| "/bin/true".into());
    let rate: f64 = arg(args, "--rate").unwrap_or(1000.0);
    let duration: f64 = arg(args, "--duration").unwrap_or(20.0);
    let burst: Option<usize> = arg(args, "--burst");
    let shape: String = arg(args, "--shape").unwrap_or_else(|| "exec".into());
    if shape != "exec" && shape != "joined" {
        usage();
    }
    let me = std::env::current_exe().expect("current exe");
    let cgroups: Vec<FakeContainerCgroup> = (0..n_cg)
        .map(|_| FakeContainerCgroup::random().expect("create cgroup (run as root)"))
        .collect();
    let start = Instant::now();
    let mut workers = Vec::new();
    for cg in &cgroups {
        let join: String = cg
            .procs_files()
            .iter()
            .map(|f| format!("echo $$ > {};", f.display()))
            .collect();
        let load = match burst {
            Some(n) => format!("--count {}", n / n_cg),
            None => format!("--rate {} --duration {duration}", rate / n_cg as f64),
        };
        let script = if shape == "joined" {
            let files: Vec<String> = cg
                .procs_files()
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            format!(
                "exec {me} worker --id {id} --binary {binary} {load} --join {files}",
                me = me.display(),
                id = cg.id,
                files = files.join(",")
            )
        } else {
            format!(
                "{join} exec {me} worker --id {id} --binary {binary} {load}",
                me = me.display(),
                id = cg.id
            )
        };
        workers.push(
            Command::new("/bin/sh")
                .args(["-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker"),
        );
    }
    // Every worker's pipe is read at once: read one after the other, a worker whose pipe
    // filled (about a thousand lines) would block until its turn, pacing the whole storm.
    let readers: Vec<_> = workers
        .into_iter()
        .map(|w| std::thread::spawn(move || w.wait_with_output().expect("worker")))
        .collect();
    let mut out = std::fs::File::create(&truth).expect("create truth file");
    let mut total = 0usize;
    for r in readers {
        let o = r.join().expect("worker reader");
        assert!(o.status.success(), "a worker failed");
        out.write_all(&o.stdout).expect("write truth");
        total += o.stdout.iter().filter(|b| **b == b'\n').count();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        json!({"execs": total, "seconds": secs, "rate": total as f64 / secs, "cgroups": n_cg})
    );
}

fn worker(args: &[String]) {
    let id: String = arg(args, "--id").unwrap_or_else(|| usage());
    let binary: String = arg(args, "--binary").unwrap_or_else(|| "/bin/true".into());
    let count: Option<usize> = arg(args, "--count");
    let rate: f64 = arg(args, "--rate").unwrap_or(100.0);
    let duration: f64 = arg(args, "--duration").unwrap_or(20.0);
    let me = std::process::id();
    if let Some(files) = arg::<String>(args, "--join") {
        // Seen on the host first, then into the container's cgroup without a new exec.
        std::thread::sleep(Duration::from_millis(300));
        for f in files.split(',') {
            std::fs::write(f, me.to_string()).expect("join cgroup");
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut i = 0usize;
    loop {
        match count {
            Some(n) if i >= n => break,
            None if start.elapsed().as_secs_f64() >= duration => break,
            _ => {}
        }
        if count.is_none() {
            let due = start + period * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
        let mut c = Command::new(&binary).spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("wait");
        let us = t.elapsed().as_micros();
        let _ = writeln!(out, "{me} {pid} {id} {us}");
        i += 1;
    }
}

struct Truth {
    ppid: u32,
    pid: u32,
    container: String,
    us: u64,
}

fn read_truth(path: &str) -> Vec<Truth> {
    let f = std::fs::File::open(path).expect("truth file");
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            Some(Truth {
                ppid: v.first()?.parse().ok()?,
                pid: v.get(1)?.parse().ok()?,
                container: v.get(2)?.to_string(),
                us: v.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn score(args: &[String]) {
    let truth = read_truth(&arg::<String>(args, "--truth").unwrap_or_else(|| usage()));
    let events: String = arg(args, "--events").unwrap_or_else(|| usage());
    let want_exe = std::fs::canonicalize(
        arg::<String>(args, "--binary").unwrap_or_else(|| "/bin/true".into()),
    )
    .expect("binary")
    .display()
    .to_string();
    // Sensor events by (ppid, pid), in order: pids are reused on a busy machine.
    let mut by_key: HashMap<(u32, u32), Vec<Value>> = HashMap::new();
    let f = std::fs::File::open(&events).expect("events file");
    for l in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        let key = (
            v["ppid"].as_u64().unwrap_or(0) as u32,
            v["pid"].as_u64().unwrap_or(0) as u32,
        );
        by_key.entry(key).or_default().push(v);
    }
    let mut used: HashMap<(u32, u32), usize> = HashMap::new();
    let (mut received, mut exe_ok, mut cont_ok, mut both_ok) = (0, 0, 0, 0);
    let (mut sub, mut sub_received, mut sub_exe, mut sub_cont) = (0, 0, 0, 0);
    let (mut long, mut long_both) = (0, 0);
    let mut partial = 0;
    for t in &truth {
        let key = (t.ppid, t.pid);
        let i = used.entry(key).or_default();
        let ev = by_key.get(&key).and_then(|v| v.get(*i)).cloned();
        let is_sub = t.us < 1000;
        if is_sub {
            sub += 1;
        } else {
            long += 1;
        }
        let Some(ev) = ev else { continue };
        *i += 1;
        received += 1;
        let e_ok = ev["exe_path"] == want_exe.as_str();
        let c_ok = ev["container"]["container_id"] == t.container.as_str();
        exe_ok += usize::from(e_ok);
        cont_ok += usize::from(c_ok);
        both_ok += usize::from(e_ok && c_ok);
        partial += usize::from(ev["completeness"] == "partial");
        if is_sub {
            sub_received += 1;
            sub_exe += usize::from(e_ok);
            sub_cont += usize::from(c_ok);
        } else {
            long_both += usize::from(e_ok && c_ok);
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    let mut report = json!({
        "generated": truth.len(),
        "received": received,
        "received_pct": pct(received, truth.len()),
        "exe_correct_pct": pct(exe_ok, truth.len()),
        "container_correct_pct": pct(cont_ok, truth.len()),
        "exe_and_container_pct": pct(both_ok, truth.len()),
        "partial": partial,
        "ge_1ms": long,
        "ge_1ms_exe_and_container_pct": pct(long_both, long),
        "sub_ms": sub,
        "sub_ms_received": sub_received,
        "sub_ms_exe_pct": pct(sub_exe, sub),
        "sub_ms_container_pct": pct(sub_cont, sub),
    });
    if let Some(fs) = arg::<String>(args, "--forkstat") {
        // forkstat prints "<time> exec <pid> <command line>"; "identified" means it could name
        // the command line of that exec (it reads /proc/<pid>/cmdline when the event arrives).
        let mut seen: HashMap<u32, Vec<String>> = HashMap::new();
        let f = std::fs::File::open(&fs).expect("forkstat file");
        for l in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            let v: Vec<&str> = l.split_whitespace().collect();
            if v.get(1) == Some(&"exec") {
                if let Some(pid) = v.get(2).and_then(|p| p.parse().ok()) {
                    seen.entry(pid).or_default().push(v[3..].join(" "));
                }
            }
        }
        let mut used: HashMap<u32, usize> = HashMap::new();
        let (mut got, mut named) = (0, 0);
        for t in &truth {
            let i = used.entry(t.pid).or_default();
            if let Some(cmd) = seen.get(&t.pid).and_then(|v| v.get(*i)) {
                *i += 1;
                got += 1;
                named += usize::from(cmd.contains("true"));
            }
        }
        report["forkstat_received_pct"] = json!(pct(got, truth.len()));
        report["forkstat_identified_pct"] = json!(pct(named, truth.len()));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
