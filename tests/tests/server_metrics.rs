//! The server's latency histograms and state gauges, end to end: the real server binary, a
//! sensor-protocol stream over mTLS, and `procguardctl`. Each metric is shown moving for the
//! reason it exists (never on a timing): a health report advances its node's last-report
//! timestamp, each stored deviation is one delay observation, each durable batch one commit,
//! an approval moves a baseline between states, an incident counts as open until it is
//! resolved, and a denied call is timed under its method and code.

use procguard_proto::v1 as pb;
use procguard_tests::grpc::{self, SensorStream};
use procguard_tests::*;
use std::time::Duration;

/// How long a gauge may take to follow: the server looks every 5 s.
const FOLLOW: Duration = Duration::from_secs(20);

fn value(server: &impl ServerHandle, name: &str) -> f64 {
    metric(server.admin_port(), name).unwrap_or(0.0)
}

/// Waits until metric `name` equals `want`; panics with the last value seen.
fn wait_value(server: &impl ServerHandle, name: &str, want: f64) {
    let seen = wait_for(FOLLOW, || {
        (metric(server.admin_port(), name) == Some(want)).then_some(())
    });
    assert!(
        seen.is_some(),
        "{name} never became {want}; last {:?}",
        metric(server.admin_port(), name)
    );
}

const DELAY_COUNT: &str = "procguard_server_deviation_delay_seconds_count";
const COMMIT_COUNT: &str = "procguard_server_ingest_commit_duration_seconds_count";
const HIGH_DEVIATIONS_OPEN: &str =
    "procguard_server_incidents_open{severity=\"high\",kind=\"deviation\"}";
const LEARNING: &str = "procguard_server_baselines{state=\"learning\"}";
const ENFORCED: &str = "procguard_server_baselines{state=\"enforced\"}";
const LAST_REPORT_A: &str =
    "procguard_server_sensor_last_report_timestamp_seconds{node=\"node-a\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_move_for_the_reason_they_exist() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::create(&work.path().join("pki"), &["node-a"]);
    let server = Server::start(&pki, work.path(), &[]);
    let mut sensor = SensorStream::open(&pki, &server.url(), "node-a")
        .await
        .unwrap();
    let w = grpc::workload("shop", "web");

    // The database has a size from the start.
    assert!(
        wait_for(FOLLOW, || (value(
            &server,
            "procguard_server_database_bytes"
        ) > 0.0)
            .then_some(()))
        .is_some(),
        "procguard_server_database_bytes stayed 0"
    );

    // A health report sets its node's last-report time; the next one advances it.
    assert_eq!(metric(server.admin_port(), LAST_REPORT_A), None);
    sensor.health(0, 0).await.unwrap();
    let first = wait_for(FOLLOW, || metric(server.admin_port(), LAST_REPORT_A))
        .expect("no last-report timestamp after a health report");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (first - now).abs() < 60.0,
        "{first} is not about now ({now})"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    sensor.health(0, 0).await.unwrap();
    assert!(
        wait_for(FOLLOW, || (value(&server, LAST_REPORT_A) > first)
            .then_some(()))
        .is_some(),
        "the second health report did not advance the last-report timestamp"
    );

    // A first exec starts a learning baseline; each durable batch is one commit observation.
    let evs = sensor.events(&w, &["/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    assert_eq!(value(&server, COMMIT_COUNT), 1.0);
    // Any API call appends an audit record, which wakes the recount.
    ctl(&pki, &server, "viewer", &["baselines", "list"]);
    wait_value(&server, LEARNING, 1.0);
    assert_eq!(value(&server, ENFORCED), 0.0);

    // Approval moves it from learning to enforced.
    let ch = grpc::channel(&pki, &server.url(), None).await.unwrap();
    pb::baseline_service_client::BaselineServiceClient::new(ch)
        .approve_baseline(grpc::req(
            &pki,
            "approver",
            pb::ApproveBaselineRequest {
                workload: Some(w.clone()),
                reason: "test".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    wait_value(&server, ENFORCED, 1.0);
    assert_eq!(value(&server, LEARNING), 0.0);

    // Deviations: one delay observation per stored deviation, one commit per batch.
    assert_eq!(value(&server, DELAY_COUNT), 0.0);
    let evs = sensor.events(&w, &["/usr/bin/curl", "/usr/bin/curl", "/usr/bin/curl"]);
    sensor.send_acked(evs).await.unwrap();
    let evs = sensor.events(&w, &["/usr/bin/curl", "/app/server"]);
    sensor.send_acked(evs).await.unwrap();
    assert_eq!(value(&server, DELAY_COUNT), 4.0);
    assert_eq!(value(&server, COMMIT_COUNT), 3.0);

    // The curl incident is open (high: a network tool) until it is resolved.
    wait_value(&server, HIGH_DEVIATIONS_OPEN, 1.0);
    let list = incident_list(&pki, &server);
    let id = list
        .iter()
        .find(|i| i["exe_path"] == "/usr/bin/curl")
        .and_then(|i| i["id"].as_str())
        .expect("the curl incident")
        .to_string();

    // A viewer may not resolve: the denied call is timed under its method and code.
    let denied_name = "procguard_server_api_call_duration_seconds_count{method=\"ResolveIncident\",code=\"PermissionDenied\"}";
    assert_eq!(value(&server, denied_name), 0.0);
    let denied = ctl(&pki, &server, "viewer", &["incidents", "resolve", &id]);
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    assert_eq!(value(&server, denied_name), 1.0);
    assert_eq!(
        value(
            &server,
            "procguard_server_api_call_duration_seconds_count{method=\"ResolveIncident\",code=\"Ok\"}"
        ),
        0.0
    );

    let resolved = ctl(
        &pki,
        &server,
        "approver",
        &["incidents", "resolve", &id, "--reason", "test traffic"],
    );
    assert!(resolved.status.success(), "{resolved:?}");
    assert_eq!(
        value(
            &server,
            "procguard_server_api_call_duration_seconds_count{method=\"ResolveIncident\",code=\"Ok\"}"
        ),
        1.0
    );
    wait_value(&server, HIGH_DEVIATIONS_OPEN, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_lags_until_it_reads() {
    let grpc::EnforcedStack {
        work: _work,
        pki,
        server,
        mut sensor,
        workload: w,
    } = grpc::EnforcedStack::start().await;
    let lag = "procguard_server_subscriber_lag_records";
    let stalled = grpc::subscribe(
        &pki,
        &server.url(),
        pb::start_position::Position::Now(true),
        &[pb::RecordKind::Deviation],
    )
    .await
    .unwrap();
    // 2,000 deviations of 16 KiB each: far more than HTTP/2 flow control and one read step
    // (512 records) let the server take off the log for a subscriber that reads nothing.
    let long = "x".repeat(16 * 1024);
    for _ in 0..20 {
        let mut evs = sensor.events(&w, &["/opt/tool"; 100]);
        for e in &mut evs {
            e.process.as_mut().unwrap().argv.push(long.clone());
        }
        sensor.send_acked(evs).await.unwrap();
    }
    let behind = wait_for(FOLLOW, || {
        metric(server.admin_port(), lag).filter(|l| *l > 0.0)
    });
    assert!(
        behind.is_some_and(|l| l <= 2_100.0),
        "the stalled subscriber did not show as lagging (by at most the records written: 2,000 deviations and their incident changes): {:?}",
        metric(server.admin_port(), lag)
    );

    // It reads everything and leaves: nobody lags.
    let mut stalled = stalled;
    let mut read = 0;
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_secs(3), stalled.message()).await
    {
        read += 1;
    }
    assert_eq!(read, 2_000);
    drop(stalled);
    wait_value(&server, lag, 0.0);
}
