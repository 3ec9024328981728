//! Real gRPC clients for server-side end-to-end tests and benchmarks: a sensor stream made
//! with a node's real client certificate over mTLS, and API calls with a role's token.
//!
//! The sensor client speaks the real `SensorService.Session` protocol (Hello, Welcome,
//! batches, acks). It lets a test produce exactly the deviations it needs, at the rate it
//! needs, against the real server binary; tests about capture use the real sensor instead.

use crate::in_process::InProcessServer;
use crate::{Pki, ServerHandle};
use procguard_proto::v1 as pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Boxed error for test helpers.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A TLS channel to `url`; with `node`, presenting that node's sensor certificate.
pub async fn channel(pki: &Pki, url: &str, node: Option<&str>) -> Result<Channel, Error> {
    channel_as(pki, url, node.map(|n| format!("sensor-{n}")).as_deref()).await
}

/// A TLS channel to `url`; with `identity`, presenting the certificate `<identity>.crt` of the
/// PKI (`sensor-node-a`, `client-alice`, `server`).
pub async fn channel_as(pki: &Pki, url: &str, identity: Option<&str>) -> Result<Channel, Error> {
    let (cert, key) = identity
        .map(|n| (pki.file(&format!("{n}.crt")), pki.file(&format!("{n}.key"))))
        .unzip();
    let tls = procguard_runtime::tls::client_config(
        &pki.file("ca.crt"),
        cert.as_deref().zip(key.as_deref()),
        "localhost",
    )
    .map_err(|e| e.0)?;
    Ok(Channel::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A request carrying a role's bearer token.
pub fn req<T>(pki: &Pki, role: &str, msg: T) -> tonic::Request<T> {
    req_token(&pki.token(role), msg)
}

/// A request carrying the bearer token `secret`.
pub fn req_token<T>(secret: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("token"),
    );
    r
}

/// The status a helper's error carries (`UNKNOWN` when the error is not a gRPC status).
pub fn status_of(e: &Error) -> tonic::Status {
    e.downcast_ref::<tonic::Status>()
        .cloned()
        .unwrap_or_else(|| tonic::Status::unknown(e.to_string()))
}

/// The identity of a synthetic workload container.
pub fn workload(namespace: &str, name: &str) -> pb::WorkloadIdentity {
    pb::WorkloadIdentity {
        cluster: "test".into(),
        namespace: namespace.into(),
        kind: pb::WorkloadKind::Deployment as i32,
        workload_name: name.into(),
        container_name: "main".into(),
    }
}

/// A synthetic process start of `exe` in `w` on `node`, as a sensor would send it.
pub fn event(seq: u64, node: &str, w: &pb::WorkloadIdentity, exe: &str) -> pb::SensorEvent {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ts = prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    };
    pb::SensorEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        sequence: seq,
        kind: pb::EventKind::Observation as i32,
        observed_at: Some(ts),
        process: Some(pb::ProcessEvent {
            pid: 1000 + (seq % 30000) as u32,
            ppid: 1,
            ancestors: vec![pb::Ancestor {
                pid: 1,
                exe_path: "/app/server".into(),
            }],
            start_time: Some(ts),
            comm: exe
                .rsplit('/')
                .next()
                .unwrap_or(exe)
                .chars()
                .take(15)
                .collect(),
            exe_path: exe.into(),
            argv: vec![exe.into(), format!("--n={seq}")],
            container: Some(pb::ContainerInfo {
                container_id: format!("{:064x}", seq % 7),
                runtime: pb::ContainerRuntime::Containerd as i32,
                pod_name: format!("{}-{}", w.workload_name, seq % 3),
                ..Default::default()
            }),
            workload: Some(w.clone()),
            context: pb::ExecContext::Descendant as i32,
            completeness: pb::Completeness::Full as i32,
            node_name: node.into(),
            ..Default::default()
        }),
        baseline_revision: 0,
        ..Default::default()
    }
}

/// One open sensor stream.
pub struct SensorStream {
    tx: mpsc::Sender<pb::SensorMessage>,
    rx: tonic::Streaming<pb::ServerMessage>,
    /// Highest sequence the server acknowledged.
    pub acked: u64,
    /// Next sequence to assign.
    pub next_seq: u64,
    /// The node.
    pub node: String,
}

impl std::fmt::Debug for SensorStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorStream")
            .field("node", &self.node)
            .field("acked", &self.acked)
            .finish()
    }
}

impl SensorStream {
    /// Opens a session for `node` with its own certificate and waits for the Welcome.
    pub async fn open(pki: &Pki, url: &str, node: &str) -> Result<Self, Error> {
        Self::open_as(pki, url, node, &format!("sensor-{node}")).await
    }

    /// Opens a session claiming `node` with the certificate `<identity>.crt` of the PKI, and
    /// waits for the Welcome.
    pub async fn open_as(pki: &Pki, url: &str, node: &str, identity: &str) -> Result<Self, Error> {
        let ch = channel_as(pki, url, Some(identity)).await?;
        let mut client = pb::sensor_service_client::SensorServiceClient::new(ch)
            .max_decoding_message_size(64 * 1024 * 1024);
        // Bounded like the real sensor's outbound queue; a test that outruns it waits.
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Hello(pb::Hello {
                node_name: node.into(),
                sensor_version: "test".into(),
                boot_id: uuid::Uuid::new_v4().to_string(),
                cluster: "test".into(),
                ..Default::default()
            })),
        })
        .await?;
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut acked = 0;
        loop {
            match inbound.message().await?.and_then(|m| m.body) {
                Some(pb::server_message::Body::Welcome(w)) => {
                    acked = w.acked_sequence;
                }
                Some(pb::server_message::Body::Snapshot(_)) => break,
                Some(_) => {}
                None => return Err("stream closed before the Welcome".into()),
            }
        }
        Ok(Self {
            tx,
            rx: inbound,
            acked,
            next_seq: acked + 1,
            node: node.into(),
        })
    }

    /// Sends one batch without waiting.
    pub async fn send(&mut self, events: Vec<pb::SensorEvent>) -> Result<(), Error> {
        self.tx
            .send(pb::SensorMessage {
                body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events })),
            })
            .await
            .map_err(|_| "sensor stream closed".into())
    }

    /// Sends a health report.
    pub async fn health(&mut self, dropped: u64, partial: u64) -> Result<(), Error> {
        self.tx
            .send(pb::SensorMessage {
                body: Some(pb::sensor_message::Body::Health(pb::SensorHealth {
                    events_dropped: dropped,
                    events_partial: partial,
                    ..Default::default()
                })),
            })
            .await
            .map_err(|_| "sensor stream closed".into())
    }

    /// Waits until the server acknowledged `seq` (ignoring baseline pushes).
    pub async fn wait_ack(&mut self, seq: u64) -> Result<(), Error> {
        while self.acked < seq {
            match self.rx.message().await?.and_then(|m| m.body) {
                Some(pb::server_message::Body::Ack(a)) => self.acked = a.sequence,
                Some(_) => {}
                None => return Err("stream closed before the ack".into()),
            }
        }
        Ok(())
    }

    /// Builds events of `exes` in `w` with fresh sequence numbers.
    pub fn events(&mut self, w: &pb::WorkloadIdentity, exes: &[&str]) -> Vec<pb::SensorEvent> {
        exes.iter()
            .map(|exe| {
                let e = event(self.next_seq, &self.node, w, exe);
                self.next_seq += 1;
                e
            })
            .collect()
    }

    /// The stream's two halves, for a driver that sends and reads acknowledgements from
    /// different tasks: the outbound queue, the server's messages, and the next sequence
    /// number to assign.
    pub fn into_parts(
        self,
    ) -> (
        mpsc::Sender<pb::SensorMessage>,
        tonic::Streaming<pb::ServerMessage>,
        u64,
    ) {
        (self.tx, self.rx, self.next_seq)
    }

    /// Sends a batch and waits for its ack; returns the highest sequence sent.
    pub async fn send_acked(&mut self, events: Vec<pb::SensorEvent>) -> Result<u64, Error> {
        let last = events.iter().map(|e| e.sequence).max().unwrap_or(0);
        self.send(events).await?;
        self.wait_ack(last).await?;
        Ok(last)
    }
}

/// Teaches the server `w` runs `/app/server` and enforces its baseline (admin token).
pub async fn enforced_workload(
    pki: &Pki,
    url: &str,
    sensor: &mut SensorStream,
    w: &pb::WorkloadIdentity,
) -> Result<(), Error> {
    let evs = sensor.events(w, &["/app/server"]);
    sensor.send_acked(evs).await?;
    let ch = channel(pki, url, None).await?;
    pb::baseline_service_client::BaselineServiceClient::new(ch)
        .approve_baseline(req(
            pki,
            "admin",
            pb::ApproveBaselineRequest {
                workload: Some(w.clone()),
                reason: "test".into(),
                ..Default::default()
            },
        ))
        .await?;
    Ok(())
}

/// A subscription stream opened with the siem token.
pub async fn subscribe(
    pki: &Pki,
    url: &str,
    start: pb::start_position::Position,
    kinds: &[pb::RecordKind],
) -> Result<tonic::Streaming<pb::StreamRecord>, tonic::Status> {
    let ch = channel(pki, url, None)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = pb::subscription_service_client::SubscriptionServiceClient::new(ch)
        .max_decoding_message_size(64 * 1024 * 1024);
    Ok(c.subscribe(req(
        pki,
        "siem",
        pb::SubscribeRequest {
            start: Some(pb::StartPosition {
                position: Some(start),
            }),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            ..Default::default()
        },
    ))
    .await?
    .into_inner())
}

/// The setup most API-level tests share: a fresh PKI for `node-a`, the real server library
/// in-process on ports the OS chose, a sensor stream for `node-a`, and the workload
/// `shop/web` enforced with `/app/server` in it.
pub struct EnforcedStack {
    /// Scratch directory (PKI, database); removed when dropped.
    pub work: tempfile::TempDir,
    /// The development PKI.
    pub pki: Pki,
    /// The server, in-process.
    pub server: InProcessServer,
    /// A sensor stream for `node-a`.
    pub sensor: SensorStream,
    /// The enforced workload.
    pub workload: pb::WorkloadIdentity,
}

impl EnforcedStack {
    /// Starts it; panics (failing the test) if any step fails.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`EnforcedStack::start`] with `server_args` added to the server's command line.
    pub async fn start_with(server_args: &[&str]) -> Self {
        let work = tempfile::tempdir().expect("tempdir");
        let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
        let server = InProcessServer::start(&pki, work.path(), server_args);
        let mut sensor = SensorStream::open(&pki, &server.url(), "node-a")
            .await
            .expect("sensor stream");
        let workload = workload("shop", "web");
        enforced_workload(&pki, &server.url(), &mut sensor, &workload)
            .await
            .expect("enforced workload");
        Self {
            work,
            pki,
            server,
            sensor,
            workload,
        }
    }
}
