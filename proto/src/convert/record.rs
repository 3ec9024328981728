//! Log records: a [`LogRecord`] as the SIEM stream sends it (`StreamRecord`), the record
//! kinds a subscriber asks for, and the sensor's report of an event that a deviation record
//! keeps ([`sensor_report`]).
//!
//! Records only leave the server, so the message direction is domain → protobuf; the record
//! kinds of a subscription request and a sensor's report are read back, and an unknown kind is an error rather than
//! "every kind".

use super::audit::audit_to_pb;
use super::incident::{deviation_to_pb, incident_to_pb, severity_to_pb, Deviation};
use super::{system_time, timestamp, ConvertError, Result};
use crate::v1 as pb;
use procguard_core::ingest::{EventKind, SensorReport};
use procguard_core::record::{LogRecord, RecordBody, RecordKind};

/// A log record as the protocol sends it.
pub fn record_to_pb(r: &LogRecord) -> pb::StreamRecord {
    let (record, incident_id) = match &r.body {
        RecordBody::Incident(i) => (
            pb::stream_record::Record::Incident(incident_to_pb(i, false)),
            String::new(),
        ),
        RecordBody::Deviation {
            incident_id,
            deviation,
        } => (
            pb::stream_record::Record::Deviation(deviation_to_pb(&Deviation {
                event_id: &deviation.event_id,
                // The sensor's time and word, kept at ingest; records stored before have the
                // server's time and were deviations by definition.
                observed_at: deviation.reported.observed_at.unwrap_or(deviation.at),
                kind: match deviation.reported.kind {
                    EventKind::Observation => pb::EventKind::Observation,
                    EventKind::Deviation | EventKind::Unknown => pb::EventKind::Deviation,
                },
                baseline_version: deviation.baseline_version,
                baseline_revision: deviation.reported.baseline_revision,
                process: &deviation.process,
                content: deviation.content.as_ref(),
                executions: deviation.executions,
                last_observed_at: deviation.reported.last_observed_at,
            })),
            incident_id.clone(),
        ),
        RecordBody::Audit(a) => (
            pb::stream_record::Record::Audit(audit_to_pb(a)),
            String::new(),
        ),
    };
    pb::StreamRecord {
        cursor: r.cursor,
        at: Some(timestamp(r.at)),
        record: Some(record),
        severity: r
            .severity
            .map(severity_to_pb)
            .unwrap_or(pb::Severity::Unspecified) as i32,
        incident_id,
    }
}

/// The sensor's own report of an event (when it saw the exec, what it called it, the revision
/// it matched against), kept as it said it: a kind this build does not know is `Unknown`,
/// never a guess.
pub fn sensor_report(e: &pb::SensorEvent) -> SensorReport {
    SensorReport {
        observed_at: e.observed_at.as_ref().map(system_time),
        last_observed_at: e.last_observed_at.as_ref().map(system_time),
        kind: match pb::EventKind::try_from(e.kind) {
            Ok(pb::EventKind::Observation) => EventKind::Observation,
            Ok(pb::EventKind::Deviation) => EventKind::Deviation,
            Ok(pb::EventKind::Unspecified) | Err(_) => EventKind::Unknown,
        },
        baseline_revision: e.baseline_revision,
    }
}

/// Domain record kind to protobuf.
pub fn kind_to_pb(k: RecordKind) -> pb::RecordKind {
    match k {
        RecordKind::Incident => pb::RecordKind::Incident,
        RecordKind::Deviation => pb::RecordKind::Deviation,
        RecordKind::Audit => pb::RecordKind::Audit,
    }
}

/// A record-kind filter value: UNSPECIFIED means none (every kind); an unknown value is an
/// error naming the field and the values that are known.
pub fn kind_filter(v: i32) -> Result<Option<RecordKind>> {
    match pb::RecordKind::try_from(v) {
        Ok(pb::RecordKind::Unspecified) => Ok(None),
        Ok(pb::RecordKind::Incident) => Ok(Some(RecordKind::Incident)),
        Ok(pb::RecordKind::Deviation) => Ok(Some(RecordKind::Deviation)),
        Ok(pb::RecordKind::Audit) => Ok(Some(RecordKind::Audit)),
        Err(_) => Err(ConvertError::Invalid {
            field: "kinds",
            reason: format!(
                "unknown record kind {v}; use INCIDENT (1), DEVIATION (2) or AUDIT (3)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::ingest::DeviationRecord;
    use procguard_core::{BaselineState, ProcessEvent};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_deviation_record_carries_the_sensors_time_kind_and_revision_and_the_baseline_version() {
        let stored = UNIX_EPOCH + Duration::from_secs(2_000);
        let seen = UNIX_EPOCH + Duration::from_secs(1_999);
        let record = |reported| LogRecord {
            cursor: 1,
            at: stored,
            severity: None,
            namespace: "n".into(),
            body: RecordBody::Deviation {
                incident_id: "1".into(),
                deviation: DeviationRecord {
                    event_id: "e".into(),
                    at: stored,
                    baseline_version: 3,
                    baseline_state: BaselineState::Enforced,
                    process: ProcessEvent::test("/bin/sh"),
                    content: None,
                    reported,
                    executions: 1,
                },
            },
        };
        let deviation = |r: pb::StreamRecord| match r.record {
            Some(pb::stream_record::Record::Deviation(d)) => d,
            other => panic!("not a deviation: {other:?}"),
        };
        let d = deviation(record_to_pb(&record(SensorReport {
            last_observed_at: None,
            observed_at: Some(seen),
            kind: EventKind::Observation,
            baseline_revision: 41,
        })));
        assert_eq!(d.observed_at, Some(timestamp(seen)), "the sensor's time");
        assert_eq!(
            d.kind,
            pb::EventKind::Observation as i32,
            "the sensor's word"
        );
        assert_eq!((d.baseline_version, d.baseline_revision), (3, 41));
        // A record stored before the sensor's report was kept: the server's time, a deviation.
        let d = deviation(record_to_pb(&record(SensorReport::default())));
        assert_eq!(d.observed_at, Some(timestamp(stored)));
        assert_eq!(d.kind, pb::EventKind::Deviation as i32);
        assert_eq!((d.baseline_version, d.baseline_revision), (3, 0));
    }

    #[test]
    fn every_kind_reads_back() {
        for k in [
            RecordKind::Incident,
            RecordKind::Deviation,
            RecordKind::Audit,
        ] {
            assert_eq!(kind_filter(kind_to_pb(k) as i32).unwrap(), Some(k));
        }
        assert_eq!(kind_filter(0).unwrap(), None);
        let e = kind_filter(9).unwrap_err().to_string();
        assert!(e.contains("kinds") && e.contains("AUDIT (3)"), "{e}");
    }
}
