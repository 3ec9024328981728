//! `procguardctl baselines`: list, get, review (approve, reject, add, remove, reset, in bulk),
//! history and diffs, dry runs, export and import. One command group, and longer than most
//! for it: thirteen subcommands, each a request and its table.

use crate::client::read;
use crate::render::{
    content_cell, element_text, export, origin_names, origins_cell, print, table, ts,
};
use crate::{content, usage, Cli, Client, Output};
use anyhow::Context;
use clap::Subcommand;
use procguard_core::content::{ElementsDiff, StatusChange};
use procguard_core::{Baseline, ElementStatus, WorkloadIdentity};
use procguard_proto::convert::review::{
    dry_run_from_pb, history_from_pb, import_from_pb, versions_diff_from_pb,
};
use procguard_proto::convert::{baseline_from_pb, baselines_page_from_pb, bulk_from_pb};
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

/// A baseline as JSON and YAML print it; `with_provenance` as the server sent it (listings
/// leave each element's provenance out, and print it as `null`).
pub(crate) fn baseline_json(b: &Baseline, with_provenance: bool) -> Value {
    let l = &b.learning;
    let c = &b.coverage;
    json!({
        "workload": b.workload.to_string(),
        "state": b.state.as_str(),
        "version": b.version,
        "revision": b.revision,
        "updated_at": ts(Some(b.updated_at)),
        "labels": b.labels,
        "image_digests": b.image_digests,
        "learning": {
            "started_at": ts(Some(l.started_at)),
            "ended_at": ts(l.ended_at),
            "last_new_element_at": ts(l.last_new_element_at),
            "pods_observed": l.pods_observed(),
            "nodes_observed": l.nodes_observed(),
            "events_observed": l.events_observed,
            "end_reason": l.end_reason.clone().unwrap_or_default(),
            "element_limit": l.element_limit.as_ref().map(|e| json!({
                "limit": e.limit,
                "reached_at": ts(Some(e.reached_at)),
                "refused": e.refused,
            })),
        },
        "coverage": {
            "partial_events": c.partial_events,
            "unread_invocations": c.unread_invocations,
            "last_partial_at": ts(c.last_partial_at),
        },
        "elements": b.elements.iter().map(|(k, e)| json!({
            "exe_path": k.exe_path,
            "applet": k.applet,
            "script_path": k.script_path,
            "status": e.status.as_str(),
            "review_reasons": e.review_reasons,
            "manual": e.manual,
            "approved_sha256": e.approved_sha256,
            "origins": origin_names(&e.origins),
            "provenance": with_provenance.then(|| {
                let p = &e.provenance;
                json!({
                    "first_seen": ts(Some(p.first_seen)),
                    "last_seen": ts(Some(p.last_seen)),
                    "count": p.count,
                    "nodes": p.nodes,
                    "pods": p.pods,
                    "parents": p.parents,
                    "sample_argv": p.sample_argv,
                    "sha256": p.sha256,
                })
            }),
        })).collect::<Vec<_>>(),
    })
}

/// Status changes as JSON: each element (`EXE (APPLET) SCRIPT`) with its status before and
/// after.
pub(crate) fn status_changes_json(changes: &[StatusChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| {
                json!({
                    "element": element_text(&c.element),
                    "before": c.before.as_str(),
                    "after": c.after.as_str(),
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
pub(crate) fn element_changes_text(indent: &str, d: &ElementsDiff) -> String {
    let origins_of = |e: &procguard_core::ElementKey| {
        d.origins
            .iter()
            .find(|(k, _)| k == e)
            .map(|(_, o)| format!(" [origins: {}]", origins_cell(o)))
            .unwrap_or_default()
    };
    let contents_of = |e: &procguard_core::ElementKey| {
        d.content
            .iter()
            .find(|c| &c.element == e)
            .map(|c| format!("  {}", content::change_text(c)))
            .unwrap_or_default()
    };
    let mut s = String::new();
    for a in &d.added {
        s += &format!(
            "{indent}+ {}{}{}\n",
            element_text(a),
            origins_of(a),
            contents_of(a)
        );
    }
    for a in &d.removed {
        s += &format!(
            "{indent}- {}{}{}\n",
            element_text(a),
            origins_of(a),
            contents_of(a)
        );
    }
    for c in &d.status {
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
            element_text(&c.element),
            c.before.as_str(),
            c.after.as_str(),
            contents_of(&c.element)
        );
    }
    let named = |e: &procguard_core::ElementKey| {
        d.added.contains(e) || d.removed.contains(e) || d.status.iter().any(|c| &c.element == e)
    };
    for c in &d.content {
        if !named(&c.element) {
            s += &format!(
                "{indent}~ {}  {}\n",
                element_text(&c.element),
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

/// A baseline the server answered a change or a `get` with (provenance included).
pub(crate) fn show_baseline(output: Output, b: &pb::Baseline) -> anyhow::Result<()> {
    let b = read(baseline_from_pb(b), "a baseline")?;
    print(output, &baseline_json(&b, true), || {
        let mut s = format!(
            "Workload:  {}\nState:     {}\nVersion:   {}\n",
            b.workload,
            b.state.as_str(),
            b.version
        );
        let l = &b.learning;
        s += &format!(
            "Learning:  {} events, {} pods, {} nodes{}\n",
            l.events_observed,
            l.pods_observed(),
            l.nodes_observed(),
            match &l.end_reason {
                None => String::new(),
                Some(r) => format!(", ended ({r})"),
            }
        );
        let c = &b.coverage;
        if c.partial_events > 0 {
            s += &format!(
                "Coverage:  {} partial events (a field the sensor could not read), {} of them \
                 execs whose applet or script was unread while all else was allowed; last at {}\n",
                c.partial_events,
                c.unread_invocations,
                ts(c.last_partial_at).as_str().unwrap_or("?"),
            );
        }
        if let Some(e) = &l.element_limit {
            s += &format!(
                "Limit:     element limit reached ({} elements, --max-baseline-elements) at {}; \
                 {} executions outside it refused and reported as deviations; \
                 review it before approving (the baseline is incomplete)\n",
                e.limit,
                ts(Some(e.reached_at)).as_str().unwrap_or("?"),
                e.refused
            );
        }
        s += "\n";
        let rows: Vec<Vec<String>> = b
            .elements
            .iter()
            .map(|(k, e)| {
                vec![
                    k.exe_path.clone(),
                    k.applet.clone(),
                    k.script_path.clone(),
                    e.status.as_str().to_string(),
                    e.provenance.count.to_string(),
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
            let changed: Vec<String> = read(bulk_from_pb(&r), "the changed workloads")?
                .iter()
                .map(WorkloadIdentity::to_string)
                .collect();
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
            let (changes, dry_run) = read(import_from_pb(&r), "the import's changes")?;
            let value = json!({
                "dry_run": dry_run,
                "changes": changes.iter().map(|c| json!({
                    "workload": c.workload.to_string(),
                    "action": c.action.as_str(),
                    "added": c.elements.added.iter().map(element_text).collect::<Vec<_>>(),
                    "removed": c.elements.removed.iter().map(element_text).collect::<Vec<_>>(),
                    "changed": status_changes_json(&c.elements.status),
                    "content_changed": content::changes_json(&c.elements.content),
                })).collect::<Vec<_>>(),
            });
            print(cli.output, &value, || {
                let mut s = if dry_run {
                    "Dry run: nothing was changed.\n".to_string()
                } else {
                    String::new()
                };
                for ch in &changes {
                    s += &format!("{} {}\n", ch.action, ch.workload);
                    s += &element_changes_text("  ", &ch.elements);
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
            let r = read(dry_run_from_pb(&r), "the dry run")?;
            let value = json!({
                "events_replayed": r.events_replayed,
                "would_alert": r.would_alert.iter().map(|h| json!({
                    "element": element_text(&h.element),
                    "count": h.count, "last_seen": ts(h.last_seen),
                    "origins": origin_names(&h.origins),
                })).collect::<Vec<_>>(),
            });
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = r
                    .would_alert
                    .iter()
                    .map(|h| {
                        vec![
                            element_text(&h.element),
                            h.count.to_string(),
                            origins_cell(&h.origins),
                            ts(h.last_seen).as_str().unwrap_or("").to_string(),
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
                let (page, next) = read(baselines_page_from_pb(&r), "a page of baselines")?;
                all.extend(page);
                if next.is_empty() {
                    break;
                }
                page_token = next;
            }
            let value = Value::Array(all.iter().map(|b| baseline_json(b, false)).collect());
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|b| {
                        vec![
                            b.workload.to_string(),
                            b.state.as_str().into(),
                            b.version.to_string(),
                            b.elements.len().to_string(),
                            b.elements
                                .values()
                                .filter(|e| e.status == ElementStatus::NeedsReview)
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
            let versions = read(history_from_pb(&h), "the baseline's history")?;
            let value = Value::Array(
                versions
                    .iter()
                    .map(|v| {
                        json!({
                            "version": v.version, "actor": v.actor, "at": ts(Some(v.at)),
                            "action": v.action, "reason": v.reason, "state": v.state.as_str(),
                            "elements": v.element_count,
                        })
                    })
                    .collect(),
            );
            print(cli.output, &value, || {
                let rows: Vec<Vec<String>> = versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            ts(Some(v.at)).as_str().unwrap_or("").to_string(),
                            v.actor.clone(),
                            v.action.clone(),
                            v.state.as_str().into(),
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
            let d = read(versions_diff_from_pb(&d), "the diff")?;
            let e = &d.elements;
            // The origins of an added or removed element, from the version it is in.
            let origins = |k: &procguard_core::ElementKey| {
                e.origins
                    .iter()
                    .find(|(o, _)| o == k)
                    .map(|(_, o)| origin_names(o))
                    .unwrap_or_default()
            };
            let value = json!({
                "added": e.added.iter().map(element_text).collect::<Vec<_>>(),
                "removed": e.removed.iter().map(element_text).collect::<Vec<_>>(),
                "changed": status_changes_json(&e.status),
                "content_changed": content::changes_json(&e.content),
                // Each added or removed element's origins, by its text.
                "origins": e.added.iter().chain(&e.removed)
                    .map(|k| (element_text(k), json!(origins(k))))
                    .collect::<serde_json::Map<String, Value>>(),
                "state_before": d.state_before.as_str(), "state_after": d.state_after.as_str(),
            });
            print(cli.output, &value, || {
                format!(
                    "state: {} -> {}\n",
                    d.state_before.as_str(),
                    d.state_after.as_str()
                ) + &element_changes_text("", e)
            })
        }
    }
}
