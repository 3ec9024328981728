//! `procguardctl`: the command line for procguard's review API, and the development PKI.
//!
//! Output is a readable table by default, or `-o json` / `-o yaml` for scripts. Errors from
//! the server are printed with their gRPC code and message, and the exit code is non-zero:
//! 2 for usage, 3 for authentication/authorisation, 4 for not found, 1 otherwise.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod audit;
mod baselines;
mod client;
mod content;
mod incidents;
mod pki;
mod process;
mod render;
mod watch;

use audit::Audit;
use baselines::Baselines;
pub(crate) use client::{usage, Client, Usage};
use pki::Pki;
pub(crate) use render::{element_text, id_text, print, table, ts};

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Incidents(cmd) => incidents::run(&cli, cmd).await,
        Command::Watch(w) => watch::run(&cli, w).await,
        Command::Pki(cmd) => pki::run(cmd),
        Command::Baselines(cmd) => baselines::run(&cli, cmd).await,
        Command::Audit(cmd) => audit::run(&cli, cmd).await,
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
    use crate::baselines::element_changes_text;
    use crate::client::{connect_hint, error_chain};

    use super::role_hint;

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
        use procguard_core::content::{ContentChange, ElementsDiff, StatusChange};
        use procguard_core::{ElementKey, ElementStatus, Origin};
        let r = |s: &str| s.parse::<ElementKey>().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let text = element_changes_text(
            "  ",
            &ElementsDiff {
                added: vec![r("/bin/busybox (wget)")],
                removed: vec![r("/bin/sh /tmp/x.sh")],
                status: vec![
                    StatusChange {
                        element: r("/bin/sh [inline]"),
                        before: ElementStatus::Learned,
                        after: ElementStatus::Rejected,
                        origins_before: Default::default(),
                        origins_after: Default::default(),
                    },
                    StatusChange {
                        element: r("/tmp/tool"),
                        before: ElementStatus::Approved,
                        after: ElementStatus::Approved,
                        origins_before: [Origin::Image].into(),
                        origins_after: [Origin::Image, Origin::WritableLayer].into(),
                    },
                ],
                content: vec![
                    ContentChange {
                        element: r("/bin/busybox (wget)"),
                        added: vec![a.clone()],
                        removed: vec![],
                    },
                    ContentChange {
                        element: r("/bin/sleep"),
                        added: vec![b],
                        removed: vec![a],
                    },
                ],
                origins: vec![(r("/bin/busybox (wget)"), [Origin::WritableLayer].into())],
            },
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
