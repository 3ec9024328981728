//! `procguardctl watch`: follow the SIEM stream and print one record per line, as JSON lines,
//! OCSF or CEF, for piping into a SIEM forwarder.
//!
//! With `--durable NAME` the server keeps the position: the command starts after the
//! subscription's acknowledged cursor and acknowledges what it has printed (every
//! `--ack-interval`, and when it stops), so a forwarder that crashes resumes where it
//! acknowledged. Records printed after the last acknowledgement are printed again on resume
//! (at-least-once); the cursor in every line lets a consumer drop those. The field mappings are
//! documented in docs/siem.md.

use crate::content;
use crate::incidents::severity_arg;
use crate::process::ProcessView;
use crate::render::millis as millis_text;
use crate::{id_text, usage, Cli, Client};
use anyhow::Context;
use clap::ValueEnum;
use procguard_core::audit::{AuditEntry, AuditOutcome};
use procguard_core::incident::{Incident, IncidentKind, IncidentState, Severity};
use procguard_core::ContentCheck;
use procguard_proto::convert::audit::audit_from_pb;
use procguard_proto::convert::content::event_check;
use procguard_proto::convert::incident::{incident_from_pb, severity_filter};
use procguard_proto::convert::system_time;
use procguard_proto::v1 as pb;
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// OCSF 1.1 events, one per line.
    Ocsf,
    /// ArcSight Common Event Format, one per line.
    Cef,
}

#[derive(Debug, clap::Args)]
pub struct Watch {
    /// Start after this cursor.
    #[arg(long, env = "PROCGUARD_WATCH_FROM", conflicts_with_all = ["oldest", "durable"])]
    from: Option<u64>,
    /// Start at the oldest retained record.
    #[arg(long, env = "PROCGUARD_WATCH_OLDEST", conflicts_with = "durable")]
    oldest: bool,
    /// Durable subscription name: start after its acknowledged cursor (the oldest record if it
    /// is new) and acknowledge what was printed.
    #[arg(long, env = "PROCGUARD_WATCH_DURABLE")]
    durable: Option<String>,
    /// Output format. Without --from, --oldest or --durable, only new records are printed.
    #[arg(
        long,
        value_enum,
        env = "PROCGUARD_WATCH_FORMAT",
        default_value = "jsonl"
    )]
    format: Format,
    /// Record kinds: incident, deviation, audit (comma-separated; all when absent).
    #[arg(long = "kind", env = "PROCGUARD_WATCH_KINDS", value_delimiter = ',')]
    kinds: Vec<String>,
    /// At least this severity: low, medium, high, critical (drops audit records).
    #[arg(long, env = "PROCGUARD_WATCH_MIN_SEVERITY")]
    min_severity: Option<String>,
    /// Only this namespace (drops audit records and sensor findings).
    #[arg(long, env = "PROCGUARD_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// With --durable: acknowledge printed records at most this often.
    #[arg(long, env = "PROCGUARD_WATCH_ACK_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    ack_interval: Duration,
    /// Stop after this many records (0: follow until interrupted).
    #[arg(long, env = "PROCGUARD_WATCH_COUNT", default_value_t = 0)]
    count: u64,
}

fn millis(t: Option<&prost_types::Timestamp>) -> u64 {
    t.map(|t| since_epoch_ms(system_time(t))).unwrap_or(0)
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> Value {
    t.map(|t| json!(millis_text(system_time(t))))
        .unwrap_or(Value::Null)
}

fn since_epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A stream record as `watch` reads it: the record, its severity, and its body with
/// incidents and audit entries converted into the domain through `proto::convert`. A
/// deviation is printed from its message, each part through the domain: its process as
/// [`ProcessView`] (from `ProcessEvent`, and still printed, as partial, when it does not
/// convert) and its verdict as `ContentCheck`.
pub struct Streamed<'a> {
    record: &'a pb::StreamRecord,
    /// The record's severity; `None` for audit records (and a value this build does not know).
    severity: Option<Severity>,
    body: Body,
}

/// A deviation record as every format prints it, each part read through the domain.
struct Deviation {
    /// The sensor's event ID.
    event_id: String,
    /// When the sensor saw the exec (for records stored before, when the server stored it).
    observed_at: Option<SystemTime>,
    /// The version of the workload's baseline it deviated from.
    baseline_version: u64,
    /// The process, as [`ProcessView`] prints it; `None` when the record carried none.
    process: Option<ProcessView>,
    /// Its content verdict, if judged.
    content: Option<ContentCheck>,
    /// How many executions the record stands for (a sensor's summary of repeats: more than
    /// one, the process being the first of them).
    executions: u64,
    /// For a summary: when the sensor saw the last of its executions.
    last_observed_at: Option<SystemTime>,
}

impl Deviation {
    fn read(d: &pb::SensorEvent) -> Self {
        Self {
            event_id: d.event_id.clone(),
            observed_at: d.observed_at.as_ref().map(system_time),
            baseline_version: d.baseline_version,
            process: d.process.as_ref().map(ProcessView::of),
            content: event_check(d),
            executions: d.executions.max(1),
            last_observed_at: d.last_observed_at.as_ref().map(system_time),
        }
    }

    /// The process to print in a format that always has one (OCSF, CEF): a record without one
    /// prints as a partial process with nothing known.
    fn view(&self) -> ProcessView {
        self.process
            .clone()
            .unwrap_or_else(|| ProcessView::of(&pb::ProcessEvent::default()))
    }
}

enum Body {
    Incident(Box<Incident>),
    Deviation(Box<Deviation>),
    Audit(AuditEntry),
    None,
}

impl<'a> Streamed<'a> {
    /// Reads `r`; a body this build cannot read is an error that names the record's cursor and
    /// what to do (nothing is printed or acknowledged for it, so nothing is lost).
    pub fn read(r: &'a pb::StreamRecord) -> anyhow::Result<Self> {
        let body = match &r.record {
            Some(pb::stream_record::Record::Incident(i)) => {
                Body::Incident(Box::new(incident_from_pb(i).with_context(|| {
                    format!(
                        "record {}: its incident is in a form this procguardctl cannot read; \
                         upgrade procguardctl to the server's version (or resume after it with \
                         --from {})",
                        r.cursor, r.cursor
                    )
                })?))
            }
            Some(pb::stream_record::Record::Deviation(d)) => {
                Body::Deviation(Box::new(Deviation::read(d)))
            }
            Some(pb::stream_record::Record::Audit(a)) => {
                Body::Audit(audit_from_pb(a).with_context(|| {
                    format!(
                        "record {}: its audit entry is in a form this procguardctl cannot read; \
                         upgrade procguardctl to the server's version (or resume after it with \
                         --from {})",
                        r.cursor, r.cursor
                    )
                })?)
            }
            None => Body::None,
        };
        Ok(Self {
            record: r,
            severity: severity_filter(r.severity, "severity").ok().flatten(),
            body,
        })
    }
}

/// JSON lines: the record as the API returns it, with its cursor.
pub fn jsonl(s: &Streamed<'_>) -> Value {
    let r = s.record;
    let mut v = json!({
        "cursor": r.cursor,
        "at": rfc3339(r.at.as_ref()),
        "severity": s.severity.map_or("", Severity::as_str),
    });
    match &s.body {
        Body::Incident(i) => {
            v["kind"] = json!("incident");
            v["incident"] = crate::incidents::incident_json(i);
        }
        Body::Deviation(d) => {
            v["kind"] = json!("deviation");
            v["incident_id"] = json!(r.incident_id);
            v["deviation"] = json!({
                "event_id": d.event_id,
                "observed_at": d.observed_at.map(millis_text),
                "baseline_version": d.baseline_version,
                "process": d.process.as_ref().map(ProcessView::json),
                "content": content::json(d.content.as_ref()),
                "executions": d.executions,
                "last_observed_at": d.last_observed_at.map(millis_text),
            });
        }
        Body::Audit(a) => {
            v["kind"] = json!("audit");
            v["audit"] = crate::audit::json(a, millis_text);
        }
        Body::None => {}
    }
    v
}

/// OCSF severity_id: 1 informational, 2 low, 3 medium, 4 high, 5 critical.
fn ocsf_severity(v: Option<Severity>) -> (u8, &'static str) {
    match v {
        Some(Severity::Low) => (2, "Low"),
        Some(Severity::Medium) => (3, "Medium"),
        Some(Severity::High) => (4, "High"),
        Some(Severity::Critical) => (5, "Critical"),
        None => (1, "Informational"),
    }
}

fn ocsf_metadata(r: &pb::StreamRecord, correlation: &str) -> Value {
    json!({
        "version": "1.1.0",
        "product": {"name": "procguard", "vendor_name": "procguard", "version": env!("CARGO_PKG_VERSION")},
        "uid": r.cursor.to_string(),
        "sequence": r.cursor,
        "correlation_uid": correlation,
        "logged_time": millis(r.at.as_ref()),
    })
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Leaves out what carries nothing (null, an empty string, list or object), at any depth: an
/// OCSF consumer reads an empty attribute as a value. Returns whether `v` itself is empty.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => {
            items.retain_mut(|i| !prune(i));
            items.is_empty()
        }
        Value::Object(fields) => {
            fields.retain(|_, f| !prune(f));
            fields.is_empty()
        }
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The API caller's endpoint: the address the server saw, as `ip` and `port` (OCSF
/// network_endpoint needs at least one identifying attribute; an address the server could not
/// see is named unknown rather than left out, since the class requires the object).
fn ocsf_src_endpoint(peer: &str) -> Value {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        Err(_) if !peer.is_empty() => json!({"name": peer}),
        Err(_) => json!({"name": "unknown"}),
    }
}

/// OCSF: Process Activity (1007) for deviations, Detection Finding (2004) for incidents, API
/// Activity (6003) for audit records. Nothing empty is written (see [`prune`]).
pub fn ocsf(s: &Streamed<'_>) -> Value {
    let mut event = ocsf_event(s);
    prune(&mut event);
    event
}

fn ocsf_event(s: &Streamed<'_>) -> Value {
    let r = s.record;
    let (severity_id, severity) = ocsf_severity(s.severity);
    match &s.body {
        Body::Deviation(d) => {
            let p = d.view();
            let parent = json!({
                "pid": p.ppid,
                "file": p.ancestors.first().map(|a| json!({"path": a.exe_path, "name": basename(&a.exe_path), "type_id": 1})),
            });
            let mut file = json!({"path": p.exe_path, "name": basename(&p.exe_path), "type_id": 1});
            if !p.exe_sha256.is_empty() {
                file["hashes"] =
                    json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": p.exe_sha256}]);
            }
            let mut event = json!({
                "class_uid": 1007, "class_name": "Process Activity",
                "category_uid": 1, "category_name": "System Activity",
                "activity_id": 1, "activity_name": "Launch",
                "type_uid": 100701, "type_name": "Process Activity: Launch",
                "time": d.observed_at.map_or(0, since_epoch_ms),
                "severity_id": severity_id, "severity": severity,
                "status_id": 1, "status": "Success",
                "message": format!("{} ran outside the baseline of {} as {}{}{}", p.exe_path, p.workload, p.context_name(), p.drift_note(), p.partial_note()),
                "metadata": ocsf_metadata(r, &r.incident_id),
                "device": {"hostname": p.node, "type_id": 0},
                "process": {
                    "pid": p.pid,
                    "name": p.comm,
                    "cmd_line": p.argv.join(" "),
                    "file": file,
                    "user": {"uid": p.uid.to_string()},
                    "parent_process": parent,
                    "lineage": p.ancestors.iter().map(|a| a.exe_path.clone()).collect::<Vec<_>>(),
                },
                "actor": {"process": parent},
                "unmapped": {
                    "workload": p.workload,
                    "namespace": p.namespace,
                    "pod": p.pod,
                    "applet": p.applet,
                    "script_path": p.script_path,
                    "exe_memfd": p.exe_memfd,
                    "exe_deleted": p.exe_deleted,
                    "exe_writable_location": p.exe_writable_location,
                    "origin": p.origin,
                    "drift": p.drift,
                    "context": p.context,
                    "completeness": p.completeness,
                    "missing": p.missing,
                    "argv_truncated": p.argv_truncated,
                    "incident_id": r.incident_id,
                    "event_id": d.event_id,
                    "baseline_version": d.baseline_version,
                    "content": content::json(d.content.as_ref()),
                },
            });
            // A host process has no container: the object is left out, not sent empty.
            if !p.container_id.is_empty() {
                let mut container = json!({"uid": p.container_id});
                if !p.image.is_empty() || !p.image_digest.is_empty() {
                    let mut image = json!({});
                    if !p.image.is_empty() {
                        image["name"] = json!(p.image);
                    }
                    if !p.image_digest.is_empty() {
                        image["uid"] = json!(p.image_digest);
                    }
                    container["image"] = image;
                }
                event["container"] = container;
            }
            // A summary of repeats: OCSF's count over the period from the first to the last.
            if d.executions > 1 {
                event["count"] = json!(d.executions);
                event["start_time"] = json!(d.observed_at.map_or(0, since_epoch_ms));
                event["end_time"] = json!(d
                    .last_observed_at
                    .or(d.observed_at)
                    .map_or(0, since_epoch_ms));
            }
            event
        }
        Body::Incident(i) => {
            let (activity_id, activity) = match i.state {
                IncidentState::Resolved | IncidentState::Allowed => (3, "Close"),
                IncidentState::Open if i.count == 1 => (1, "Create"),
                _ => (2, "Update"),
            };
            let (status_id, status) = match i.state {
                IncidentState::Open => (1, "New"),
                IncidentState::Acknowledged => (2, "In Progress"),
                IncidentState::Resolved => (4, "Resolved"),
                IncidentState::Allowed => (3, "Suppressed"),
            };
            let blind = i.kind == IncidentKind::SensorBlind;
            let title = if blind {
                format!("Sensor blind on {}", i.sensor_node)
            } else if i.kind == IncidentKind::ExecSession {
                format!(
                    "Interactive session into {} ({})",
                    id_text(i.workload.as_ref()),
                    crate::incidents::subject(i)
                )
            } else if i.kind == IncidentKind::DeviationOverflow {
                format!(
                    "{} deviations of {} past its cap on active incidents",
                    i.count,
                    id_text(i.workload.as_ref())
                )
            } else {
                format!(
                    "{} ran outside the baseline of {}",
                    crate::incidents::subject(i),
                    id_text(i.workload.as_ref())
                )
            };
            let resources = if blind {
                json!([{"type": "node", "name": i.sensor_node}])
            } else {
                let namespace = i.workload.as_ref().map(|w| w.namespace.clone());
                json!([{"type": "workload", "name": id_text(i.workload.as_ref()), "namespace": namespace.unwrap_or_default()}])
            };
            json!({
                "class_uid": 2004, "class_name": "Detection Finding",
                "category_uid": 2, "category_name": "Findings",
                "activity_id": activity_id, "activity_name": activity,
                "type_uid": 200400 + activity_id, "type_name": format!("Detection Finding: {activity}"),
                "time": since_epoch_ms(i.last_seen),
                "severity_id": severity_id, "severity": severity,
                "status_id": status_id, "status": status,
                "count": i.count,
                "message": i.severity_reason,
                "metadata": ocsf_metadata(r, &i.id),
                "finding_info": {
                    "uid": i.id,
                    "title": title,
                    "desc": i.severity_reason,
                    "types": [format!("procguard/{}", i.kind.as_str())],
                    "first_seen_time": since_epoch_ms(i.first_seen),
                    "last_seen_time": since_epoch_ms(i.last_seen),
                },
                "resources": resources,
                "unmapped": {
                    "origin": crate::incidents::origin_name(i),
                    "exe_path": i.exe_path,
                    "applet": i.applet,
                    "script_path": i.script_path,
                    "nodes": i.nodes,
                    "pods": i.pods,
                    "baseline_version": i.baseline_version,
                    "state_actor": i.state_actor,
                    "state_reason": i.state_reason,
                    "content": content::json(i.content.as_ref()),
                },
            })
        }
        Body::Audit(a) => {
            let ok = a.result == AuditOutcome::Ok;
            json!({
                "class_uid": 6003, "class_name": "API Activity",
                "category_uid": 6, "category_name": "Application Activity",
                "activity_id": 99, "activity_name": a.action,
                "type_uid": 600399, "type_name": "API Activity: Other",
                "time": since_epoch_ms(a.at),
                "severity_id": if ok { 1 } else { 3 }, "severity": if ok { "Informational" } else { "Medium" },
                "status_id": if ok { 1 } else { 2 }, "status": if ok { "Success" } else { "Failure" },
                "status_detail": a.detail,
                "metadata": ocsf_metadata(r, ""),
                // procguard's roles are not OCSF user types: type_id 99 (Other), named by the role.
                "actor": {"user": {"name": a.actor, "type": a.role, "type_id": if a.role.is_empty() { Value::Null } else { json!(99) }}},
                "api": {"operation": a.action},
                "src_endpoint": ocsf_src_endpoint(&a.peer),
                "resources": [{"name": a.target}],
                "unmapped": {"audit_id": a.id, "result": a.result.as_str()},
            })
        }
        Body::None => json!({}),
    }
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// CEF key of the content verdict: a user-defined extension named after the vendor, as CEF's
/// extension dictionary asks of keys it does not define.
const CEF_VERDICT: &str = "procguardContentVerdict";
/// CEF key of the origin of the executable (`image`, `writable-layer`, ...), named likewise.
const CEF_ORIGIN: &str = "procguardOrigin";
/// CEF key of the approved contents the verdict was decided against (comma-separated).
const CEF_APPROVED: &str = "procguardApprovedSha256";

/// The verdict's name for CEF; empty (left out) when there is none.
fn cef_verdict(c: Option<&procguard_core::ContentCheck>) -> String {
    c.map(|c| c.verdict.as_str().to_string())
        .unwrap_or_default()
}

/// CEF severity 0..10.
fn cef_severity(v: Option<Severity>) -> u8 {
    match v {
        Some(Severity::Low) => 3,
        Some(Severity::Medium) => 5,
        Some(Severity::High) => 8,
        Some(Severity::Critical) => 10,
        None => 1,
    }
}

/// CEF: one line per record; see docs/siem.md for the extension keys.
pub fn cef(s: &Streamed<'_>) -> String {
    let r = s.record;
    let (sig, name, sev, mut ext): (String, String, u8, Vec<(&str, String)>) = match &s.body {
        Body::Deviation(d) => {
            let p = d.view();
            (
                "procguard:deviation".into(),
                "Process outside baseline".into(),
                cef_severity(s.severity),
                vec![
                    ("rt", d.observed_at.map_or(0, since_epoch_ms).to_string()),
                    ("dvchost", p.node.clone()),
                    ("sproc", p.comm.clone()),
                    ("spid", p.pid.to_string()),
                    ("suid", p.uid.to_string()),
                    ("filePath", p.exe_path.clone()),
                    ("fname", basename(&p.exe_path).to_string()),
                    ("fileHash", p.exe_sha256.clone()),
                    ("externalId", format!("deviation:{}", d.event_id)),
                    ("cs1Label", "workload".into()),
                    ("cs1", p.workload.clone()),
                    ("cs2Label", "incidentId".into()),
                    ("cs2", r.incident_id.clone()),
                    ("cs3Label", "namespace".into()),
                    ("cs3", p.namespace.clone()),
                    ("cs4Label", "argv".into()),
                    ("cs4", p.argv.join(" ")),
                    ("cs5Label", "parent".into()),
                    (
                        "cs5",
                        p.ancestors
                            .first()
                            .map(|a| a.exe_path.clone())
                            .unwrap_or_default(),
                    ),
                    ("cs6Label", "context".into()),
                    ("cs6", p.context_name()),
                    (CEF_ORIGIN, p.origin.to_string()),
                    ("flexString1Label", "completeness".into()),
                    ("flexString1", p.completeness_name()),
                    ("flexString2Label", "missing".into()),
                    ("flexString2", p.missing.join(",")),
                    // Every labelled string key is taken on a deviation record: the verdict
                    // and the approved contents are user-defined keys (docs/siem.md).
                    (CEF_VERDICT, cef_verdict(d.content.as_ref())),
                    (
                        CEF_APPROVED,
                        d.content
                            .as_ref()
                            .map(|c| c.approved_sha256.join(","))
                            .unwrap_or_default(),
                    ),
                    // CEF's baseEventCount: a summary of repeats counts them (never 0).
                    ("cnt", d.executions.to_string()),
                    (
                        "msg",
                        format!(
                            "{} ran outside the baseline as {}{}{}",
                            p.exe_path,
                            p.context_name(),
                            p.drift_note(),
                            p.partial_note()
                        ),
                    ),
                ],
            )
        }
        Body::Incident(i) => (
            format!("procguard:incident:{}", i.kind.as_str()),
            format!("Incident {}", i.state.as_str()),
            cef_severity(s.severity),
            vec![
                ("rt", since_epoch_ms(i.last_seen).to_string()),
                ("start", since_epoch_ms(i.first_seen).to_string()),
                ("end", since_epoch_ms(i.last_seen).to_string()),
                ("externalId", format!("incident:{}", i.id)),
                ("cnt", i.count.to_string()),
                ("act", i.state.as_str().to_string()),
                ("msg", i.severity_reason.clone()),
                (
                    "dvchost",
                    if i.sensor_node.is_empty() {
                        i.nodes.first().cloned().unwrap_or_default()
                    } else {
                        i.sensor_node.clone()
                    },
                ),
                ("filePath", i.exe_path.clone()),
                (
                    CEF_ORIGIN,
                    crate::incidents::origin_name(i)
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
                (
                    "fileHash",
                    i.content
                        .as_ref()
                        .and_then(|c| c.sha256.clone())
                        .unwrap_or_default(),
                ),
                (CEF_VERDICT, cef_verdict(i.content.as_ref())),
                (
                    CEF_APPROVED,
                    i.content
                        .as_ref()
                        .map(|c| c.approved_sha256.join(","))
                        .unwrap_or_default(),
                ),
                ("suser", i.state_actor.clone()),
                ("reason", i.state_reason.clone()),
                ("cs1Label", "workload".into()),
                ("cs1", id_text(i.workload.as_ref())),
                ("cs3Label", "namespace".into()),
                (
                    "cs3",
                    i.workload
                        .as_ref()
                        .map(|w| w.namespace.clone())
                        .unwrap_or_default(),
                ),
            ],
        ),
        Body::Audit(a) => (
            format!("procguard:audit:{}", a.action),
            format!("API call {}", a.action),
            if a.result == AuditOutcome::Ok { 1 } else { 5 },
            vec![
                ("rt", since_epoch_ms(a.at).to_string()),
                ("suser", a.actor.clone()),
                ("act", a.action.clone()),
                ("outcome", a.result.as_str().to_string()),
                ("msg", a.detail.clone()),
                ("externalId", format!("audit:{}", a.id)),
                ("cs1Label", "target".into()),
                ("cs1", a.target.clone()),
                ("cs2Label", "role".into()),
                ("cs2", a.role.clone()),
                ("cs6Label", "peer".into()),
                ("cs6", a.peer.clone()),
            ],
        ),
        Body::None => ("procguard:unknown".into(), "Unknown".into(), 0, vec![]),
    };
    ext.push(("cn1Label", "cursor".into()));
    ext.push(("cn1", r.cursor.to_string()));
    // An empty value is left out, and so is the label of a custom key left out: a SIEM
    // would otherwise show a field named but never filled.
    let present: std::collections::HashSet<String> = ext
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.to_string())
        .collect();
    let ext: Vec<String> = ext
        .into_iter()
        .filter(|(k, v)| {
            !v.is_empty()
                && k.strip_suffix("Label")
                    .is_none_or(|key| present.contains(key))
        })
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|procguard|procguard|{}|{}|{}|{sev}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&sig),
        cef_header(&name),
        ext.join(" ")
    )
}

fn kind_arg(s: &str) -> anyhow::Result<i32> {
    Ok(match s.trim() {
        "incident" => pb::RecordKind::Incident,
        "deviation" => pb::RecordKind::Deviation,
        "audit" => pb::RecordKind::Audit,
        o => {
            return Err(usage(format!(
                "--kind '{o}' is unknown; use incident, deviation or audit"
            )))
        }
    } as i32)
}

/// How long a stopping `watch --durable` waits for its final acknowledgement.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(5);

/// Runs `watch` until the stream ends, `--count` records were printed, or an error.
///
/// SIGINT, SIGTERM and SIGHUP stop it like the end of the stream: with `--durable`, what was
/// printed is acknowledged before it exits (exit 0). The handlers are installed before
/// anything else, so a stop in the first moments is no exception.
pub async fn run(cli: &Cli, w: &Watch) -> anyhow::Result<()> {
    use pb::start_position::Position;
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| signal(kind).context("installing a signal handler");
    let mut int = handler(SignalKind::interrupt())?;
    let mut term = handler(SignalKind::terminate())?;
    let mut hup = handler(SignalKind::hangup())?;
    let stopped = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    };
    tokio::pin!(stopped);
    let position = match (&w.from, w.oldest, &w.durable) {
        (Some(c), _, _) => Position::AfterCursor(*c),
        (_, true, _) => Position::Oldest(true),
        (_, _, Some(n)) => Position::DurableName(n.clone()),
        _ => Position::Now(true),
    };
    let request = pb::SubscribeRequest {
        start: Some(pb::StartPosition {
            position: Some(position),
        }),
        kinds: w
            .kinds
            .iter()
            .map(|k| kind_arg(k))
            .collect::<anyhow::Result<_>>()?,
        min_severity: match &w.min_severity {
            Some(s) => severity_arg(s)? as i32,
            None => 0,
        },
        namespace: w.namespace.clone().unwrap_or_default(),
    };
    // A stop before the subscription is open has nothing printed to acknowledge.
    let (c, mut api, mut stream) = tokio::select! {
        opened = async {
            let c = Client::connect(cli).await?;
            let mut api = pb::subscription_service_client::SubscriptionServiceClient::new(
                c.channel.clone(),
            );
            let stream = api.subscribe(c.req(request)?).await?.into_inner();
            anyhow::Ok((c, api, stream))
        } => opened?,
        () = &mut stopped => return Ok(()),
    };
    let mut printed = 0u64;
    let mut last_printed = None;
    let mut last_acked = None;
    let mut last_ack_at = Instant::now();
    let stdout = std::io::stdout();
    let result = loop {
        let next = tokio::select! {
            next = stream.message() => next,
            () = &mut stopped => break Ok(()),
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e)),
        };
        let record = match Streamed::read(&msg) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let line = match w.format {
            Format::Jsonl => jsonl(&record).to_string(),
            Format::Ocsf => ocsf(&record).to_string(),
            Format::Cef => cef(&record),
        };
        {
            let mut out = stdout.lock();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                // The reader went away; what was not printed is not acknowledged.
                break Ok(());
            }
        }
        printed += 1;
        last_printed = Some(msg.cursor);
        if let Some(name) = &w.durable {
            if last_ack_at.elapsed() >= w.ack_interval {
                api.ack_cursor(c.req(pb::AckCursorRequest {
                    durable_name: name.clone(),
                    cursor: msg.cursor,
                })?)
                .await?;
                last_acked = Some(msg.cursor);
                last_ack_at = Instant::now();
            }
        }
        if w.count > 0 && printed >= w.count {
            break Ok(());
        }
    };
    if let (Some(name), Some(cursor)) = (&w.durable, last_printed) {
        if last_acked != Some(cursor) {
            // A server that does not answer must not hold the stop: the records after the
            // last acknowledgement are then printed again on resume (at-least-once).
            let ack = api.ack_cursor(c.req(pb::AckCursorRequest {
                durable_name: name.clone(),
                cursor,
            })?);
            tokio::time::timeout(FINAL_ACK_WAIT, ack)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the final acknowledgement of cursor {cursor} timed out after {FINAL_ACK_WAIT:?}; records after the last acknowledged one will be printed again on resume"
                    )
                })??;
        }
    }
    result
}

/// OCSF 1.1 class schemas and CEF header rules, checked against every kind of record.
#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    // The formatters as the tests call them: on a protobuf record, read as `watch` reads it.
    fn jsonl(r: &pb::StreamRecord) -> Value {
        super::jsonl(&Streamed::read(r).unwrap())
    }
    fn ocsf(r: &pb::StreamRecord) -> Value {
        super::ocsf(&Streamed::read(r).unwrap())
    }
    fn cef(r: &pb::StreamRecord) -> String {
        super::cef(&Streamed::read(r).unwrap())
    }

    fn deviation() -> pb::StreamRecord {
        pb::StreamRecord {
            cursor: 42,
            at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            severity: pb::Severity::High as i32,
            incident_id: "7".into(),
            record: Some(pb::stream_record::Record::Deviation(pb::SensorEvent {
                event_id: "e1".into(),
                observed_at: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 5_000_000,
                }),
                process: Some(pb::ProcessEvent {
                    pid: 9,
                    exe_path: "/bin/sh".into(),
                    comm: "sh".into(),
                    argv: vec!["sh".into(), "-c".into(), "a=b|c\\d".into()],
                    node_name: "n1".into(),
                    workload: Some(pb::WorkloadIdentity {
                        cluster: "c".into(),
                        namespace: "shop".into(),
                        kind: pb::WorkloadKind::Deployment as i32,
                        workload_name: "web".into(),
                        container_name: "nginx".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    /// An incident's message as the server sends one (kind, severity, state and times set),
    /// for a test to override what it is about.
    fn incident_fields() -> pb::Incident {
        pb::Incident {
            kind: pb::IncidentKind::Deviation as i32,
            severity: pb::Severity::Medium as i32,
            state: pb::IncidentState::Open as i32,
            first_seen: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            last_seen: Some(prost_types::Timestamp {
                seconds: 1_800_000_060,
                nanos: 0,
            }),
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn ocsf_classes() {
        let d = ocsf(&deviation());
        assert_eq!(d["class_uid"], 1007);
        assert_eq!(d["type_uid"], 100701);
        assert_eq!(d["severity_id"], 4);
        assert_eq!(d["time"], 1_800_000_000_005u64);
        assert_eq!(d["process"]["file"]["path"], "/bin/sh");
        assert_eq!(d["metadata"]["correlation_uid"], "7");
        assert_eq!(d["unmapped"]["namespace"], "shop");
        let mut i = deviation();
        i.record = Some(pb::stream_record::Record::Incident(pb::Incident {
            id: "7".into(),
            kind: pb::IncidentKind::Deviation as i32,
            state: pb::IncidentState::Allowed as i32,
            count: 3,
            ..incident_fields()
        }));
        let f = ocsf(&i);
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["activity_id"], 3);
        assert_eq!(f["status"], "Suppressed");
        assert_eq!(f["finding_info"]["uid"], "7");
    }

    /// A deviation the sensor could not see whole: an exec session gone before `/proc` was
    /// read, its argv and container inherited.
    fn partial_deviation() -> pb::StreamRecord {
        let mut r = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
            let p = d.process.as_mut().unwrap();
            p.context = pb::ExecContext::ExecSession as i32;
            p.completeness = pb::Completeness::Partial as i32;
            p.missing = vec!["argv".into(), "container".into()];
        }
        r
    }

    #[test]
    fn every_format_says_how_a_process_ran_and_what_was_not_seen() {
        let r = partial_deviation();
        // JSON lines: the domain's names.
        let j = jsonl(&r);
        let p = &j["deviation"]["process"];
        assert_eq!(p["context"], "exec-session", "{j}");
        assert_eq!(p["completeness"], "partial", "{j}");
        assert_eq!(p["missing"], json!(["argv", "container"]), "{j}");
        // OCSF: in `unmapped`, and said in the message.
        let o = ocsf(&r);
        assert_eq!(o["unmapped"]["context"], "exec-session", "{o}");
        assert_eq!(o["unmapped"]["completeness"], "partial", "{o}");
        assert_eq!(
            o["unmapped"]["missing"],
            json!(["argv", "container"]),
            "{o}"
        );
        let msg = o["message"].as_str().unwrap();
        assert!(msg.contains("exec-session"), "{msg}");
        assert!(
            msg.contains("partial event; not known: argv, container"),
            "{msg}"
        );
        // CEF: cs6 context, flexString1 completeness, flexString2 missing, and the message.
        let c = cef(&r);
        assert!(c.contains("cs6Label=context cs6=exec-session"), "{c}");
        assert!(
            c.contains("flexString1Label=completeness flexString1=partial"),
            "{c}"
        );
        assert!(
            c.contains("flexString2Label=missing flexString2=argv,container"),
            "{c}"
        );
        assert!(c.contains("msg=/bin/sh ran outside the baseline as exec-session (partial event; not known: argv, container)"), "{c}");
        // A full event says so, and names nothing missing.
        let mut full = partial_deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = full.record.as_mut() {
            let p = d.process.as_mut().unwrap();
            p.completeness = pb::Completeness::Full as i32;
            p.missing.clear();
        }
        let c = cef(&full);
        assert!(c.contains("flexString1=full"), "{c}");
        assert!(!c.contains("flexString2"), "{c}");
        assert_eq!(jsonl(&full)["deviation"]["process"]["completeness"], "full");
        assert!(!ocsf(&full)["message"].as_str().unwrap().contains("partial"));
    }

    #[test]
    fn every_format_carries_the_origin_and_names_drift() {
        let mut r = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
            let p = d.process.as_mut().unwrap();
            p.origin = pb::Origin::WritableLayer as i32;
            p.container = Some(pb::ContainerInfo {
                container_id: "c".repeat(64),
                ..Default::default()
            });
        }
        let p = &jsonl(&r)["deviation"]["process"];
        assert_eq!(p["origin"], "writable-layer", "{p}");
        assert_eq!(p["drift"], true, "{p}");
        let o = ocsf(&r);
        assert_eq!(o["unmapped"]["origin"], "writable-layer", "{o}");
        assert_eq!(o["unmapped"]["drift"], true, "{o}");
        let drift = "drift: executable from the container's writable layer";
        assert!(o["message"].as_str().unwrap().contains(drift), "{o}");
        let c = cef(&r);
        assert!(c.contains("procguardOrigin=writable-layer"), "{c}");
        assert!(c.contains(drift), "{c}");
        // An event that says nothing of its origin (an older sensor) is unknown, not drift.
        let mut old = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = old.record.as_mut() {
            d.process.as_mut().unwrap().origin = 0;
        }
        let p = &jsonl(&old)["deviation"]["process"];
        assert_eq!(p["origin"], "unknown", "{p}");
        assert_eq!(p["drift"], false, "{p}");
        assert!(cef(&old).contains("procguardOrigin=unknown"));
        // Incidents carry theirs; a sensor finding has none.
        let incident = |kind: pb::IncidentKind| pb::StreamRecord {
            record: Some(pb::stream_record::Record::Incident(pb::Incident {
                id: "7".into(),
                kind: kind as i32,
                origin: pb::Origin::Volume as i32,
                ..incident_fields()
            })),
            ..Default::default()
        };
        let i = incident(pb::IncidentKind::Deviation);
        assert_eq!(jsonl(&i)["incident"]["origin"], "volume");
        assert_eq!(ocsf(&i)["unmapped"]["origin"], "volume");
        assert!(cef(&i).contains("procguardOrigin=volume"));
        let blind = incident(pb::IncidentKind::SensorBlind);
        assert_eq!(jsonl(&blind)["incident"]["origin"], Value::Null);
        assert!(!cef(&blind).contains("procguardOrigin="));
    }

    #[test]
    fn a_record_that_does_not_convert_is_never_printed_as_fact() {
        // No context, no completeness: an older or foreign server. Unspecified is partial.
        let mut r = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
            let p = d.process.as_mut().unwrap();
            p.context = 0;
            p.completeness = pb::Completeness::Full as i32;
        }
        let p = &jsonl(&r)["deviation"]["process"];
        assert_eq!(p["completeness"], "partial", "{p}");
        assert_eq!(p["context"], Value::Null, "{p}");
        assert!(
            p["missing"][0]
                .as_str()
                .unwrap()
                .contains("process.context"),
            "{p}"
        );
        assert!(cef(&r).contains("cs6=unknown"));
        // Unspecified completeness with a valid context: partial too (the conversion's rule).
        let mut r = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
            d.process.as_mut().unwrap().context = pb::ExecContext::Descendant as i32;
        }
        assert_eq!(jsonl(&r)["deviation"]["process"]["completeness"], "partial");
    }

    #[test]
    fn every_format_carries_the_content_verdict() {
        let (ran, approved) = ("b".repeat(64), "a".repeat(64));
        let mut r = deviation();
        if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
            d.process.as_mut().unwrap().exe_sha256 = ran.clone();
            d.content = pb::ContentVerdict::Modified as i32;
            d.content_approved_sha256 = vec![approved.clone()];
        }
        let want = json!({"verdict": "modified", "sha256": ran, "approved_sha256": [approved]});
        assert_eq!(jsonl(&r)["deviation"]["content"], want);
        assert_eq!(ocsf(&r)["unmapped"]["content"], want);
        let c = cef(&r);
        assert!(c.contains("procguardContentVerdict=modified"), "{c}");
        assert!(
            c.contains(&format!("procguardApprovedSha256={approved}")),
            "{c}"
        );
        assert!(c.contains(&format!("fileHash={ran}")), "{c}");
        // The incident: its own verdict and the content that set it.
        let mut i = deviation();
        i.record = Some(pb::stream_record::Record::Incident(pb::Incident {
            id: "7".into(),
            kind: pb::IncidentKind::Deviation as i32,
            state: pb::IncidentState::Open as i32,
            content: pb::ContentVerdict::Modified as i32,
            content_sha256: ran.clone(),
            content_approved_sha256: vec![approved.clone()],
            ..incident_fields()
        }));
        assert_eq!(jsonl(&i)["incident"]["content"], want);
        assert_eq!(ocsf(&i)["unmapped"]["content"], want);
        let c = cef(&i);
        assert!(c.contains("procguardContentVerdict=modified"), "{c}");
        assert!(c.contains(&format!("fileHash={ran}")), "{c}");
        // No verdict (a sensor finding, an older server): null, and left out of CEF.
        let none = deviation();
        assert_eq!(jsonl(&none)["deviation"]["content"], Value::Null);
        assert_eq!(ocsf(&none)["unmapped"]["content"], Value::Null);
        assert!(!cef(&none).contains("procguardContentVerdict"));
    }

    #[test]
    fn cef_escapes_and_carries_the_cursor() {
        let line = cef(&deviation());
        assert!(line.starts_with("CEF:0|procguard|procguard|"), "{line}");
        assert!(
            line.contains("|procguard:deviation|Process outside baseline|8|"),
            "{line}"
        );
        assert!(line.contains("cs4=sh -c a\\=b|c\\\\d"), "{line}");
        assert!(line.contains("cn1Label=cursor cn1=42"), "{line}");
        assert!(line.contains("cs1=c/shop/deployment/web/nginx"), "{line}");
        assert_eq!(cef_header("a|b\\c"), "a\\|b\\\\c");
        assert_eq!(cef_value("x=y\nz"), "x\\=y\\nz");
    }

    /// Every `XLabel` key of a CEF line comes with its `X` value.
    fn labels_have_values(line: &str) {
        let keys: Vec<&str> = line
            .split(' ')
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .collect();
        for k in &keys {
            if let Some(base) = k.strip_suffix("Label") {
                assert!(keys.contains(&base), "{k} without {base}: {line}");
            }
        }
    }

    #[test]
    fn host_records_carry_no_empty_fields() {
        let mut r = deviation();
        r.incident_id.clear();
        if let Some(pb::stream_record::Record::Deviation(d)) = &mut r.record {
            let p = d.process.as_mut().unwrap();
            p.workload.as_mut().unwrap().namespace.clear();
            p.container = None;
        }
        let o = ocsf(&r);
        assert!(o.get("container").is_none(), "{o}");
        let c = cef(&r);
        labels_have_values(&c);
        assert!(!c.contains("cs2Label"), "{c}");
        assert!(!c.contains("cs3Label"), "{c}");

        // A container's object carries what is known of it, and nothing empty.
        if let Some(pb::stream_record::Record::Deviation(d)) = &mut r.record {
            d.process.as_mut().unwrap().container = Some(pb::ContainerInfo {
                container_id: "abc".into(),
                image: "web:1".into(),
                ..Default::default()
            });
        }
        assert_eq!(
            ocsf(&r)["container"],
            json!({"uid": "abc", "image": {"name": "web:1"}})
        );
    }

    #[test]
    fn cef_external_ids_differ_between_kinds_with_the_same_number() {
        let incident = pb::StreamRecord {
            record: Some(pb::stream_record::Record::Incident(pb::Incident {
                id: "9".into(),
                ..incident_fields()
            })),
            ..Default::default()
        };
        let audit = pb::StreamRecord {
            record: Some(pb::stream_record::Record::Audit(pb::AuditRecord {
                id: 9,
                at: Some(prost_types::Timestamp::default()),
                result: pb::AuditResult::Ok as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let (i, a, d) = (cef(&incident), cef(&audit), cef(&deviation()));
        assert!(i.contains("externalId=incident:9"), "{i}");
        assert!(a.contains("externalId=audit:9"), "{a}");
        assert!(d.contains("externalId=deviation:e1"), "{d}");
        for line in [i, a, d] {
            labels_have_values(&line);
        }
    }

    #[test]
    fn an_audit_entry_this_build_cannot_read_stops_watch_with_what_to_do() {
        // An outcome a newer server may send: nothing is printed for it, never a guess.
        let r = pb::StreamRecord {
            cursor: 12,
            record: Some(pb::stream_record::Record::Audit(pb::AuditRecord {
                id: 3,
                at: Some(prost_types::Timestamp::default()),
                result: 42,
                ..Default::default()
            })),
            ..Default::default()
        };
        let e = format!("{:#}", Streamed::read(&r).err().unwrap());
        // Likewise an incident whose state this build does not know.
        let i = pb::StreamRecord {
            cursor: 13,
            record: Some(pb::stream_record::Record::Incident(pb::Incident {
                state: 42,
                ..incident_fields()
            })),
            ..Default::default()
        };
        let ie = format!("{:#}", Streamed::read(&i).err().unwrap());
        assert!(
            ie.contains("record 13") && ie.contains("upgrade procguardctl") && ie.contains("state"),
            "{ie}"
        );
        assert!(
            e.contains("record 12")
                && e.contains("upgrade procguardctl")
                && e.contains("--from 12"),
            "{e}"
        );
        assert!(e.contains("'result'"), "{e}");
    }
}
