//! The audit log's entries: who did what to what, and how it ended. The server writes one for
//! every API call (allowed, denied or failed) and for its own actions on baselines; the audit
//! API and the SIEM stream send them, and `procguardctl` prints them, all as this one type.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOutcome {
    /// Allowed and succeeded.
    Ok,
    /// Refused.
    Denied,
    /// Allowed but failed.
    Failed,
}

impl AuditOutcome {
    /// The outcome as every output prints it: `ok`, `denied`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (set on append).
    pub id: u64,
    /// When.
    pub at: SystemTime,
    /// Who.
    pub actor: String,
    /// Role held.
    pub role: String,
    /// Method or internal action.
    pub action: String,
    /// What it addressed.
    pub target: String,
    /// Outcome.
    pub result: AuditOutcome,
    /// Detail.
    pub detail: String,
    /// Peer address.
    pub peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_print_as_documented() {
        assert_eq!(AuditOutcome::Ok.as_str(), "ok");
        assert_eq!(AuditOutcome::Denied.as_str(), "denied");
        assert_eq!(AuditOutcome::Failed.as_str(), "failed");
    }
}
