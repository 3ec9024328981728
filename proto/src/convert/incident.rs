//! Incident conversions: [`Incident`] and its enums to protobuf, and the enum filters that
//! arrive from API clients back into the domain.
//!
//! Incidents only leave the server, so the message direction is domain → protobuf; only the
//! filter enums (severity, state) are read from requests, and an unknown value is an error
//! rather than "no filter".

use super::content::{event_check, incident_check, verdict_to_pb};
use super::{origin_from_pb, origin_to_pb, system_time, timestamp, ConvertError, Result};
use crate::v1 as pb;
use procguard_core::incident::{Incident, IncidentKind, IncidentState, Sample, Severity};
use procguard_core::{ContentCheck, ProcessEvent};
use std::time::SystemTime;

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

/// A deviation as the server sends it out (an incident sample, a SIEM deviation record): the
/// sensor event it came from, as the sensor described it, with its content verdict.
pub fn deviation_to_pb(d: &Deviation<'_>) -> pb::SensorEvent {
    pb::SensorEvent {
        event_id: d.event_id.to_string(),
        sequence: 0,
        kind: d.kind as i32,
        observed_at: Some(timestamp(d.observed_at)),
        process: Some(d.process.into()),
        baseline_revision: d.baseline_revision,
        content: d.content.map_or(0, |c| verdict_to_pb(c.verdict) as i32),
        content_approved_sha256: d
            .content
            .map(|c| c.approved_sha256.clone())
            .unwrap_or_default(),
        baseline_version: d.baseline_version,
        executions: d.executions,
        last_observed_at: d.last_observed_at.map(timestamp),
    }
}

/// The facts of a deviation as the wire carries them, borrowed from whichever record holds
/// them (an incident's sample, a log record).
#[derive(Debug, Clone, Copy)]
pub struct Deviation<'a> {
    /// The sensor's event ID.
    pub event_id: &'a str,
    /// When the sensor saw the exec (else when the server stored it).
    pub observed_at: SystemTime,
    /// What the sensor said it was: a deviation it found itself, or an observation the server
    /// found outside the baseline.
    pub kind: pb::EventKind,
    /// The version of the workload's baseline the event deviated from (0 if not known).
    pub baseline_version: u64,
    /// The server-wide baseline revision the sensor matched against (0 if none).
    pub baseline_revision: u64,
    /// The process.
    pub process: &'a ProcessEvent,
    /// Its content verdict, if judged.
    pub content: Option<&'a ContentCheck>,
    /// How many executions it stands for (a sensor's summary of repeats: more than 1).
    pub executions: u64,
    /// For a summary: when the sensor saw the last of its executions.
    pub last_observed_at: Option<SystemTime>,
}

/// One sample as the sensor event it came from.
pub fn sample_to_pb(s: &Sample) -> pb::SensorEvent {
    deviation_to_pb(&Deviation {
        event_id: &s.event_id,
        observed_at: s.at,
        kind: pb::EventKind::Deviation,
        baseline_version: 0,
        baseline_revision: 0,
        process: &s.process,
        content: s.content.as_ref(),
        executions: 1,
        last_observed_at: None,
    })
}

/// An incident; `with_samples` false leaves the samples out (listings).
pub fn incident_to_pb(i: &Incident, with_samples: bool) -> pb::Incident {
    pb::Incident {
        id: i.id.clone(),
        kind: match i.kind {
            IncidentKind::Deviation => pb::IncidentKind::Deviation,
            IncidentKind::SensorBlind => pb::IncidentKind::SensorBlind,
            IncidentKind::ExecSession => pb::IncidentKind::ExecSession,
            IncidentKind::DeviationOverflow => pb::IncidentKind::DeviationOverflow,
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
        content: i
            .content
            .as_ref()
            .map_or(0, |c| verdict_to_pb(c.verdict) as i32),
        content_sha256: i
            .content
            .as_ref()
            .and_then(|c| c.sha256.clone())
            .unwrap_or_default(),
        content_approved_sha256: i
            .content
            .as_ref()
            .map(|c| c.approved_sha256.clone())
            .unwrap_or_default(),
        sensor_node: i.sensor_node.clone(),
        state_actor: i.state_actor.clone(),
        state_reason: i.state_reason.clone(),
        origin: match i.kind {
            IncidentKind::SensorBlind => pb::Origin::Unspecified,
            IncidentKind::Deviation
            | IncidentKind::ExecSession
            | IncidentKind::DeviationOverflow => origin_to_pb(i.origin),
        } as i32,
    }
}

/// Protobuf severity to domain; UNSPECIFIED or an unknown value is an error naming `field`.
pub fn severity_from_pb(v: i32, field: &'static str) -> Result<Severity> {
    severity_filter(v, field)?.ok_or(ConvertError::BadEnum { field, value: v })
}

/// Protobuf incident state to domain; UNSPECIFIED or an unknown value is an error naming
/// `field`.
pub fn state_from_pb(v: i32, field: &'static str) -> Result<IncidentState> {
    state_filter(v, field)?.ok_or(ConvertError::BadEnum { field, value: v })
}

/// Protobuf incident kind to domain; UNSPECIFIED or an unknown value is an error.
pub fn kind_from_pb(v: i32) -> Result<IncidentKind> {
    match pb::IncidentKind::try_from(v) {
        Ok(pb::IncidentKind::Deviation) => Ok(IncidentKind::Deviation),
        Ok(pb::IncidentKind::SensorBlind) => Ok(IncidentKind::SensorBlind),
        Ok(pb::IncidentKind::ExecSession) => Ok(IncidentKind::ExecSession),
        Ok(pb::IncidentKind::DeviationOverflow) => Ok(IncidentKind::DeviationOverflow),
        Ok(pb::IncidentKind::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "kind",
            value: v,
        }),
    }
}

/// One sample back in the domain: the sensor event it came from, its time (required) and
/// process (required, and valid), and its content verdict.
pub fn sample_from_pb(e: &pb::SensorEvent) -> Result<Sample> {
    Ok(Sample {
        event_id: e.event_id.clone(),
        at: e
            .observed_at
            .as_ref()
            .map(system_time)
            .ok_or(ConvertError::Missing("samples.observed_at"))?,
        process: ProcessEvent::try_from(
            e.process
                .as_ref()
                .ok_or(ConvertError::Missing("samples.process"))?,
        )?,
        content: event_check(e),
    })
}

/// An incident as the protocol carries it, back in the domain (what `procguardctl` prints).
/// Its kind, severity, state and times are required, as is every sample's process; the
/// workload, when present, must be valid. The message has no field for the time of the last
/// change of any kind ([`Incident::updated_at`]): it reads as the last event's time.
pub fn incident_from_pb(i: &pb::Incident) -> Result<Incident> {
    let time = |t: Option<&prost_types::Timestamp>, field| {
        t.map(system_time).ok_or(ConvertError::Missing(field))
    };
    let last_seen = time(i.last_seen.as_ref(), "last_seen")?;
    Ok(Incident {
        id: i.id.clone(),
        kind: kind_from_pb(i.kind)?,
        workload: i.workload.as_ref().map(TryInto::try_into).transpose()?,
        exe_path: i.exe_path.clone(),
        applet: i.applet.clone(),
        script_path: i.script_path.clone(),
        severity: severity_from_pb(i.severity, "severity")?,
        severity_reason: i.severity_reason.clone(),
        content: incident_check(i),
        state: state_from_pb(i.state, "state")?,
        first_seen: time(i.first_seen.as_ref(), "first_seen")?,
        last_seen,
        count: i.count,
        nodes: i.nodes.iter().cloned().collect(),
        pods: i.pods.iter().cloned().collect(),
        samples: i
            .samples
            .iter()
            .map(sample_from_pb)
            .collect::<Result<_>>()?,
        baseline_version: i.baseline_version,
        origin: origin_from_pb(i.origin),
        sensor_node: i.sensor_node.clone(),
        state_actor: i.state_actor.clone(),
        state_reason: i.state_reason.clone(),
        updated_at: last_seen,
    })
}

/// A `ListIncidents` answer back in the domain, with the next page's token (empty on the
/// last).
pub fn incidents_page_from_pb(r: &pb::ListIncidentsResponse) -> Result<(Vec<Incident>, String)> {
    Ok((
        r.incidents
            .iter()
            .map(incident_from_pb)
            .collect::<Result<_>>()?,
        r.next_page_token.clone(),
    ))
}

/// A page of incidents as `ListIncidents` answers (without samples), and the number of the
/// last one listed when there are more.
pub fn incidents_page_to_pb(list: &[Incident], next: Option<u64>) -> pb::ListIncidentsResponse {
    pb::ListIncidentsResponse {
        incidents: list.iter().map(|i| incident_to_pb(i, false)).collect(),
        next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::{Baseline, WorkloadIdentity};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_incident_reads_back_as_it_was_sent_with_its_samples() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let b = Baseline::new(
            WorkloadIdentity::parse("c/shop/deployment/web/nginx").unwrap(),
            now,
        );
        let ev = ProcessEvent::test("/tmp/x").sha256(&"b".repeat(64));
        let mut i = Incident::from_deviation("7".into(), "e1", &ev, &b, now);
        i.record_deviation("e2", &ev, &b, now + Duration::from_secs(5));
        i.state_actor = "alice".into();
        let mut back = incident_from_pb(&incident_to_pb(&i, true)).unwrap();
        // The message has no time of the last change: it reads as the last event's.
        assert_eq!(back.updated_at, i.last_seen);
        back.updated_at = i.updated_at;
        assert_eq!(back, i);
        // A listing leaves the samples out, and they read back as none.
        assert!(incident_from_pb(&incident_to_pb(&i, false))
            .unwrap()
            .samples
            .is_empty());
        // What the server always sends is required, and named when missing.
        let mut m = incident_to_pb(&i, false);
        m.last_seen = None;
        assert_eq!(
            incident_from_pb(&m),
            Err(ConvertError::Missing("last_seen"))
        );
        let mut m = incident_to_pb(&i, false);
        m.state = 0;
        assert!(incident_from_pb(&m)
            .unwrap_err()
            .to_string()
            .contains("state"));
    }

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
