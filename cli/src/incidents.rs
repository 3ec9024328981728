//! `procguardctl incidents list|get|ack|resolve|allow`: review incidents and act on them.

use crate::content;
use crate::process::ProcessView;
use crate::{id_text, print, table, ts, usage, Cli, Client, Output};
use clap::Subcommand;
use procguard_proto::convert::content::{event_check, incident_check};
use procguard_proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum Incidents {
    /// List incidents, newest first (--oldest-first for the other way).
    List {
        /// Only this namespace.
        #[arg(short, long, env = "PROCGUARD_NAMESPACE")]
        namespace: Option<String>,
        /// At least this severity: low, medium, high, critical.
        #[arg(long, env = "PROCGUARD_MIN_SEVERITY")]
        min_severity: Option<String>,
        /// Only this state: open, acknowledged, resolved, allowed.
        #[arg(long, env = "PROCGUARD_INCIDENT_STATE")]
        state: Option<String>,
        /// At most this many: the newest, or with --oldest-first the oldest.
        #[arg(long, env = "PROCGUARD_LIMIT", default_value_t = 100)]
        limit: u32,
        /// Oldest (lowest ID) first.
        #[arg(long, env = "PROCGUARD_OLDEST_FIRST")]
        oldest_first: bool,
        /// Only incidents last seen at or after this time: RFC 3339, or a duration ago (2h, 7d).
        #[arg(long, env = "PROCGUARD_SINCE", value_parser = crate::render::time_arg)]
        since: Option<std::time::SystemTime>,
        /// Only incidents last seen before this time: RFC 3339, or a duration ago.
        #[arg(long, env = "PROCGUARD_BEFORE", value_parser = crate::render::time_arg)]
        before: Option<std::time::SystemTime>,
    },
    /// Show one incident with its sample events.
    Get { id: String },
    /// Mark an incident as seen.
    Ack {
        id: String,
        /// Why (recorded in the incident and the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Close an incident without changing the baseline.
    Resolve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Close an incident and add exactly what it ran to the workload's baseline: its element
    /// (executable, applet, script) and the contents (sha256) its samples ran with.
    Allow {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Parses a severity name for filters.
pub fn severity_arg(s: &str) -> anyhow::Result<pb::Severity> {
    Ok(match s {
        "low" => pb::Severity::Low,
        "medium" => pb::Severity::Medium,
        "high" => pb::Severity::High,
        "critical" => pb::Severity::Critical,
        o => {
            return Err(usage(format!(
                "severity '{o}' is unknown; use low, medium, high or critical"
            )))
        }
    })
}

/// Lowercase severity name.
pub fn severity_name(v: i32) -> &'static str {
    match pb::Severity::try_from(v).unwrap_or(pb::Severity::Unspecified) {
        pb::Severity::Low => "low",
        pb::Severity::Medium => "medium",
        pb::Severity::High => "high",
        pb::Severity::Critical => "critical",
        pb::Severity::Unspecified => "",
    }
}

/// Lowercase state name.
pub fn state_name(v: i32) -> &'static str {
    match pb::IncidentState::try_from(v).unwrap_or(pb::IncidentState::Unspecified) {
        pb::IncidentState::Open => "open",
        pb::IncidentState::Acknowledged => "acknowledged",
        pb::IncidentState::Resolved => "resolved",
        pb::IncidentState::Allowed => "allowed",
        pb::IncidentState::Unspecified => "?",
    }
}

/// Lowercase kind name.
pub fn kind_name(v: i32) -> &'static str {
    match pb::IncidentKind::try_from(v).unwrap_or(pb::IncidentKind::Unspecified) {
        pb::IncidentKind::Deviation => "deviation",
        pb::IncidentKind::SensorBlind => "sensor-blind",
        pb::IncidentKind::ExecSession => "exec-session",
        pb::IncidentKind::Unspecified => "?",
    }
}

/// A process event as JSON: its [`ProcessView`], with context, completeness and what is
/// missing.
pub fn process_json(p: &pb::ProcessEvent) -> Value {
    ProcessView::of(p).json()
}

/// An incident as JSON.
pub fn incident_json(i: &pb::Incident) -> Value {
    json!({
        "id": i.id,
        "kind": kind_name(i.kind),
        "workload": id_text(i.workload.as_ref()),
        "namespace": i.workload.as_ref().map(|w| w.namespace.clone()).unwrap_or_default(),
        "exe_path": i.exe_path,
        "applet": i.applet,
        "script_path": i.script_path,
        "severity": severity_name(i.severity),
        "severity_reason": i.severity_reason,
        "origin": origin_name(i),
        "content": content::json(incident_check(i).as_ref()),
        "state": state_name(i.state),
        "first_seen": ts(i.first_seen.as_ref()),
        "last_seen": ts(i.last_seen.as_ref()),
        "count": i.count,
        "nodes": i.nodes,
        "pods": i.pods,
        "baseline_version": i.baseline_version,
        "sensor_node": i.sensor_node,
        "state_actor": i.state_actor,
        "state_reason": i.state_reason,
        "samples": i.samples.iter().map(|s| json!({
            "event_id": s.event_id,
            "at": ts(s.observed_at.as_ref()),
            "process": s.process.as_ref().map(process_json),
            "content": content::json(event_check(s).as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// Where an incident's executable came from (`image`, `writable-layer`, ...; `unknown` when
/// the server did not say), or `null` for a sensor finding, which has no executable.
pub(crate) fn origin_name(i: &pb::Incident) -> Value {
    if i.kind == pb::IncidentKind::SensorBlind as i32 {
        return Value::Null;
    }
    json!(procguard_proto::convert::origin_from_pb(i.origin).as_str())
}

/// What an incident is about: the sensor, or the element (`EXE (APPLET) SCRIPT`).
pub(crate) fn subject(i: &pb::Incident) -> String {
    if i.kind == pb::IncidentKind::SensorBlind as i32 {
        format!("sensor {}", i.sensor_node)
    } else if i.kind == pb::IncidentKind::ExecSession as i32 {
        let first = procguard_core::ElementKey {
            exe_path: i.exe_path.clone(),
            applet: i.applet.clone(),
            script_path: i.script_path.clone(),
        };
        format!("exec session: {first}")
    } else {
        procguard_core::ElementKey {
            exe_path: i.exe_path.clone(),
            applet: i.applet.clone(),
            script_path: i.script_path.clone(),
        }
        .to_string()
    }
}

/// Widest workload and subject in the default table: with the other columns (IDs up to 8
/// digits, counts up to 10) it fits 120.
const TABLE_WORKLOAD: usize = 30;
const TABLE_SUBJECT: usize = 30;

/// The incidents table. By default it fits a terminal of 120 columns: long workloads and
/// subjects are shortened in the middle, the last-seen time is an age, and origin and content
/// verdict (in `get` and `-o wide`) are left out. `wide` has every column in full.
fn list_table(all: &[pb::Incident], wide: bool) -> String {
    let now = std::time::SystemTime::now();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            let workload = id_text(i.workload.as_ref());
            let mut row = vec![
                i.id.clone(),
                severity_name(i.severity).into(),
                state_name(i.state).into(),
                i.count.to_string(),
            ];
            if wide {
                row.extend([
                    workload,
                    subject(i),
                    origin_name(i).as_str().unwrap_or("-").into(),
                    incident_check(i).map_or("-", |c| c.verdict.as_str()).into(),
                    ts(i.last_seen.as_ref()).as_str().unwrap_or("").into(),
                ]);
            } else {
                row.extend([
                    crate::render::elide(&crate::render::cell(&workload), TABLE_WORKLOAD),
                    crate::render::elide(&crate::render::cell(&subject(i)), TABLE_SUBJECT),
                    age(i.last_seen.as_ref(), now),
                ]);
            }
            row
        })
        .collect();
    let headers: &[&str] = if wide {
        &[
            "ID",
            "SEVERITY",
            "STATE",
            "COUNT",
            "WORKLOAD",
            "SUBJECT",
            "ORIGIN",
            "CONTENT",
            "LAST SEEN",
        ]
    } else {
        &[
            "ID",
            "SEVERITY",
            "STATE",
            "COUNT",
            "WORKLOAD",
            "SUBJECT",
            "LAST SEEN",
        ]
    };
    table(headers, &rows)
}

/// How long ago `t` was, in the largest whole unit: `42s`, `5m`, `3h`, `2d` (`-` if unknown).
fn age(t: Option<&prost_types::Timestamp>, now: std::time::SystemTime) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = now
        .duration_since(procguard_proto::convert::system_time(t))
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7_199 => format!("{}m ago", secs / 60),
        7_200..=172_799 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// " by <actor> (<reason>)" after the state, the reason only when one was given.
fn state_by(i: &pb::Incident) -> String {
    match (i.state_actor.is_empty(), i.state_reason.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(" by {}", i.state_actor),
        (false, false) => format!(" by {} ({})", i.state_actor, i.state_reason),
    }
}

fn show(output: Output, i: &pb::Incident) -> anyhow::Result<()> {
    print(output, &incident_json(i), || {
        let mut s = format!(
            "Incident:  {}\nKind:      {}\nWorkload:  {}\nSubject:   {}\nOrigin:    {}\nSeverity:  {} ({})\nContent:   {}\nState:     {}{}\nSeen:      {} times, {} .. {}\nNodes:     {}\nPods:      {}\n",
            i.id,
            kind_name(i.kind),
            id_text(i.workload.as_ref()),
            subject(i),
            origin_name(i).as_str().unwrap_or("-"),
            severity_name(i.severity),
            i.severity_reason,
            if i.kind == pb::IncidentKind::SensorBlind as i32 {
                "none (a sensor finding)".to_string()
            } else {
                content::text(incident_check(i).as_ref())
            },
            state_name(i.state),
            state_by(i),
            i.count,
            ts(i.first_seen.as_ref()).as_str().unwrap_or(""),
            ts(i.last_seen.as_ref()).as_str().unwrap_or(""),
            i.nodes.join(", "),
            i.pods.join(", "),
        );
        for e in &i.samples {
            if let Some(p) = &e.process {
                let chain: Vec<&str> = p.ancestors.iter().map(|a| a.exe_path.as_str()).collect();
                let v = ProcessView::of(p);
                s += &format!(
                    "  sample pid {} on {}: {}  (parents: {}; {}; origin {}; content {}){}\n",
                    p.pid,
                    p.node_name,
                    p.argv.join(" "),
                    chain.join(" < "),
                    v.context_name(),
                    v.origin,
                    content::text(event_check(e).as_ref()),
                    v.partial_note()
                );
            }
        }
        s
    })
}

/// Runs one `incidents` subcommand.
pub async fn run(cli: &Cli, cmd: &Incidents) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut api = pb::incident_service_client::IncidentServiceClient::new(c.channel.clone());
    match cmd {
        Incidents::List {
            namespace,
            min_severity,
            state,
            limit,
            oldest_first,
            since,
            before,
        } => {
            let state = match state.as_deref() {
                None => pb::IncidentState::Unspecified,
                Some("open") => pb::IncidentState::Open,
                Some("acknowledged") => pb::IncidentState::Acknowledged,
                Some("resolved") => pb::IncidentState::Resolved,
                Some("allowed") => pb::IncidentState::Allowed,
                Some(o) => {
                    return Err(usage(format!(
                        "--state '{o}' is unknown; use open, acknowledged, resolved or allowed"
                    )))
                }
            };
            let min_severity = match min_severity.as_deref() {
                None => pb::Severity::Unspecified,
                Some(s) => severity_arg(s)?,
            };
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = api
                    .list_incidents(c.req(pb::ListIncidentsRequest {
                        namespace: namespace.clone().unwrap_or_default(),
                        min_severity: min_severity as i32,
                        state: state as i32,
                        page_size: (*limit as usize - all.len()).min(1000) as u32,
                        page_token: token.clone(),
                        newest_first: !oldest_first,
                        since: since.map(procguard_proto::convert::timestamp),
                        before: before.map(procguard_proto::convert::timestamp),
                    })?)
                    .await?
                    .into_inner();
                all.extend(r.incidents);
                if r.next_page_token.is_empty() || all.len() >= *limit as usize {
                    break;
                }
                token = r.next_page_token;
            }
            let value = Value::Array(all.iter().map(incident_json).collect());
            print(cli.output, &value, || {
                list_table(&all, cli.output == Output::Wide)
            })
        }
        Incidents::Get { id } => {
            let i = api
                .get_incident(c.req(pb::GetIncidentRequest { id: id.clone() })?)
                .await?
                .into_inner();
            show(cli.output, &i)
        }
        Incidents::Ack { id, reason }
        | Incidents::Resolve { id, reason }
        | Incidents::Allow { id, reason } => {
            let req = c.req(pb::IncidentActionRequest {
                id: id.clone(),
                reason: reason.clone(),
            })?;
            let i = match cmd {
                Incidents::Ack { .. } => api.acknowledge_incident(req).await?,
                Incidents::Resolve { .. } => api.resolve_incident(req).await?,
                _ => api.allow_incident(req).await?,
            }
            .into_inner();
            show(cli.output, &i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_incident() -> pb::Incident {
        pb::Incident {
            id: "123456".into(),
            kind: pb::IncidentKind::Deviation as i32,
            state: pb::IncidentState::Acknowledged as i32,
            severity: pb::Severity::Critical as i32,
            count: 1_000_000,
            workload: Some(pb::WorkloadIdentity {
                cluster: "production-eu-west-1".into(),
                namespace: "payments-settlement".into(),
                kind: pb::WorkloadKind::Deployment as i32,
                workload_name: "settlement-reconciliation-worker".into(),
                container_name: "reconciler".into(),
            }),
            // A name a process chose: terminal escapes and a line break included.
            exe_path: "/var/lib/app/cache/\x1b]0;owned\x07/.hidden/kworker\n-miner".into(),
            script_path: "/opt/very/long/path/to/a/script/that/never/ends.sh".into(),
            origin: pb::Origin::WritableLayer as i32,
            last_seen: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_fits_a_terminal_and_wide_has_everything() {
        let i = long_incident();
        let narrow = list_table(std::slice::from_ref(&i), false);
        for line in narrow.lines() {
            assert!(
                line.chars().count() <= 120,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(narrow.contains('…'), "{narrow}");
        assert!(narrow.contains("d ago"), "{narrow}");
        // The end of a path, where the file name is, survives the shortening.
        assert!(narrow.contains("never/ends.sh"), "{narrow}");
        let wide = list_table(std::slice::from_ref(&i), true);
        assert!(wide.contains(&id_text(i.workload.as_ref())), "{wide}");
        assert!(wide.contains("writable-layer"), "{wide}");
        assert!(wide.contains("2023-11-14T22:13:20Z"), "{wide}");
        // No control character reaches the terminal, in either form.
        for out in [&narrow, &wide] {
            assert_eq!(out.lines().count(), 2, "{out}");
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        }
        assert!(wide.contains("\\u{1b}]0;owned\\u{7}"), "{wide}");
    }

    #[test]
    fn state_actor_without_a_reason_shows_no_empty_parentheses() {
        let mut i = pb::Incident::default();
        assert_eq!(state_by(&i), "");
        i.state_actor = "alice".into();
        assert_eq!(state_by(&i), " by alice");
        i.state_reason = "known job".into();
        assert_eq!(state_by(&i), " by alice (known job)");
    }
}
