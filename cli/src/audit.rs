//! `procguardctl audit list`: the audit log (the siem and admin roles).

use crate::render::{print, table, ts};
use crate::{Cli, Client};
use clap::Subcommand;
use procguard_proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub(crate) enum Audit {
    /// List audit records.
    List {
        /// Only records after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Runs one `audit` subcommand.
pub(crate) async fn run(cli: &Cli, cmd: &Audit) -> anyhow::Result<()> {
    let Audit::List { after, limit } = cmd;
    let c = Client::connect(cli).await?;
    let mut api = pb::audit_service_client::AuditServiceClient::new(c.channel.clone());
    let r = api
        .list_audit(c.req(pb::ListAuditRequest {
            after_id: *after,
            limit: *limit,
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
