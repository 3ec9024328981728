//! `procguardctl audit list`: the audit log (the siem and admin roles), and how every output
//! prints an audit entry (the domain [`AuditEntry`], read through `proto::convert`).

use crate::render::{print, seconds, table};
use crate::{Cli, Client};
use anyhow::Context;
use clap::Subcommand;
use procguard_core::audit::AuditEntry;
use procguard_proto::convert::audit::audit_from_pb;
use procguard_proto::v1 as pb;
use serde_json::Value;
use std::time::SystemTime;

#[derive(Debug, Subcommand)]
pub(crate) enum Audit {
    /// List audit records, newest first (--oldest-first for the other way).
    List {
        /// Only records after this id.
        #[arg(long, env = "PROCGUARD_AUDIT_AFTER", default_value_t = 0)]
        after: u64,
        /// At most this many: the newest, or with --oldest-first the oldest (at most 1000).
        #[arg(long, env = "PROCGUARD_LIMIT", default_value_t = 100)]
        limit: u32,
        /// Oldest (lowest id) first, as the log was written.
        #[arg(long, env = "PROCGUARD_OLDEST_FIRST")]
        oldest_first: bool,
        /// Only records at or after this time: RFC 3339, or a duration ago (2h, 7d).
        #[arg(long, env = "PROCGUARD_SINCE", value_parser = crate::render::time_arg)]
        since: Option<std::time::SystemTime>,
        /// Only records before this time: RFC 3339, or a duration ago.
        #[arg(long, env = "PROCGUARD_BEFORE", value_parser = crate::render::time_arg)]
        before: Option<std::time::SystemTime>,
    },
}

/// Runs one `audit` subcommand.
pub(crate) async fn run(cli: &Cli, cmd: &Audit) -> anyhow::Result<()> {
    let Audit::List {
        after,
        limit,
        oldest_first,
        since,
        before,
    } = cmd;
    let c = Client::connect(cli).await?;
    let mut api = pb::audit_service_client::AuditServiceClient::new(c.channel.clone());
    let r = api
        .list_audit(c.req(pb::ListAuditRequest {
            after_id: *after,
            limit: *limit,
            newest_first: !oldest_first,
            before_id: 0,
            since: since.map(procguard_proto::convert::timestamp),
            before: before.map(procguard_proto::convert::timestamp),
        })?)
        .await?
        .into_inner();
    let entries = r
        .records
        .iter()
        .map(|a| {
            audit_from_pb(a).with_context(|| {
                format!(
                    "the server sent audit record {} in a form this procguardctl cannot read; \
                     upgrade procguardctl to the server's version",
                    a.id
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let value = Value::Array(entries.iter().map(|a| json(a, seconds)).collect());
    print(cli.output, &value, || {
        let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
        table(
            &[
                "ID", "AT", "ACTOR", "ROLE", "ACTION", "TARGET", "RESULT", "DETAIL",
            ],
            &rows,
        )
    })
}

/// An audit entry as every JSON and YAML output prints it (`audit list -o json`, `watch`'s
/// lines), its time as `at` formats it.
pub(crate) fn json(a: &AuditEntry, at: fn(SystemTime) -> String) -> Value {
    serde_json::json!({
        "id": a.id, "at": at(a.at), "actor": a.actor, "role": a.role,
        "action": a.action, "target": a.target, "result": a.result.as_str(),
        "detail": a.detail, "peer": a.peer,
    })
}

/// An audit entry as a table row (`audit list`).
fn row(a: &AuditEntry) -> Vec<String> {
    vec![
        a.id.to_string(),
        seconds(a.at),
        a.actor.clone(),
        a.role.clone(),
        a.action.clone(),
        a.target.clone(),
        a.result.as_str().into(),
        a.detail.clone(),
    ]
}
