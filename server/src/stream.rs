//! The SIEM stream: the gRPC adapter for `SubscriptionService`.
//!
//! A subscription reads the record log ([`crate::store::LogRecord`]) from its start position up
//! to the durable cursor, then waits for the durable cursor to move and reads again. Every
//! record comes from storage, in cursor order, so a stream has no gap and no duplicate, and
//! a subscriber only ever sees records that are on disk. There is no per-subscriber copy of
//! live records to fall behind on: a slow subscriber only makes its own task wait on its own
//! bounded outbound channel, while ingest keeps committing; when it reads again it simply
//! reads further back in sled. If retention removed records a subscriber still needed, its
//! stream ends with `OUT_OF_RANGE` naming the oldest cursor available, never a silent skip.
//!
//! Roles: `siem` (or `admin`) for all three calls. Every call is audited; note that audit
//! records are themselves part of the log, so a subscriber that wants only findings filters
//! by kind.

use crate::api::Api;
use crate::auth::Role;
use crate::metrics::Metrics;
use crate::store::{
    AuditEntry, AuditOutcome, LogRecord, OutOfRange, RecordBody, SharedStorage, StoreError,
};
use procguard_core::incident::Severity;
use procguard_proto::convert::incident::{incident_to_pb, severity_filter, severity_to_pb};
use procguard_proto::convert::timestamp;
use procguard_proto::v1 as pb;
use std::collections::HashSet;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Records read from sled per step. Bounds the memory of one catch-up step; a subscriber far
/// behind simply takes more steps.
const READ_STEP: usize = 512;
/// Records buffered towards one subscriber. When the subscriber reads slower than this drains,
/// its task waits here (only its own task: ingest never waits for a subscriber) and it
/// continues from storage afterwards.
const OUTBOUND: usize = 256;
/// Longest durable subscription name accepted.
const MAX_NAME: usize = 200;

/// `SubscriptionService` implementation.
#[derive(Debug, Clone)]
pub struct StreamApi {
    api: Api,
    store: SharedStorage,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl StreamApi {
    /// Builds the service; streams end when `shutdown` is cancelled.
    pub fn new(
        api: Api,
        store: SharedStorage,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            api,
            store,
            metrics,
            shutdown,
        }
    }
}

/// The OUT_OF_RANGE status for a cursor whose records retention removed.
pub fn out_of_range(o: &OutOfRange) -> Status {
    Status::out_of_range(format!(
        "cursor {} is older than retention; the oldest available cursor is {} (resume from it, or subscribe with --oldest)",
        o.after, o.oldest
    ))
}

fn internal(e: StoreError) -> Status {
    Status::internal(e.to_string())
}

fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "durable_name must be 1..={MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

/// What a subscriber asked to receive.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Kinds; empty for all.
    pub kinds: HashSet<i32>,
    /// Minimum severity; records without one (audit) fail it.
    pub min_severity: Option<Severity>,
    /// Namespace; records without one (audit, sensor findings) fail it.
    pub namespace: Option<String>,
}

impl RecordFilter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &LogRecord) -> bool {
        let kind = match r.body {
            RecordBody::Incident(_) => pb::RecordKind::Incident,
            RecordBody::Deviation { .. } => pb::RecordKind::Deviation,
            RecordBody::Audit(_) => pb::RecordKind::Audit,
        } as i32;
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self
                .min_severity
                .is_none_or(|s| r.severity.is_some_and(|x| x >= s))
            && self.namespace.as_ref().is_none_or(|n| *n == r.namespace)
    }

    fn from_request(r: &pb::SubscribeRequest) -> Result<Self, Status> {
        let mut kinds = HashSet::new();
        for k in &r.kinds {
            match pb::RecordKind::try_from(*k) {
                Ok(pb::RecordKind::Unspecified) => {}
                Ok(_) => {
                    kinds.insert(*k);
                }
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                    "kinds: unknown record kind {k}; use INCIDENT (1), DEVIATION (2) or AUDIT (3)"
                )))
                }
            }
        }
        Ok(Self {
            kinds,
            min_severity: severity_filter(r.min_severity, "min_severity")
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            namespace: (!r.namespace.is_empty()).then(|| r.namespace.clone()),
        })
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
        result: match a.result {
            AuditOutcome::Ok => pb::AuditResult::Ok,
            AuditOutcome::Denied => pb::AuditResult::Denied,
            AuditOutcome::Failed => pb::AuditResult::Failed,
        } as i32,
        detail: a.detail.clone(),
        peer: a.peer.clone(),
    }
}

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
            pb::stream_record::Record::Deviation(pb::SensorEvent {
                event_id: deviation.event_id.clone(),
                sequence: 0,
                kind: pb::EventKind::Deviation as i32,
                observed_at: Some(timestamp(deviation.at)),
                process: Some((&deviation.process).into()),
                baseline_revision: deviation.baseline_version,
            }),
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

type Out = Pin<Box<dyn Stream<Item = Result<pb::StreamRecord, Status>> + Send>>;

impl StreamApi {
    /// Where a subscription starts: the cursor after which it reads.
    fn start_after(&self, start: Option<&pb::StartPosition>) -> Result<u64, Status> {
        use pb::start_position::Position;
        let floor = self.store.log_floor().map_err(internal)?;
        let newest = *self.store.durable_cursor().borrow();
        let after = match start.and_then(|s| s.position.as_ref()) {
            None => {
                return Err(Status::invalid_argument(
                    "start is required: after_cursor, now, oldest or durable_name",
                ))
            }
            Some(Position::AfterCursor(c)) => *c,
            Some(Position::Now(true)) => newest,
            Some(Position::Oldest(true)) => floor,
            Some(Position::Now(false) | Position::Oldest(false)) => {
                return Err(Status::invalid_argument(
                    "start.now and start.oldest must be true when set",
                ))
            }
            Some(Position::DurableName(n)) => {
                check_name(n)?;
                self.store.get_cursor(n).map_err(internal)?.unwrap_or(floor)
            }
        };
        if after > newest {
            return Err(Status::out_of_range(format!(
                "cursor {after} is ahead of the newest record ({newest}); it does not come from this server's log"
            )));
        }
        if let Err(o) = self.store.check_cursor(after).map_err(internal)? {
            return Err(out_of_range(&o));
        }
        Ok(after)
    }
}

#[tonic::async_trait]
impl pb::subscription_service_server::SubscriptionService for StreamApi {
    type SubscribeStream = Out;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let target = match request
            .get_ref()
            .start
            .as_ref()
            .and_then(|s| s.position.as_ref())
        {
            Some(pb::start_position::Position::DurableName(n)) => format!("durable/{n}"),
            _ => String::new(),
        };
        let caller = self
            .api
            .allow(&request, Role::Siem, "Subscribe", &target)
            .await?;
        let setup = RecordFilter::from_request(request.get_ref()).and_then(|f| {
            self.start_after(request.get_ref().start.as_ref())
                .map(|a| (f, a))
        });
        let (filter, mut after) = self
            .api
            .done(&request, &caller, "Subscribe", &target, setup)
            .await?;

        let (tx, rx) = mpsc::channel::<Result<pb::StreamRecord, Status>>(OUTBOUND);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let metrics = self.metrics.clone();
        let actor = caller.actor.clone();
        tracing::info!(message = "Subscriber connected.", actor = %actor, after);
        metrics.subscribers.inc();
        tokio::spawn(async move {
            let mut durable = store.durable_cursor();
            'outer: loop {
                let upto = *durable.borrow_and_update();
                if after < upto {
                    let batch = match store.read_log(after, upto, READ_STEP) {
                        Ok(Ok(b)) => b,
                        Ok(Err(o)) => {
                            tracing::warn!(message = "Subscriber fell behind retention.", actor = %actor, after = o.after, oldest = o.oldest);
                            let _ = tx.send(Err(out_of_range(&o))).await;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(message = "Reading the record log failed.", error = %e);
                            let _ = tx.send(Err(internal(e))).await;
                            break;
                        }
                    };
                    for r in batch {
                        after = r.cursor;
                        if !filter.matches(&r) {
                            continue;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => {
                                let _ = tx.try_send(Err(Status::unavailable("server shutting down; resume from your last cursor")));
                                break 'outer;
                            }
                            sent = tx.send(Ok(record_to_pb(&r))) => {
                                if sent.is_err() { break 'outer; }
                                metrics.records_streamed.inc();
                            }
                        }
                    }
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = tx.try_send(Err(Status::unavailable("server shutting down; resume from your last cursor")));
                        break;
                    }
                    _ = tx.closed() => break,
                    changed = durable.changed() => if changed.is_err() { break },
                }
            }
            metrics.subscribers.dec();
            tracing::info!(message = "Subscriber disconnected.", actor = %actor, cursor = after);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack_cursor(
        &self,
        request: Request<pb::AckCursorRequest>,
    ) -> Result<Response<pb::AckCursorResponse>, Status> {
        let target = format!("durable/{}", request.get_ref().durable_name);
        let caller = self
            .api
            .allow(&request, Role::Siem, "AckCursor", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            check_name(&r.durable_name)?;
            let cursor = self
                .store
                .ack_cursor(&r.durable_name, r.cursor)
                .await
                .map_err(|e| match e {
                    StoreError::Rejected(m) => Status::invalid_argument(m),
                    e => internal(e),
                })?;
            Ok(pb::AckCursorResponse { cursor })
        }
        .await;
        self.api
            .done(&request, &caller, "AckCursor", &target, result)
            .await
            .map(Response::new)
    }

    async fn get_cursor(
        &self,
        request: Request<pb::GetCursorRequest>,
    ) -> Result<Response<pb::GetCursorResponse>, Status> {
        let target = format!("durable/{}", request.get_ref().durable_name);
        let caller = self
            .api
            .allow(&request, Role::Siem, "GetCursor", &target)
            .await?;
        let r = request.get_ref();
        let result = check_name(&r.durable_name).and_then(|()| {
            self.store
                .get_cursor(&r.durable_name)
                .map(|c| pb::GetCursorResponse {
                    cursor: c.unwrap_or(0),
                })
                .map_err(internal)
        });
        self.api
            .done(&request, &caller, "GetCursor", &target, result)
            .await
            .map(Response::new)
    }
}
