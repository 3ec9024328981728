//! `procguardctl audit list`: the audit log (the siem and admin roles).

use crate::render::{print, table, ts};
use crate::{Cli, Client};
use clap::Subcommand;
use procguard_proto::v1 as pb;
use serde_json::{json, Value};

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
    let result = |v: i32| match pb::AuditResult::try_from(v).unwrap_or(pb::AuditResult::Unspecified)
    {
        pb::AuditResult::Ok => "ok",
        pb::AuditResult::Denied => "denied",
        pb::AuditResult::Failed => "failed",
        pb::AuditResult::Unspecified => "?",
    };
    let value = Value::Array(
        r.records
            .iter()
            .map(|a| {
                json!({
                    "id": a.id, "at": ts(a.at.as_ref()), "actor": a.actor, "role": a.role,
                    "action": a.action, "target": a.target, "result": result(a.result),
                    "detail": a.detail, "peer": a.peer,
                })
            })
            .collect(),
    );
    print(cli.output, &value, || {
        let rows: Vec<Vec<String>> = r
            .records
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    ts(a.at.as_ref()).as_str().unwrap_or("").to_string(),
                    a.actor.clone(),
                    a.role.clone(),
                    a.action.clone(),
                    a.target.clone(),
                    result(a.result).into(),
                    a.detail.clone(),
                ]
            })
            .collect();
        table(
            &[
                "ID", "AT", "ACTOR", "ROLE", "ACTION", "TARGET", "RESULT", "DETAIL",
            ],
            &rows,
        )
    })
}
