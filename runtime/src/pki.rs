//! A development PKI: one CA, a server certificate, per-node sensor client certificates, and an
//! API token per role. Production clusters bring their own CA (cert-manager or Secrets); see
//! `docs/deploy.md`. Private keys are written with mode 0600.
//!
//! Files written into the target directory:
//! `ca.crt`, `ca.key`, `server.crt`, `server.key`, `sensor-<node>.crt`, `sensor-<node>.key`
//! for each node and each fleet name, `sensor.crt`/`sensor.key` (the first fleet's, else the
//! first node's), `client-<name>.crt`/`.key` for each API client, `tokens.yaml` (hashes only)
//! and `<role>.token` (the secrets, one per role).
//!
//! **Sensor identity.** A sensor certificate is marked by a URI subject alternative name:
//! `procguard://sensor/<node>` (may report for that node only) or `procguard://sensor-fleet/<name>`
//! (a certificate shared by a fleet, accepted only where the server lists `<name>` in
//! `--sensor-fleet-names`). Only a certificate with one of these opens the sensor stream, and a
//! certificate with one never calls the API unless the tokens file lists its URI. API client
//! certificates carry no such URI ([`sensor_uri`], [`fleet_uri`], [`SensorMark::of_uri`]).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The URI SAN prefix of a per-node sensor certificate: `procguard://sensor/<node>`.
pub const SENSOR_URI_PREFIX: &str = "procguard://sensor/";
/// The URI SAN prefix of a fleet sensor certificate: `procguard://sensor-fleet/<name>`.
pub const FLEET_URI_PREFIX: &str = "procguard://sensor-fleet/";

/// The URI SAN that marks `node`'s sensor certificate.
pub fn sensor_uri(node: &str) -> String {
    format!("{SENSOR_URI_PREFIX}{node}")
}

/// The URI SAN that marks the fleet certificate `name`.
pub fn fleet_uri(name: &str) -> String {
    format!("{FLEET_URI_PREFIX}{name}")
}

/// What a certificate's procguard URI says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorMark {
    /// A sensor that may report for this node only.
    Node(String),
    /// A certificate shared by a fleet of sensors, by its name.
    Fleet(String),
}

impl SensorMark {
    /// Reads one URI SAN: `Some` for a procguard sensor URI (whether or not the name after the
    /// prefix is valid: see [`SensorMark::name`]), `None` for any other URI.
    pub fn of_uri(uri: &str) -> Option<Self> {
        if let Some(n) = uri.strip_prefix(SENSOR_URI_PREFIX) {
            Some(Self::Node(n.to_string()))
        } else {
            uri.strip_prefix(FLEET_URI_PREFIX)
                .map(|n| Self::Fleet(n.to_string()))
        }
    }

    /// The node or fleet name.
    pub fn name(&self) -> &str {
        match self {
            Self::Node(n) | Self::Fleet(n) => n,
        }
    }

    /// The URI that carries this mark.
    pub fn uri(&self) -> String {
        match self {
            Self::Node(n) => sensor_uri(n),
            Self::Fleet(n) => fleet_uri(n),
        }
    }

    /// Whether the name is usable: 1..=253 letters, digits, '-', '.' and '_'.
    pub fn is_valid(&self) -> bool {
        valid_node(self.name())
    }
}

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
    /// A node, fleet or client name is not usable in a certificate or a file name.
    #[error("name '{0}' is invalid: use letters, digits, '-', '.' and '_' only")]
    BadNode(String),
    /// Two certificates would be written to the same file.
    #[error("'{0}' is named twice (as a node and a fleet): each name gets one sensor-<name>.crt")]
    Duplicate(String),
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

/// A client certificate bound to a role, by its subject common name, or (for a sensor
/// certificate, which the API otherwise refuses) by its sensor URI. The certificate must be
/// signed by the server's client CA. Exactly one of `common_name` and `uri` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// Who holds it; recorded as the actor in the audit log.
    pub name: String,
    /// Role: viewer, approver, admin or siem.
    pub role: String,
    /// The certificate's subject common name (a certificate without a sensor URI).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub common_name: String,
    /// The certificate's sensor URI (`procguard://sensor/<node>` or
    /// `procguard://sensor-fleet/<name>`): lets that sensor certificate call the API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
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

/// What [`init_with`] issues besides the CA, the server certificate and the tokens.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Names the server certificate is valid for.
    pub server_names: Vec<String>,
    /// Nodes to issue per-node sensor certificates for (`procguard://sensor/<node>`).
    pub nodes: Vec<String>,
    /// Fleet certificates to issue (`procguard://sensor-fleet/<name>`), each accepted only by a
    /// server that lists the name in `--sensor-fleet-names`.
    pub fleets: Vec<String>,
    /// API client certificates to issue (no sensor URI), for the tokens file's `certificates`.
    pub clients: Vec<String>,
}

/// Creates a development CA, server certificate (for `server_names`), sensor certificates for
/// `nodes`, and tokens. Refuses nothing: callers decide whether to overwrite.
pub fn init(dir: &Path, server_names: &[String], nodes: &[String]) -> Result<Generated, PkiError> {
    init_with(
        dir,
        &Request {
            server_names: server_names.to_vec(),
            nodes: nodes.to_vec(),
            ..Request::default()
        },
    )
}

/// [`init`] with fleet and API client certificates too.
pub fn init_with(dir: &Path, req: &Request) -> Result<Generated, PkiError> {
    let Request {
        server_names,
        nodes,
        fleets,
        clients,
    } = req;
    for n in nodes.iter().chain(fleets).chain(clients) {
        if !valid_node(n) {
            return Err(PkiError::BadNode(n.clone()));
        }
    }
    if let Some(n) = fleets.iter().find(|f| nodes.contains(f)) {
        return Err(PkiError::Duplicate(n.clone()));
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
                uri: Option<String>,
                usage: ExtendedKeyUsagePurpose|
     -> Result<(String, String), PkiError> {
        let mut p = CertificateParams::new(sans)?;
        if let Some(uri) = uri {
            p.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
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
        None,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&dir.join("server.crt"), &crt, 0o644)?;
    write(&dir.join("server.key"), &key, 0o600)?;

    // The sensor URI is what the server binds a stream to; the CN only names the file's
    // holder for people. Fleets first, so `sensor.crt` is the first fleet's when there is one.
    let sensors = fleets
        .iter()
        .map(|f| (f, fleet_uri(f)))
        .chain(nodes.iter().map(|n| (n, sensor_uri(n))));
    for (i, (name, uri)) in sensors.enumerate() {
        let (crt, key) = leaf(name, vec![], Some(uri), ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&dir.join(format!("sensor-{name}.crt")), &crt, 0o644)?;
        write(&dir.join(format!("sensor-{name}.key")), &key, 0o600)?;
        if i == 0 {
            write(&dir.join("sensor.crt"), &crt, 0o644)?;
            write(&dir.join("sensor.key"), &key, 0o600)?;
        }
    }
    for name in clients {
        let (crt, key) = leaf(name, vec![], None, ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&dir.join(format!("client-{name}.crt")), &crt, 0o644)?;
        write(&dir.join(format!("client-{name}.key")), &key, 0o600)?;
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

    fn uris(pem_path: &Path) -> Vec<String> {
        let pem = std::fs::read(pem_path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let mut out = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(u) = n {
                    out.push(u.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn sensor_fleet_and_client_certificates_carry_their_marks() {
        let dir = tempfile::tempdir().unwrap();
        init_with(
            dir.path(),
            &Request {
                server_names: vec!["localhost".into()],
                nodes: vec!["node-a".into()],
                fleets: vec!["ds".into()],
                clients: vec!["alice".into()],
            },
        )
        .unwrap();
        let d = dir.path();
        assert_eq!(
            uris(&d.join("sensor-node-a.crt")),
            ["procguard://sensor/node-a"]
        );
        assert_eq!(
            uris(&d.join("sensor-ds.crt")),
            ["procguard://sensor-fleet/ds"]
        );
        // sensor.crt is the first fleet's.
        assert_eq!(uris(&d.join("sensor.crt")), ["procguard://sensor-fleet/ds"]);
        assert!(uris(&d.join("client-alice.crt")).is_empty());
        assert!(uris(&d.join("server.crt")).is_empty());
        assert_eq!(
            SensorMark::of_uri("procguard://sensor/node-a"),
            Some(SensorMark::Node("node-a".into()))
        );
        assert!(!SensorMark::of_uri("procguard://sensor/a/b")
            .unwrap()
            .is_valid());
        assert!(matches!(
            init_with(
                d,
                &Request {
                    nodes: vec!["x".into()],
                    fleets: vec!["x".into()],
                    ..Request::default()
                }
            ),
            Err(PkiError::Duplicate(_))
        ));
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
