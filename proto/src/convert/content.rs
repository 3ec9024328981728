//! Content conversions: the content verdict ([`ContentCheck`]) on incidents, their samples and
//! the SIEM stream's deviation records, and element sets compared ([`ElementsDiff`]).
//!
//! The verdict is the server's: it leaves the server on `Incident.content*` and
//! `SensorEvent.content*`, and is read back only by clients that print it. A value this build
//! does not know (a newer server) reads as no verdict, never as a guess.

use super::{
    element_key, element_ref, origins_from_pb, origins_to_pb, status_from_pb, status_to_pb,
    ConvertError, Result,
};
use crate::v1 as pb;
use procguard_core::content::{ContentChange, ElementsDiff, StatusChange};
use procguard_core::{ContentCheck, ContentVerdict};

/// Domain verdict to protobuf.
pub fn verdict_to_pb(v: ContentVerdict) -> pb::ContentVerdict {
    match v {
        ContentVerdict::NewElement => pb::ContentVerdict::NewElement,
        ContentVerdict::NotAllowed => pb::ContentVerdict::NotAllowed,
        ContentVerdict::Approved => pb::ContentVerdict::Approved,
        ContentVerdict::Unpinned => pb::ContentVerdict::Unpinned,
        ContentVerdict::Modified => pb::ContentVerdict::Modified,
        ContentVerdict::Unverified => pb::ContentVerdict::Unverified,
    }
}

/// Protobuf verdict to domain: `None` for UNSPECIFIED (not judged) and for a value this build
/// does not know.
pub fn verdict_from_pb(v: i32) -> Option<ContentVerdict> {
    Some(match pb::ContentVerdict::try_from(v).ok()? {
        pb::ContentVerdict::Unspecified => return None,
        pb::ContentVerdict::NewElement => ContentVerdict::NewElement,
        pb::ContentVerdict::NotAllowed => ContentVerdict::NotAllowed,
        pb::ContentVerdict::Approved => ContentVerdict::Approved,
        pb::ContentVerdict::Unpinned => ContentVerdict::Unpinned,
        pb::ContentVerdict::Modified => ContentVerdict::Modified,
        pb::ContentVerdict::Unverified => ContentVerdict::Unverified,
    })
}

/// The verdict of a protobuf record (its verdict, the content that ran, the approved ones).
pub fn check_from_pb(verdict: i32, sha256: &str, approved: &[String]) -> Option<ContentCheck> {
    Some(ContentCheck {
        verdict: verdict_from_pb(verdict)?,
        sha256: (!sha256.is_empty()).then(|| sha256.to_string()),
        approved_sha256: approved.to_vec(),
    })
}

/// The verdict an event carries (incident sample, SIEM deviation record): its content is the
/// process's `exe_sha256`.
pub fn event_check(e: &pb::SensorEvent) -> Option<ContentCheck> {
    let sha = e.process.as_ref().map_or("", |p| p.exe_sha256.as_str());
    check_from_pb(e.content, sha, &e.content_approved_sha256)
}

/// The verdict an incident carries.
pub fn incident_check(i: &pb::Incident) -> Option<ContentCheck> {
    check_from_pb(i.content, &i.content_sha256, &i.content_approved_sha256)
}

/// A status change as the protocol sends it.
pub fn status_change_to_pb(c: &StatusChange) -> pb::ElementChange {
    pb::ElementChange {
        element: Some(element_ref(&c.element)),
        before: status_to_pb(c.before) as i32,
        after: status_to_pb(c.after) as i32,
        origins_before: origins_to_pb(&c.origins_before),
        origins_after: origins_to_pb(&c.origins_after),
    }
}

/// A content change as the protocol sends it.
pub fn content_change_to_pb(c: &ContentChange) -> pb::ContentChange {
    pb::ContentChange {
        element: Some(element_ref(&c.element)),
        added: c.added.clone(),
        removed: c.removed.clone(),
    }
}

/// A status change back in the domain; the element and both statuses are required.
pub fn status_change_from_pb(c: &pb::ElementChange) -> Result<StatusChange> {
    Ok(StatusChange {
        element: changed_element(c.element.as_ref())?,
        before: status_from_pb(c.before)?,
        after: status_from_pb(c.after)?,
        origins_before: origins_from_pb(&c.origins_before),
        origins_after: origins_from_pb(&c.origins_after),
    })
}

/// A content change back in the domain; the element is required.
pub fn content_change_from_pb(c: &pb::ContentChange) -> Result<ContentChange> {
    Ok(ContentChange {
        element: changed_element(c.element.as_ref())?,
        added: c.added.clone(),
        removed: c.removed.clone(),
    })
}

fn changed_element(e: Option<&pb::ElementRef>) -> Result<procguard_core::ElementKey> {
    element_key(e.ok_or(ConvertError::Missing("element"))?)
}

/// Two element sets compared, as `DiffVersionsResponse` and `ImportChange` carry them (the
/// latter has no field for the origins of added and removed elements).
#[derive(Debug, Clone, Default)]
pub struct DiffPb {
    /// Elements only on the newer side.
    pub added: Vec<pb::ElementRef>,
    /// Elements only on the older side.
    pub removed: Vec<pb::ElementRef>,
    /// Status and origin changes.
    pub changed: Vec<pb::ElementChange>,
    /// Approved-content changes.
    pub content_changed: Vec<pb::ContentChange>,
    /// The origins of the elements added or removed.
    pub origins: Vec<pb::ElementOrigins>,
}

/// Two element sets compared, as the protocol's messages carry them.
pub fn diff_to_pb(d: &ElementsDiff) -> DiffPb {
    DiffPb {
        added: d.added.iter().map(element_ref).collect(),
        removed: d.removed.iter().map(element_ref).collect(),
        changed: d.status.iter().map(status_change_to_pb).collect(),
        content_changed: d.content.iter().map(content_change_to_pb).collect(),
        origins: d
            .origins
            .iter()
            .map(|(k, o)| pb::ElementOrigins {
                element: Some(element_ref(k)),
                origins: origins_to_pb(o),
            })
            .collect(),
    }
}

/// Two element sets compared, back in the domain from the protocol's fields.
pub fn diff_from_pb(d: DiffPbRef<'_>) -> Result<ElementsDiff> {
    let keys = |refs: &[pb::ElementRef]| refs.iter().map(element_key).collect::<Result<Vec<_>>>();
    Ok(ElementsDiff {
        added: keys(d.added)?,
        removed: keys(d.removed)?,
        status: d
            .changed
            .iter()
            .map(status_change_from_pb)
            .collect::<Result<_>>()?,
        content: d
            .content_changed
            .iter()
            .map(content_change_from_pb)
            .collect::<Result<_>>()?,
        origins: d
            .origins
            .iter()
            .map(|o| {
                Ok((
                    changed_element(o.element.as_ref())?,
                    origins_from_pb(&o.origins),
                ))
            })
            .collect::<Result<_>>()?,
    })
}

/// The fields of a message that carries two element sets compared, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct DiffPbRef<'a> {
    /// Elements only on the newer side.
    pub added: &'a [pb::ElementRef],
    /// Elements only on the older side.
    pub removed: &'a [pb::ElementRef],
    /// Status and origin changes.
    pub changed: &'a [pb::ElementChange],
    /// Approved-content changes.
    pub content_changed: &'a [pb::ContentChange],
    /// The origins of the elements added or removed (none where the message has no field).
    pub origins: &'a [pb::ElementOrigins],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_and_unknown_values_are_no_verdict() {
        for v in [
            ContentVerdict::NewElement,
            ContentVerdict::NotAllowed,
            ContentVerdict::Approved,
            ContentVerdict::Unpinned,
            ContentVerdict::Modified,
            ContentVerdict::Unverified,
        ] {
            assert_eq!(verdict_from_pb(verdict_to_pb(v) as i32), Some(v));
        }
        assert_eq!(verdict_from_pb(0), None);
        assert_eq!(verdict_from_pb(99), None);
        let c = check_from_pb(pb::ContentVerdict::Unverified as i32, "", &["a".into()]).unwrap();
        assert_eq!(c.sha256, None);
        assert_eq!(c.approved_sha256, vec!["a".to_string()]);
    }
}
