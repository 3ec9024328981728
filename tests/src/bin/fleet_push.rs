//! Benchmark driver: how fast does an approved baseline reach a fleet of connected sensors?
//!
//! Opens N real mTLS sensor sessions (each its own TCP+TLS connection, Hello with its own node
//! name, authenticated by a fleet certificate the server accepts for any node), waits until
//! every session has its initial snapshot, then approves a baseline through the API and
//! measures, per session, the time until the `BaselineUpdate` for that workload arrives.
//!
//! Usage: fleet_push --server https://127.0.0.1:8443 --pki DIR [--sensors 500] [--cert fleet]
//! (the server must run with `--sensor-fleet-names <cert>` and the PKI from `procguardctl pki
//! init --fleet <cert>`).

use procguard_proto::v1 as pb;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() {
    let server = arg("--server", "https://127.0.0.1:8443");
    let pki = std::path::PathBuf::from(arg("--pki", "./procguard-data/pki"));
    let n: usize = arg("--sensors", "500").parse().expect("--sensors N");
    let cert = arg("--cert", "fleet");
    let read =
        |f: &str| std::fs::read_to_string(pki.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read(&format!("sensor-{cert}.crt")),
            read(&format!("sensor-{cert}.key")),
        ))
        .domain_name("localhost");
    let workload = pb::WorkloadIdentity {
        cluster: "bench".into(),
        namespace: "fleet".into(),
        kind: pb::WorkloadKind::Deployment as i32,
        workload_name: format!("web-{}", std::process::id()),
        container_name: "app".into(),
    };
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<Instant>(n);
    let connect_start = Instant::now();
    let mut keep = Vec::new();
    for i in 0..n {
        let tls = tls.clone();
        let server = server.clone();
        let ready_tx = ready_tx.clone();
        let got_tx = got_tx.clone();
        let name = workload.workload_name.clone();
        keep.push(tokio::spawn(async move {
            let channel = Endpoint::from_shared(server)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .expect("connect");
            let mut client = pb::sensor_service_client::SensorServiceClient::new(channel);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(pb::SensorMessage {
                body: Some(pb::sensor_message::Body::Hello(pb::Hello {
                    node_name: format!("bench-node-{i}"),
                    sensor_version: "bench".into(),
                    boot_id: format!("b{i}"),
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            let mut inbound = client
                .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("session")
                .into_inner();
            while let Ok(Some(m)) = inbound.message().await {
                match m.body {
                    Some(pb::server_message::Body::Snapshot(_)) => {
                        let _ = ready_tx.send(()).await;
                    }
                    Some(pb::server_message::Body::Update(u))
                        if u.baseline
                            .as_ref()
                            .and_then(|b| b.workload.as_ref())
                            .is_some_and(|w| w.workload_name == name)
                            && u.baseline
                                .as_ref()
                                .is_some_and(|b| b.state == pb::BaselineState::Enforced as i32) =>
                    {
                        let _ = got_tx.send(Instant::now()).await;
                    }
                    _ => {}
                }
            }
            drop(tx);
        }));
    }
    for _ in 0..n {
        ready_rx.recv().await.expect("a session failed");
    }
    let connected = connect_start.elapsed();

    let api_channel = Endpoint::from_shared(server.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("ca.crt")))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = read("approver.token");
    let mut api = pb::baseline_service_client::BaselineServiceClient::with_interceptor(
        api_channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", token.trim()).parse().unwrap(),
            );
            Ok(r)
        },
    );
    // Create the baseline (learning: not pushed), then approve it and time the push.
    api.add_elements(pb::AddElementsRequest {
        workload: Some(workload.clone()),
        elements: vec![pb::ElementRef {
            exe_path: "/app/server".into(),
            applet: String::new(),
            script_path: String::new(),
            sha256: String::new(),
        }],
        reason: "bench".into(),
    })
    .await
    .expect("add");
    api.reset_baseline(pb::ResetBaselineRequest {
        workload: Some(workload.clone()),
        reason: "bench".into(),
    })
    .await
    .expect("reset");
    tokio::time::sleep(Duration::from_millis(500)).await;
    while got_rx.try_recv().is_ok() {}
    let start = Instant::now();
    api.approve_baseline(pb::ApproveBaselineRequest {
        workload: Some(workload.clone()),
        ..Default::default()
    })
    .await
    .expect("approve");
    let mut lat = Vec::with_capacity(n);
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while lat.len() < n {
        tokio::select! {
            t = got_rx.recv() => lat.push(t.expect("sessions ended").duration_since(start)),
            _ = &mut deadline => break,
        }
    }
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "sensors={n} connected_in={:?} received={} p50={:?} p99={:?} max={:?}",
        connected,
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    );
    if lat.len() < n {
        std::process::exit(1);
    }
}
