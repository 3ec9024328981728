//! procguard sensor.
//!
//! [`capture`] follows every fork, exec and exit, after a full [`procfs`] scan, from one of
//! two backends (`--capture`): the kernel's exec, fork and exit tracepoints through [`ebpf`]
//! (argv, cgroup and IDs recorded at the exec itself), or the [`netlink`] proc connector; the
//! [`tracker`] attributes each process to its container ([`cgroup`]) and workload; the
//! [`uplink`] streams the events to the server over mTLS and matches them against the
//! enforced baselines it pushes back.
//!
//! Threads: `pg-process` receives execs (from the eBPF ring buffer, or the proc connector's
//! exec socket) and reads `/proc` (and, with `--fanotify`, the exec identities), `pg-netlink`
//! (proc connector only) drains the socket of every other kernel event, `pg-hash` hashes
//! files not hashed yet (see [`capture`]); the pod watch and the [`pods`]
//! enricher (with `--pod-metadata kube`) and the uplink run on tokio. One cancellation token
//! stops them all.

pub mod capture;
pub mod cgroup;
pub mod cgroupns;
pub mod config;
pub mod ebpf;
pub mod fanotify;
pub mod heap;
pub mod metrics;
pub mod multicall;
pub mod netlink;
pub mod origin;
pub mod pods;
pub mod procfs;
pub mod spool;
pub mod standalone;
pub mod summary;
pub mod tracker;
pub mod uplink;

pub use config::{Config, Settings};

use anyhow::Context;
use procguard_runtime::admin::Admin;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Process events queued between capture and the uplink. Capture blocks (and the kernel queue
/// absorbs the burst) when the uplink falls behind, rather than dropping here.
pub const EVENT_QUEUE: usize = 8_192;
/// How long shutdown waits for threads to stop.
pub const GRACE: Duration = Duration::from_secs(5);

/// The JSON-lines output of a sensor without a server: a write to a closed pipe stops the
/// sensor (its only output has no reader left), with one line saying so.
struct StopWhenClosed<W> {
    out: W,
    shutdown: CancellationToken,
}

impl<W: std::io::Write> StopWhenClosed<W> {
    fn closed<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if e.kind() == std::io::ErrorKind::BrokenPipe && !self.shutdown.is_cancelled() {
                tracing::info!(
                    message = "The reader of the JSON lines went away (closed pipe); stopping, since they are this sensor's only output."
                );
                self.shutdown.cancel();
            }
        }
        r
    }
}

impl<W: std::io::Write> std::io::Write for StopWhenClosed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.out.write(buf);
        self.closed(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.out.flush();
        self.closed(r)
    }
}

/// Runs the sensor until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::default();
    // The Kubernetes client is built (and its kubeconfig checked) before any port is bound.
    let kube_client = match &settings.pod_metadata {
        Some(p) => Some(pods::client(p.kubeconfig.as_deref()).await?),
        None => None,
    };
    let admin = Admin::new(metrics.register());
    let listener = Admin::bind(settings.admin_addr)
        .await
        .with_context(|| format!("cannot bind admin address {}", settings.admin_addr))?;
    let jsonl: Option<Box<dyn std::io::Write + Send>> = match &settings.jsonl {
        None => None,
        // Standalone (no server), stdout is the sensor's only output: when its reader goes
        // away (`--jsonl - | head`), the sensor stops rather than run on, unread.
        Some(p) if p.as_os_str() == "-" && settings.uplink.is_none() => {
            Some(Box::new(StopWhenClosed {
                out: std::io::stdout(),
                shutdown: shutdown.clone(),
            }))
        }
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open --jsonl file {}", p.display()))?,
        )),
    };
    // Only a sensor with a server spools; JSON-lines output alone keeps nothing.
    let spool = match &settings.uplink {
        Some(_) => Some(
            spool::Spool::open(&settings.spool_dir, settings.spool_bytes, metrics.clone())
                .with_context(|| {
                    format!(
                        "cannot open the spool in --spool-dir {}",
                        settings.spool_dir.display()
                    )
                })?,
        ),
        None => None,
    };
    if spool.is_some() {
        metrics
            .spool_capacity_bytes
            .set(i64::try_from(settings.spool_bytes).unwrap_or(i64::MAX));
    }
    let mut tracker = tracker::Tracker::new(
        procfs::ProcReader::new(&settings.proc_root),
        &settings.node_name,
        &settings.cluster,
    );
    tracker.set_cgroup_view(settings.cgroup_view.clone());
    match std::fs::read_dir(&settings.host_root) {
        Ok(_) => tracker.set_host_root(settings.host_root.clone()),
        Err(error) => tracing::warn!(
            message = "Cannot reach the node's root filesystem; containers' writable layers are looked up in the sensor's own, where the runtime's state may not be (executables written into a container would not be flagged).",
            path = %settings.host_root.display(),
            %error,
            hint = "grant CAP_SYS_PTRACE and point --host-root at <host proc>/1/root"
        ),
    }
    metrics.set_cgroup_view(settings.cgroup_mode.as_str());
    let names = standalone::Names::new(&settings.docker_root, &settings.podman_root);
    let (docker, podman) = names.roots_present();
    tracing::info!(
        message = "Containers outside any pod are named from their runtime's state where readable.",
        docker_root = %settings.docker_root.display(),
        docker_readable = docker,
        podman_root = %settings.podman_root.display(),
        podman_readable = podman
    );
    tracker.set_standalone(names);
    tracker.set_metrics(&metrics);
    let fanotify_on = match settings.fanotify {
        config::FanotifyMode::Off => {
            tracing::info!(message = "fanotify exec identities are off (--fanotify off): an executable whose process exits before /proc is read is reported unknown, as partial.");
            false
        }
        mode => match fanotify::ExecWatch::start(metrics.clone(), &settings.host_root) {
            Ok(watch) => {
                tracker.set_exec_watch(watch);
                true
            }
            Err(error) if mode == config::FanotifyMode::Auto => {
                tracing::warn!(
                    message = "fanotify exec identities are off: the kernel or this sensor's privileges refused them. Executables of processes that exit before /proc is read will be reported unknown (partial). Grant CAP_SYS_ADMIN (Linux 5.0+ with FAN_OPEN_EXEC), or set --fanotify off to silence this.",
                    %error,
                    hint = fanotify::refusal_hint(&error),
                );
                false
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(
                    "--fanotify on: cannot watch executions with fanotify (needs CAP_SYS_ADMIN and a kernel with FAN_OPEN_EXEC, 5.0+; use --fanotify auto to run without)",
                ))
            }
        },
    };
    metrics.fanotify_enabled.set(i64::from(fanotify_on));
    let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    // With pod metadata, the enricher sits between capture and the uplink.
    let rx = match kube_client {
        None => rx,
        Some(client) => {
            let cache = pods::PodCache::default();
            tokio::spawn(pods::watch_pods(
                client,
                settings.node_name.clone(),
                cache.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
            let (etx, erx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
            let enricher = pods::Enricher::new(&settings.cluster, cache, metrics.clone());
            tokio::spawn(enricher.run(rx, etx, shutdown.clone()));
            erx
        }
    };
    let ebpf = ebpf_source(&settings)?;
    let backend = if ebpf.is_some() { "ebpf" } else { "netlink" };
    metrics.set_capture_backend(backend);
    let threads = capture::start(
        tracker,
        tx,
        metrics.clone(),
        ebpf,
        settings.netlink_netns.as_deref(),
        settings.capture_nice,
        shutdown.clone(),
    ).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EACCES) {
            anyhow::anyhow!(
                "cannot subscribe to the kernel's process events ({e}): procguard-sensor needs root \
                 (CAP_NET_ADMIN in the initial user and PID namespaces); run it with sudo, or as the \
                 DaemonSet in deploy/ does"
            )
        } else {
            anyhow::anyhow!("cannot subscribe to the kernel's process events: {e}")
        }
    })?;
    let admin_task = tokio::spawn(admin.clone().serve(listener, shutdown.clone()));
    admin.set_ready(true);
    tracing::info!(
        message = "procguard-sensor running.",
        node = %settings.node_name,
        capture = backend,
        server = settings.uplink.as_ref().map(|u| u.url.as_str()).unwrap_or("(none: JSON lines only)"),
        admin = %settings.admin_addr
    );
    // The uplink reconnects with new certificates as this watcher loads them.
    if let Some(u) = &settings.uplink {
        u.tls.watch(u.tls_reload_interval, shutdown.clone());
    }
    let up = uplink::Uplink::new(
        settings.uplink.clone(),
        &settings.node_name,
        &settings.cluster,
        spool,
        metrics,
        jsonl,
    )
    .with_capabilities(
        [
            (
                settings.pod_metadata.is_some(),
                procguard_proto::v1::SensorCapability::PodMetadata,
            ),
            (
                fanotify_on,
                procguard_proto::v1::SensorCapability::FanotifyExec,
            ),
            (
                backend == "ebpf",
                procguard_proto::v1::SensorCapability::EbpfExec,
            ),
            (
                backend == "netlink",
                procguard_proto::v1::SensorCapability::ProcConnector,
            ),
        ]
        .into_iter()
        .filter_map(|(on, c)| on.then_some(c))
        .collect(),
    );
    let up = match &settings.uplink {
        Some(u) => up.with_summaries(u.summary_interval, u.summary_max_entries),
        None => up,
    };
    up.run(rx, shutdown.clone()).await;
    shutdown.cancel();
    admin.set_ready(false);
    let _ = tokio::time::timeout(GRACE, async {
        let _ = admin_task.await;
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
    })
    .await;
    tracing::info!(message = "procguard-sensor stopped.");
    Ok(())
}

/// The eBPF backend when `--capture` asks for it and the kernel allows it. `auto` falls back
/// to the proc connector (`None`) with one log line saying why and what to do; `ebpf` fails.
fn ebpf_source(settings: &Settings) -> anyhow::Result<Option<capture::EbpfSource>> {
    use config::CaptureMode;
    if settings.capture == CaptureMode::Netlink {
        return Ok(None);
    }
    match ebpf::Capture::open(settings.ebpf_ring_bytes) {
        Ok(capture) => {
            heap::release_freed("loading the eBPF program");
            let cgroups = ebpf::CgroupIds::find(&settings.proc_root, &settings.cgroup_root);
            match &cgroups {
                Some(c) => tracing::info!(
                    message = "Capturing with eBPF: exec, fork and exit tracepoints; cgroup IDs resolved through the cgroup-v2 mount.",
                    mount = %c.mount().display()
                ),
                None => tracing::info!(
                    message = "Capturing with eBPF: exec, fork and exit tracepoints; no cgroup-v2 mount under --cgroup-root, so cgroups are read from /proc.",
                    cgroup_root = %settings.cgroup_root.display()
                ),
            }
            Ok(Some(capture::EbpfSource { capture, cgroups }))
        }
        Err(error) if settings.capture == CaptureMode::Auto => {
            let cause = std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::warn!(
                message = "Capturing with the netlink proc connector: eBPF capture is not possible here.",
                reason = %error,
                %cause,
                hint = error.hint()
            );
            Ok(None)
        }
        Err(error) => Err(anyhow::Error::new(error).context(
            "--capture ebpf: cannot capture with eBPF (use --capture auto to fall back to the netlink proc connector)",
        )),
    }
}
