//! `procguardctl pki init`: the development PKI (CA, server and sensor certificates, role
//! tokens) for a test cluster or the quickstart.

use crate::usage;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum Pki {
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

/// Runs one `pki` subcommand.
pub(crate) fn run(cmd: &Pki) -> anyhow::Result<()> {
    let Pki::Init {
        dir,
        nodes,
        server_names,
        force,
    } = cmd;
    if dir.join("ca.key").exists() && !force {
        return Err(usage(format!(
            "'{}' already holds a PKI; pass --force to replace it",
            dir.display()
        )));
    }
    let g = procguard_runtime::pki::init(dir, server_names, nodes)?;
    println!("Development PKI written to {}", g.dir.display());
    println!(
        "  CA:       ca.crt (key ca.key)\n  server:   server.crt, server.key\n  sensors:  {}",
        nodes
            .iter()
            .map(|n| format!("sensor-{n}.crt"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  tokens:   tokens.yaml (hashes), {}.token",
        procguard_runtime::pki::ROLES.join(".token, ")
    );
    Ok(())
}
