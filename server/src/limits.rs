//! Limits on what any one client may ask of the server, so that one broken or hostile sensor or
//! token cannot exhaust memory, disk or CPU for everyone else. Each limit is a flag (with an
//! environment variable), is documented with its default in `docs/LIMITS.md`, answers a
//! violation with a gRPC status that names the limit and the flag, and counts it in
//! `procguard_server_limit_exceeded_total{limit="..."}`.
//!
//! Requests per second are a token bucket per API token name: `--api-rps` refill per second,
//! `--api-burst` capacity. Concurrent streams are semaphores; a stream holds its permit until
//! it ends.
//!
//! Message size is enforced by tonic's decoder (`max_decoding_message_size`), before any
//! handler runs: a unary request (or a stream's first message) over the limit is answered
//! `OUT_OF_RANGE` in the response headers without the service seeing it. [`MessageSizeLayer`]
//! wraps every service to count those answers and to rewrite their message so it names the
//! flag; a sensor stream's later messages fail inside the stream, where `ingest` does the same.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::Status;

/// The limit a violation was counted under.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// Limit name: message_bytes, batch_events, argv_count, argv_bytes, sequence,
    /// baseline_elements, api_rps, sensor_streams, subscriber_streams.
    pub limit: String,
}

/// Violations per limit.
pub type Violations = Family<LimitLabel, Counter>;

/// Default largest gRPC message accepted (a full sensor batch fits well within it).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default most events one batch may carry (`--max-batch-events`); larger batches are
/// refused, not truncated.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 2_000;
/// Default most argv entries in one event.
pub const DEFAULT_MAX_ARGV_COUNT: usize = 1_024;
/// Default most argv bytes in one event.
pub const DEFAULT_MAX_ARGV_BYTES: usize = 64 * 1024;
/// Default most elements a baseline may hold.
pub const DEFAULT_MAX_BASELINE_ELEMENTS: usize = procguard_core::baseline::DEFAULT_MAX_ELEMENTS;
/// Default API requests per second per token.
pub const DEFAULT_API_RPS: f64 = 50.0;
/// Default API burst per token.
pub const DEFAULT_API_BURST: f64 = 200.0;
/// Default sensor streams open at once.
pub const DEFAULT_MAX_SENSOR_STREAMS: usize = 10_000;
/// Default subscription streams open at once.
pub const DEFAULT_MAX_SUBSCRIBER_STREAMS: usize = 64;
/// Default most sensor records (distinct node names) the server keeps.
pub const DEFAULT_MAX_SENSORS: usize = 50_000;
/// How far beyond a node's mark an event's sequence may be: its mark is the higher of what
/// the server acknowledged for the node and the server's clock in microseconds since the
/// epoch. A sensor numbers its events from its own clock in microseconds (so that a sensor
/// whose spool was wiped still numbers above its previous life) and counts up by one per
/// event, so its sequences stay near that clock; 2^40 leaves 12.7 days of clock skew, or a
/// trillion events, of room. A sequence past it (2^64-1, say) would have the server
/// acknowledge everything the node will ever send, and its real sensor delete its spool.
pub const SEQUENCE_AHEAD: u64 = 1 << 40;

/// The configured limits.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Largest gRPC message decoded, in bytes.
    pub max_message_bytes: usize,
    /// Most events in one sensor batch.
    pub max_batch_events: usize,
    /// Most argv entries in one event.
    pub max_argv_count: usize,
    /// Most argv bytes (all entries together) in one event.
    pub max_argv_bytes: usize,
    /// Most elements a baseline may hold.
    pub max_baseline_elements: usize,
    /// API requests per second per token (refill rate).
    pub api_rps: f64,
    /// API requests a token may make in one burst (bucket size).
    pub api_burst: f64,
    /// Sensor streams open at once.
    pub max_sensor_streams: usize,
    /// Subscription (SIEM) streams open at once.
    pub max_subscriber_streams: usize,
    /// Sensor records (distinct node names) kept.
    pub max_sensors: usize,
    /// Active deviation incidents per workload container before its overflow incident.
    pub max_active_incidents_per_workload: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_argv_count: DEFAULT_MAX_ARGV_COUNT,
            max_argv_bytes: DEFAULT_MAX_ARGV_BYTES,
            max_baseline_elements: DEFAULT_MAX_BASELINE_ELEMENTS,
            api_rps: DEFAULT_API_RPS,
            api_burst: DEFAULT_API_BURST,
            max_sensor_streams: DEFAULT_MAX_SENSOR_STREAMS,
            max_subscriber_streams: DEFAULT_MAX_SUBSCRIBER_STREAMS,
            max_sensors: DEFAULT_MAX_SENSORS,
            max_active_incidents_per_workload:
                procguard_core::incident::DEFAULT_MAX_ACTIVE_PER_WORKLOAD,
        }
    }
}

/// The limit flags of `procguard-server`, flattened into its [`crate::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct LimitFlags {
    /// Largest gRPC message the server decodes, in bytes (OUT_OF_RANGE past it).
    #[arg(long, env = "PROCGUARD_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Most events in one sensor batch (INVALID_ARGUMENT past it).
    #[arg(long, env = "PROCGUARD_MAX_BATCH_EVENTS", default_value_t = DEFAULT_MAX_BATCH_EVENTS)]
    pub max_batch_events: usize,
    /// Most argv entries in one sensor event (INVALID_ARGUMENT past it).
    #[arg(long, env = "PROCGUARD_MAX_ARGV_COUNT", default_value_t = DEFAULT_MAX_ARGV_COUNT)]
    pub max_argv_count: usize,
    /// Most argv bytes in one sensor event (INVALID_ARGUMENT past it).
    #[arg(long, env = "PROCGUARD_MAX_ARGV_BYTES", default_value_t = DEFAULT_MAX_ARGV_BYTES)]
    pub max_argv_bytes: usize,
    /// Most elements one baseline may hold (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "PROCGUARD_MAX_BASELINE_ELEMENTS", default_value_t = DEFAULT_MAX_BASELINE_ELEMENTS)]
    pub max_baseline_elements: usize,
    /// API requests per second per token, sustained (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "PROCGUARD_API_RPS", default_value_t = DEFAULT_API_RPS)]
    pub api_rps: f64,
    /// API requests per token in one burst.
    #[arg(long, env = "PROCGUARD_API_BURST", default_value_t = DEFAULT_API_BURST)]
    pub api_burst: f64,
    /// Sensor streams open at once (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "PROCGUARD_MAX_SENSOR_STREAMS", default_value_t = DEFAULT_MAX_SENSOR_STREAMS)]
    pub max_sensor_streams: usize,
    /// Subscription (SIEM) streams open at once (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "PROCGUARD_MAX_SUBSCRIBER_STREAMS", default_value_t = DEFAULT_MAX_SUBSCRIBER_STREAMS)]
    pub max_subscriber_streams: usize,
    /// Distinct sensors (node names) the server keeps a record of; a stream naming a new node
    /// past it is refused (RESOURCE_EXHAUSTED). Records of sensors silent for
    /// --sensor-retention-age are removed.
    #[arg(long, env = "PROCGUARD_MAX_SENSORS", default_value_t = DEFAULT_MAX_SENSORS)]
    pub max_sensors: usize,
    /// Active (open or acknowledged) deviation incidents one workload container may have; past
    /// it, each executable without an incident of its own is counted in the container's one
    /// overflow incident (kind deviation-overflow) instead, and still recorded in the SIEM
    /// stream. Closing incidents makes room again.
    #[arg(long, env = "PROCGUARD_MAX_ACTIVE_INCIDENTS_PER_WORKLOAD", default_value_t = procguard_core::incident::DEFAULT_MAX_ACTIVE_PER_WORKLOAD)]
    pub max_active_incidents_per_workload: u64,
}

impl LimitFlags {
    /// Checks the values; every limit must be positive.
    pub fn validate(&self) -> Result<LimitSettings, procguard_runtime::ConfigError> {
        let positive = [
            ("--max-message-bytes", self.max_message_bytes),
            ("--max-batch-events", self.max_batch_events),
            ("--max-argv-count", self.max_argv_count),
            ("--max-argv-bytes", self.max_argv_bytes),
            ("--max-baseline-elements", self.max_baseline_elements),
            ("--max-sensor-streams", self.max_sensor_streams),
            ("--max-subscriber-streams", self.max_subscriber_streams),
            ("--max-sensors", self.max_sensors),
            (
                "--max-active-incidents-per-workload",
                usize::try_from(self.max_active_incidents_per_workload).unwrap_or(usize::MAX),
            ),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(procguard_runtime::ConfigError(format!(
                    "{flag} must be at least 1; got 0"
                )));
            }
        }
        let rate_ok = self.api_rps > 0.0 && self.api_rps.is_finite();
        let burst_ok = self.api_burst >= 1.0 && self.api_burst.is_finite();
        if !rate_ok || !burst_ok {
            return Err(procguard_runtime::ConfigError(format!(
                "--api-rps must be above 0 and --api-burst at least 1; got {} and {}",
                self.api_rps, self.api_burst
            )));
        }
        Ok(LimitSettings {
            max_message_bytes: self.max_message_bytes,
            max_batch_events: self.max_batch_events,
            max_argv_count: self.max_argv_count,
            max_argv_bytes: self.max_argv_bytes,
            max_baseline_elements: self.max_baseline_elements,
            api_rps: self.api_rps,
            api_burst: self.api_burst,
            max_sensor_streams: self.max_sensor_streams,
            max_subscriber_streams: self.max_subscriber_streams,
            max_sensors: self.max_sensors,
            max_active_incidents_per_workload: self.max_active_incidents_per_workload,
        })
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals since the last allowed call; only the first of a run is audited.
    refused: u64,
}

/// What the rate limiter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rate {
    /// Go ahead.
    Allowed,
    /// Refused; `first` is true for the first refusal since the last allowed call.
    Refused {
        /// Whether to audit this refusal.
        first: bool,
    },
}

/// The server's limits and their shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The configured values.
    pub settings: LimitSettings,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    sensor_streams: Arc<Semaphore>,
    subscriber_streams: Arc<Semaphore>,
    /// Violations per limit.
    pub violations: Violations,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitSettings::default())
    }
}

impl Limits {
    /// Builds the limits.
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            sensor_streams: Arc::new(Semaphore::new(settings.max_sensor_streams)),
            subscriber_streams: Arc::new(Semaphore::new(settings.max_subscriber_streams)),
            buckets: Arc::default(),
            violations: Violations::default(),
            settings,
        }
    }

    /// Counts one violation of `limit`.
    pub fn violated(&self, limit: &str) {
        self.violations
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Counts `n` violations of `limit`.
    pub fn violated_by(&self, limit: &str, n: u64) {
        self.violations
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc_by(n);
    }

    /// Violations of `limit` so far.
    pub fn violations_of(&self, limit: &str) -> u64 {
        self.violations
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .get()
    }

    /// Takes one request from `actor`'s bucket at `now`.
    pub fn rate_at(&self, actor: &str, now: Instant) -> Rate {
        let s = &self.settings;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let b = buckets.entry(actor.to_string()).or_insert(Bucket {
            tokens: s.api_burst,
            at: now,
            refused: 0,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * s.api_rps).min(s.api_burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refused = 0;
            Rate::Allowed
        } else {
            b.refused += 1;
            drop(buckets);
            self.violated("api_rps");
            Rate::Refused {
                first: self.first_refusal(actor),
            }
        }
    }

    fn first_refusal(&self, actor: &str) -> bool {
        self.buckets
            .lock()
            .expect("rate limiter lock")
            .get(actor)
            .is_some_and(|b| b.refused == 1)
    }

    /// The status for a refused API call.
    pub fn rate_status(&self, actor: &str) -> Status {
        Status::resource_exhausted(format!(
            "token '{actor}' is over its request rate ({} per second, bursts of {}; --api-rps, --api-burst); retry later",
            self.settings.api_rps, self.settings.api_burst
        ))
    }

    /// The status for a call without a valid token once such calls are over their shared
    /// request rate; `why` is what was wrong with the token.
    pub fn anonymous_rate_status(&self, why: &str) -> Status {
        Status::resource_exhausted(format!(
            "calls without a valid token are over their shared request rate ({} per second, bursts of {}; --api-rps, --api-burst); {why}",
            self.settings.api_rps, self.settings.api_burst
        ))
    }

    /// A permit for one more sensor stream, or `RESOURCE_EXHAUSTED`.
    pub fn sensor_stream(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.sensor_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                self.violated("sensor_streams");
                Status::resource_exhausted(format!(
                "the server already serves {} sensor streams (--max-sensor-streams); retry later",
                self.settings.max_sensor_streams
            ))
            })
    }

    /// A permit for one more subscription stream, or `RESOURCE_EXHAUSTED`. For the
    /// subscription service: hold the permit for the stream's lifetime.
    pub fn subscriber_stream(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.subscriber_streams.clone().try_acquire_owned().map_err(|_| {
            self.violated("subscriber_streams");
            Status::resource_exhausted(format!(
                "the server already serves {} subscription streams (--max-subscriber-streams); retry later",
                self.settings.max_subscriber_streams
            ))
        })
    }

    /// Whether a sensor naming a node the server does not know yet may be recorded, given the
    /// `known` sensor records; else `RESOURCE_EXHAUSTED`, counted under `sensors`. Bounds the
    /// per-node records and metric series that names claiming to be nodes can create (a fleet
    /// certificate may name any node).
    pub fn new_sensor(&self, node: &str, known: u64) -> Result<(), Status> {
        let max = self.settings.max_sensors;
        if known < max as u64 {
            return Ok(());
        }
        self.violated("sensors");
        Err(Status::resource_exhausted(format!(
            "the server already keeps records of {known} sensors (--max-sensors {max}), so the \
             new node '{node}' is refused: raise --max-sensors (PROCGUARD_MAX_SENSORS) if the \
             cluster has grown, or find the certificate naming nodes that do not exist (records \
             of sensors silent for --sensor-retention-age are removed)"
        )))
    }

    /// The status for a message over `--max-message-bytes`, from tonic's decoder status.
    pub fn message_status(&self, decoder: &Status) -> Status {
        Status::out_of_range(format!(
            "{}; the server accepts messages of at most {} bytes (--max-message-bytes): send less per call",
            decoder.message(),
            self.settings.max_message_bytes
        ))
    }

    /// If `headers` carry tonic's refusal of an oversized request, counts it under
    /// `message_bytes` and replaces its message with one that names the flag. Any other status
    /// (an `OUT_OF_RANGE` cursor of the subscription stream included) is left alone.
    pub fn explain_oversized(&self, headers: &mut http::HeaderMap) {
        if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
            return;
        }
        let Some(status) = Status::from_header_map(headers) else {
            return;
        };
        if !status.message().contains(TONIC_TOO_LARGE) {
            return;
        }
        self.violated("message_bytes");
        tracing::warn!(message = "Refused a request over the message size limit.", error = %status.message());
        if let Err(e) = self.message_status(&status).add_header(headers) {
            tracing::debug!(message = "Could not rewrite the status message.", error = %e);
        }
    }

    /// Checks one event's sequence against its node's `mark` (see [`SEQUENCE_AHEAD`]); the
    /// message says what was wrong and what to do.
    pub fn check_sequence(&self, seq: u64, mark: u64, node: &str) -> Result<(), String> {
        let limit = mark.saturating_add(SEQUENCE_AHEAD);
        if seq <= limit {
            return Ok(());
        }
        self.violated("sequence");
        Err(format!(
            "sequence {seq} is more than 2^40 beyond node '{node}''s mark {mark} (the higher of what this server acknowledged for the node and its clock in microseconds); \
             sensors number events from their clock and count up, so no sensor sends this: check the sensor's clock, \
             and if its spool directory was copied from elsewhere, move its state.json away"
        ))
    }

    /// Checks one event's argv against the argv limits; the message names the limit.
    pub fn check_argv(&self, argv: &[String]) -> Result<(), String> {
        let s = &self.settings;
        if argv.len() > s.max_argv_count {
            self.violated("argv_count");
            return Err(format!(
                "argv has {} entries; at most {} are accepted (--max-argv-count)",
                argv.len(),
                s.max_argv_count
            ));
        }
        let bytes: usize = argv.iter().map(String::len).sum();
        if bytes > s.max_argv_bytes {
            self.violated("argv_bytes");
            return Err(format!(
                "argv has {bytes} bytes; at most {} are accepted (--max-argv-bytes)",
                s.max_argv_bytes
            ));
        }
        Ok(())
    }

    /// Checks that a baseline may hold `n` elements.
    pub fn check_elements(&self, n: usize) -> Result<(), Status> {
        if n > self.settings.max_baseline_elements {
            self.violated("baseline_elements");
            return Err(Status::resource_exhausted(format!(
                "the baseline would hold {n} elements; at most {} are allowed (--max-baseline-elements)",
                self.settings.max_baseline_elements
            )));
        }
        Ok(())
    }
}

/// What tonic's decoder says about a message over the size limit (tonic 0.14,
/// `codec/decode.rs`); the unit test below pins it.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// Wraps every gRPC service to count and explain requests tonic refused for their size; see
/// the module documentation.
#[derive(Debug, Clone)]
pub struct MessageSizeLayer {
    limits: Limits,
}

impl MessageSizeLayer {
    /// The layer for these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

impl<S> tower::Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;
    fn layer(&self, inner: S) -> MessageSize<S> {
        MessageSize {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service [`MessageSizeLayer`] makes.
#[derive(Debug, Clone)]
pub struct MessageSize<S> {
    inner: S,
    limits: Limits,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MessageSize<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let response = self.inner.call(request);
        let limits = self.limits.clone();
        Box::pin(async move {
            let mut response = response.await?;
            limits.explain_oversized(response.headers_mut());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(rps: f64, burst: f64) -> Limits {
        Limits::new(LimitSettings {
            api_rps: rps,
            api_burst: burst,
            ..LimitSettings::default()
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let l = limits(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.rate_at("a", t0), Rate::Allowed);
        }
        assert_eq!(l.rate_at("a", t0), Rate::Refused { first: true });
        assert_eq!(l.rate_at("a", t0), Rate::Refused { first: false });
        // Another token has its own bucket.
        assert_eq!(l.rate_at("b", t0), Rate::Allowed);
        // Half a second refills one request at 2/s.
        assert_eq!(
            l.rate_at("a", t0 + Duration::from_millis(500)),
            Rate::Allowed
        );
        assert_eq!(
            l.rate_at("a", t0 + Duration::from_millis(500)),
            Rate::Refused { first: true }
        );
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.rate_at("a", later), Rate::Allowed);
        }
        assert_ne!(l.rate_at("a", later), Rate::Allowed);
        assert_eq!(l.violations_of("api_rps"), 4);
    }

    #[test]
    fn stream_permits_are_bounded_and_returned() {
        let l = Limits::new(LimitSettings {
            max_sensor_streams: 2,
            ..LimitSettings::default()
        });
        let a = l.sensor_stream().unwrap();
        let _b = l.sensor_stream().unwrap();
        let refused = l.sensor_stream().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-sensor-streams"));
        drop(a);
        assert!(l.sensor_stream().is_ok());
        assert_eq!(l.violations_of("sensor_streams"), 1);
    }

    #[test]
    fn only_the_decoders_size_refusal_is_counted_and_explained() {
        let l = Limits::default();
        // What tonic's decoder answers for a message over the limit.
        let mut h = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 9000 bytes, the limit is: 4096 bytes",
        )
        .add_header(&mut h)
        .unwrap();
        l.explain_oversized(&mut h);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert!(s.message().contains("--max-message-bytes"), "{s:?}");
        assert!(s.message().contains("found 9000 bytes"), "{s:?}");
        assert_eq!(l.violations_of("message_bytes"), 1);
        // A subscription cursor out of range, and any other status, are not size violations.
        for other in [
            Status::out_of_range("cursor 5 was removed by retention"),
            Status::invalid_argument("decoded message length too large"),
        ] {
            let mut h = http::HeaderMap::new();
            other.add_header(&mut h).unwrap();
            l.explain_oversized(&mut h);
            assert_eq!(
                Status::from_header_map(&h).unwrap().message(),
                other.message()
            );
        }
        assert_eq!(l.violations_of("message_bytes"), 1);
        // No status at all: a successful response's headers.
        l.explain_oversized(&mut http::HeaderMap::new());
        assert_eq!(l.violations_of("message_bytes"), 1);
    }

    #[test]
    fn argv_and_elements_limits_name_the_flag() {
        let l = Limits::default();
        assert!(l.check_argv(&["a".into()]).is_ok());
        let many = vec!["x".to_string(); 2_000];
        assert!(l
            .check_argv(&many)
            .unwrap_err()
            .contains("--max-argv-count"));
        let big = vec!["x".repeat(70_000)];
        assert!(l.check_argv(&big).unwrap_err().contains("--max-argv-bytes"));
        assert!(l.check_elements(4_096).is_ok());
        let e = l.check_elements(4_097).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    }
}
