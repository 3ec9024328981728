//! Metrics every procguard binary exports about itself, by Prometheus's conventions and outside
//! the binary's own prefix:
//!
//! - `procguard_build_info{version}`: 1, with the version as a label;
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//!   `process_start_time_seconds`: read from the kernel at each scrape;
//! - `procguard_tls_certificate_expiry_timestamp_seconds{certificate}`: the earliest `notAfter`
//!   of each certificate file this process loaded, as it loaded it (what the process presents
//!   or trusts; a reload ([`crate::tls::reload`]) replaces it with the new files' value);
//! - `procguard_tls_reloads_total{result}`: reloads of changed TLS files, `ok` (in use from
//!   then on) or `failed` (kept the material in use; the log says why).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// TLS reloads that succeeded and that failed (`procguard_tls_reloads_total{result}`).
static TLS_RELOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one reload of changed TLS files.
pub(crate) fn record_reload(ok: bool) {
    TLS_RELOADS[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// Certificates loaded by this process: (which, earliest notAfter in seconds since the epoch).
static LOADED_CERTIFICATES: Mutex<Vec<(&'static str, i64)>> = Mutex::new(Vec::new());

/// Records the expiry of a certificate file loaded as `which` (`server`, `client`, `ca`,
/// `client-ca`): the earliest `notAfter` among its certificates. A file that does not parse
/// records nothing here; loading it fails elsewhere with the reason.
pub(crate) fn record_certificate(which: &'static str, pem: &str) {
    let Some(not_after) = earliest_not_after(pem) else {
        return;
    };
    let mut loaded = LOADED_CERTIFICATES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(w, _)| *w != which);
    loaded.push((which, not_after));
}

/// The earliest `notAfter` (seconds since the epoch) of the certificates in `pem`.
pub fn earliest_not_after(pem: &str) -> Option<i64> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        })
        .min()
}

/// The registry of these metrics (no prefix: `process_*` are named by convention).
pub(crate) fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(
        "procguard_build",
        "Version of this procguard binary",
        prometheus_client::metrics::info::Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    r.register_collector(Box::new(SelfCollector));
    r
}

#[derive(Debug)]
struct SelfCollector;

/// What the kernel says about this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessFacts {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessFacts {
    fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok();
        let cpu_seconds = usage.map(|u| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        Self {
            cpu_seconds,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds,
            start_time_seconds: start_time_seconds(),
        }
    }
}

/// The process's start: the boot time (`btime` of /proc/stat) plus its start in clock ticks
/// after boot (field 22 of /proc/self/stat).
fn start_time_seconds() -> Option<f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as f64;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let started: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    Some(boot + started / ticks)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<N>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let Some(v) = value else { return Ok(()) };
    let metric = ConstGauge::new(v);
    metric.encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

impl Collector for SelfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let facts = ProcessFacts::read();
        if let Some(cpu) = facts.cpu_seconds {
            ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            facts.resident_bytes.map(|b| b as i64),
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            facts.virtual_bytes.map(|b| b as i64),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            facts.open_fds.map(|n| n as i64),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Limit of open file descriptors (soft)",
            None,
            facts.max_fds.map(|n| n.min(i64::MAX as u64) as i64),
        )?;
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            facts.start_time_seconds,
        )?;
        let loaded = LOADED_CERTIFICATES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !loaded.is_empty() {
            let mut family = encoder.encode_descriptor(
                "procguard_tls_certificate_expiry_timestamp",
                "Earliest notAfter of each certificate file this process loaded (seconds since the epoch)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (which, not_after) in loaded {
                let labels = [("certificate", which)];
                ConstGauge::new(not_after).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "procguard_tls_reloads",
            "Reloads of changed TLS files: ok (in use from then on) or failed (the material in use was kept)",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("ok", &TLS_RELOADS[0]), ("failed", &TLS_RELOADS[1])] {
            ConstCounter::new(n.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_describes_this_process() {
        let f = ProcessFacts::read();
        assert!(f.cpu_seconds.is_some_and(|c| c >= 0.0), "{f:?}");
        assert!(f.resident_bytes.is_some_and(|b| b > 1024 * 1024), "{f:?}");
        assert!(f.open_fds.is_some_and(|n| n >= 3), "{f:?}");
        assert!(f.max_fds.is_some_and(|n| n >= f.open_fds.unwrap()), "{f:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = f.start_time_seconds.unwrap();
        // This test process started within the last hour, and not in the future.
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn the_scrape_names_follow_prometheus_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::init(dir.path(), &["localhost".into()], &["node-a".into()]).unwrap();
        let pem = std::fs::read_to_string(pki.dir.join("ca.crt")).unwrap();
        record_certificate("ca", &pem);
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry()).unwrap();
        for name in [
            "procguard_build_info{version=",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "procguard_tls_certificate_expiry_timestamp_seconds{certificate=\"ca\"} ",
        ] {
            assert!(body.contains(name), "{name} missing:\n{body}");
        }
        // The development CA is valid for a year from now.
        let expiry = earliest_not_after(&pem).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(expiry > now + 300 * 86_400, "{expiry} vs {now}");
        assert_eq!(earliest_not_after("not a certificate"), None);
    }
}
