//! Incident conversions: [`Incident`] and its enums to protobuf, and the enum filters that
//! arrive from API clients back into the domain.
//!
//! Incidents only leave the server, so the message direction is domain → protobuf; only the
//! filter enums (severity, state) are read from requests, and an unknown value is an error
//! rather than "no filter".

use super::{origin_to_pb, timestamp, ConvertError, Result};
use crate::v1 as pb;
use procguard_core::incident::{Incident, IncidentKind, IncidentState, Sample, Severity};

/// Domain severity to protobuf.
pub fn severity_to_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// A severity filter: UNSPECIFIED means none; an unknown value is an error naming `field`.
pub fn severity_filter(v: i32, field: &'static str) -> Result<Option<Severity>> {
    Ok(
        match pb::Severity::try_from(v).map_err(|_| ConvertError::BadEnum { field, value: v })? {
            pb::Severity::Unspecified => None,
            pb::Severity::Low => Some(Severity::Low),
            pb::Severity::Medium => Some(Severity::Medium),
            pb::Severity::High => Some(Severity::High),
            pb::Severity::Critical => Some(Severity::Critical),
        },
    )
}

/// Domain state to protobuf.
pub fn state_to_pb(s: IncidentState) -> pb::IncidentState {
    match s {
        IncidentState::Open => pb::IncidentState::Open,
        IncidentState::Acknowledged => pb::IncidentState::Acknowledged,
        IncidentState::Resolved => pb::IncidentState::Resolved,
        IncidentState::Allowed => pb::IncidentState::Allowed,
    }
}

/// A state filter: UNSPECIFIED means none; an unknown value is an error naming `field`.
pub fn state_filter(v: i32, field: &'static str) -> Result<Option<IncidentState>> {
    Ok(
        match pb::IncidentState::try_from(v)
            .map_err(|_| ConvertError::BadEnum { field, value: v })?
        {
            pb::IncidentState::Unspecified => None,
            pb::IncidentState::Open => Some(IncidentState::Open),
            pb::IncidentState::Acknowledged => Some(IncidentState::Acknowledged),
            pb::IncidentState::Resolved => Some(IncidentState::Resolved),
            pb::IncidentState::Allowed => Some(IncidentState::Allowed),
        },
    )
}

/// One sample as the sensor event it came from.
pub fn sample_to_pb(s: &Sample) -> pb::SensorEvent {
    pb::SensorEvent {
        event_id: s.event_id.clone(),
        sequence: 0,
        kind: pb::EventKind::Deviation as i32,
        observed_at: Some(timestamp(s.at)),
        process: Some((&s.process).into()),
        baseline_revision: 0,
    }
}

/// An incident; `with_samples` false leaves the samples out (listings).
pub fn incident_to_pb(i: &Incident, with_samples: bool) -> pb::Incident {
    pb::Incident {
        id: i.id.clone(),
        kind: match i.kind {
            IncidentKind::Deviation => pb::IncidentKind::Deviation,
            IncidentKind::SensorBlind => pb::IncidentKind::SensorBlind,
            IncidentKind::ExecSession => pb::IncidentKind::ExecSession,
        } as i32,
        workload: i.workload.as_ref().map(Into::into),
        exe_path: i.exe_path.clone(),
        script_path: i.script_path.clone(),
        applet: i.applet.clone(),
        severity: severity_to_pb(i.severity) as i32,
        state: state_to_pb(i.state) as i32,
        first_seen: Some(timestamp(i.first_seen)),
        last_seen: Some(timestamp(i.last_seen)),
        count: i.count,
        nodes: i.nodes.iter().cloned().collect(),
        pods: i.pods.iter().cloned().collect(),
        samples: if with_samples {
            i.samples.iter().map(sample_to_pb).collect()
        } else {
            vec![]
        },
        baseline_version: i.baseline_version,
        severity_reason: i.severity_reason.clone(),
        sensor_node: i.sensor_node.clone(),
        state_actor: i.state_actor.clone(),
        state_reason: i.state_reason.clone(),
        origin: match i.kind {
            IncidentKind::SensorBlind => pb::Origin::Unspecified,
            IncidentKind::Deviation | IncidentKind::ExecSession => origin_to_pb(i.origin),
        } as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_reject_unknown_values_and_read_unspecified_as_none() {
        assert_eq!(severity_filter(0, "min_severity"), Ok(None));
        assert_eq!(severity_filter(3, "min_severity"), Ok(Some(Severity::High)));
        assert!(severity_filter(42, "min_severity")
            .unwrap_err()
            .to_string()
            .contains("min_severity"));
        assert_eq!(
            state_filter(2, "state"),
            Ok(Some(IncidentState::Acknowledged))
        );
        assert!(state_filter(-1, "state").is_err());
    }
}
