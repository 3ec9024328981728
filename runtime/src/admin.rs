//! The admin port: `/healthz` (the process is alive), `/readyz` (it can do its job) and
//! `/metrics` (Prometheus text format). Plain HTTP, meant for the kubelet and a scraper on
//! the pod network; it exposes counters only, never events or baselines.

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Readiness and metrics shared between a binary's tasks and its admin port.
#[derive(Clone)]
pub struct Admin {
    ready: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
    /// Build, process and certificate metrics ([`crate::self_metrics`]).
    own: Arc<Registry>,
}

impl Default for Admin {
    fn default() -> Self {
        Self::new(Registry::default())
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish()
    }
}

impl Admin {
    /// A not-ready admin state over `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            registry: Arc::new(Mutex::new(registry)),
            own: Arc::new(crate::self_metrics::registry()),
        }
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Binds the admin listener. Binding is separate from serving so that a bad address fails
    /// at start-up, before any work begins.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The process's own metrics first ([`crate::self_metrics`], unprefixed), then the binary's;
/// one OpenMetrics exposition with a single `# EOF`.
fn encode_all(own: &Registry, binary: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode_registry(&mut body, own)?;
    prometheus_client::encoding::text::encode(&mut body, binary)?;
    Ok(body)
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let registry = admin.registry.lock().unwrap_or_else(|e| e.into_inner());
    match encode_all(&admin.own, &registry) {
        Ok(body) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
