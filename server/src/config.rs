//! Server configuration: flags (each with an environment variable) and their validation.
//! Validation reads the TLS files and the tokens file, so a mistake exits with code 64
//! before any port is bound.

use crate::auth::Tokens;
use procguard_core::baseline::LearningPolicy;
use procguard_core::policy::{Policies, PolicyFile};
use procguard_runtime::telemetry::LogFormat;
use procguard_runtime::ConfigError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Most records `--stream-tail-records` accepts: a record is about 1 KiB in memory.
const MAX_TAIL_RECORDS: usize = 1 << 20;

/// Flags of `procguard-server`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "procguard-server",
    version,
    about = "procguard server: learns baselines from sensors and serves the review API"
)]
pub struct Config {
    /// gRPC listen address (sensors with mTLS, API clients with TLS and a bearer token).
    #[arg(long, env = "PROCGUARD_GRPC_ADDR", default_value = "127.0.0.1:8443")]
    pub grpc_addr: SocketAddr,
    /// Admin listen address for /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "PROCGUARD_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Directory of the embedded sled database.
    #[arg(
        long,
        env = "PROCGUARD_DATA_DIR",
        default_value = "./procguard-data/server"
    )]
    pub data_dir: PathBuf,
    /// Server certificate (PEM).
    #[arg(long, env = "PROCGUARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "PROCGUARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs sensor client certificates (PEM).
    #[arg(long, env = "PROCGUARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files (--tls-cert, --tls-key, --tls-client-ca) are checked for
    /// changes; changed files that load are used for new connections without a restart.
    #[arg(long, env = "PROCGUARD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
    /// API tokens: YAML with sha256 hashes bound to roles.
    #[arg(long, env = "PROCGUARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Development mode: create (if absent) and use a self-signed CA, certificates and tokens in
    /// this directory. Overrides the --tls-* and --tokens-file flags. Not for production.
    #[arg(long, env = "PROCGUARD_DEV_PKI")]
    pub dev_pki: Option<PathBuf>,
    /// Node names to issue sensor certificates for in --dev-pki mode (comma-separated).
    #[arg(
        long,
        env = "PROCGUARD_DEV_NODES",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub dev_nodes: Vec<String>,
    /// Learning lasts at least this long (e.g. "1h", "90s").
    #[arg(long, env = "PROCGUARD_LEARNING_MIN", default_value = "1h", value_parser = humantime::parse_duration)]
    pub learning_min: Duration,
    /// Learning ends after this long regardless of stability.
    #[arg(long, env = "PROCGUARD_LEARNING_MAX", default_value = "24h", value_parser = humantime::parse_duration)]
    pub learning_max: Duration,
    /// After the minimum, learning ends once no new executable appeared for this long.
    #[arg(long, env = "PROCGUARD_LEARNING_QUIET", default_value = "30m", value_parser = humantime::parse_duration)]
    pub learning_quiet: Duration,
    /// ...and at least this many distinct pods (replicas or restarts) were observed.
    #[arg(long, env = "PROCGUARD_LEARNING_MIN_PODS", default_value_t = 2)]
    pub learning_min_pods: usize,
    /// Enforce baselines when learning ends instead of waiting for approval.
    #[arg(long, env = "PROCGUARD_AUTO_ENFORCE", default_value_t = false)]
    pub auto_enforce: bool,
    /// How long a new image digest reopens learning for new elements of an approved baseline.
    #[arg(long, env = "PROCGUARD_RELEARN_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub relearn_window: Duration,
    /// Elements learned in a re-learning window wait for a person's review instead of being
    /// allowed at once (per namespace or selector: `relearning: review` in the policy file).
    #[arg(long, env = "PROCGUARD_RELEARN_REVIEW", default_value_t = false)]
    pub relearn_review: bool,
    /// Learning policy per namespace or label selector (YAML `rules:`; see README).
    #[arg(long, env = "PROCGUARD_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// Client-certificate names shared by a whole sensor fleet (comma-separated). A sensor
    /// presenting one of these may report for any node; every such stream is logged. Leave
    /// empty to bind each sensor to the node its own certificate names (the stronger setting).
    #[arg(long, env = "PROCGUARD_SENSOR_FLEET_NAMES", value_delimiter = ',')]
    pub sensor_fleet_names: Vec<String>,
    /// Check every sensor report against the Kubernetes API: "on" watches all pods (RBAC:
    /// get/list/watch pods) and refuses a report of another node's pod, of another workload,
    /// or of an image the pod does not run; "off" trusts each sensor certificate for its
    /// node's reports (docs/deploy.md, "Trust model").
    #[arg(long, env = "PROCGUARD_KUBE", value_enum, default_value = "off")]
    pub kube: KubeMode,
    /// Kubeconfig for --kube on; unset: the in-cluster service account.
    #[arg(long, env = "PROCGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Records of the SIEM log (incident changes, deviations, audit) older than this are
    /// removed; a subscriber asking for one gets OUT_OF_RANGE. Sensor event IDs (replay
    /// idempotency) are remembered at least this long.
    #[arg(long, env = "PROCGUARD_RETENTION_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention_age: Duration,
    /// Past this many bytes, the oldest records of the SIEM log (with the deviations stored
    /// under their cursors) are removed; the event-ID index is bounded by the same size.
    #[arg(long, env = "PROCGUARD_RETENTION_BYTES", default_value_t = 1 << 30)]
    pub retention_bytes: u64,
    /// Audit entries older than this are removed from the audit log (`procguardctl audit
    /// list`; the SIEM stream's copies follow --retention-age).
    #[arg(long, env = "PROCGUARD_AUDIT_RETENTION_AGE", default_value = "365d", value_parser = humantime::parse_duration)]
    pub audit_retention_age: Duration,
    /// Past this many bytes of audit entries, the oldest are removed (each entry's fields
    /// are bounded, about 1 KiB at most, so the default keeps about a quarter of a million).
    #[arg(long, env = "PROCGUARD_AUDIT_RETENTION_BYTES", default_value_t = crate::store::Retention::AUDIT_BYTES)]
    pub audit_retention_bytes: u64,
    /// Closed incidents (resolved or allowed) last changed longer ago than this are removed;
    /// open and acknowledged incidents are kept whatever their age.
    #[arg(long, env = "PROCGUARD_INCIDENT_RETENTION_AGE", default_value = "180d", value_parser = humantime::parse_duration)]
    pub incident_retention_age: Duration,
    /// Past this many closed incidents, the longest closed are removed.
    #[arg(long, env = "PROCGUARD_MAX_CLOSED_INCIDENTS", default_value_t = crate::store::Retention::INCIDENTS_CLOSED)]
    pub max_closed_incidents: u64,
    /// The record of a sensor not heard from for this long is removed (its node is taken to be
    /// gone: scaled down or replaced); it no longer counts toward --max-sensors.
    #[arg(long, env = "PROCGUARD_SENSOR_RETENTION_AGE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub sensor_retention_age: Duration,
    /// Newest durable records held in memory, shared by every SIEM subscription; a
    /// subscriber further behind reads from disk. 0 disables the shared tail.
    #[arg(long, env = "PROCGUARD_STREAM_TAIL_RECORDS", default_value_t = crate::store::DEFAULT_TAIL_RECORDS)]
    pub stream_tail_records: usize,
    /// How often retention runs.
    #[arg(long, env = "PROCGUARD_RETENTION_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// A sensor that has not reported (events or health, sent every 10 s) for longer than this
    /// raises a "sensor blind" incident.
    #[arg(long, env = "PROCGUARD_SENSOR_SILENCE", default_value = "2m", value_parser = humantime::parse_duration)]
    pub sensor_silence: Duration,
    /// Events a sensor's health report must show lost since its previous report (execs with
    /// no event, and events the kernel never delivered, together) to raise or extend its
    /// "sensor blind" incident. 1: every loss is a finding (a loss is never normal); raise it
    /// only for nodes known to lose a few short-lived execs to the proc connector's race. Every
    /// loss is counted in the sensor's metrics whatever this says.
    #[arg(long, env = "PROCGUARD_SENSOR_BLIND_LOSSES", default_value_t = 1)]
    pub sensor_blind_losses: u64,
    /// On SIGTERM or SIGINT, how long open streams get to end before their connections are
    /// closed (a SIEM subscriber that stopped reading would otherwise hold shutdown forever).
    /// Everything acknowledged is already on disk.
    #[arg(long, env = "PROCGUARD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, env = "PROCGUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Limits (docs/LIMITS.md).
    #[command(flatten)]
    pub limits: crate::limits::LimitFlags,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// sled directory.
    pub data_dir: PathBuf,
    /// Server TLS, following its files.
    pub tls: procguard_runtime::tls::Reloading<tokio_rustls::rustls::ServerConfig>,
    /// How often the TLS files are checked for changes.
    pub tls_reload_interval: Duration,
    /// API tokens.
    pub tokens: Tokens,
    /// When learning ends, per namespace or selector.
    pub policies: Policies,
    /// Certificate names that may report for any node.
    pub sensor_fleet_names: Vec<String>,
    /// With `--kube on`: the kubeconfig (`None`: in-cluster) for placement checks.
    pub kube: Option<Option<PathBuf>>,
    /// Limits.
    pub limits: crate::limits::LimitSettings,
    /// SIEM log retention.
    pub retention: crate::store::Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Silence that raises a sensor-blind incident.
    pub sensor_silence: Duration,
    /// Events lost in one health report's interval that raise a sensor-blind incident.
    pub sensor_blind_losses: u64,
    /// Records in the shared tail of the SIEM stream.
    pub stream_tail_records: usize,
    /// How long shutdown waits for open streams before closing their connections.
    pub shutdown_grace: Duration,
}

impl Config {
    fn policies(&self) -> Result<Policies, ConfigError> {
        let default = LearningPolicy {
            min_window: self.learning_min,
            max_window: self.learning_max,
            quiet_period: self.learning_quiet,
            min_pods: self.learning_min_pods,
            auto_enforce: self.auto_enforce,
            relearn_window: self.relearn_window,
            // Per namespace or selector in the policy file (`exec_sessions: record-only`).
            exec_session_alerts: true,
            relearn_review: self.relearn_review,
        };
        let Some(path) = &self.policy_file else {
            return Ok(Policies::new(default));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read --policy-file '{}': {e}",
                path.display()
            ))
        })?;
        let file: PolicyFile = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError(format!("--policy-file '{}': {e}", path.display())))?;
        Policies::compile(default, &file)
            .map_err(|e| ConfigError(format!("--policy-file '{}': {e}", path.display())))
    }

    /// Checks every value and loads every file the server needs.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let (cert, key, ca, tokens) = if let Some(dir) = &self.dev_pki {
            if !dir.join("server.crt").exists() {
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                if !self.grpc_addr.ip().is_unspecified() {
                    names.push(self.grpc_addr.ip().to_string());
                }
                names.dedup();
                procguard_runtime::pki::init(dir, &names, &self.dev_nodes).map_err(|e| {
                    ConfigError(format!(
                        "--dev-pki: cannot create development PKI in '{}': {e}",
                        dir.display()
                    ))
                })?;
                tracing::warn!(
                    message = "Created a development PKI; do not use it in production.",
                    dir = %dir.display()
                );
            }
            (
                dir.join("server.crt"),
                dir.join("server.key"),
                dir.join("ca.crt"),
                dir.join("tokens.yaml"),
            )
        } else {
            let need = |v: &Option<PathBuf>, flag: &str| {
                v.clone().ok_or_else(|| {
                    ConfigError(format!(
                        "{flag} is required (or use --dev-pki DIR for a development PKI)"
                    ))
                })
            };
            (
                need(&self.tls_cert, "--tls-cert")?,
                need(&self.tls_key, "--tls-key")?,
                need(&self.tls_client_ca, "--tls-client-ca")?,
                need(&self.tokens_file, "--tokens-file")?,
            )
        };
        let tls = procguard_runtime::tls::Reloading::load(
            procguard_runtime::tls::TlsFiles { cert, key, ca },
            procguard_runtime::tls::Labels {
                cert: "server",
                ca: "client-ca",
            },
            procguard_runtime::tls::server_tls,
        )?;
        if self.tls_reload_interval.is_zero() {
            return Err(ConfigError(
                "--tls-reload-interval must be greater than zero".into(),
            ));
        }
        let tokens = Tokens::load(&tokens)?;
        if self.learning_min > self.learning_max {
            return Err(ConfigError(format!(
                "--learning-min ({}) must not exceed --learning-max ({})",
                humantime::format_duration(self.learning_min),
                humantime::format_duration(self.learning_max)
            )));
        }
        // Port 0 asks the OS for any free port, a different one for each listener.
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError(format!(
                "--grpc-addr and --admin-addr are both {}; give them different ports",
                self.grpc_addr
            )));
        }
        let limits = self.limits.validate()?;
        if self.retention_interval.is_zero() || self.sensor_silence.is_zero() {
            return Err(ConfigError(
                "--retention-interval and --sensor-silence must be greater than zero".into(),
            ));
        }
        if self.sensor_blind_losses == 0 {
            return Err(ConfigError(
                "--sensor-blind-losses must be at least 1 (1: every lost event raises the sensor-blind incident)".into(),
            ));
        }
        if self.stream_tail_records > MAX_TAIL_RECORDS {
            return Err(ConfigError(format!(
                "--stream-tail-records is {}; at most {MAX_TAIL_RECORDS} (about 1 GiB of memory) is accepted",
                self.stream_tail_records
            )));
        }
        if self.retention_age.is_zero() {
            return Err(ConfigError(
                "--retention-age must be greater than zero (it is also how long replayed sensor events are recognised)".into(),
            ));
        }
        Ok(Settings {
            limits,
            stream_tail_records: self.stream_tail_records,
            shutdown_grace: self.shutdown_grace,
            retention: crate::store::Retention {
                max_age: self.retention_age,
                max_bytes: self.retention_bytes,
                audit_max_age: self.audit_retention_age,
                audit_max_bytes: self.audit_retention_bytes,
                incident_max_age: self.incident_retention_age,
                incident_max_closed: self.max_closed_incidents,
                sensor_max_age: self.sensor_retention_age,
            },
            retention_interval: self.retention_interval,
            sensor_silence: self.sensor_silence,
            sensor_blind_losses: self.sensor_blind_losses,
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            data_dir: self.data_dir.clone(),
            tls,
            tls_reload_interval: self.tls_reload_interval,
            tokens,
            policies: self.policies()?,
            sensor_fleet_names: self
                .sensor_fleet_names
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            kube: match self.kube {
                KubeMode::On => {
                    if self.kubeconfig.is_none()
                        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
                    {
                        return Err(ConfigError(
                            "--kube on needs --kubeconfig (PROCGUARD_KUBECONFIG) outside a cluster (KUBERNETES_SERVICE_HOST is not set)".into(),
                        ));
                    }
                    if let Some(path) = self.kubeconfig.as_ref().filter(|p| !p.is_file()) {
                        return Err(ConfigError(format!(
                            "--kubeconfig '{}' is not a file; point it at a kubeconfig, or unset it to use the in-cluster service account",
                            path.display()
                        )));
                    }
                    Some(self.kubeconfig.clone())
                }
                KubeMode::Off => None,
            },
        })
    }
}

/// Whether sensor reports are checked against the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    /// Watch pods and check every report that names one.
    On,
    /// Check nothing.
    Off,
}
