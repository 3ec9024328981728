//! `procguardctl incidents list|get|ack|resolve|allow`: review incidents and act on them.

use crate::client::read;
use crate::content;
use crate::process::ProcessView;
use crate::render::seconds;
use crate::{id_text, print, table, ts, usage, Cli, Client, Output};
use clap::Subcommand;
use procguard_core::incident::{Incident, IncidentKind};
use procguard_core::ElementKey;
use procguard_proto::convert::incident::{incident_from_pb, incidents_page_from_pb};
use procguard_proto::v1 as pb;
use serde_json::{json, Value};
use std::time::SystemTime;

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

/// An incident as every JSON and YAML output prints it (`incidents -o json`, `watch`'s lines).
pub fn incident_json(i: &Incident) -> Value {
    json!({
        "id": i.id,
        "kind": i.kind.as_str(),
        "workload": id_text(i.workload.as_ref()),
        "namespace": i.workload.as_ref().map(|w| w.namespace.clone()).unwrap_or_default(),
        "exe_path": i.exe_path,
        "applet": i.applet,
        "script_path": i.script_path,
        "severity": i.severity.as_str(),
        "severity_reason": i.severity_reason,
        "origin": origin_name(i),
        "content": content::json(i.content.as_ref()),
        "state": i.state.as_str(),
        "first_seen": ts(Some(i.first_seen)),
        "last_seen": ts(Some(i.last_seen)),
        "count": i.count,
        "nodes": i.nodes,
        "pods": i.pods,
        "baseline_version": i.baseline_version,
        "sensor_node": i.sensor_node,
        "state_actor": i.state_actor,
        "state_reason": i.state_reason,
        "samples": i.samples.iter().map(|s| json!({
            "event_id": s.event_id,
            "at": ts(Some(s.at)),
            "process": ProcessView::from(&s.process).json(),
            "content": content::json(s.content.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// Where an incident's executable came from (`image`, `writable-layer`, ...; `unknown` when
/// the server did not say), or `null` for a sensor finding, which has no executable.
pub(crate) fn origin_name(i: &Incident) -> Value {
    if i.kind == IncidentKind::SensorBlind {
        return Value::Null;
    }
    json!(i.origin.as_str())
}

/// What an incident is about: the sensor, or the element (`EXE (APPLET) SCRIPT`).
pub(crate) fn subject(i: &Incident) -> String {
    let element = || ElementKey {
        exe_path: i.exe_path.clone(),
        applet: i.applet.clone(),
        script_path: i.script_path.clone(),
    };
    match i.kind {
        IncidentKind::SensorBlind => format!("sensor {}", i.sensor_node),
        IncidentKind::ExecSession => format!("exec session: {}", element()),
        IncidentKind::Deviation => element().to_string(),
        // Past the cap on active incidents; its samples name what ran.
        IncidentKind::DeviationOverflow => format!("overflow: {} deviations", i.count),
    }
}

/// Widest workload and subject in the default table: with the other columns (IDs up to 8
/// digits, counts up to 10) it fits 120.
const TABLE_WORKLOAD: usize = 30;
const TABLE_SUBJECT: usize = 30;

/// The incidents table. By default it fits a terminal of 120 columns: long workloads and
/// subjects are shortened in the middle, the last-seen time is an age, and origin and content
/// verdict (in `get` and `-o wide`) are left out. `wide` has every column in full.
fn list_table(all: &[Incident], wide: bool) -> String {
    let now = std::time::SystemTime::now();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            let workload = id_text(i.workload.as_ref());
            let mut row = vec![
                i.id.clone(),
                i.severity.as_str().into(),
                i.state.as_str().into(),
                i.count.to_string(),
            ];
            if wide {
                row.extend([
                    workload,
                    subject(i),
                    origin_name(i).as_str().unwrap_or("-").into(),
                    i.content
                        .as_ref()
                        .map_or("-", |c| c.verdict.as_str())
                        .into(),
                    seconds(i.last_seen),
                ]);
            } else {
                row.extend([
                    crate::render::elide(&crate::render::cell(&workload), TABLE_WORKLOAD),
                    crate::render::elide(&crate::render::cell(&subject(i)), TABLE_SUBJECT),
                    age(i.last_seen, now),
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

/// How long ago `t` was, in the largest whole unit: `42s`, `5m`, `3h`, `2d`.
fn age(t: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7_199 => format!("{}m ago", secs / 60),
        7_200..=172_799 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// " by <actor> (<reason>)" after the state, the reason only when one was given.
fn state_by(i: &Incident) -> String {
    match (i.state_actor.is_empty(), i.state_reason.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(" by {}", i.state_actor),
        (false, false) => format!(" by {} ({})", i.state_actor, i.state_reason),
    }
}

/// An incident the server answered `get` or an action with, with its samples.
fn show(output: Output, i: &pb::Incident) -> anyhow::Result<()> {
    let i = read(incident_from_pb(i), format_args!("incident {}", i.id))?;
    print(output, &incident_json(&i), || {
        let mut s = format!(
            "Incident:  {}\nKind:      {}\nWorkload:  {}\nSubject:   {}\nOrigin:    {}\nSeverity:  {} ({})\nContent:   {}\nState:     {}{}\nSeen:      {} times, {} .. {}\nNodes:     {}\nPods:      {}\n",
            i.id,
            i.kind.as_str(),
            id_text(i.workload.as_ref()),
            subject(&i),
            origin_name(&i).as_str().unwrap_or("-"),
            i.severity.as_str(),
            i.severity_reason,
            if i.kind == IncidentKind::SensorBlind {
                "none (a sensor finding)".to_string()
            } else {
                content::text(i.content.as_ref())
            },
            i.state.as_str(),
            state_by(&i),
            i.count,
            seconds(i.first_seen),
            seconds(i.last_seen),
            i.nodes.iter().cloned().collect::<Vec<_>>().join(", "),
            i.pods.iter().cloned().collect::<Vec<_>>().join(", "),
        );
        for e in &i.samples {
            let p = &e.process;
            let chain: Vec<&str> = p.ancestors.iter().map(|a| a.exe_path.as_str()).collect();
            let v = ProcessView::from(p);
            s += &format!(
                "  sample pid {} on {}: {}  (parents: {}; {}; origin {}; content {}){}\n",
                p.pid,
                p.node_name,
                p.argv.join(" "),
                chain.join(" < "),
                v.context_name(),
                v.origin,
                content::text(e.content.as_ref()),
                v.partial_note()
            );
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
                let (page, next) = read(incidents_page_from_pb(&r), "a page of incidents")?;
                all.extend(page);
                if next.is_empty() || all.len() >= *limit as usize {
                    break;
                }
                token = next;
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

    fn long_incident() -> Incident {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        Incident {
            id: "123456".into(),
            kind: IncidentKind::Deviation,
            workload: Some(
                procguard_core::WorkloadIdentity::parse(
                    "production-eu-west-1/payments-settlement/deployment/settlement-reconciliation-worker/reconciler",
                )
                .unwrap(),
            ),
            // A name a process chose: terminal escapes and a line break included.
            exe_path: "/var/lib/app/cache/\x1b]0;owned\x07/.hidden/kworker\n-miner".into(),
            applet: String::new(),
            script_path: "/opt/very/long/path/to/a/script/that/never/ends.sh".into(),
            severity: procguard_core::incident::Severity::Critical,
            severity_reason: String::new(),
            content: None,
            state: procguard_core::incident::IncidentState::Acknowledged,
            first_seen: at,
            last_seen: at,
            count: 1_000_000,
            nodes: Default::default(),
            pods: Default::default(),
            samples: vec![],
            baseline_version: 0,
            origin: procguard_core::Origin::WritableLayer,
            sensor_node: String::new(),
            state_actor: String::new(),
            state_reason: String::new(),
            updated_at: at,
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
        let mut i = long_incident();
        assert_eq!(state_by(&i), "");
        i.state_actor = "alice".into();
        assert_eq!(state_by(&i), " by alice");
        i.state_reason = "known job".into();
        assert_eq!(state_by(&i), " by alice (known job)");
    }
}
