//! The SIEM stream: the gRPC adapter for `SubscriptionService`.
//!
//! A subscription reads the record log ([`crate::store::LogRecord`]) from its start position up
//! to the durable cursor, then waits for the durable cursor to move and reads again. Records
//! come, in cursor order, from the store's shared tail (the newest durable records, built once
//! at commit and shared by every subscription) while the subscriber keeps up, and from sled
//! once it has fallen behind the tail ([`crate::store::LogStore::read_records`]). Either way a stream has no gap
//! and no duplicate, and a subscriber only ever sees records that are on disk.
//!
//! The response stream *is* the reader: there is no task and no channel per subscriber. tonic
//! polls it when the HTTP/2 stream has room, so a slow subscriber simply is not polled; it
//! holds a cursor, not a buffer, and nothing upstream ever waits for it. Each poll reads up to
//! [`READ_STEP`] records and yields them back to back, so tonic encodes them into one HTTP/2
//! write instead of one per record. A record's protobuf bytes are made once, by the first
//! subscription that sends it, and shared through the tail ([`crate::store::SharedRecord`]);
//! the service is therefore served from [`procguard_proto::encoded`], whose `Subscribe`
//! sends [`Encoded`] records (the same bytes on the wire as a `StreamRecord`).
//!
//! If retention removed records a subscriber still needed, its stream ends with
//! `OUT_OF_RANGE` naming the oldest cursor available, never a silent skip.
//!
//! Roles: `siem` (or `admin`) for all three calls. Every call is audited; note that audit
//! records are themselves part of the log, so a subscriber that wants only findings filters
//! by kind.
//!
//! A durable subscription belongs to the identity (token or certificate name) that first used
//! it (subscribed with its name or acknowledged a cursor under it). Another identity can
//! neither read it (subscribe from it, get its cursor) nor move it: `PERMISSION_DENIED`,
//! audited like every refusal. One stored before subscriptions had owners is claimed by the
//! next identity that subscribes with it or acknowledges under it.
//!
//! At most `--max-subscriber-streams` streams are open at once: each holds a permit
//! ([`Limits::subscriber_stream`]) until it ends, and one more is `RESOURCE_EXHAUSTED`.

use crate::auth::{Gate, Role};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::{
    LogRecord, OutOfRange, Owned, ReadSource, RecordKind, SharedStorage, StoreError,
};
use futures::StreamExt;
use procguard_core::incident::Severity;
use procguard_proto::convert::incident::severity_filter;
use procguard_proto::convert::record::{kind_filter, record_to_pb};
use procguard_proto::v1 as pb;
use procguard_proto::Encoded;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Records read (from the tail or sled) per step, and yielded back to back. Bounds the memory
/// of one step of one subscriber; a subscriber far behind simply takes more steps.
const READ_STEP: usize = 512;
/// Longest durable subscription name accepted.
const MAX_NAME: usize = 200;

/// `SubscriptionService` implementation.
#[derive(Debug, Clone)]
pub struct StreamApi {
    gate: Gate,
    store: SharedStorage,
    metrics: Metrics,
    shutdown: CancellationToken,
    limits: Limits,
}

impl StreamApi {
    /// Builds the service; streams end when `shutdown` is cancelled.
    pub fn new(
        gate: Gate,
        store: SharedStorage,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            gate,
            store,
            metrics,
            shutdown,
            limits: Limits::default(),
        }
    }

    /// Applies the server's limits (the defaults otherwise).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// The refusal of a durable subscription another identity owns. It does not say who: that
/// is the owner's business.
fn not_yours(name: &str) -> Status {
    Status::permission_denied(format!(
        "durable subscription '{name}' belongs to another identity; it can be read and moved \
         only by the token or certificate that created it. Use a durable_name of your own"
    ))
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
    pub kinds: HashSet<RecordKind>,
    /// Minimum severity; records without one (audit) fail it.
    pub min_severity: Option<Severity>,
    /// Namespace; records without one (audit, sensor findings) fail it.
    pub namespace: Option<String>,
}

impl RecordFilter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &LogRecord) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&r.kind()))
            && self
                .min_severity
                .is_none_or(|s| r.severity.is_some_and(|x| x >= s))
            && self.namespace.as_ref().is_none_or(|n| *n == r.namespace)
    }

    fn from_request(r: &pb::SubscribeRequest) -> Result<Self, Status> {
        let mut kinds = HashSet::new();
        for k in &r.kinds {
            if let Some(kind) =
                kind_filter(*k).map_err(|e| Status::invalid_argument(e.to_string()))?
            {
                kinds.insert(kind);
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

type Out = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// One subscription's position and what it asked for. Dropping it (the client went away, or
/// the stream ended) ends the subscription.
struct Reader {
    store: SharedStorage,
    durable: watch::Receiver<u64>,
    shutdown: CancellationToken,
    metrics: Metrics,
    actor: String,
    filter: RecordFilter,
    /// The last cursor read (sent or filtered out).
    after: u64,
    /// `after`, shared with the subscriber-lag gauge ([`crate::gauges`]).
    position: Arc<AtomicU64>,
    /// Set once the stream has sent its final error.
    done: bool,
    /// Held for the stream's lifetime (`--max-subscriber-streams`).
    _permit: OwnedSemaphorePermit,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
        tracing::info!(message = "Subscriber disconnected.", actor = %self.actor, cursor = self.after);
    }
}

impl Reader {
    /// The next records to send, waiting for new durable records when there are none; the
    /// final error of a stream is its last item. `None` ends the stream.
    async fn step(&mut self) -> Option<Vec<Result<Encoded, Status>>> {
        loop {
            if self.done {
                return None;
            }
            if self.shutdown.is_cancelled() {
                return self.end(Status::unavailable(
                    "server shutting down; resume from your last cursor",
                ));
            }
            let upto = *self.durable.borrow_and_update();
            if self.after < upto {
                let (batch, source) = match self.store.read_records(self.after, upto, READ_STEP) {
                    Ok(Ok(b)) => b,
                    Ok(Err(o)) => {
                        tracing::warn!(message = "Subscriber fell behind retention.", actor = %self.actor, after = o.after, oldest = o.oldest);
                        return self.end(out_of_range(&o));
                    }
                    Err(e) => {
                        tracing::error!(message = "Reading the record log failed.", error = %e);
                        return self.end(internal(e));
                    }
                };
                let out: Vec<_> = batch
                    .iter()
                    .filter(|r| self.filter.matches(r))
                    // Encoded by the first subscription that sends it, shared by the others.
                    .map(|r| Ok(Encoded(r.wire(|rec| Encoded::of(&record_to_pb(rec)).0))))
                    .collect();
                if let Some(last) = batch.last() {
                    self.after = last.cursor;
                    self.position.store(last.cursor, Ordering::Relaxed);
                }
                let n = out.len() as u64;
                self.metrics.records_streamed.inc_by(n);
                if source == ReadSource::Storage {
                    self.metrics.records_streamed_from_storage.inc_by(n);
                }
                if out.is_empty() {
                    continue;
                }
                return Some(out);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                changed = self.durable.changed() => if changed.is_err() { return None },
            }
        }
    }

    fn end(&mut self, status: Status) -> Option<Vec<Result<Encoded, Status>>> {
        self.done = true;
        Some(vec![Err(status)])
    }
}

impl StreamApi {
    /// Where a subscription starts: the cursor after which it reads. A durable name is
    /// claimed for `owner`, or refused if another identity owns it.
    async fn start_after(
        &self,
        start: Option<&pb::StartPosition>,
        owner: &str,
    ) -> Result<u64, Status> {
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
                match self
                    .store
                    .claim_subscription(n, owner)
                    .await
                    .map_err(internal)?
                {
                    // Nothing acknowledged yet: from the oldest record still stored.
                    Owned::Mine(0) => floor,
                    Owned::Mine(c) => c,
                    Owned::Other => return Err(not_yours(n)),
                }
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
impl procguard_proto::encoded::subscription_service_server::SubscriptionService for StreamApi {
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
            .gate
            .allow(&request, Role::Siem, "Subscribe", &target)
            .await?;
        let setup = async {
            let permit = self.limits.subscriber_stream()?;
            let filter = RecordFilter::from_request(request.get_ref())?;
            let after = self
                .start_after(request.get_ref().start.as_ref(), &caller.actor)
                .await?;
            Ok((filter, after, permit))
        }
        .await;
        let (filter, after, permit) = self
            .gate
            .done(&request, &caller, "Subscribe", &target, setup)
            .await?;

        tracing::info!(message = "Subscriber connected.", actor = %caller.actor, after);
        self.metrics.subscribers.inc();
        let reader = Reader {
            store: self.store.clone(),
            durable: self.store.durable_cursor(),
            shutdown: self.shutdown.clone(),
            metrics: self.metrics.clone(),
            actor: caller.actor.clone(),
            filter,
            after,
            position: self.metrics.state.subscriber_positions.track(after),
            done: false,
            _permit: permit,
        };
        let records = futures::stream::unfold(reader, |mut r| async move {
            let step = r.step().await?;
            Some((futures::stream::iter(step), r))
        })
        .flatten();
        Ok(Response::new(Box::pin(records)))
    }

    async fn ack_cursor(
        &self,
        request: Request<pb::AckCursorRequest>,
    ) -> Result<Response<pb::AckCursorResponse>, Status> {
        let target = format!("durable/{}", request.get_ref().durable_name);
        let caller = self
            .gate
            .allow(&request, Role::Siem, "AckCursor", &target)
            .await?;
        let r = request.get_ref();
        let result = async {
            check_name(&r.durable_name)?;
            let owned = self
                .store
                .ack_cursor(&r.durable_name, &caller.actor, r.cursor)
                .await
                .map_err(|e| match e {
                    StoreError::Rejected(m) => Status::invalid_argument(m),
                    e => internal(e),
                })?;
            match owned {
                Owned::Mine(cursor) => Ok(pb::AckCursorResponse { cursor }),
                Owned::Other => Err(not_yours(&r.durable_name)),
            }
        }
        .await;
        self.gate
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
            .gate
            .allow(&request, Role::Siem, "GetCursor", &target)
            .await?;
        let r = request.get_ref();
        let result = check_name(&r.durable_name).and_then(|()| {
            let stored = self
                .store
                .get_subscription(&r.durable_name)
                .map_err(internal)?;
            match stored {
                None => Ok(pb::GetCursorResponse { cursor: 0 }),
                Some(s) if s.owner.as_deref().is_some_and(|o| o != caller.actor) => {
                    Err(not_yours(&r.durable_name))
                }
                Some(s) => Ok(pb::GetCursorResponse { cursor: s.cursor }),
            }
        });
        self.gate
            .done(&request, &caller, "GetCursor", &target, result)
            .await
            .map(Response::new)
    }
}
