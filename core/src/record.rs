//! The record log: every incident change, deviation and audit entry, each under a cursor
//! that only increases. The server stores records in this shape, the SIEM stream sends them
//! (through `procguard_proto::convert`), and subscribers filter them by [`RecordKind`].

use crate::audit::AuditEntry;
use crate::incident::{Incident, Severity};
use crate::ingest::DeviationRecord;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// What a log record carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
// A record is built once and shared behind an `Arc` (the server's tail); boxing the larger
// variant would add an allocation per deviation on the ingest path and save nothing.
#[allow(clippy::large_enum_variant)]
pub enum RecordBody {
    /// An incident after a change (without its samples: the deviation records carry them).
    Incident(Incident),
    /// A deviation as ingested, and the incident it was grouped into.
    Deviation {
        /// Incident number.
        incident_id: String,
        /// The deviation.
        deviation: DeviationRecord,
    },
    /// An audit record.
    Audit(AuditEntry),
}

/// One record of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position; contiguous and increasing.
    pub cursor: u64,
    /// When it was written.
    pub at: SystemTime,
    /// Severity of the incident (for deviations: of their incident); none for audit.
    pub severity: Option<Severity>,
    /// Namespace of the workload; empty for audit records and sensor findings.
    pub namespace: String,
    /// The record.
    pub body: RecordBody,
}

/// The kinds of record a subscriber can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// An incident was created or changed.
    Incident,
    /// A deviation arrived.
    Deviation,
    /// An audit record was written.
    Audit,
}

impl RecordKind {
    /// The kind as every output names it: `incident`, `deviation`, `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incident => "incident",
            Self::Deviation => "deviation",
            Self::Audit => "audit",
        }
    }
}

impl LogRecord {
    /// Which kind of record this is.
    pub fn kind(&self) -> RecordKind {
        match self.body {
            RecordBody::Incident(_) => RecordKind::Incident,
            RecordBody::Deviation { .. } => RecordKind::Deviation,
            RecordBody::Audit(_) => RecordKind::Audit,
        }
    }
}
