//! `procguardctl baselines`: list, get, review (approve, reject, add, remove, reset, in bulk),
//! history and diffs, dry runs, export and import. One command group, and longer than most
//! for it: thirteen subcommands, each a request and its table.

use crate::render::{
    content_cell, element_text, export, id_text, origin_names, origins_cell, print, state_name,
    status_name, table, ts,
};
use crate::{content, usage, Cli, Client, Output};
use anyhow::Context;
use clap::Subcommand;
use procguard_core::WorkloadIdentity;
use procguard_proto::v1 as pb;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct Filter {
    /// Only this namespace.
    #[arg(short, long, env = "PROCGUARD_NAMESPACE")]
    namespace: Option<String>,
    /// Only this workload name.
    #[arg(long, env = "PROCGUARD_WORKLOAD")]
    workload: Option<String>,
    /// Only this state: learning, pending-review, enforced.
    #[arg(long, env = "PROCGUARD_STATE")]
    state: Option<String>,
    /// Label selector (app=web,tier!=db).
    #[arg(short = 'l', long, env = "PROCGUARD_SELECTOR")]
    selector: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Baselines {
    /// List baselines.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Show one baseline (WORKLOAD is cluster/namespace/kind/name/container).
    Get {
        workload: String,
        /// A past version.
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
    /// Approve a baseline (all learned elements) or just the --element paths given.
    Approve {
        workload: String,
        /// Executable path (repeat); "EXE SCRIPT" for an interpreter and script.
        #[arg(long = "element")]
        elements: Vec<String>,
        /// Why (recorded in history and audit).
        #[arg(long, default_value = "")]
        reason: String,
        /// Fail if the baseline moved past this version since you reviewed it.
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Reject elements: they raise deviations.
    Reject {
        workload: String,
        #[arg(long = "element", required = true)]
        elements: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Add approved elements by hand: EXE [(APPLET)] [SCRIPT], by name alone, or with
    /// --sha256 pinned to exactly the contents given.
    Add {
        workload: String,
        #[arg(long = "element", required = true)]
        elements: Vec<String>,
        /// A content (64 lowercase hex digits, as sha256sum prints them) to approve for the
        /// element (repeat for several); needs exactly one --element. Without it an element
        /// is added by name (a new one is then matched by name alone).
        #[arg(long = "sha256", env = "PROCGUARD_ADD_SHA256", value_delimiter = ',')]
        sha256: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove elements by hand.
    Remove {
        workload: String,
        #[arg(long = "element", required = true)]
        elements: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send a baseline back to learning.
    Reset {
        workload: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the versions of a baseline.
    History { workload: String },
    /// Approve every baseline the filter matches (at least one filter flag is required).
    BulkApprove {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send every baseline the filter matches back to learning (at least one filter flag).
    BulkReset {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Export baselines as YAML (for GitOps; `-o json` writes the same document as JSON,
    /// which `import` reads too); writes to stdout.
    Export {
        #[command(flatten)]
        filter: Filter,
    },
    /// Import baselines from a YAML file (all or nothing). Needs the admin role.
    Import {
        /// The file ("-" for stdin).
        file: PathBuf,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Replay the last days of activity against a candidate baseline: what would have alerted?
    DryRun {
        workload: String,
        /// Days of activity to replay.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Candidate elements (repeat); none means the current baseline's allowed elements.
        #[arg(long = "element")]
        elements: Vec<String>,
    },
    /// Compare two versions.
    Diff {
        workload: String,
        #[arg(long)]
        from: u64,
        /// 0 for the current version.
        #[arg(long, default_value_t = 0)]
        to: u64,
    },
}

/// An element as people write it: `EXE [(APPLET)] [SCRIPT]`. A malformed one is sent as
/// written (the executable alone) and the server's answer says what is wrong.
pub(crate) fn element(s: &str) -> pb::ElementRef {
    match s.parse::<procguard_core::ElementKey>() {
        Ok(k) => procguard_proto::convert::element_ref(&k),
        Err(_) => pb::ElementRef {
            exe_path: s.into(),
            ..Default::default()
        },
    }
}

pub(crate) fn workload(s: &str) -> anyhow::Result<pb::WorkloadIdentity> {
    let id = WorkloadIdentity::parse(s)?;
    Ok((&id).into())
}

pub(crate) fn baseline_json(b: &pb::Baseline) -> Value {
    json!({
        "workload": id_text(b.workload.as_ref()),
        "state": state_name(b.state),
        "version": b.version,
        "revision": b.revision,
        "updated_at": ts(b.updated_at.as_ref()),
        "labels": b.labels,
        "image_digests": b.image_digests,
        "learning": b.learning.as_ref().map(|l| json!({
            "started_at": ts(l.started_at.as_ref()),
            "ended_at": ts(l.ended_at.as_ref()),
            "last_new_element_at": ts(l.last_new_element_at.as_ref()),
            "pods_observed": l.pods_observed,
            "nodes_observed": l.nodes_observed,
            "events_observed": l.events_observed,
            "end_reason": l.end_reason,
            "element_limit": l.element_limit.as_ref().map(|e| json!({
                "limit": e.limit,
                "reached_at": ts(e.reached_at.as_ref()),
                "refused": e.refused,
            })),
        })),
        "coverage": b.coverage.as_ref().map(|c| json!({
            "partial_events": c.partial_events,
            "unread_invocations": c.unread_invocations,
            "last_partial_at": ts(c.last_partial_at.as_ref()),
        })),
        "elements": b.elements.iter().map(|e| json!({
            "exe_path": e.exe_path,
            "applet": e.applet,
            "script_path": e.script_path,
            "status": status_name(e.status),
            "review_reasons": e.review_reasons,
            "manual": e.manual,
            "approved_sha256": e.approved_sha256,
            "origins": origin_names(&e.origins),
            "provenance": e.provenance.as_ref().map(|p| json!({
                "first_seen": ts(p.first_seen.as_ref()),
                "last_seen": ts(p.last_seen.as_ref()),
                "count": p.count,
                "nodes": p.nodes,
                "pods": p.pods,
                "parents": p.parents,
                "sample_argv": p.sample_argv,
                "sha256": p.sha256,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// Status changes as JSON: each element (`EXE (APPLET) SCRIPT`) with its status before and
/// after.
pub(crate) fn status_changes_json(changes: &[pb::ElementChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| {
                json!({
                    "element": c.element.as_ref().map(element_text),
                    "before": status_name(c.before),
                    "after": status_name(c.after),
                    "origins_before": origin_names(&c.origins_before),
                    "origins_after": origin_names(&c.origins_after),
                })
            })
            .collect(),
    )
}

/// Element changes for people, one line per element, each named by executable, applet and
/// script: `+ EXE` added, `- EXE` removed (with their origins, `[origins: …]`, when known),
/// `~ EXE (before -> after)` status or origins changed, and the contents each gains or loses
/// (`sha256 +3d9f… -1a2b…`) on its line or a `~` line of its own.
pub(crate) fn element_changes_text(
    indent: &str,
    added: &[pb::ElementRef],
    removed: &[pb::ElementRef],
    changed: &[pb::ElementChange],
    contents: &[pb::ContentChange],
    origins: &[pb::ElementOrigins],
) -> String {
    let origins_of = |e: &pb::ElementRef| {
        origins
            .iter()
            .find(|o| o.element.as_ref() == Some(e))
            .map(|o| format!(" [origins: {}]", origins_cell(&o.origins)))
            .unwrap_or_default()
    };
    let contents_of = |e: &pb::ElementRef| {
        contents
            .iter()
            .find(|c| c.element.as_ref() == Some(e))
            .map(|c| format!("  {}", content::change_text(c)))
            .unwrap_or_default()
    };
    let mut s = String::new();
    for a in added {
        s += &format!(
            "{indent}+ {}{}{}\n",
            element_text(a),
            origins_of(a),
            contents_of(a)
        );
    }
    for a in removed {
        s += &format!(
            "{indent}- {}{}{}\n",
            element_text(a),
            origins_of(a),
            contents_of(a)
        );
    }
    for c in changed {
        let e = c.element.clone().unwrap_or_default();
        let origins = if c.origins_before == c.origins_after {
            String::new()
        } else {
            format!(
                "; origins {} -> {}",
                origins_cell(&c.origins_before),
                origins_cell(&c.origins_after)
            )
        };
        s += &format!(
            "{indent}~ {} ({} -> {}{origins}){}\n",
            element_text(&e),
            status_name(c.before),
            status_name(c.after),
            contents_of(&e)
        );
    }
    let named = |e: &pb::ElementRef| {
        added.contains(e)
            || removed.contains(e)
            || changed.iter().any(|c| c.element.as_ref() == Some(e))
    };
    for c in contents {
        let e = c.element.clone().unwrap_or_default();
        if !named(&e) {
            s += &format!(
                "{indent}~ {}  {}\n",
                element_text(&e),
                content::change_text(c)
            );
        }
    }
    s
}

pub(crate) fn selector(filter: &Filter) -> anyhow::Result<pb::BaselineSelector> {
    let state = match filter.state.as_deref() {
        None => 0,
        Some("learning") => pb::BaselineState::Learning as i32,
        Some("pending-review") => pb::BaselineState::PendingReview as i32,
        Some("enforced") => pb::BaselineState::Enforced as i32,
        Some(o) => {
            return Err(usage(format!(
                "--state must be learning, pending-review or enforced; got '{o}'"
            )))
        }
    };
    Ok(pb::BaselineSelector {
        namespace: filter.namespace.clone().unwrap_or_default(),
        workload_name: filter.workload.clone().unwrap_or_default(),
        state,
        label_selector: filter.selector.clone().unwrap_or_default(),
        ..Default::default()
    })
}

pub(crate) fn show_baseline(output: Output, b: &pb::Baseline) -> anyhow::Result<()> {
    print(output, &baseline_json(b), || {
        let mut s = format!(
            "Workload:  {}\nState:     {}\nVersion:   {}\n",
            id_text(b.workload.as_ref()),
            state_name(b.state),
            b.version
        );
        if let Some(l) = &b.learning {
            s += &format!(
                "Learning:  {} events, {} pods, {} nodes{}\n",
                l.events_observed,
                l.pods_observed,
                l.nodes_observed,
                if l.end_reason.is_empty() {
                    String::new()
                } else {
                    format!(", ended ({})", l.end_reason)
                }
            );
            if let Some(c) = b.coverage.as_ref().filter(|c| c.partial_events > 0) {
                s += &format!(
                    "Coverage:  {} partial events (a field the sensor could not read), {} of them \
                     execs whose applet or script was unread while all else was allowed; last at {}\n",
                    c.partial_events,
                    c.unread_invocations,
                    ts(c.last_partial_at.as_ref()).as_str().unwrap_or("?"),
                );
            }
            if let Some(e) = &l.element_limit {
                s += &format!(
                    "Limit:     element limit reached ({} elements, --max-baseline-elements) at {}; \
                     {} executions outside it refused and reported as deviations; \
                     review it before approving (the baseline is incomplete)\n",
                    e.limit,
                    ts(e.reached_at.as_ref()).as_str().unwrap_or("?"),
                    e.refused
                );
            }
        }
        s += "\n";
        let rows: Vec<Vec<String>> = b
            .elements
            .iter()
            .map(|e| {
                vec![
                    e.exe_path.clone(),
                    e.applet.clone(),
                    e.script_path.clone(),
                    status_name(e.status).to_string(),
                    e.provenance
                        .as_ref()
                        .map(|p| p.count.to_string())
                        .unwrap_or_default(),
                    content_cell(&e.approved_sha256),
                    origins_cell(&e.origins),
                    e.review_reasons.join(","),
                ]
            })
            .collect();
        s + &table(
            &[
                "EXECUTABLE",
                "APPLET",
                "SCRIPT",
                "STATUS",
                "SEEN",
                "SHA256",
                "ORIGINS",
                "REVIEW",
            ],
            &rows,
        )
    })
}

/// Runs one `baselines` subcommand.
pub(crate) async fn run(cli: &Cli, cmd: &Baselines) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut api = c.baselines();
    match cmd {
        Baselines::BulkApprove { filter, reason } | Baselines::BulkReset { filter, reason } => {
            if filter.namespace.is_none()
                && filter.workload.is_none()
                && filter.state.is_none()
                && filter.selector.is_none()
            {
                return Err(usage(
                    "bulk changes need a filter: --namespace, --workload, --state or -l SELECTOR"
                        .into(),
                ));
            }
            let req = c.req(pb::BulkRequest {
                selector: Some(selector(filter)?),
                reason: reason.clone(),
            })?;
            let r = if matches!(cmd, Baselines::BulkApprove { .. }) {
                api.bulk_approve(req).await?
            } else {
                api.bulk_reset(req).await?
            }
            .into_inner();
            let changed: Vec<String> = r.changed.iter().map(|w| id_text(Some(w))).collect();
            print(cli.output, &json!({ "changed": changed }), || {
                format!("{} baselines changed\n", changed.len())
                    + &changed
                        .iter()
                        .map(|c| format!("  {c}\n"))
                        .collect::<String>()
            })
        }
        Baselines::Export { filter } => {
            let r = api
                .export_baselines(c.req(pb::ExportBaselinesRequest {
                    selector: Some(selector(filter)?),
                })?)
                .await?
                .into_inner();
            export(cli.output, &r.yaml)
        }
        Baselines::Import {
            file,
            dry_run,
            reason,
        } => {
            let yaml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let r = api
                .import_baselines(c.req(pb::ImportBaselinesRequest {
                    yaml,
                    dry_run: *dry_run,
                    reason: reason.clone(),
                })?)
                .await?
                .into_inner();
            let value = json!({
                "dry_run": r.dry_run,
                "changes": r.changes.iter().map(|c| json!({
                    "workload": id_text(c.workload.as_ref()),
                    "action": c.action,
                    "added": c.added.iter().map(element_text).collect::<Vec<_>>(),
                    "removed": c.removed.iter().map(element_text).collect::<Vec<_>>(),
                    "changed": status_changes_json(&c.changed),
                    "content_changed": content::changes_json(&c.content_changed),
                })).collect::<Vec<_>>(),
            });
            print(cli.output, &value, || {
                let mut s = if r.dry_run {
                    "Dry run: nothing was changed.\n".to_string()
                } else {
                    String::new()
                };
                for ch in &r.changes {
                    s += &format!("{} {}\n", ch.action, id_text(ch.workload.as_ref()));
                    s += &element_changes_text(
                        "  ",
                        &ch.added,
                        &ch.removed,
                        &ch.changed,
                        &ch.content_changed,
                        &[],
                    );
                }
                s
            })
        }
        Baselines::DryRun {
            workload: w,
            days,
            elements,
        } => {
            let r = api
                .dry_run(c.req(pb::DryRunRequest {
                    workload: Some(workload(w)?),
                    candidate: elements.iter().map(|e| element(e)).collect(),
                    days: *days,
                })?)
                .await?
                .into_inner();
            let value = json!({
                "events_replayed": r.events_replayed,
                "would_alert": r.would_alert.iter().map(|h| json!({
                    "element": h.element.as_ref().map(element_text).unwrap_or_default(),
                    "count": h.count, "last_seen": ts(h.last_seen.as_ref()),
                    "origins": origin_names(&h.origins),
                })).collect::<Vec<_>>(),
            });
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = r
                    .would_alert
                    .iter()
                    .map(|h| {
                        vec![
                            h.element.as_ref().map(element_text).unwrap_or_default(),
                            h.count.to_string(),
                            origins_cell(&h.origins),
                            ts(h.last_seen.as_ref()).as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect();
                format!(
                    "{} events replayed; {} executables would have alerted\n",
                    r.events_replayed,
                    rows.len()
                ) + &table(&["WOULD ALERT", "RUNS", "ORIGINS", "LAST SEEN"], &rows)
            })
        }
        Baselines::List { filter } => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = api
                    .list_baselines(c.req(pb::ListBaselinesRequest {
                        selector: Some(selector(filter)?),
                        page_size: 500,
                        page_token: page_token.clone(),
                    })?)
                    .await?
                    .into_inner();
                all.extend(r.baselines);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            let value = Value::Array(all.iter().map(baseline_json).collect());
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|b| {
                        vec![
                            id_text(b.workload.as_ref()),
                            state_name(b.state).into(),
                            b.version.to_string(),
                            b.elements.len().to_string(),
                            b.elements
                                .iter()
                                .filter(|e| e.status == pb::ElementStatus::NeedsReview as i32)
                                .count()
                                .to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["WORKLOAD", "STATE", "VERSION", "ELEMENTS", "NEEDS-REVIEW"],
                    &rows,
                )
            })
        }
        Baselines::Get {
            workload: w,
            version,
        } => {
            let b = api
                .get_baseline(c.req(pb::GetBaselineRequest {
                    workload: Some(workload(w)?),
                    version: *version,
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::Approve {
            workload: w,
            elements,
            reason,
            expected_version,
        } => {
            let b = api
                .approve_baseline(c.req(pb::ApproveBaselineRequest {
                    workload: Some(workload(w)?),
                    elements: elements.iter().map(|e| element(e)).collect(),
                    reason: reason.clone(),
                    expected_version: *expected_version,
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::Reject {
            workload: w,
            elements,
            reason,
        } => {
            let b = api
                .reject_elements(c.req(pb::RejectElementsRequest {
                    workload: Some(workload(w)?),
                    elements: elements.iter().map(|e| element(e)).collect(),
                    reason: reason.clone(),
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::Add {
            workload: w,
            elements,
            sha256,
            reason,
        } => {
            let refs: Vec<pb::ElementRef> = match (elements.as_slice(), sha256.as_slice()) {
                (_, []) => elements.iter().map(|e| element(e)).collect(),
                ([one], hashes) => hashes
                    .iter()
                    .map(|h| pb::ElementRef {
                        sha256: h.trim().to_string(),
                        ..element(one)
                    })
                    .collect(),
                _ => return Err(usage(
                    "--sha256 names contents of one element: give exactly one --element with it"
                        .into(),
                )),
            };
            let b = api
                .add_elements(c.req(pb::AddElementsRequest {
                    workload: Some(workload(w)?),
                    elements: refs,
                    reason: reason.clone(),
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::Remove {
            workload: w,
            elements,
            reason,
        } => {
            let b = api
                .remove_elements(c.req(pb::RemoveElementsRequest {
                    workload: Some(workload(w)?),
                    elements: elements.iter().map(|e| element(e)).collect(),
                    reason: reason.clone(),
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::Reset {
            workload: w,
            reason,
        } => {
            let b = api
                .reset_baseline(c.req(pb::ResetBaselineRequest {
                    workload: Some(workload(w)?),
                    reason: reason.clone(),
                })?)
                .await?
                .into_inner();
            show_baseline(cli.output, &b)
        }
        Baselines::History { workload: w } => {
            let h = api
                .get_history(c.req(pb::GetHistoryRequest {
                    workload: Some(workload(w)?),
                })?)
                .await?
                .into_inner();
            let value = Value::Array(
                h.versions
                    .iter()
                    .map(|v| {
                        json!({
                            "version": v.version, "actor": v.actor, "at": ts(v.at.as_ref()),
                            "action": v.action, "reason": v.reason, "state": state_name(v.state),
                            "elements": v.element_count,
                        })
                    })
                    .collect(),
            );
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = h
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            ts(v.at.as_ref()).as_str().unwrap_or("").to_string(),
                            v.actor.clone(),
                            v.action.clone(),
                            state_name(v.state).into(),
                            v.element_count.to_string(),
                            v.reason.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "VERSION", "AT", "ACTOR", "ACTION", "STATE", "ELEMENTS", "REASON",
                    ],
                    &rows,
                )
            })
        }
        Baselines::Diff {
            workload: w,
            from,
            to,
        } => {
            let d = api
                .diff_versions(c.req(pb::DiffVersionsRequest {
                    workload: Some(workload(w)?),
                    from_version: *from,
                    to_version: *to,
                })?)
                .await?
                .into_inner();
            let r = element_text;
            // The origins of an added or removed element, from the version it is in.
            let origins = |e: &pb::ElementRef| -> Vec<i32> {
                d.origins
                    .iter()
                    .find(|o| o.element.as_ref() == Some(e))
                    .map(|o| o.origins.clone())
                    .unwrap_or_default()
            };
            let value = json!({
                "added": d.added.iter().map(r).collect::<Vec<_>>(),
                "removed": d.removed.iter().map(r).collect::<Vec<_>>(),
                "changed": status_changes_json(&d.changed),
                "content_changed": content::changes_json(&d.content_changed),
                // Each added or removed element's origins, by its text.
                "origins": d.added.iter().chain(&d.removed)
                    .map(|e| (r(e), json!(origin_names(&origins(e)))))
                    .collect::<serde_json::Map<String, Value>>(),
                "state_before": state_name(d.state_before), "state_after": state_name(d.state_after),
            });
            print(cli.output, &value, || {
                format!(
                    "state: {} -> {}\n",
                    state_name(d.state_before),
                    state_name(d.state_after)
                ) + &element_changes_text(
                    "",
                    &d.added,
                    &d.removed,
                    &d.changed,
                    &d.content_changed,
                    &d.origins,
                )
            })
        }
    }
}
