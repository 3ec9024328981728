//! `procguardctl`: the command line for procguard's review API, and the development PKI.
//!
//! Output is a readable table by default, or `-o json` / `-o yaml` for scripts. Errors from
//! the server are printed with their gRPC code and message, and the exit code is non-zero:
//! 2 for usage, 3 for authentication/authorisation, 4 for not found, 1 otherwise.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use procguard_core::WorkloadIdentity;
use procguard_proto::convert::system_time;
use procguard_proto::v1 as pb;
use serde_json::{json, Value};
use std::path::PathBuf;
use tonic::transport::Channel;

mod content;
mod incidents;
mod process;
mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "procguardctl",
    version,
    about = "Review and approve procguard baselines",
    after_help = "Exit codes: 0 success; 2 usage error (unknown flag, malformed workload, \
an argument the server refused as invalid); 3 not authenticated or not authorised; \
4 not found; 1 any other failure."
)]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        env = "PROCGUARD_SERVER",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    server: String,
    /// API bearer token.
    #[arg(long, env = "PROCGUARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// File holding the API bearer token.
    #[arg(long, env = "PROCGUARD_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA that signed the server certificate (PEM).
    #[arg(long, env = "PROCGUARD_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Server name to verify in its certificate (defaults to the URL's host).
    #[arg(long, env = "PROCGUARD_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// Client certificate (PEM), to authenticate with a certificate the server's tokens file
    /// lists under `certificates` instead of a token.
    #[arg(long, env = "PROCGUARD_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM) for --tls-cert.
    #[arg(long, env = "PROCGUARD_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Output format.
    #[arg(
        short,
        long,
        env = "PROCGUARD_OUTPUT",
        value_enum,
        default_value = "table",
        global = true
    )]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    /// Columns sized for a terminal; long cells are shortened in the middle.
    Table,
    /// Every column, nothing shortened (`incidents list` adds origin, content verdict and full
    /// times).
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Review and change baselines.
    #[command(subcommand)]
    Baselines(Baselines),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(Audit),
    /// Review incidents and act on them.
    #[command(subcommand)]
    Incidents(incidents::Incidents),
    /// Follow the SIEM stream: one record per line (JSON lines, OCSF or CEF).
    Watch(watch::Watch),
    /// Development certificates and tokens.
    #[command(subcommand)]
    Pki(Pki),
}

#[derive(Debug, Subcommand)]
enum Pki {
    /// Create a development CA, server and sensor certificates, and a token per role.
    Init {
        /// Output directory.
        #[arg(long, env = "PROCGUARD_PKI_DIR")]
        dir: PathBuf,
        /// Node names to issue sensor certificates for.
        #[arg(
            long = "node",
            env = "PROCGUARD_PKI_NODES",
            value_delimiter = ',',
            default_value = "localhost"
        )]
        nodes: Vec<String>,
        /// Names the server certificate is valid for.
        #[arg(
            long = "server-name",
            env = "PROCGUARD_PKI_SERVER_NAMES",
            value_delimiter = ',',
            default_value = "localhost,127.0.0.1,procguard-server,procguard-server.procguard.svc,procguard-server.procguard.svc.cluster.local"
        )]
        server_names: Vec<String>,
        /// Overwrite an existing PKI in the directory.
        #[arg(long, env = "PROCGUARD_PKI_FORCE")]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Filter {
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
enum Baselines {
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

#[derive(Debug, Subcommand)]
enum Audit {
    /// List audit records.
    List {
        /// Only records after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// An element as people write it: `EXE [(APPLET)] [SCRIPT]`. A malformed one is sent as
/// written (the executable alone) and the server's answer says what is wrong.
fn element(s: &str) -> pb::ElementRef {
    match s.parse::<procguard_core::ElementKey>() {
        Ok(k) => procguard_proto::convert::element_ref(&k),
        Err(_) => pb::ElementRef {
            exe_path: s.into(),
            ..Default::default()
        },
    }
}

fn workload(s: &str) -> anyhow::Result<pb::WorkloadIdentity> {
    let id = WorkloadIdentity::parse(s)?;
    Ok((&id).into())
}

fn state_name(v: i32) -> &'static str {
    match pb::BaselineState::try_from(v).unwrap_or(pb::BaselineState::Unspecified) {
        pb::BaselineState::Learning => "learning",
        pb::BaselineState::PendingReview => "pending-review",
        pb::BaselineState::Enforced => "enforced",
        pb::BaselineState::Unspecified => "?",
    }
}

fn status_name(v: i32) -> &'static str {
    match pb::ElementStatus::try_from(v).unwrap_or(pb::ElementStatus::Unspecified) {
        pb::ElementStatus::Learned => "learned",
        pb::ElementStatus::Approved => "approved",
        pb::ElementStatus::NeedsReview => "needs-review",
        pb::ElementStatus::Rejected => "rejected",
        pb::ElementStatus::Unspecified => "?",
    }
}

fn id_text(w: Option<&pb::WorkloadIdentity>) -> String {
    w.and_then(|w| WorkloadIdentity::try_from(w).ok())
        .map(|w| w.to_string())
        .unwrap_or_default()
}

fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    t.map(|t| json!(humantime::format_rfc3339_seconds(system_time(t)).to_string()))
        .unwrap_or(Value::Null)
}

fn baseline_json(b: &pb::Baseline) -> Value {
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

fn print(output: Output, value: &Value, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Table | Output::Wide => print!("{}", table()),
    }
    Ok(())
}

/// The server's export document as asked: YAML (its own form, also for `-o table`) or the
/// same document as JSON. Import takes either, since JSON is YAML.
fn export(output: Output, yaml: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let doc: Value = serde_yaml::from_str(yaml)
                .map_err(|e| anyhow::anyhow!("the server's export is not valid YAML: {e}"))?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Yaml | Output::Table | Output::Wide => print!("{yaml}"),
    }
    Ok(())
}

/// A cell as a terminal may show it: control characters (escape sequences a process put in
/// its argv or file name, line breaks) are written as `\u{..}` escapes, never passed through.
pub(crate) fn cell(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` in at most `max` characters: the middle is replaced by `…`, keeping more of the end,
/// where paths and workload identities differ most.
pub(crate) fn elide(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max || max < 3 {
        return s.to_string();
    }
    let keep = max - 1;
    let head = keep / 3;
    let tail = keep - head;
    let chars: Vec<char> = s.chars().collect();
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

struct Client {
    channel: Channel,
    token: Option<String>,
}

impl Client {
    async fn connect(cli: &Cli) -> anyhow::Result<Self> {
        let rest = cli.server.strip_prefix("https://").ok_or_else(|| {
            usage(format!(
                "--server must be an https:// URL; got '{}'",
                cli.server
            ))
        })?;
        let host = rest.split(['/', ':']).next().unwrap_or("localhost");
        let ca = cli.tls_ca.as_ref().ok_or_else(|| {
            usage("--tls-ca (PROCGUARD_TLS_CA) is required: the CA that signed the server certificate".into())
        })?;
        let identity = match (&cli.tls_cert, &cli.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let tls = procguard_runtime::tls::client_config(
            ca,
            identity,
            cli.tls_server_name.as_deref().unwrap_or(host),
        )
        .map_err(|e| usage(e.0))?;
        let channel = Channel::from_shared(cli.server.clone())?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                let detail = error_chain(&e);
                let hint = connect_hint(&detail)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                anyhow::anyhow!("cannot connect to {}: {detail}{hint}", cli.server)
            })?;
        let token = match (&cli.token, &cli.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read --token-file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(Self { channel, token })
    }

    fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().map_err(|_| {
                    usage("the token holds characters not allowed in a header".into())
                })?,
            );
        }
        Ok(r)
    }

    fn baselines(&self) -> pb::baseline_service_client::BaselineServiceClient<Channel> {
        pb::baseline_service_client::BaselineServiceClient::new(self.channel.clone())
    }
}

/// An error and its sources, each said once (transport errors repeat their source's text).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// What to check for a connection that failed, from what failed.
fn connect_hint(detail: &str) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    if d.contains("unknownissuer") || d.contains("unknown issuer") || d.contains("badsignature") {
        Some("the server's certificate is not signed by the CA given: check --tls-ca (PROCGUARD_TLS_CA)")
    } else if d.contains("notvalidforname") || d.contains("not valid for name") {
        Some("the server's certificate does not name this host: check --server, or --tls-server-name (PROCGUARD_TLS_SERVER_NAME)")
    } else if d.contains("certificate required") || d.contains("certificaterequired") {
        Some("the server asks for a client certificate: give --tls-cert and --tls-key")
    } else if d.contains("connection refused") {
        Some("nothing listens there: is the server running, and is --server (PROCGUARD_SERVER) its address and port?")
    } else if d.contains("timed out") || d.contains("deadline") {
        Some("no answer within 5 s: check --server (PROCGUARD_SERVER) and that the address is reachable")
    } else if d.contains("invalid content type")
        || d.contains("wrong version number")
        || d.contains("corrupt message")
    {
        Some("the other end does not speak TLS: check the port in --server (PROCGUARD_SERVER)")
    } else {
        None
    }
}

#[derive(Debug)]
struct Usage(String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}
fn usage(m: String) -> anyhow::Error {
    anyhow::Error::new(Usage(m))
}

fn element_text(e: &pb::ElementRef) -> String {
    procguard_core::ElementKey {
        exe_path: e.exe_path.clone(),
        applet: e.applet.clone(),
        script_path: e.script_path.clone(),
    }
    .to_string()
}

/// Status changes as JSON: each element (`EXE (APPLET) SCRIPT`) with its status before and
/// after.
fn status_changes_json(changes: &[pb::ElementChange]) -> Value {
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
fn element_changes_text(
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

fn selector(filter: &Filter) -> anyhow::Result<pb::BaselineSelector> {
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

fn show_baseline(output: Output, b: &pb::Baseline) -> anyhow::Result<()> {
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

/// Origin names (`image`, `writable-layer`, ...) of protobuf origin values.
fn origin_names(values: &[i32]) -> Vec<&'static str> {
    values
        .iter()
        .map(|v| procguard_proto::convert::origin_from_pb(*v).as_str())
        .collect()
}

/// An element's origins in a table cell; `-` for none (an element that runs from no drift
/// origin, stored before origins or added by name).
fn origins_cell(values: &[i32]) -> String {
    if values.is_empty() {
        return "-".to_string();
    }
    origin_names(values).join(",")
}

/// An element's approved contents in a table cell: each hash's first 12 hex digits, newest
/// last; `any` for an element not pinned to any content (matched by name alone).
fn content_cell(approved: &[String]) -> String {
    if approved.is_empty() {
        return "any".to_string();
    }
    approved
        .iter()
        .map(|h| &h[..h.len().min(12)])
        .collect::<Vec<_>>()
        .join(",")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Incidents(cmd) => incidents::run(&cli, cmd).await,
        Command::Watch(w) => watch::run(&cli, w).await,
        Command::Pki(Pki::Init {
            dir,
            nodes,
            server_names,
            force,
        }) => {
            if dir.join("ca.key").exists() && !force {
                return Err(usage(format!(
                    "'{}' already holds a PKI; pass --force to replace it",
                    dir.display()
                )));
            }
            let g = procguard_runtime::pki::init(dir, server_names, nodes)?;
            println!("Development PKI written to {}", g.dir.display());
            println!("  CA:       ca.crt (key ca.key)\n  server:   server.crt, server.key\n  sensors:  {}",
                nodes.iter().map(|n| format!("sensor-{n}.crt")).collect::<Vec<_>>().join(", "));
            println!(
                "  tokens:   tokens.yaml (hashes), {}.token",
                procguard_runtime::pki::ROLES.join(".token, ")
            );
            Ok(())
        }
        Command::Baselines(cmd) => {
            let c = Client::connect(&cli).await?;
            let mut api = c.baselines();
            match cmd {
                Baselines::BulkApprove { filter, reason }
                | Baselines::BulkReset { filter, reason } => {
                    if filter.namespace.is_none()
                        && filter.workload.is_none()
                        && filter.state.is_none()
                        && filter.selector.is_none()
                    {
                        return Err(usage("bulk changes need a filter: --namespace, --workload, --state or -l SELECTOR".into()));
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
                                        .filter(|e| {
                                            e.status == pb::ElementStatus::NeedsReview as i32
                                        })
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
                        _ => {
                            return Err(usage(
                                "--sha256 names contents of one element: give exactly one --element with it".into(),
                            ))
                        }
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
                    let value = Value::Array(h.versions.iter().map(|v| json!({
                        "version": v.version, "actor": v.actor, "at": ts(v.at.as_ref()),
                        "action": v.action, "reason": v.reason, "state": state_name(v.state),
                        "elements": v.element_count,
                    })).collect());
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
        Command::Audit(Audit::List { after, limit }) => {
            let c = Client::connect(&cli).await?;
            let mut api = pb::audit_service_client::AuditServiceClient::new(c.channel.clone());
            let r = api
                .list_audit(c.req(pb::ListAuditRequest {
                    after_id: *after,
                    limit: *limit,
                })?)
                .await?
                .into_inner();
            let result = |v: i32| match pb::AuditResult::try_from(v)
                .unwrap_or(pb::AuditResult::Unspecified)
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
    }
}

/// For a call refused for its role: the token to use instead, when the token file in use has a
/// sibling for that role (as `pki init` and the quickstart lay them out).
fn role_hint(s: &tonic::Status, token_file: Option<&std::path::Path>) -> Option<String> {
    if s.code() != tonic::Code::PermissionDenied {
        return None;
    }
    let (_, rest) = s.message().split_once("needs role '")?;
    let role = rest
        .split('\'')
        .next()
        .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_lowercase()))?;
    let sibling = token_file
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join(format!("{role}.token")))
        .filter(|p| p.is_file());
    Some(match sibling {
        Some(p) => format!(
            "the {role} token is in {}: --token-file {} (or PROCGUARD_TOKEN_FILE)",
            p.display(),
            p.display()
        ),
        None => format!(
            "use a token of role '{role}' (--token-file or PROCGUARD_TOKEN_FILE); an admin \
             issues them in the server's tokens file"
        ),
    })
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let token_file = cli.token_file.clone();
    if let Err(e) = run(cli).await {
        let (code, text) = if let Some(s) = e.downcast_ref::<tonic::Status>() {
            let code = match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => 3,
                tonic::Code::NotFound => 4,
                tonic::Code::InvalidArgument => 2,
                _ => 1,
            };
            let hint = role_hint(s, token_file.as_deref())
                .map(|h| format!("\n  hint: {h}"))
                .unwrap_or_default();
            (code, format!("{:?}: {}{hint}", s.code(), s.message()))
        } else if e.downcast_ref::<Usage>().is_some()
            || e.downcast_ref::<procguard_core::identity::IdentityError>()
                .is_some()
        {
            (2, format!("{e:#}"))
        } else {
            (1, format!("{e:#}"))
        };
        eprintln!("procguardctl: {text}");
        std::process::exit(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_role_names_the_token_that_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let viewer = dir.path().join("viewer.token");
        std::fs::write(&viewer, "v").unwrap();
        std::fs::write(dir.path().join("approver.token"), "a").unwrap();
        let denied = tonic::Status::permission_denied(
            "'dev-viewer' has role 'viewer'; this call needs role 'approver'",
        );
        let hint = role_hint(&denied, Some(&viewer)).unwrap();
        assert!(
            hint.contains(&dir.path().join("approver.token").display().to_string()),
            "{hint}"
        );
        // No sibling file: the role and where tokens come from.
        let siem =
            tonic::Status::permission_denied("'x' has role 'viewer'; this call needs role 'siem'");
        let hint = role_hint(&siem, Some(&viewer)).unwrap();
        assert!(
            hint.contains("role 'siem'") && hint.contains("tokens file"),
            "{hint}"
        );
        assert!(role_hint(&siem, None).is_some());
        // Not a role refusal, or a role name that is not one: no hint.
        assert_eq!(
            role_hint(&tonic::Status::not_found("needs role 'x'"), None),
            None
        );
        let odd = tonic::Status::permission_denied("needs role '../../etc'");
        assert_eq!(role_hint(&odd, Some(&viewer)), None);
    }

    #[test]
    fn connection_failures_name_what_to_check() {
        let refused = "transport error: tcp connect error: Connection refused (os error 111)";
        assert!(connect_hint(refused).unwrap().contains("--server"));
        let issuer = "transport error: invalid peer certificate: UnknownIssuer";
        assert!(connect_hint(issuer).unwrap().contains("--tls-ca"));
        let name = "invalid peer certificate: NotValidForName";
        assert!(connect_hint(name).unwrap().contains("--tls-server-name"));
        assert_eq!(connect_hint("something else"), None);
    }

    #[test]
    fn an_error_chain_says_each_text_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "transport error",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E(
                    "tcp connect error",
                    Some(Box::new(E("Connection refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "transport error: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn element_changes_name_applets_scripts_and_contents() {
        let r = |s: &str| element(s);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let text = element_changes_text(
            "  ",
            &[r("/bin/busybox (wget)")],
            &[r("/bin/sh /tmp/x.sh")],
            &[
                pb::ElementChange {
                    element: Some(r("/bin/sh [inline]")),
                    before: pb::ElementStatus::Learned as i32,
                    after: pb::ElementStatus::Rejected as i32,
                    ..Default::default()
                },
                pb::ElementChange {
                    element: Some(r("/tmp/tool")),
                    before: pb::ElementStatus::Approved as i32,
                    after: pb::ElementStatus::Approved as i32,
                    origins_before: vec![pb::Origin::Image as i32],
                    origins_after: vec![pb::Origin::Image as i32, pb::Origin::WritableLayer as i32],
                },
            ],
            &[
                pb::ContentChange {
                    element: Some(r("/bin/busybox (wget)")),
                    added: vec![a.clone()],
                    removed: vec![],
                },
                pb::ContentChange {
                    element: Some(r("/bin/sleep")),
                    added: vec![b],
                    removed: vec![a],
                },
            ],
            &[pb::ElementOrigins {
                element: Some(r("/bin/busybox (wget)")),
                origins: vec![pb::Origin::WritableLayer as i32],
            }],
        );
        assert_eq!(
            text,
            "  + /bin/busybox (wget) [origins: writable-layer]  sha256 +aaaaaaaaaaaa\n  \
             - /bin/sh /tmp/x.sh\n  \
             ~ /bin/sh [inline] (learned -> rejected)\n  \
             ~ /tmp/tool (approved -> approved; origins image -> image,writable-layer)\n  \
             ~ /bin/sleep  sha256 +bbbbbbbbbbbb -aaaaaaaaaaaa\n"
        );
    }
}
