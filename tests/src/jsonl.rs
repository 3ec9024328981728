//! A `procguard-sensor` running without a server, writing JSON lines to a file, and helpers to
//! wait for the events it writes. It runs in the host's cgroup namespace or, as on a cgroup-v2
//! node, in a private one ([`crate::cgroupns`]).

use crate::cgroupns::{self, CgroupNs, PrivateCgroupNs};
use crate::{free_port, wait_for, Proc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A sensor writing JSON lines.
#[derive(Debug)]
pub struct JsonlSensor {
    /// The process.
    pub proc: Proc,
    /// Its JSON-lines file.
    pub out: PathBuf,
    /// Its admin port.
    pub admin_port: u16,
    /// The cgroups rooting its private cgroup namespace, if it runs in one. Declared after
    /// `proc`, so the sensor is stopped before they are removed.
    pub cgroupns: Option<PrivateCgroupNs>,
}

impl JsonlSensor {
    /// Starts a sensor for `node` with `extra` flags in the host's cgroup namespace and waits
    /// for its initial `/proc` scan.
    pub fn start(work: &Path, node: &str, extra: &[&str]) -> Self {
        Self::start_in(CgroupNs::Host, work, node, extra)
    }

    /// Starts a sensor for `node` with `extra` flags in cgroup namespace `ns` and waits for its
    /// initial `/proc` scan. In [`CgroupNs::Private`] it runs as on a cgroup-v2 node
    /// ([`cgroupns::sensor_command`]), and this checks that its namespace is not the host's.
    pub fn start_in(ns: CgroupNs, work: &Path, node: &str, extra: &[&str]) -> Self {
        let out = work.join(format!("events-{node}.jsonl"));
        let admin_port = free_port();
        let (mut cmd, cgroupns) =
            cgroupns::sensor_command(ns).expect("make the sensor's cgroup namespace");
        cmd.args(["--node-name", node, "--jsonl"])
            .arg(&out)
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--spool-dir")
            .arg(work.join("spool"))
            .args(extra);
        let proc = Proc::spawn(cmd, work.join(format!("sensor-{node}.log")));
        let s = Self {
            proc,
            out,
            admin_port,
            cgroupns,
        };
        assert!(
            wait_for(Duration::from_secs(20), || s
                .proc
                .log_text()
                .contains("Initial /proc scan done")
                .then_some(()))
            .is_some(),
            "sensor did not start; log:\n{}",
            s.proc.log_text()
        );
        if ns == CgroupNs::Private {
            // It started in a namespace of its own (it enters the host's only from another
            // one) and entered the host's through `--host-cgroupns`, as the DaemonSet's sensor
            // does. Having entered it, every thread of the sensor is in the host's namespace,
            // so its namespace now says nothing about where it started.
            assert!(
                s.proc
                    .log_text()
                    .contains("Entered the host's cgroup namespace"),
                "the sensor should have started in a cgroup namespace of its own and entered the host's; log:\n{}",
                s.proc.log_text()
            );
        }
        s
    }

    /// Every event written so far.
    pub fn events(&self) -> Vec<Value> {
        crate::repo::jsonl(&self.out)
    }

    /// Waits up to `timeout` for an event matching `pred`; panics with the sensor log if none.
    pub fn wait_event(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(timeout, || self.events().into_iter().find(|e| pred(e))).unwrap_or_else(|| {
            panic!(
                "no event for {what} within {timeout:?}; sensor log:\n{}",
                self.proc.log_text()
            )
        })
    }

    /// One metric from the sensor's /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        crate::metric(self.admin_port, name)
    }
}

/// Whether an event's argv contains `word`.
pub fn argv_has(ev: &Value, word: &str) -> bool {
    ev["argv"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(word)))
}
