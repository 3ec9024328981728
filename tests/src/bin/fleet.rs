//! A fleet of simulated sensors for load tests: opens `--sensors` real mTLS sessions to a
//! server (one TCP and TLS connection each, all with one fleet certificate whose name the server
//! lists in `--sensor-fleet-names`), sends `--events` events per second from each for
//! `--seconds`, and prints one JSON line with what was sent, acknowledged and refused.
//!
//! Usage: `fleet --server https://127.0.0.1:PORT --ca ca.crt --cert sensor-fleet.crt
//! --key sensor-fleet.key [--sensors 500] [--events 5] [--seconds 10]`

use procguard_core::identity::WorkloadKind;
use procguard_core::{ProcessEvent, WorkloadIdentity};
use procguard_proto::v1 as pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt;

#[derive(Default)]
struct Totals {
    welcomed: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn event(node: &str, seq: u64) -> pb::SensorEvent {
    let mut p = ProcessEvent::test(&format!("/usr/bin/worker-{}", seq % 8))
        .on_host()
        .pid(1000 + (seq % 30_000) as u32)
        .argv(&["worker", "--serve"])
        .on_node(node)
        .in_workload(&WorkloadIdentity::new(
            "default",
            "fleet",
            WorkloadKind::Deployment,
            "api",
            "app",
        ));
    p.start_time = Some(SystemTime::now());
    pb::SensorEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        sequence: seq,
        kind: pb::EventKind::Observation as i32,
        observed_at: None,
        process: Some((&p).into()),
        baseline_revision: 0,
        ..Default::default()
    }
}

async fn sensor(
    i: usize,
    endpoint: tonic::transport::Endpoint,
    events: u64,
    until: Instant,
    totals: Arc<Totals>,
) -> Result<(), String> {
    let node = format!("fleet-{i:04}");
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut client = pb::sensor_service_client::SensorServiceClient::new(channel);
    // Bounded like the real sensor's outbound queue.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SensorMessage>(16);
    tx.send(pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Hello(pb::Hello {
            node_name: node.clone(),
            sensor_version: "fleet".into(),
            capabilities: vec![],
            boot_id: uuid::Uuid::new_v4().to_string(),
            last_sequence: 0,
            baseline_revision: 0,
            cluster: "default".into(),
        })),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut seq = 0u64;
    let mut acked = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut welcomed = false;
    let mut sending = true;
    let drain_deadline = until + Duration::from_secs(15);
    loop {
        tokio::select! {
            m = inbound.next() => match m {
                Some(Ok(pb::ServerMessage { body: Some(pb::server_message::Body::Welcome(_)) })) => {
                    welcomed = true;
                    totals.welcomed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(pb::ServerMessage { body: Some(pb::server_message::Body::Ack(a)) })) => {
                    acked = acked.max(a.sequence);
                }
                Some(Ok(_)) => {}
                Some(Err(s)) => return Err(format!("{}: {}", s.code(), s.message())),
                None => return Err("server closed the stream".into()),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= until {
                    sending = false;
                }
                if !sending && (acked >= seq || now >= drain_deadline) {
                    totals.acked.fetch_add(acked, Ordering::Relaxed);
                    return Ok(());
                }
                if !welcomed || !sending { continue; }
                let batch: Vec<_> = (0..events).map(|_| { seq += 1; event(&node, seq) }).collect();
                totals.sent.fetch_add(events, Ordering::Relaxed);
                tx.send(pb::SensorMessage { body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events: batch })) })
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let need = |n: &str| arg(&args, n).ok_or_else(|| format!("{n} is required"));
    let url = need("--server")?;
    let read = |n: &str| -> Result<String, String> {
        let p = need(n)?;
        std::fs::read_to_string(&p).map_err(|e| format!("{n} {p}: {e}"))
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("--ca")?))
        .identity(tonic::transport::Identity::from_pem(
            read("--cert")?,
            read("--key")?,
        ))
        .domain_name(arg(&args, "--server-name").unwrap_or_else(|| "localhost".into()));
    let num = |n: &str, default: u64| -> Result<u64, String> {
        arg(&args, n).map_or(Ok(default), |v| v.parse().map_err(|e| format!("{n}: {e}")))
    };
    let n = num("--sensors", 500)? as usize;
    let events = num("--events", 5)?;
    let secs = num("--seconds", 10)?;
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(20));
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let t = totals.clone();
        tasks.push(tokio::spawn(sensor(i, endpoint.clone(), events, until, t)));
    }
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        let e = match t.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.chars().take(160).collect(),
            Err(e) => e.to_string(),
        };
        totals.failed.fetch_add(1, Ordering::Relaxed);
        *errors.entry(e).or_default() += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "sensors": n,
            "welcomed": totals.welcomed.load(Ordering::Relaxed),
            "events_sent": totals.sent.load(Ordering::Relaxed),
            "events_acked": totals.acked.load(Ordering::Relaxed),
            "failed": totals.failed.load(Ordering::Relaxed),
            "errors": errors,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
