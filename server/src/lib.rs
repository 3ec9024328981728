//! procguard server.
//!
//! Sensors stream process events here over mTLS ([`grpc::sensor`]); the [`store`] (sled)
//! learns per-workload baselines from them and records deviations; people and automation
//! review and approve baselines through [`grpc::baseline`], every call passing the gate of
//! [`auth`]; changed baselines are pushed back to every connected sensor through the [`hub`],
//! and [`learning`] ends learning windows on a timer. Deviations and sensor findings become
//! incidents ([`grpc::incident`]), and every incident change, deviation and audit record is
//! streamed to SIEMs with a cursor ([`grpc::subscription`]); [`watchdog`] runs retention and
//! flags silent sensors; [`gauges`] keeps the gauges of stored state current.
//!
//! [`bind`] binds both ports and opens the store before any work begins, and returns the
//! addresses the OS gave ([`Bound::grpc_addr`], [`Bound::admin_addr`]: port 0 asks for any
//! free port, so tests run the server in-process on `127.0.0.1:0` with no port race);
//! [`Bound::serve`] serves until the shutdown token is cancelled, then drains for at most
//! `--shutdown-grace`: connections still open then are closed ([`shutdown`]), and the store is
//! flushed before it returns. [`run`] is the two in a row, as the binary calls it.

pub mod auth;
pub mod config;
pub mod gauges;
pub mod gitops;
pub mod grpc;
pub mod hub;
pub mod learning;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod placement;
pub mod shutdown;
pub mod store;
pub mod watchdog;

pub use config::{Config, Settings};

use anyhow::Context;
use procguard_proto::v1 as pb;
use procguard_runtime::admin::Admin;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long connections closed after the grace period get to notice it (they fail at their
/// next read or write, which the close wakes at once).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs the server until `shutdown` is cancelled: [`bind`], then [`Bound::serve`].
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(settings).await?.serve(shutdown).await
}

/// A server whose ports are bound and whose store is open, not yet serving.
pub struct Bound {
    settings: Settings,
    metrics: metrics::Metrics,
    limits: limits::Limits,
    admin: Admin,
    admin_listener: tokio::net::TcpListener,
    grpc_listener: tokio::net::TcpListener,
    store: store::SharedStorage,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// With `--kube on`: the client for placement checks.
    kube: Option<kube::Client>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Binds the admin and gRPC ports and opens the store; nothing is served yet. Fails, saying
/// which address or directory, before any work begins.
pub async fn bind(settings: Settings) -> anyhow::Result<Bound> {
    // A kubeconfig is configuration: checked before any port is bound.
    let kube = match &settings.kube {
        Some(kubeconfig) => Some(placement::client(kubeconfig.as_deref()).await?),
        None => None,
    };
    let metrics = metrics::Metrics::default();
    let limits = limits::Limits::new(settings.limits.clone());
    let mut registry = metrics.register();
    registry.register(
        "limit_exceeded",
        "Requests refused by a limit (docs/LIMITS.md), by limit",
        limits.violations.clone(),
    );
    let admin = Admin::new(registry);
    let admin_listener = Admin::bind(settings.admin_addr)
        .await
        .with_context(|| format!("cannot bind admin address {}", settings.admin_addr))?;
    let grpc_listener = listener::bind(settings.grpc_addr)
        .with_context(|| format!("cannot bind gRPC address {}", settings.grpc_addr))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .context("cannot read the bound gRPC address")?;
    let admin_addr = admin_listener
        .local_addr()
        .context("cannot read the bound admin address")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let store = store::Store::open_with_tail(&settings.data_dir, settings.stream_tail_records)
        .with_context(|| {
            format!(
                "cannot open sled database in {}",
                settings.data_dir.display()
            )
        })?
        .with_max_baseline_elements(settings.limits.max_baseline_elements)
        .with_max_active_incidents(settings.limits.max_active_incidents_per_workload)
        .with_blind_losses(settings.sensor_blind_losses);
    // The domain code sees only the storage interface.
    let store: store::SharedStorage = std::sync::Arc::new(store);
    // The counter continues from the database, so it means "stored, ever" across restarts.
    metrics.events_ingested.inc_by(
        store
            .events_ingested()
            .context("cannot read the stored event count")?,
    );
    metrics.executions_ingested.inc_by(
        store
            .executions_ingested()
            .context("cannot read the stored execution count")?,
    );
    Ok(Bound {
        settings,
        metrics,
        limits,
        admin,
        admin_listener,
        grpc_listener,
        store,
        grpc_addr,
        admin_addr,
        kube,
    })
}

impl Bound {
    /// The gRPC address as bound (the port the OS chose for port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin address as bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` is cancelled, drains, and flushes the store.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Bound {
            settings,
            metrics,
            limits,
            admin,
            admin_listener,
            grpc_listener,
            store,
            grpc_addr,
            admin_addr,
            kube,
        } = self;
        let hub = hub::Hub::default();

        let admin_task = tokio::spawn(admin.clone().serve(admin_listener, shutdown.clone()));

        let learning_task = tokio::spawn(learning::run(
            store.clone(),
            hub.clone(),
            settings.policies.clone(),
            shutdown.clone(),
        ));

        let watchdog_task = tokio::spawn(watchdog::run(
            store.clone(),
            metrics.clone(),
            watchdog::Settings {
                retention: settings.retention,
                retention_interval: settings.retention_interval,
                sensor_silence: settings.sensor_silence,
            },
            shutdown.clone(),
        ));

        let gauges_task = tokio::spawn(gauges::run(
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));

        let gate = auth::Gate::new(
            store.clone(),
            settings.tokens.clone(),
            metrics.clone(),
            limits.clone(),
        );
        let baselines = grpc::baseline::BaselineApi::new(
            gate.clone(),
            store.clone(),
            hub.clone(),
            limits.clone(),
        );
        let audit = grpc::audit::AuditApi::new(gate.clone(), store.clone());
        let incidents = grpc::incident::IncidentApi::new(gate.clone(), store.clone(), hub.clone());
        let subscriptions = grpc::subscription::StreamApi::new(
            gate,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .with_limits(limits.clone());
        let placement_metrics = metrics.clone();
        let sensors = grpc::sensor::SensorApi::new(
            store.clone(),
            hub,
            metrics,
            settings.sensor_fleet_names.clone(),
            std::sync::Arc::new(settings.policies.clone()),
            shutdown.clone(),
        )
        .with_limits(limits.clone());
        let (sensors, placement_task) = match kube {
            Some(client) => {
                let placements = placement::Placements::default();
                let task = tokio::spawn(placement::watch(
                    client,
                    placements.clone(),
                    placement_metrics,
                    shutdown.clone(),
                ));
                tracing::info!(
                    message = "Sensor reports are checked against the Kubernetes API (--kube on)."
                );
                (sensors.with_placements(placements), Some(task))
            }
            None => (sensors, None),
        };
        let max_message = settings.limits.max_message_bytes;
        // Connections are closed by force once the grace period is over (see `shutdown`).
        let close = CancellationToken::new();
        // New connections use the certificate in use when they arrive; the watcher follows the
        // files (docs/deploy.md, "Rotating certificates").
        let tls_task = settings
            .tls
            .watch(settings.tls_reload_interval, shutdown.clone());
        let incoming = listener::incoming(
            grpc_listener,
            settings.tls.clone(),
            close.clone(),
            shutdown.clone(),
        );
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            // Counts and explains requests tonic refuses for their size before any handler.
            .layer(limits::MessageSizeLayer::new(limits.clone()))
            .add_service(
                pb::sensor_service_server::SensorServiceServer::new(sensors)
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::baseline_service_server::BaselineServiceServer::new(baselines)
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::audit_service_server::AuditServiceServer::new(audit)
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::incident_service_server::IncidentServiceServer::new(incidents)
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                procguard_proto::encoded::subscription_service_server::SubscriptionServiceServer::new(
                    subscriptions,
                )
                .max_decoding_message_size(max_message),
            );

        tracing::info!(
            message = "procguard-server listening.",
            grpc = %grpc_addr,
            admin = %admin_addr,
            data_dir = %settings.data_dir.display()
        );
        admin.set_ready(true);
        let stop = shutdown.clone();
        let serve =
            server.serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
        tokio::pin!(serve);
        let grace = settings.shutdown_grace;
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = &mut serve => served.context("gRPC server failed")?,
            _ = grace_over => {
                tracing::warn!(
                    message = "Connections still open after the shutdown grace period; closing them.",
                    grace = %humantime::format_duration(grace)
                );
                close.cancel();
                if tokio::time::timeout(CLOSE_WAIT, &mut serve).await.is_err() {
                    tracing::error!(message = "Connections did not close; exiting without them.");
                }
            }
        }
        admin.set_ready(false);
        let _ = tokio::time::timeout(grace, async {
            let _ = learning_task.await;
            let _ = watchdog_task.await;
            let _ = gauges_task.await;
            let _ = admin_task.await;
            let _ = tls_task.await;
            if let Some(task) = placement_task {
                let _ = task.await;
            }
        })
        .await;
        store.flush().await.context("final flush failed")?;
        tracing::info!(message = "procguard-server stopped.");
        Ok(())
    }
}
