//! Matching one exec against the enforced baselines, as the sensor does for every exec.
//! Target: O(1) and under 1 µs. The index holds 2,000 workloads of 60 elements each (a large
//! node's worth; every fifth element is a busybox applet, as in busybox-based images), and the
//! lookups hit (executable, applet, script), miss on the executable or the applet, and miss on
//! the workload.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use procguard_core::baseline::{Element, ElementStatus, Provenance};
use procguard_core::{Baseline, ElementKey, Matcher, WorkloadIdentity, WorkloadKind};
use std::time::{Duration, SystemTime};

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
            for e in 0..elements {
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
                        provenance: Provenance {
                            first_seen: now,
                            last_seen: now,
                            count: 1,
                            nodes: Default::default(),
                            pods: Default::default(),
                            parents: Default::default(),
                            sample_argv: vec![],
                            sha256: Default::default(),
                            image_digests: Default::default(),
                            contexts: Default::default(),
                        },
                        manual: false,
                    },
                );
            }
            b.approve(None, now);
            b
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let baselines = fleet(2_000, 60);
    let m = Matcher::new(baselines.iter());
    let now = SystemTime::now();
    let hit = baselines[1234].workload.clone();
    let unknown = WorkloadIdentity::new("prod", "ns-x", WorkloadKind::Pod, "nobody", "main");
    let mut g = c.benchmark_group("matcher");
    g.bench_function("hit", |b| {
        b.iter(|| {
            m.check(
                black_box(&hit),
                black_box("/usr/local/bin/tool-37"),
                black_box(""),
                black_box(""),
                now,
            )
        })
    });
    g.bench_function("hit_with_script", |b| {
        b.iter(|| {
            m.check(
                black_box(&hit),
                black_box("/usr/local/bin/tool-30"),
                black_box(""),
                black_box("/app/job-30.py"),
                now,
            )
        })
    });
    g.bench_function("deviation", |b| {
        b.iter(|| {
            m.check(
                black_box(&hit),
                black_box("/tmp/miner"),
                black_box(""),
                black_box(""),
                now,
            )
        })
    });
    g.bench_function("hit_applet", |b| {
        b.iter(|| {
            m.check(
                black_box(&hit),
                black_box("/bin/busybox"),
                black_box("applet-31"),
                black_box(""),
                now,
            )
        })
    });
    g.bench_function("deviation_applet", |b| {
        b.iter(|| {
            m.check(
                black_box(&hit),
                black_box("/bin/busybox"),
                black_box("wget"),
                black_box(""),
                now,
            )
        })
    });
    g.bench_function("unknown_workload", |b| {
        b.iter(|| {
            m.check(
                black_box(&unknown),
                black_box("/bin/sh"),
                black_box(""),
                black_box(""),
                now,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
