//! Operational plumbing every procguard binary shares.
//!
//! - [`shutdown`]: one cancellation token that SIGTERM and SIGINT trip.
//! - [`telemetry`]: `tracing` setup, human-readable or JSON.
//! - [`admin`]: `/healthz`, `/readyz` and Prometheus `/metrics` on a plain-HTTP admin port,
//!   with the binary's own metrics and those of [`self_metrics`] (build, process, certificates).
//! - [`tls`]: loading and checking PEM material before any port is bound.
//! - [`pki`]: a development CA with server and sensor certificates, and API tokens.
//! - [`repeated`]: warnings that can repeat, logged once per interval with a count.
//! - `kube` (feature `kube`): the Kubernetes client and a pod's workload, for the sensor's
//!   pod metadata and the server's placement checks.
//! - [`ConfigError`]: invalid configuration, which binaries turn into exit code 64.

pub mod admin;
#[cfg(feature = "kube")]
pub mod kube;
pub mod pki;
pub mod repeated;
pub mod self_metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// Exit code for invalid configuration (EX_USAGE in sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Invalid configuration, found before any port is bound.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Prints the error and exits with [`EXIT_CONFIG`].
    pub fn exit(&self, binary: &str) -> ! {
        eprintln!("{binary}: invalid configuration: {}", self.0);
        std::process::exit(EXIT_CONFIG)
    }
}
