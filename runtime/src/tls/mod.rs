//! Loading TLS material. Every file is read and parsed at start-up, so a wrong path or a
//! corrupt PEM is a configuration error (exit 64) rather than a failure on the first
//! connection. The server and the sensor then follow their files as they change
//! ([`reload`]); the CLI and tests load once ([`client_config`]).

pub mod reload;
pub use reload::{client_tls, server_tls, Labels, Material, Outcome, Reloading, TlsFiles};

use crate::self_metrics::record_certificate;
use crate::ConfigError;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

fn read_pem(path: &Path, what: &str, marker: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read {what} '{}': {e}; pass an existing PEM file (see README, \"Certificates\")",
            path.display()
        ))
    })?;
    if !text.contains(marker) {
        return Err(ConfigError(format!(
            "{what} '{}' holds no '{marker}' block; it must be PEM",
            path.display()
        )));
    }
    Ok(text)
}

/// Reads a PEM certificate (chain).
pub fn read_cert(path: &Path, what: &str) -> Result<String, ConfigError> {
    read_pem(path, what, "-----BEGIN CERTIFICATE-----")
}

/// Reads a PEM private key.
pub fn read_key(path: &Path, what: &str) -> Result<String, ConfigError> {
    read_pem(path, what, "PRIVATE KEY-----")
}

/// Server TLS: `cert`/`key` identify the server; `client_ca` (when given) verifies client
/// certificates. Client certificates are optional at the TLS layer because API callers
/// authenticate with bearer tokens; the sensor service demands one itself.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, ConfigError> {
    let cert_pem = read_cert(cert, "server certificate")?;
    record_certificate("server", &cert_pem);
    let identity = Identity::from_pem(cert_pem, read_key(key, "server key")?);
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        let ca_pem = read_cert(ca, "client CA")?;
        record_certificate("client-ca", &ca_pem);
        cfg = cfg
            .client_ca_root(Certificate::from_pem(ca_pem))
            .client_auth_optional(true);
    }
    Ok(cfg)
}

/// Client TLS: `ca` verifies the server; `cert`/`key` (when given) identify the client.
pub fn client_config(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
    domain: &str,
) -> Result<ClientTlsConfig, ConfigError> {
    let ca_pem = read_cert(ca, "CA certificate")?;
    record_certificate("ca", &ca_pem);
    let mut cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain.to_string());
    if let Some((cert, key)) = cert_and_key {
        let cert_pem = read_cert(cert, "client certificate")?;
        record_certificate("client", &cert_pem);
        cfg = cfg.identity(Identity::from_pem(cert_pem, read_key(key, "client key")?));
    }
    Ok(cfg)
}
