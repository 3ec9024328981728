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
        /// Node names to issue sensor certificates for (URI SAN procguard://sensor/<node>:
        /// each reports for its own node only).
        #[arg(
            long = "node",
            env = "PROCGUARD_PKI_NODES",
            value_delimiter = ',',
            default_value = "localhost"
        )]
        nodes: Vec<String>,
        /// Fleet certificates to issue (URI SAN procguard://sensor-fleet/<name>): one
        /// certificate for many sensors, accepted only by a server that lists the name in
        /// --sensor-fleet-names. Written as sensor-<name>.crt (and sensor.crt for the first).
        #[arg(long = "fleet", env = "PROCGUARD_PKI_FLEETS", value_delimiter = ',')]
        fleets: Vec<String>,
        /// API client certificates to issue (client-<name>.crt, no sensor URI), to list under
        /// 'certificates' in the tokens file.
        #[arg(long = "client", env = "PROCGUARD_PKI_CLIENTS", value_delimiter = ',')]
        clients: Vec<String>,
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
        fleets,
        clients,
        server_names,
        force,
    } = cmd;
    if dir.join("ca.key").exists() && !force {
        return Err(usage(format!(
            "'{}' already holds a PKI; pass --force to replace it",
            dir.display()
        )));
    }
    let g = procguard_runtime::pki::init_with(
        dir,
        &procguard_runtime::pki::Request {
            server_names: server_names.clone(),
            nodes: nodes.clone(),
            fleets: fleets.clone(),
            clients: clients.clone(),
        },
    )?;
    println!("Development PKI written to {}", g.dir.display());
    let files = |prefix: &str, names: &[String]| {
        names
            .iter()
            .map(|n| format!("{prefix}-{n}.crt"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  CA:       ca.crt (key ca.key)\n  server:   server.crt, server.key\n  sensors:  {}",
        files("sensor", nodes)
    );
    if !fleets.is_empty() {
        println!(
            "  fleets:   {} (list each name in the server's --sensor-fleet-names)",
            files("sensor", fleets)
        );
    }
    if !clients.is_empty() {
        println!(
            "  clients:  {} (list each under 'certificates' in tokens.yaml)",
            files("client", clients)
        );
    }
    println!(
        "  tokens:   tokens.yaml (hashes), {}.token",
        procguard_runtime::pki::ROLES.join(".token, ")
    );
    Ok(())
}
