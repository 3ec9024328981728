//! Who is calling, and may they?
//!
//! API callers present `authorization: Bearer <token>`; the server keeps only sha256 hashes of
//! tokens (from `tokens.yaml`), each bound to a [`Role`], or a client certificate the tokens
//! file lists. Sensors present a client certificate signed by the configured CA and marked as a
//! sensor's by a URI SAN ([`cert`]); [`sensor`] decides which node a stream may report for.
//! A sensor certificate never calls the API unless the tokens file lists its URI. Denials are
//! audited by the caller of [`Tokens::authorize`].

pub mod cert;
mod gate;
pub mod sensor;
pub use cert::PeerCert;
pub use gate::Gate;

use procguard_runtime::pki::{hash_token, TokensFile};
use procguard_runtime::ConfigError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// What a token may do. Admin may do everything; approver everything a viewer may plus change
/// baselines and incidents; siem may read the audit log and the subscription stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read baselines and incidents.
    Viewer,
    /// Viewer, plus change baselines and incidents.
    Approver,
    /// Everything.
    Admin,
    /// Read the audit log and the SIEM stream.
    Siem,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Self::Viewer,
            "approver" => Self::Approver,
            "admin" => Self::Admin,
            "siem" => Self::Siem,
            _ => return None,
        })
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Approver => "approver",
            Self::Admin => "admin",
            Self::Siem => "siem",
        }
    }

    /// Whether this role satisfies `needed`.
    pub fn satisfies(self, needed: Role) -> bool {
        matches!(
            (self, needed),
            (Role::Admin, _)
                | (Role::Approver, Role::Viewer | Role::Approver)
                | (Role::Viewer, Role::Viewer)
                | (Role::Siem, Role::Siem)
        )
    }
}

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name.
    pub actor: String,
    /// Role.
    pub role: Role,
    /// When the gate first looked at the call: its latency is measured from here.
    pub started: Instant,
}

/// Why a call was refused, with what the audit log records.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Actor as far as known ("anonymous" without a valid token).
    pub actor: String,
    /// Role, when the token was valid.
    pub role: Option<Role>,
    /// The status to return.
    pub status: Status,
}

/// The token table, keyed by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<HashMap<String, Caller>>,
    by_cert: Arc<HashMap<String, Caller>>,
    /// Sensor certificates allowed on the API, by their sensor URI.
    by_uri: Arc<HashMap<String, Caller>>,
}

impl Tokens {
    /// Loads `tokens.yaml`, rejecting unknown fields, unknown roles and malformed hashes.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("cannot read tokens file '{}': {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| ConfigError(format!("tokens file '{}': {e}", path.display())))
    }

    /// Parses the YAML text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for (i, t) in file.tokens.iter().enumerate() {
            let role = Role::parse(&t.role).ok_or_else(|| {
                format!(
                    "entry {i} ('{}'): unknown role '{}'; use viewer, approver, admin or siem",
                    t.name, t.role
                )
            })?;
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "entry {i} ('{}'): sha256 must be 64 hex characters (sha256 of the token secret)",
                    t.name
                ));
            }
            by_hash.insert(
                t.sha256.to_ascii_lowercase(),
                Caller {
                    actor: t.name.clone(),
                    role,
                    started: Instant::now(),
                },
            );
        }
        let mut by_cert = HashMap::new();
        let mut by_uri = HashMap::new();
        for (i, c) in file.certificates.iter().enumerate() {
            let role = Role::parse(&c.role).ok_or_else(|| {
                format!(
                    "certificates entry {i} ('{}'): unknown role '{}'; use viewer, approver, admin or siem",
                    c.name, c.role
                )
            })?;
            let caller = Caller {
                actor: c.name.clone(),
                role,
                started: Instant::now(),
            };
            match (c.common_name.trim().is_empty(), c.uri.trim().is_empty()) {
                (false, true) => by_cert.insert(c.common_name.clone(), caller),
                (true, false) => {
                    if !procguard_runtime::pki::SensorMark::of_uri(&c.uri)
                        .is_some_and(|m| m.is_valid())
                    {
                        return Err(format!(
                            "certificates entry {i} ('{}'): uri '{}' is not a sensor URI \
                             (procguard://sensor/<node> or procguard://sensor-fleet/<name>); \
                             list other certificates by common_name",
                            c.name, c.uri
                        ));
                    }
                    by_uri.insert(c.uri.clone(), caller)
                }
                _ => {
                    return Err(format!(
                        "certificates entry {i} ('{}'): give exactly one of common_name (an API \
                         client certificate) and uri (a sensor certificate allowed on the API)",
                        c.name
                    ))
                }
            };
        }
        Ok(Self {
            by_hash: Arc::new(by_hash),
            by_cert: Arc::new(by_cert),
            by_uri: Arc::new(by_uri),
        })
    }

    /// Authenticates a request: its bearer token, or else a client certificate listed in the
    /// tokens file's `certificates`, and checks the caller holds `needed`. A sensor
    /// certificate is refused whatever else the request carries, unless its URI is listed: a
    /// node's credentials never reach the API by accident (a token copied onto a node
    /// included).
    pub fn authorize_request<T>(
        &self,
        request: &tonic::Request<T>,
        needed: Role,
    ) -> Result<Caller, Denied> {
        let cert = PeerCert::of_request(request);
        if let Some(cert) = &cert {
            if !cert.marks.is_empty() {
                let listed = cert
                    .sensor()
                    .ok()
                    .flatten()
                    .and_then(|m| self.by_uri.get(&m.uri()));
                return match listed {
                    Some(caller) => check_role(caller, needed),
                    None => Err(Denied {
                        actor: format!("sensor-certificate:{}", cert.describe()),
                        role: None,
                        status: Status::permission_denied(format!(
                            "the client certificate ({}, {}) is a sensor certificate, and sensor \
                             certificates cannot call the API; connect without it (a token \
                             alone), or ask an admin to list its URI under 'certificates' (uri:) \
                             in the server's tokens file",
                            cert.describe(),
                            cert.marks
                                .iter()
                                .map(procguard_runtime::pki::SensorMark::uri)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    }),
                };
            }
        }
        if request.metadata().get("authorization").is_none() {
            let names: Vec<String> = cert.map(|c| c.common_names).unwrap_or_default();
            if let Some(caller) = names.iter().find_map(|n| self.by_cert.get(n)) {
                return check_role(caller, needed);
            }
            // A certificate the CA signed but the tokens file does not list (a sensor's, the
            // server's): say so, rather than only that a token is missing.
            if let Some(name) = names.first() {
                return Err(Denied {
                    actor: "anonymous".into(),
                    role: None,
                    status: Status::unauthenticated(format!(
                        "no bearer token, and the client certificate (CN={name}) is not an API \
                         identity: the server's certificate never is. Send a token \
                         (procguardctl --token-file or PROCGUARD_TOKEN_FILE), or ask an admin \
                         to list this common name with a role under 'certificates' in the \
                         server's tokens file"
                    )),
                });
            }
        }
        self.authorize(request.metadata(), needed)
    }

    /// Authenticates the bearer token in `metadata` and checks it holds `needed`.
    pub fn authorize(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        needed: Role,
    ) -> Result<Caller, Denied> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(secret) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(Denied {
                actor: "anonymous".into(),
                role: None,
                status: Status::unauthenticated(
                    "missing bearer token: send 'authorization: Bearer <token>' (procguardctl --token or PROCGUARD_TOKEN)",
                ),
            });
        };
        let Some(caller) = self.by_hash.get(&hash_token(secret)) else {
            return Err(Denied {
                actor: "anonymous".into(),
                role: None,
                status: Status::unauthenticated(
                    "unknown bearer token: no token of the server's tokens file matches it; check \
                     --token / PROCGUARD_TOKEN (or --token-file), or ask an admin for a token \
                     of the role you need",
                ),
            });
        };
        check_role(caller, needed)
    }
}

fn check_role(caller: &Caller, needed: Role) -> Result<Caller, Denied> {
    if !caller.role.satisfies(needed) {
        return Err(Denied {
            actor: caller.actor.clone(),
            role: Some(caller.role),
            status: Status::permission_denied(format!(
                "'{}' has role '{}'; this call needs role '{}'",
                caller.actor,
                caller.role.as_str(),
                needed.as_str()
            )),
        });
    }
    Ok(caller.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(token: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn roles_are_checked() {
        let yaml = format!(
            "tokens:\n- name: alice\n  role: viewer\n  sha256: {}\n- name: bob\n  role: approver\n  sha256: {}\n",
            hash_token("v"),
            hash_token("a")
        );
        let t = Tokens::parse(&yaml).unwrap();
        assert_eq!(t.authorize(&md("v"), Role::Viewer).unwrap().actor, "alice");
        let denied = t.authorize(&md("v"), Role::Approver).unwrap_err();
        assert_eq!(denied.status.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.actor, "alice");
        assert!(t.authorize(&md("a"), Role::Approver).is_ok());
        assert_eq!(
            t.authorize(&md("nope"), Role::Viewer)
                .unwrap_err()
                .status
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            t.authorize(&Default::default(), Role::Viewer)
                .unwrap_err()
                .status
                .code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_token_files_say_what_is_wrong() {
        let e = Tokens::parse("tokens:\n- name: x\n  role: root\n  sha256: 00\n").unwrap_err();
        assert!(e.contains("unknown role 'root'"), "{e}");
        let e = Tokens::parse("tokens:\n- name: x\n  role: admin\n  sha256: 00\n").unwrap_err();
        assert!(e.contains("64 hex"), "{e}");
        let e = Tokens::parse("tokenz: []\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
