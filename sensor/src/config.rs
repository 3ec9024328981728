//! Sensor configuration: flags (each with an environment variable) and their validation,
//! done before any socket is opened.

use procguard_runtime::telemetry::LogFormat;
use procguard_runtime::ConfigError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `procguard-sensor`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "procguard-sensor",
    version,
    about = "procguard sensor: sees every process start on this node and streams it to the server"
)]
pub struct Config {
    /// Server URL; must be https://.
    #[arg(long, env = "PROCGUARD_SERVER")]
    pub server: Option<String>,
    /// Node name this sensor reports for; must match its client certificate.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Cluster name recorded in every workload identity.
    #[arg(long, env = "PROCGUARD_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// Where the host's /proc is mounted.
    #[arg(long, env = "PROCGUARD_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Where the host's cgroup filesystem is mounted. Read only when the sensor cannot enter
    /// the host's cgroup namespace: it then finds its own cgroup there (the directory whose
    /// cgroup.procs lists it) and resolves other processes' `/..` paths against it.
    #[arg(long, env = "PROCGUARD_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The node's root filesystem (default: <proc-root>/1/root), where a container's writable
    /// layer (its overlay upper directory, a path of the node's) is looked up to tell an
    /// executable written after the container started from one shipped in its image, and
    /// which fanotify watches for host executables. Needs ptrace access to that process.
    /// Unreachable: the sensor's own root, with a warning. A sensor running on the host in its
    /// mount namespace (the quickstart) passes `/`.
    #[arg(long, env = "PROCGUARD_HOST_ROOT")]
    pub host_root: Option<PathBuf>,
    /// The host's cgroup namespace (default: <proc-root>/1/ns/cgroup). A sensor in a private
    /// cgroup namespace (a pod on a cgroup-v2 node) enters it at startup so that every
    /// process's cgroup path reads as the host writes it. Needs CAP_SYS_ADMIN and ptrace
    /// access to that process.
    #[arg(long, env = "PROCGUARD_HOST_CGROUPNS")]
    pub host_cgroupns: Option<PathBuf>,
    /// Network namespace to open the proc connector socket in (e.g. /host/proc/1/ns/net for a
    /// pod without host networking; the kernel sends process events only to the node's
    /// initial network namespace). Unset: the sensor's own.
    #[arg(long, env = "PROCGUARD_NETLINK_NETNS")]
    pub netlink_netns: Option<PathBuf>,
    /// Nice value of the capture threads (-20..=19; 0 leaves them alone). They race every
    /// process's exit; a negative value wins more races under CPU load. Needs CAP_SYS_NICE.
    #[arg(long, env = "PROCGUARD_CAPTURE_NICE", default_value_t = -10, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub capture_nice: i32,
    /// CA that signed the server certificate (PEM).
    #[arg(long, env = "PROCGUARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This sensor's client certificate (PEM).
    #[arg(long, env = "PROCGUARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This sensor's client key (PEM).
    #[arg(long, env = "PROCGUARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Server name to verify in its certificate (defaults to the URL's host).
    #[arg(long, env = "PROCGUARD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// How often the TLS files (--tls-ca, --tls-cert, --tls-key) are checked for changes;
    /// when they change and load, the sensor reconnects with them (nothing is lost: the spool
    /// replays what was not acknowledged).
    #[arg(long, env = "PROCGUARD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: std::time::Duration,
    /// Admin listen address for /healthz, /readyz and /metrics.
    #[arg(long, env = "PROCGUARD_ADMIN_ADDR", default_value = "127.0.0.1:9091")]
    pub admin_addr: SocketAddr,
    /// Pod metadata source: "kube" (the Kubernetes API, pods on this node only) or "off".
    #[arg(long, env = "PROCGUARD_POD_METADATA", default_value = "off")]
    pub pod_metadata: String,
    /// Kubeconfig for --pod-metadata kube; unset: the in-cluster service account.
    #[arg(long, env = "PROCGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// fanotify FAN_OPEN_EXEC exec identities, which name the executable of processes that
    /// exit before /proc can be read (needs CAP_SYS_ADMIN and Linux 5.0+): "auto" (on wherever
    /// the kernel and privileges allow, else one warning naming what to grant), "on" (refuse to
    /// start without them; a bare --fanotify, or "true"), or "off" ("false").
    #[arg(
        long,
        env = "PROCGUARD_FANOTIFY",
        value_enum,
        default_value = "auto",
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub fanotify: FanotifyMode,
    /// How process events are captured: "auto" (eBPF where the kernel has BTF and the sensor
    /// may load BPF programs, else the netlink proc connector with one log line saying why),
    /// "ebpf" (refuse to start without it), or "netlink".
    #[arg(long, env = "PROCGUARD_CAPTURE", value_enum, default_value = "auto")]
    pub capture: CaptureMode,
    /// eBPF ring buffer size in bytes (a power of two, at least 4096). For tests that need
    /// the ring buffer to overflow.
    #[arg(long, env = "PROCGUARD_EBPF_RING_BYTES", default_value_t = crate::ebpf::RING_BYTES, hide = true)]
    pub ebpf_ring_bytes: u32,
    /// Docker's state directory as the sensor sees it: the name and Compose labels of a
    /// container outside any pod are read from `containers/<id>/config.v2.json` under it
    /// (absent: such containers are identified by their ID).
    #[arg(long, env = "PROCGUARD_DOCKER_ROOT", default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,
    /// Podman's (containers/storage) state directory as the sensor sees it: the name of a
    /// container outside any pod is read from overlay-containers/containers.json under it
    /// (absent: such containers are identified by their ID).
    #[arg(
        long,
        env = "PROCGUARD_PODMAN_ROOT",
        default_value = "/var/lib/containers/storage"
    )]
    pub podman_root: PathBuf,
    /// Write every process event as one JSON object per line to this file ("-" for stdout).
    #[arg(long, env = "PROCGUARD_JSONL")]
    pub jsonl: Option<PathBuf>,
    /// Directory for the sensor's local state.
    #[arg(
        long,
        env = "PROCGUARD_SPOOL_DIR",
        default_value = "./procguard-data/sensor"
    )]
    pub spool_dir: PathBuf,
    /// Bytes of disk the spool of unacknowledged events may use (about 400 bytes an event);
    /// past it the oldest observations are dropped (and counted) before any deviation.
    #[arg(long, env = "PROCGUARD_SPOOL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spool_bytes: u64,
    /// Largest batch of events sent to the server, in bytes. A server that announces its
    /// message limit in its Welcome lowers it (each batch stays 1 KiB under that limit); an
    /// older server that does not is sent batches of at most this. A batch the server still
    /// refuses as too large is sent again in halves; an event too large alone is shrunk.
    #[arg(long, env = "PROCGUARD_MAX_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub max_batch_bytes: usize,
    /// How long repeated executions are counted before they are sent as one summary event
    /// (each standing for its count; a deviation new in the interval and an element new to
    /// learning are always sent at once). Only to a server that accepts summaries; 0 sends
    /// every execution as an event of its own. At most 10m.
    #[arg(long, env = "PROCGUARD_SUMMARY_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub summary_interval: std::time::Duration,
    /// Most distinct executions (summary keys) counted at once; a table that fills is sent
    /// before its interval ends. Each holds one event (about 1 KiB).
    #[arg(long, env = "PROCGUARD_SUMMARY_MAX_ENTRIES", default_value_t = 4096)]
    pub summary_max_entries: usize,
    /// How long a new connection may take to bring the server's Welcome (the stream's answer
    /// and its first message). A server that accepted the connection but does not answer in
    /// time is left and dialled again with backoff; events keep going to the spool meanwhile.
    #[arg(long, env = "PROCGUARD_WELCOME_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub welcome_timeout: std::time::Duration,
    /// Threads of the async side (the uplink, pod metadata, the admin endpoint); capture
    /// has threads of its own. Fixed rather than one per CPU, so that the sensor costs a
    /// 96-core node what it costs a 2-core one. 1 to 16.
    #[arg(long, env = "PROCGUARD_RUNTIME_THREADS", default_value_t = 2)]
    pub runtime_threads: usize,
    /// Log format.
    #[arg(long, env = "PROCGUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Longest `--summary-interval`.
const MAX_SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// Shortest `--welcome-timeout`.
const MIN_WELCOME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Largest `--summary-max-entries`.
const MAX_SUMMARY_ENTRIES: usize = 1_000_000;
/// Largest `--runtime-threads`.
const MAX_RUNTIME_THREADS: usize = 16;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server endpoint and TLS, unless running with JSON-lines output only.
    pub uplink: Option<Uplink>,
    /// Node name.
    pub node_name: String,
    /// Cluster.
    pub cluster: String,
    /// /proc root.
    pub proc_root: PathBuf,
    /// cgroup root.
    pub cgroup_root: PathBuf,
    /// The host's cgroup namespace file.
    pub host_cgroupns: PathBuf,
    /// The node's root filesystem.
    pub host_root: PathBuf,
    /// How cgroup paths are read; [`crate::cgroupns::establish`] decides it at startup
    /// (validation leaves the host's view).
    pub cgroup_view: crate::cgroup::View,
    /// How `cgroup_view` was obtained.
    pub cgroup_mode: crate::cgroupns::Mode,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// JSON-lines output.
    pub jsonl: Option<PathBuf>,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool bound in bytes.
    pub spool_bytes: u64,
    /// Network namespace for the proc connector socket.
    pub netlink_netns: Option<PathBuf>,
    /// Nice value of the capture threads.
    pub capture_nice: i32,
    /// Pod metadata from the Kubernetes API, when enabled.
    pub pod_metadata: Option<PodMetadata>,
    /// fanotify exec identities.
    pub fanotify: FanotifyMode,
    /// The capture backend asked for.
    pub capture: CaptureMode,
    /// eBPF ring buffer size in bytes.
    pub ebpf_ring_bytes: u32,
    /// Docker's state directory (standalone container names).
    pub docker_root: PathBuf,
    /// Podman's state directory (standalone container names).
    pub podman_root: PathBuf,
    /// Worker threads of the async runtime.
    pub runtime_threads: usize,
}

/// Whether the sensor uses fanotify exec identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanotifyMode {
    /// On wherever the kernel and privileges allow; otherwise off, with one warning that says
    /// why and what to grant, and `procguard_sensor_fanotify_enabled` 0.
    Auto,
    /// Required: the sensor does not start without them.
    #[value(alias = "true")]
    On,
    /// Off.
    #[value(alias = "false")]
    Off,
}

/// How process events are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureMode {
    /// eBPF where possible, else netlink with one log line saying why.
    Auto,
    /// eBPF only: the sensor does not start without it.
    Ebpf,
    /// The netlink proc connector only.
    Netlink,
}

/// Where pod metadata comes from.
#[derive(Debug, Clone)]
pub struct PodMetadata {
    /// Kubeconfig file; `None` for the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// URL.
    pub url: String,
    /// TLS settings, following their files.
    pub tls: procguard_runtime::tls::Reloading<tonic::transport::ClientTlsConfig>,
    /// How often the TLS files are checked for changes.
    pub tls_reload_interval: std::time::Duration,
    /// `--max-batch-bytes`.
    pub max_batch_bytes: usize,
    /// `--summary-interval`.
    pub summary_interval: std::time::Duration,
    /// `--summary-max-entries`.
    pub summary_max_entries: usize,
    /// `--welcome-timeout`.
    pub welcome_timeout: std::time::Duration,
}

impl Config {
    /// Checks every value and loads the TLS files.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let node_name = match &self.node_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| ConfigError("--node-name (NODE_NAME) is required".into()))?,
        };
        if !self.proc_root.join("self").exists() && !self.proc_root.join("1").exists() {
            return Err(ConfigError(format!(
                "--proc-root '{}' does not look like a proc filesystem (no 'self' or '1' inside)",
                self.proc_root.display()
            )));
        }
        if !self.ebpf_ring_bytes.is_power_of_two() || self.ebpf_ring_bytes < 4096 {
            return Err(ConfigError(format!(
                "--ebpf-ring-bytes must be a power of two of at least 4096; got {}",
                self.ebpf_ring_bytes
            )));
        }
        if !self.cgroup_root.is_dir() {
            return Err(ConfigError(format!(
                "--cgroup-root '{}' is not a directory",
                self.cgroup_root.display()
            )));
        }
        for (flag, root) in [
            ("--docker-root", &self.docker_root),
            ("--podman-root", &self.podman_root),
        ] {
            if !root.is_absolute() {
                return Err(ConfigError(format!(
                    "{flag} must be an absolute path (the runtime's state directory as the sensor sees it, e.g. /var/lib/docker); got '{}'",
                    root.display()
                )));
            }
        }
        if let Some(ns) = &self.netlink_netns {
            // Another process's ns/ links are guarded by ptrace access checks, so "cannot
            // read" usually means a missing capability, not a missing file: say which.
            match std::fs::metadata(ns) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(ConfigError(format!(
                        "--netlink-netns '{}' cannot be opened (permission denied); another \
                         process's namespace needs CAP_SYS_PTRACE (and AppArmor unconfined)",
                        ns.display()
                    )))
                }
                Err(e) => {
                    return Err(ConfigError(format!(
                        "--netlink-netns '{}' cannot be read ({e}); mount the host's /proc and \
                         point at <proc>/1/ns/net",
                        ns.display()
                    )))
                }
            }
        }
        let pod_metadata = match self.pod_metadata.as_str() {
            "off" => None,
            "kube" => {
                match &self.kubeconfig {
                    Some(k) if !k.is_file() => {
                        return Err(ConfigError(format!(
                            "--kubeconfig '{}' is not a file; point it at a kubeconfig, or unset it to use the in-cluster service account",
                            k.display()
                        )))
                    }
                    Some(_) => {}
                    None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() => {
                        return Err(ConfigError(
                            "--pod-metadata kube needs --kubeconfig (PROCGUARD_KUBECONFIG) outside a cluster (KUBERNETES_SERVICE_HOST is not set)".into(),
                        ))
                    }
                    None => {}
                }
                Some(PodMetadata {
                    kubeconfig: self.kubeconfig.clone(),
                })
            }
            other => {
                return Err(ConfigError(format!(
                    "--pod-metadata must be 'kube' or 'off'; got '{other}'"
                )))
            }
        };
        if self.spool_bytes < crate::spool::MIN_SPOOL_BYTES {
            return Err(ConfigError(format!(
                "--spool-bytes must be at least {} (1 MiB); got {}",
                crate::spool::MIN_SPOOL_BYTES,
                self.spool_bytes
            )));
        }
        if self.max_batch_bytes < crate::uplink::MIN_BATCH_BYTES {
            return Err(ConfigError(format!(
                "--max-batch-bytes must be at least {} (16 KiB); got {}",
                crate::uplink::MIN_BATCH_BYTES,
                self.max_batch_bytes
            )));
        }
        if self.summary_interval > MAX_SUMMARY_INTERVAL {
            return Err(ConfigError(format!(
                "--summary-interval must be at most 10m (repeats are held that long); got {}",
                humantime::format_duration(self.summary_interval)
            )));
        }
        if !(1..=MAX_SUMMARY_ENTRIES).contains(&self.summary_max_entries) {
            return Err(ConfigError(format!(
                "--summary-max-entries must be 1 to {MAX_SUMMARY_ENTRIES}; got {}",
                self.summary_max_entries
            )));
        }
        if !(1..=MAX_RUNTIME_THREADS).contains(&self.runtime_threads) {
            return Err(ConfigError(format!(
                "--runtime-threads must be 1 to {MAX_RUNTIME_THREADS}; got {}",
                self.runtime_threads
            )));
        }
        if self.welcome_timeout < MIN_WELCOME_TIMEOUT {
            return Err(ConfigError(format!(
                "--welcome-timeout must be at least 1s (a loaded server needs time to answer); got {}",
                humantime::format_duration(self.welcome_timeout)
            )));
        }
        let uplink = match &self.server {
            None if self.jsonl.is_some() => None,
            None => {
                return Err(ConfigError(
                    "--server (PROCGUARD_SERVER) is required, unless --jsonl is given for local output only".into(),
                ))
            }
            Some(url) => {
                let Some(rest) = url.strip_prefix("https://") else {
                    return Err(ConfigError(format!(
                        "--server must be an https:// URL; got '{url}'"
                    )));
                };
                let host = rest
                    .split(['/', ':'])
                    .next()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| ConfigError(format!("--server '{url}' has no host")))?;
                let need = |v: &Option<PathBuf>, flag: &str| {
                    v.clone().ok_or_else(|| {
                        ConfigError(format!("{flag} is required to talk to the server over mTLS"))
                    })
                };
                let ca = need(&self.tls_ca, "--tls-ca")?;
                let cert = need(&self.tls_cert, "--tls-cert")?;
                let key = need(&self.tls_key, "--tls-key")?;
                let name = self.tls_server_name.clone().unwrap_or_else(|| host.to_string());
                let tls = procguard_runtime::tls::Reloading::load(
                    procguard_runtime::tls::TlsFiles { cert, key, ca },
                    procguard_runtime::tls::Labels {
                        cert: "client",
                        ca: "ca",
                    },
                    move |m| procguard_runtime::tls::client_tls(m, &name),
                )?;
                if self.tls_reload_interval.is_zero() {
                    return Err(ConfigError(
                        "--tls-reload-interval must be greater than zero".into(),
                    ));
                }
                Some(Uplink {
                    url: url.clone(),
                    tls,
                    tls_reload_interval: self.tls_reload_interval,
                    max_batch_bytes: self.max_batch_bytes,
                    summary_interval: self.summary_interval,
                    summary_max_entries: self.summary_max_entries,
                    welcome_timeout: self.welcome_timeout,
                })
            }
        };
        Ok(Settings {
            uplink,
            node_name,
            cluster: self.cluster.clone(),
            proc_root: self.proc_root.clone(),
            cgroup_root: self.cgroup_root.clone(),
            host_cgroupns: self
                .host_cgroupns
                .clone()
                .unwrap_or_else(|| self.proc_root.join("1/ns/cgroup")),
            host_root: self
                .host_root
                .clone()
                .unwrap_or_else(|| self.proc_root.join("1/root")),
            cgroup_view: crate::cgroup::View::host(),
            cgroup_mode: crate::cgroupns::Mode::Host,
            admin_addr: self.admin_addr,
            jsonl: self.jsonl.clone(),
            spool_dir: self.spool_dir.clone(),
            spool_bytes: self.spool_bytes,
            netlink_netns: self.netlink_netns.clone(),
            capture_nice: self.capture_nice,
            pod_metadata,
            fanotify: self.fanotify,
            capture: self.capture,
            ebpf_ring_bytes: self.ebpf_ring_bytes,
            docker_root: self.docker_root.clone(),
            podman_root: self.podman_root.clone(),
            runtime_threads: self.runtime_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn validate(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["procguard-sensor", "--node-name", "n1", "--jsonl", "-"];
        all.extend(args);
        Config::try_parse_from(all).unwrap().validate()
    }

    #[test]
    fn pod_metadata_needs_a_usable_source() {
        let err =
            validate(&["--pod-metadata", "kube", "--kubeconfig", "/nonexistent/kc"]).unwrap_err();
        assert!(
            err.0
                .contains("--kubeconfig '/nonexistent/kc' is not a file"),
            "{}",
            err.0
        );
        let err = validate(&["--pod-metadata", "yes"]).unwrap_err();
        assert!(
            err.0.contains("must be 'kube' or 'off'; got 'yes'"),
            "{}",
            err.0
        );
        let kc = tempfile::NamedTempFile::new().unwrap();
        let ok = validate(&[
            "--pod-metadata",
            "kube",
            "--kubeconfig",
            kc.path().to_str().unwrap(),
            "--fanotify",
        ])
        .unwrap();
        assert_eq!(
            ok.pod_metadata.and_then(|p| p.kubeconfig).as_deref(),
            Some(kc.path())
        );
        assert_eq!(
            ok.fanotify,
            FanotifyMode::On,
            "a bare --fanotify requires it"
        );
        // On by default where possible; the DaemonSet's old "true" and an explicit off.
        assert_eq!(validate(&[]).unwrap().fanotify, FanotifyMode::Auto);
        assert_eq!(
            validate(&["--fanotify", "false"]).unwrap().fanotify,
            FanotifyMode::Off
        );
        assert_eq!(
            validate(&["--fanotify=true"]).unwrap().fanotify,
            FanotifyMode::On
        );
        assert!(validate(&[]).unwrap().pod_metadata.is_none());
    }

    #[test]
    fn capture_is_auto_by_default_and_the_ring_a_power_of_two() {
        let ok = validate(&[]).unwrap();
        assert_eq!(ok.capture, CaptureMode::Auto);
        assert_eq!(ok.ebpf_ring_bytes, crate::ebpf::RING_BYTES);
        assert_eq!(
            validate(&["--capture", "netlink"]).unwrap().capture,
            CaptureMode::Netlink
        );
        for bad in ["5000", "2048"] {
            let err = validate(&["--ebpf-ring-bytes", bad]).unwrap_err();
            assert!(err.0.contains("power of two of at least 4096"), "{}", err.0);
        }
        assert_eq!(
            validate(&["--ebpf-ring-bytes", "16384"])
                .unwrap()
                .ebpf_ring_bytes,
            16384
        );
    }

    #[test]
    fn the_runtime_has_a_fixed_number_of_threads_within_bounds() {
        assert_eq!(validate(&[]).unwrap().runtime_threads, 2);
        for bad in ["0", "17"] {
            let err = validate(&["--runtime-threads", bad]).unwrap_err();
            assert!(
                err.0.contains("--runtime-threads must be 1 to 16"),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            validate(&["--runtime-threads", "1"])
                .unwrap()
                .runtime_threads,
            1
        );
    }

    #[test]
    fn the_welcome_timeout_is_at_least_a_second() {
        for bad in ["0s", "500ms"] {
            let err = validate(&["--welcome-timeout", bad]).unwrap_err();
            assert!(
                err.0.contains("--welcome-timeout must be at least 1s"),
                "{}",
                err.0
            );
        }
        assert!(validate(&["--welcome-timeout", "1s"]).is_ok());
        let err = Config::try_parse_from([
            "procguard-sensor",
            "--node-name",
            "n1",
            "--welcome-timeout",
            "soon",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--welcome-timeout"), "{err}");
    }

    #[test]
    fn runtime_state_roots_must_be_absolute() {
        let err = validate(&["--docker-root", "var/lib/docker"]).unwrap_err();
        assert!(
            err.0.contains("--docker-root must be an absolute path"),
            "{}",
            err.0
        );
        let err = validate(&["--podman-root", "storage"]).unwrap_err();
        assert!(
            err.0.contains("--podman-root must be an absolute path"),
            "{}",
            err.0
        );
        // Absent directories are fine: that runtime is simply not on this host.
        let ok = validate(&["--docker-root", "/nonexistent/docker"]).unwrap();
        assert_eq!(ok.docker_root, std::path::Path::new("/nonexistent/docker"));
        assert_eq!(
            ok.podman_root,
            std::path::Path::new("/var/lib/containers/storage")
        );
    }
}
