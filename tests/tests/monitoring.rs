//! The monitoring component (`deploy/overlays/production/monitoring`), as an operator installs
//! it:
//!
//! - `kubectl kustomize` renders it with the production overlay: two PodMonitors on the
//!   `admin` port of the server's and the sensor's pods, the PrometheusRule, the dashboard
//!   ConfigMap (the manifest rules themselves run in deploy_manifests.rs on the same variant);
//! - the rendered rules pass `promtool check rules`, and `promtool test rules` shows each
//!   alert firing when its condition holds and silent on a healthy node;
//! - every metric the alerts and the dashboard query is exported by a live server and sensor.
//!
//! Tools: `kubectl` (1.27+, built-in kustomize) and `promtool` (.ci/run takes it from Debian's
//! `prometheus` package without installing the service).

use procguard_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// The production overlay with the monitoring component, rendered by `kubectl kustomize`.
fn render(work: &Path) -> Vec<Value> {
    repo::copy_without_pki(&repo::root().join("deploy"), &work.join("deploy"));
    let variant = work.join("variant");
    std::fs::create_dir_all(&variant).unwrap();
    std::fs::write(
        variant.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../deploy/overlays/production\n\
         components:\n  - ../deploy/overlays/production/monitoring\n",
    )
    .unwrap();
    repo::kustomize(&variant)
        .unwrap_or_else(|e| panic!("{e}"))
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("rendered YAML"))
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Every PromQL expression of the dashboard (panel targets, at any depth).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (k, f) in fields {
                match (k.as_str(), f) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(f, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// The metric names an expression reads: identifiers of ours (`procguard_*`) or of the
/// conventions we export (`process_*`), outside label matchers and strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    let (mut in_braces, mut in_string) = (false, false);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => in_braces = true,
            '}' if !in_string => in_braces = false,
            c if !in_string && !in_braces && (c.is_ascii_alphabetic() || c == '_') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &expr[i..end];
                if word.starts_with("procguard_") || word.starts_with("process_") {
                    names.insert(word.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

/// The sample names a scrape offers: each sample line's name, and the names the declared type
/// of each family implies (a family with no sample yet, such as a labelled gauge no node has
/// set, still declares what it will export).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => names.insert(format!("{family}_total")),
                "info" => names.insert(format!("{family}_info")),
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{s}"));
                    }
                    true
                }
                _ => names.insert(family.to_string()),
            };
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            names.insert(name.to_string());
        }
    }
    names
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn the_monitoring_component_renders_and_queries_only_exported_metrics() {
    if !require(
        have("kubectl"),
        "kubectl is not installed (the deploy tests need it)",
    ) || !require(
        have("promtool"),
        "promtool is not installed (.ci/run extracts it from Debian's prometheus package)",
    ) || !require(is_root(), "needs root to run a sensor for the live scrape")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let docs = render(work.path());

    // Scrape targets: the pods' `admin` ports, selected by the labels the workloads carry.
    for (monitor, component, workload) in [
        (
            "procguard-server",
            "server",
            ("StatefulSet", "procguard-server"),
        ),
        (
            "procguard-sensor",
            "sensor",
            ("DaemonSet", "procguard-sensor"),
        ),
    ] {
        let pm = object(&docs, "PodMonitor", monitor);
        assert_eq!(pm["metadata"]["namespace"], "procguard");
        let selector = &pm["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["app.kubernetes.io/component"], component, "{pm}");
        let pod = &object(&docs, workload.0, workload.1)["spec"]["template"];
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(
                &pod["metadata"]["labels"][k], v,
                "{monitor} selects no pod of {workload:?}"
            );
        }
        let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        let port = endpoint["port"].as_str().unwrap();
        let declared = pod["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port);
        assert!(
            declared,
            "{monitor} scrapes port '{port}', which {workload:?} does not declare"
        );
    }

    // The rules, as rendered, pass promtool's checks and its unit tests.
    let rule = object(&docs, "PrometheusRule", "procguard");
    let rules_file = work.path().join("rules.yaml");
    std::fs::write(&rules_file, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let tests_file = work.path().join("rules_test.yaml");
    std::fs::write(&tests_file, RULE_TESTS).unwrap();
    let tested = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests_file)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    // Every alert the component defines has a unit test that expects it to fire.
    let alerts: BTreeSet<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    for alert in &alerts {
        assert!(
            RULE_TESTS.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels:"
            )),
            "no unit test shows {alert} firing"
        );
    }

    // The dashboard: valid JSON in the ConfigMap Grafana's sidecar picks up.
    let cm = object(&docs, "ConfigMap", "procguard-grafana-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "{cm}");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["procguard.json"].as_str().unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");

    // Every metric queried is one a live server and sensor export.
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    let sensor = Sensor::start(&pki, &server, "node-a", work.path(), &[]);
    assert!(
        wait_for(Duration::from_secs(15), || sensor
            .metric("procguard_sensor_connected")
            .filter(|c| *c == 1.0))
        .is_some(),
        "the sensor did not connect: {}",
        sensor.proc.log_text()
    );
    let live: BTreeSet<String> = exported(&scrape(server.admin_port))
        .into_iter()
        .chain(exported(&scrape(sensor.admin_port)))
        .collect();
    let rule_exprs: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    let mut queried = BTreeSet::new();
    for e in exprs.iter().chain(&rule_exprs) {
        queried.extend(metric_names(e));
    }
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<&String> = queried.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported by the server or the sensor: {missing:?}\nexported: {live:?}"
    );
    // The spool's capacity is the sensor's --spool-bytes, for the fill alert.
    assert!(
        sensor
            .metric("procguard_sensor_spool_capacity_bytes")
            .unwrap()
            > 0.0
    );
}

#[test]
fn metric_names_are_read_from_expressions_not_from_labels_or_strings() {
    let names = metric_names(
        r#"sum by (node) (rate(procguard_sensor_kernel_losses_total{job="procguard_fake_total"}[5m])) / on(pod) process_open_fds + time()"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["process_open_fds", "procguard_sensor_kernel_losses_total"]
    );
    let scrape = "# TYPE procguard_server_deviations counter\nprocguard_server_deviations_total 3\n\
                  # TYPE procguard_server_sensor_reported_drops gauge\n# TYPE procguard_build info\n";
    let e = exported(scrape);
    for n in [
        "procguard_server_deviations_total",
        "procguard_server_sensor_reported_drops",
        "procguard_build_info",
    ] {
        assert!(e.contains(n), "{n}: {e:?}");
    }
}

/// promtool unit tests of every alert: it fires when its condition holds (with the labels and
/// text an operator sees) and stays silent on a healthy node. `time()` starts at 0.
const RULE_TESTS: &str = r#"rule_files:
  - rules.yaml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # node-a loses kernel events at minute 5; node-b stays healthy.
      - series: 'procguard_sensor_kernel_losses_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x4 7x30'
      - series: 'procguard_sensor_kernel_losses_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
      - series: 'procguard_sensor_queue_drops_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x35'
      - series: 'procguard_sensor_queue_drops_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
      - series: 'procguard_sensor_sequence_gaps_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x35'
      - series: 'procguard_sensor_sequence_gaps_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
      - series: 'procguard_sensor_buffer_drops_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x35'
      - series: 'procguard_sensor_buffer_drops_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
      - series: 'procguard_sensor_exec_lost_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x35'
      - series: 'procguard_sensor_exec_lost_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
      - series: 'procguard_sensor_capture_failed_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x35'
      - series: 'procguard_sensor_capture_failed_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x35'
    alert_rule_test:
      - eval_time: 4m
        alertname: ProcguardSensorBlind
        exp_alerts: []
      - eval_time: 8m
        alertname: ProcguardSensorBlind
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
            exp_annotations:
              summary: "procguard sensor on node-a lost process events"
              description: "The sensor of node-a (s-a) lost events in the last 10 minutes: processes may have run unseen. See the sensor-blind incident (procguardctl incidents list) and the sensor's log."
      # Ten minutes after the last loss, the node is no longer blind.
      - eval_time: 30m
        alertname: ProcguardSensorBlind
        exp_alerts: []
  - interval: 1m
    input_series:
      # From minute 5 node-a's server takes its connections and does not answer: one session
      # given up a minute. node-b gave up one session once, at minute 2.
      - series: 'procguard_sensor_welcome_timeouts_total{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '0x4 1+1x20'
      - series: 'procguard_sensor_welcome_timeouts_total{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x1 1x24'
    alert_rule_test:
      - eval_time: 6m
        alertname: ProcguardServerNotAnswering
        exp_alerts: []
      - eval_time: 12m
        alertname: ProcguardServerNotAnswering
        exp_alerts:
          - exp_labels:
              severity: warning
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
            exp_annotations:
              summary: "procguard-server does not answer the sensor on node-a"
              description: "s-a gave up more than 2 sessions in 10 minutes for want of the server's answer. Check the server's load (procguard_server_* metrics) and anything proxying the gRPC port."
  - interval: 1m
    input_series:
      # node-a's connection drops at minute 5; node-b stays connected. node-a's sensor stops
      # answering scrapes at minute 5 too.
      - series: 'procguard_sensor_connected{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '1x4 0x30'
      - series: 'procguard_sensor_connected{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '1x35'
      - series: 'up{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '1x4 0x30'
      - series: 'up{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '1x35'
      - series: 'up{job="procguard/procguard-server",pod="procguard-server-0"}'
        values: '1x9 0x30'
    alert_rule_test:
      - eval_time: 13m
        alertname: ProcguardSensorSilent
        exp_alerts: []
      - eval_time: 16m
        alertname: ProcguardSensorSilent
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
            exp_annotations:
              summary: "procguard sensor on node-a is not connected to the server"
              description: "s-a has not been connected to procguard-server for 10 minutes. Check the server, the NetworkPolicy and the sensor's certificate."
      - eval_time: 16m
        alertname: ProcguardSensorDown
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
            exp_annotations:
              summary: "procguard sensor s-a cannot be scraped"
              description: "The admin port of s-a has not answered for 10 minutes: the sensor may be down, and its node unwatched."
      - eval_time: 12m
        alertname: ProcguardServerDown
        exp_alerts: []
      - eval_time: 16m
        alertname: ProcguardServerDown
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-server
              pod: procguard-server-0
            exp_annotations:
              summary: "procguard-server cannot be scraped"
              description: "The server's admin port has not answered for 5 minutes. Sensors spool meanwhile; nothing is detected centrally, and the API and SIEM stream are down."
  - interval: 1m
    input_series:
      # node-a's spool fills to 90% of 1000 bytes; node-b spools nothing (no capacity: no
      # server, nothing spools).
      - series: 'procguard_sensor_spool_bytes{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '100x4 900x20'
      - series: 'procguard_sensor_spool_capacity_bytes{job="procguard/procguard-sensor",pod="s-a",node="node-a"}'
        values: '1000x25'
      - series: 'procguard_sensor_spool_bytes{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x25'
      - series: 'procguard_sensor_spool_capacity_bytes{job="procguard/procguard-sensor",pod="s-b",node="node-b"}'
        values: '0x25'
    alert_rule_test:
      - eval_time: 7m
        alertname: ProcguardSpoolFilling
        exp_alerts: []
      - eval_time: 11m
        alertname: ProcguardSpoolFilling
        exp_alerts:
          - exp_labels:
              severity: warning
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
            exp_annotations:
              summary: "procguard sensor spool on node-a is 90% full"
              description: "Events are waiting for the server. When the spool is full the sensor drops events, observations first (procguard_sensor_buffer_drops_total)."
  - interval: 1m
    input_series:
      - series: 'procguard_server_batches_rejected_total{job="procguard/procguard-server",pod="procguard-server-0"}'
        values: '0x4 1x20'
      - series: 'procguard_server_sensor_streams_rejected_total{job="procguard/procguard-server",pod="procguard-server-0"}'
        values: '0x25'
    alert_rule_test:
      - eval_time: 3m
        alertname: ProcguardIngestRefused
        exp_alerts: []
      - eval_time: 7m
        alertname: ProcguardIngestRefused
        exp_alerts:
          - exp_labels:
              severity: warning
              job: procguard/procguard-server
              pod: procguard-server-0
            exp_annotations:
              summary: "procguard-server refused sensor input"
              description: "Batches or sensor streams were refused in the last 10 minutes; the server's log names the sensor and the reason."
  - interval: 1m
    input_series:
      # node-a reports every minute until minute 4, then stops; node-b keeps reporting. A SIEM
      # subscriber falls 20000 records behind at minute 5 and stays there.
      - series: 'procguard_server_sensor_last_report_timestamp_seconds{job="procguard/procguard-server",pod="procguard-server-0",node="node-a"}'
        values: '0+60x4 240x30'
      - series: 'procguard_server_sensor_last_report_timestamp_seconds{job="procguard/procguard-server",pod="procguard-server-0",node="node-b"}'
        values: '0+60x35'
      - series: 'procguard_server_subscriber_lag_records{job="procguard/procguard-server",pod="procguard-server-0"}'
        values: '0x4 20000x30'
    alert_rule_test:
      - eval_time: 12m
        alertname: ProcguardSensorNotReporting
        exp_alerts: []
      - eval_time: 16m
        alertname: ProcguardSensorNotReporting
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-server
              pod: procguard-server-0
              node: node-a
            exp_annotations:
              summary: "procguard-server has had no report from the sensor on node-a for 10 minutes"
              description: "Processes on node-a may run unseen. Check the sensor pod on that node, its certificate and the NetworkPolicy; the server's sensor-blind incident names it too."
      - eval_time: 12m
        alertname: ProcguardSubscriberLagging
        exp_alerts: []
      - eval_time: 21m
        alertname: ProcguardSubscriberLagging
        exp_alerts:
          - exp_labels:
              severity: warning
              job: procguard/procguard-server
              pod: procguard-server-0
            exp_annotations:
              summary: "A procguard SIEM subscriber is 20000 records behind"
              description: "The slowest SIEM subscription has been more than 10000 records behind for 15 minutes. Check the SIEM forwarder; records it does not read before retention removes them are lost to it."
  - interval: 1m
    input_series:
      # At time 0: the server's certificate has 10 days left, a sensor's 1 day, the CA 300.
      - series: 'procguard_tls_certificate_expiry_timestamp_seconds{job="procguard/procguard-server",pod="procguard-server-0",certificate="server"}'
        values: '864000x5'
      - series: 'procguard_tls_certificate_expiry_timestamp_seconds{job="procguard/procguard-sensor",pod="s-a",node="node-a",certificate="client"}'
        values: '86400x5'
      - series: 'procguard_tls_certificate_expiry_timestamp_seconds{job="procguard/procguard-server",pod="procguard-server-0",certificate="client-ca"}'
        values: '25920000x5'
    alert_rule_test:
      - eval_time: 0m
        alertname: ProcguardCertificateExpiringSoon
        exp_alerts:
          - exp_labels:
              severity: warning
              job: procguard/procguard-server
              pod: procguard-server-0
              certificate: server
            exp_annotations:
              summary: "procguard-server-0: server certificate expires in 10d 0h 0m 0s"
              description: "Renew it (cert-manager does so 30 days before expiry); the pod loads renewed files on its own, without a restart. Still firing after a renewal: the new files do not load (procguard_tls_reloads_total{result=\"failed\"} and the pod's log say why)."
          - exp_labels:
              severity: warning
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
              certificate: client
            exp_annotations:
              summary: "s-a: client certificate expires in 1d 0h 0m 0s"
              description: "Renew it (cert-manager does so 30 days before expiry); the pod loads renewed files on its own, without a restart. Still firing after a renewal: the new files do not load (procguard_tls_reloads_total{result=\"failed\"} and the pod's log say why)."
      - eval_time: 0m
        alertname: ProcguardCertificateExpiring
        exp_alerts:
          - exp_labels:
              severity: critical
              job: procguard/procguard-sensor
              pod: s-a
              node: node-a
              certificate: client
            exp_annotations:
              summary: "s-a: client certificate expires in 1d 0h 0m 0s"
              description: "When it expires, connections made with it are refused (sensors cannot reconnect). Renew it now; the pod loads the new files without a restart."
"#;
