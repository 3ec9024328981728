//! Matching one exec against the enforced baselines, as the sensor does for every exec.
//! Target: O(1) and under 1 µs. The index holds 2,000 workloads of 60 elements each (a large
//! node's worth; every fifth element is a busybox applet, as in busybox-based images), each
//! element pinned to one approved content (every seventh to two, as after an image rollout),
//! and the lookups hit (executable, applet, script, content), miss on the executable or the
//! applet, miss on the content (a binary replaced at an allowed path, or one the sensor could
//! not hash), and miss on the workload. Every exec carries its origin (`image`, as capture
//! reports a file of the image); `drift_writable_layer` is an allowed executable with its
//! approved content run from the container's writable layer, refused on its origin.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use procguard_core::baseline::{Element, ElementStatus, Provenance};
use procguard_core::{
    Baseline, Completeness, ContainerInfo, ElementKey, ExecContext, Matcher, Origin, ProcessEvent,
    WorkloadIdentity, WorkloadKind,
};
use std::time::{Duration, SystemTime};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The approved content of element `e` (and, for every seventh, an older one).
fn sha(e: usize) -> String {
    format!("{e:064x}")
}

fn fleet(workloads: usize, elements: usize) -> Vec<Baseline> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    (0..workloads)
        .map(|w| {
            let id = WorkloadIdentity::new(
                "prod",
                format!("ns-{}", w % 40),
                WorkloadKind::Deployment,
                format!("app-{w}"),
                "main",
            );
            let mut b = Baseline::new(id, now);
            b.image_digests.insert(DIGEST.to_string());
            for e in 0..elements {
                let mut approved_sha256 = vec![sha(e)];
                if e % 7 == 0 {
                    approved_sha256.insert(0, sha(e + 1_000_000));
                }
                b.elements.insert(
                    ElementKey {
                        exe_path: if e % 5 == 1 {
                            "/bin/busybox".to_string()
                        } else {
                            format!("/usr/local/bin/tool-{e}")
                        },
                        applet: if e % 5 == 1 {
                            format!("applet-{e}")
                        } else {
                            String::new()
                        },
                        script_path: if e % 10 == 0 {
                            format!("/app/job-{e}.py")
                        } else {
                            String::new()
                        },
                    },
                    Element {
                        status: ElementStatus::Approved,
                        review_reasons: vec![],
                        provenance: Provenance::new(now),
                        manual: false,
                        approved_sha256,
                        origins: [Origin::Image].into(),
                    },
                );
            }
            b.approve(None, now);
            b
        })
        .collect()
}

/// An exec as capture hands it to the uplink: hashed, in a container of the known image.
fn exec(
    workload: &WorkloadIdentity,
    exe: &str,
    applet: &str,
    script: &str,
    sha256: Option<String>,
) -> ProcessEvent {
    ProcessEvent {
        pid: 4242,
        ppid: 1,
        ancestors: vec![],
        start_time: None,
        uid: 0,
        gid: 0,
        comm: "x".into(),
        exe_path: exe.into(),
        argv: vec![exe.into()],
        argv_truncated: false,
        applet: (!applet.is_empty()).then(|| applet.into()),
        script_path: (!script.is_empty()).then(|| script.into()),
        completeness: if sha256.is_some() {
            Completeness::Full
        } else {
            Completeness::Partial
        },
        missing: if sha256.is_some() {
            vec![]
        } else {
            vec!["exe_sha256".into()]
        },
        exe_sha256: sha256,
        exe_memfd: false,
        exe_deleted: false,
        exe_writable_location: false,
        origin: Origin::Image,
        container: Some(ContainerInfo {
            container_id: "c".repeat(64),
            image_digest: Some(DIGEST.into()),
            ..Default::default()
        }),
        workload: workload.clone(),
        context: ExecContext::Descendant,
        exec_session: None,
        node_name: "n1".into(),
        attributed_late_ms: None,
    }
}

fn bench(c: &mut Criterion) {
    let baselines = fleet(2_000, 60);
    let m = Matcher::new(baselines.iter());
    let now = SystemTime::now();
    let hit = baselines[1234].workload.clone();
    let unknown = WorkloadIdentity::new("prod", "ns-x", WorkloadKind::Pod, "nobody", "main");
    let cases = [
        (
            "hit",
            exec(&hit, "/usr/local/bin/tool-37", "", "", Some(sha(37))),
        ),
        (
            "hit_with_script",
            exec(
                &hit,
                "/usr/local/bin/tool-30",
                "",
                "/app/job-30.py",
                Some(sha(30)),
            ),
        ),
        (
            "hit_older_content",
            exec(&hit, "/usr/local/bin/tool-28", "", "", Some(sha(1_000_028))),
        ),
        ("deviation", exec(&hit, "/tmp/miner", "", "", Some(sha(9)))),
        (
            "hit_applet",
            exec(&hit, "/bin/busybox", "applet-31", "", Some(sha(31))),
        ),
        (
            "deviation_applet",
            exec(&hit, "/bin/busybox", "wget", "", Some(sha(31))),
        ),
        (
            "content_mismatch",
            exec(&hit, "/usr/local/bin/tool-37", "", "", Some("e".repeat(64))),
        ),
        (
            "content_unverified",
            exec(&hit, "/usr/local/bin/tool-37", "", "", None),
        ),
        ("unknown_workload", exec(&unknown, "/bin/sh", "", "", None)),
        ("drift_writable_layer", {
            let mut ev = exec(&hit, "/usr/local/bin/tool-37", "", "", Some(sha(37)));
            ev.origin = Origin::WritableLayer;
            ev.exe_writable_location = true;
            ev
        }),
    ];
    let mut g = c.benchmark_group("matcher");
    for (name, ev) in &cases {
        g.bench_function(*name, |b| b.iter(|| m.check(black_box(ev), now)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
