//! Audit entries: [`AuditEntry`] to the wire (the audit API and the SIEM stream send the same
//! message) and back (what `procguardctl` prints).

use super::{system_time, timestamp, ConvertError, Result};
use crate::v1 as pb;
use procguard_core::audit::{AuditEntry, AuditOutcome};

/// Domain outcome to protobuf.
pub fn outcome_to_pb(o: AuditOutcome) -> pb::AuditResult {
    match o {
        AuditOutcome::Ok => pb::AuditResult::Ok,
        AuditOutcome::Denied => pb::AuditResult::Denied,
        AuditOutcome::Failed => pb::AuditResult::Failed,
    }
}

/// Protobuf outcome to the domain; UNSPECIFIED (never sent) or a value this build does not
/// know is an error naming the field.
pub fn outcome_from_pb(v: i32) -> Result<AuditOutcome> {
    match pb::AuditResult::try_from(v) {
        Ok(pb::AuditResult::Ok) => Ok(AuditOutcome::Ok),
        Ok(pb::AuditResult::Denied) => Ok(AuditOutcome::Denied),
        Ok(pb::AuditResult::Failed) => Ok(AuditOutcome::Failed),
        Ok(pb::AuditResult::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "result",
            value: v,
        }),
    }
}

/// An audit entry as the protocol sends it.
pub fn audit_to_pb(a: &AuditEntry) -> pb::AuditRecord {
    pb::AuditRecord {
        id: a.id,
        at: Some(timestamp(a.at)),
        actor: a.actor.clone(),
        role: a.role.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        result: outcome_to_pb(a.result) as i32,
        detail: a.detail.clone(),
        peer: a.peer.clone(),
    }
}

/// An audit entry as the protocol carries it, back in the domain; `at` and `result` are
/// required (the server always sends them).
pub fn audit_from_pb(a: &pb::AuditRecord) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: a.id,
        at: a
            .at
            .as_ref()
            .map(system_time)
            .ok_or(ConvertError::Missing("at"))?,
        actor: a.actor.clone(),
        role: a.role.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        result: outcome_from_pb(a.result)?,
        detail: a.detail.clone(),
        peer: a.peer.clone(),
    })
}

/// Audit entries as `ListAudit` answers.
pub fn audit_page_to_pb(entries: &[AuditEntry]) -> pb::ListAuditResponse {
    pb::ListAuditResponse {
        records: entries.iter().map(audit_to_pb).collect(),
    }
}

/// A `ListAudit` answer back in the domain; a record that cannot be read is an error naming
/// its ID.
pub fn audit_page_from_pb(
    r: &pb::ListAuditResponse,
) -> std::result::Result<Vec<AuditEntry>, (u64, ConvertError)> {
    r.records
        .iter()
        .map(|a| audit_from_pb(a).map_err(|e| (a.id, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry(result: AuditOutcome) -> AuditEntry {
        AuditEntry {
            id: 7,
            at: UNIX_EPOCH + Duration::new(1_796_270_400, 123_456_789),
            actor: "alice".into(),
            role: "admin".into(),
            action: "ApproveBaseline".into(),
            target: "c/ns/deployment/web/app".into(),
            result,
            detail: "because".into(),
            peer: "127.0.0.1:5000".into(),
        }
    }

    #[test]
    fn every_entry_survives_the_wire() {
        for o in [AuditOutcome::Ok, AuditOutcome::Denied, AuditOutcome::Failed] {
            let e = entry(o);
            assert_eq!(audit_from_pb(&audit_to_pb(&e)).unwrap(), e);
        }
    }

    #[test]
    fn an_entry_without_its_outcome_or_time_is_refused_by_name() {
        let mut pb = audit_to_pb(&entry(AuditOutcome::Ok));
        pb.result = 0;
        assert_eq!(
            audit_from_pb(&pb).unwrap_err(),
            ConvertError::BadEnum {
                field: "result",
                value: 0
            }
        );
        pb.result = 42;
        assert!(audit_from_pb(&pb).is_err());
        let mut pb = audit_to_pb(&entry(AuditOutcome::Ok));
        pb.at = None;
        assert_eq!(audit_from_pb(&pb).unwrap_err(), ConvertError::Missing("at"));
    }
}
