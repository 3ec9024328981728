//! A development PKI: one CA, a server certificate, per-node sensor client certificates, and an
//! API token per role. Production clusters bring their own CA (cert-manager or Secrets); see
//! `docs/deploy.md`. Private keys are written with mode 0600.
//!
//! Files written into the target directory:
//! `ca.crt`, `ca.key`, `server.crt`, `server.key`, `sensor-<node>.crt`, `sensor-<node>.key`
//! (and `sensor.crt`/`sensor.key` for the first node), `tokens.yaml` (hashes only) and
//! `<role>.token` (the secrets, one per role).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Roles an API token can hold, least to most privileged (siem is separate: read the stream).
pub const ROLES: [&str; 4] = ["viewer", "approver", "admin", "siem"];

/// Why PKI generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A node name is not usable in a certificate or a file name.
    #[error("node name '{0}' is invalid: use letters, digits, '-', '.' and '_' only")]
    BadNode(String),
}

/// One token entry in `tokens.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it; recorded as the actor in the audit log.
    pub name: String,
    /// Role: viewer, approver, admin or siem.
    pub role: String,
    /// Hex sha256 of the secret token.
    pub sha256: String,
}

/// The `tokens.yaml` file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// Bearer tokens.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// API callers that authenticate with a client certificate instead of a token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateEntry>,
}

/// A client certificate bound to a role, by its subject common name. The certificate must be
/// signed by the server's client CA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// Who holds it; recorded as the actor in the audit log.
    pub name: String,
    /// Role: viewer, approver, admin or siem.
    pub role: String,
    /// The certificate's subject common name.
    pub common_name: String,
}

/// Hex sha256 of a token secret, as stored in `tokens.yaml`.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// What [`init`] produced.
#[derive(Debug)]
pub struct Generated {
    /// Directory written.
    pub dir: PathBuf,
    /// Token secret per role.
    pub tokens: Vec<(String, String)>,
}

/// Creates a development CA, server certificate (for `server_names`), sensor certificates for
/// `nodes`, and tokens. Refuses nothing: callers decide whether to overwrite.
pub fn init(dir: &Path, server_names: &[String], nodes: &[String]) -> Result<Generated, PkiError> {
    for n in nodes {
        if !valid_node(n) {
            return Err(PkiError::BadNode(n.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "procguard development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(&dir.join("ca.crt"), &ca_cert.pem(), 0o644)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str,
                sans: Vec<String>,
                usage: ExtendedKeyUsagePurpose|
     -> Result<(String, String), PkiError> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(90);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };

    let (crt, key) = leaf(
        "procguard-server",
        server_names.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&dir.join("server.crt"), &crt, 0o644)?;
    write(&dir.join("server.key"), &key, 0o600)?;

    for (i, node) in nodes.iter().enumerate() {
        // The node name is both the CN and a DNS SAN: the server binds a sensor's stream to it.
        let (crt, key) = leaf(
            node,
            vec![node.clone()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write(&dir.join(format!("sensor-{node}.crt")), &crt, 0o644)?;
        write(&dir.join(format!("sensor-{node}.key")), &key, 0o600)?;
        if i == 0 {
            write(&dir.join("sensor.crt"), &crt, 0o644)?;
            write(&dir.join("sensor.key"), &key, 0o600)?;
        }
    }

    let mut file = TokensFile {
        tokens: Vec::new(),
        certificates: Vec::new(),
    };
    let mut tokens = Vec::new();
    for role in ROLES {
        let secret = format!("pgt_{}", hex::encode(rand::random::<[u8; 24]>()));
        file.tokens.push(TokenEntry {
            name: format!("dev-{role}"),
            role: role.to_string(),
            sha256: hash_token(&secret),
        });
        write(&dir.join(format!("{role}.token")), &secret, 0o600)?;
        tokens.push((role.to_string(), secret));
    }
    let yaml = serde_yaml::to_string(&file).unwrap_or_default();
    write(
        &dir.join("tokens.yaml"),
        &format!("# procguard API tokens: sha256 of each secret, bound to a role.\n{yaml}"),
        0o644,
    )?;
    Ok(Generated {
        dir: dir.to_path_buf(),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_with_private_keys_unreadable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let g = init(
            dir.path(),
            &["localhost".into(), "127.0.0.1".into()],
            &["node-a".into(), "node-b".into()],
        )
        .unwrap();
        for f in [
            "ca.crt",
            "server.crt",
            "server.key",
            "sensor.crt",
            "sensor-node-b.key",
            "tokens.yaml",
            "admin.token",
        ] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "server.key readable by group/other");
        let tokens: TokensFile =
            serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("tokens.yaml")).unwrap())
                .unwrap();
        let (_, admin) = g.tokens.iter().find(|(r, _)| r == "admin").unwrap();
        assert!(tokens
            .tokens
            .iter()
            .any(|t| t.role == "admin" && t.sha256 == hash_token(admin)));
        assert!(!std::fs::read_to_string(dir.path().join("tokens.yaml"))
            .unwrap()
            .contains(admin.as_str()));
    }

    #[test]
    fn rejects_node_names_that_would_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init(dir.path(), &[], &["../x".into()]),
            Err(PkiError::BadNode(_))
        ));
    }
}
