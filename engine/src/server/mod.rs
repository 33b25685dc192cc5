//! `nectar serve`: opens storage and manifest, recovers, starts the workers,
//! the DIMSE listener and the HTTP endpoint, and shuts down in phases.

mod listener;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nectar_codecs::negotiation::AcceptorPolicy;
use tokio::sync::{watch, Semaphore};

use crate::association::{AssociationLimits, Services};
use crate::retrieve::RemoteAeTable;
use crate::http::{self, HttpState};
use crate::events::nats::{self, NatsConfig};
use crate::events::sse::EventStream;
use crate::events::studies::StudyRouter;
use crate::events::EventsConfig;
use crate::manifest::{Manifest, ManifestConfig, ManifestError};
use crate::recovery::{self, RecoveryError};
use crate::shutdown::ShutdownController;
use crate::storage::{Store, StoreConfig, StoreError};
use crate::telemetry_setup;

use listener::Listener;
use workers::WorkerPool;

/// How long aborted associations get to close after the shutdown deadline.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Everything `nectar serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub ae_title: String,
    pub dimse_address: SocketAddr,
    pub http_address: SocketAddr,
    pub workers: usize,
    /// Pin the workers to the first this many cores the process may use; `None` means all of them.
    pub pin_cores: Option<usize>,
    pub max_associations: usize,
    pub accept_any_called_ae: bool,
    pub allowed_calling_ae_titles: Vec<String>,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// C-MOVE destinations by AE title.
    pub remote_aes: RemoteAeTable,
    /// Segment size and committer batching.
    pub store: StoreConfig,
    /// Manifest writer queue and batching.
    pub manifest: ManifestConfig,
    /// Events: `None` records none.
    pub events: Option<EventsSetup>,
    /// Base URL of the DICOMweb service as clients reach it, without a trailing slash.
    pub public_url: Option<String>,
}

/// The event settings: naming, NATS publication and the outbox bound.
#[derive(Debug, Clone)]
pub struct EventsSetup {
    pub config: Arc<EventsConfig>,
    /// Publish to NATS JetStream too.
    pub nats: Option<NatsConfig>,
    /// Unpublished events at most before ingest waits (with NATS).
    pub outbox_bound: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("failed to open the store: {0}")]
    Store(#[from] StoreError),
    #[error("failed to open the manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("recovery failed: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("failed to bind {what} on {address}: {source}")]
    Bind { what: &'static str, address: SocketAddr, source: std::io::Error },
    #[error("failed to install the metrics recorder: {0}")]
    Metrics(String),
    #[error("failed to wait for signals: {0}")]
    Signals(std::io::Error),
}

/// Runs the server until SIGINT or SIGTERM, then shuts down in phases.
pub fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let prometheus = telemetry_setup::install_prometheus().map_err(ServeError::Metrics)?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServeError::DataDir { path: config.data_dir.clone(), source })?;

    let store = Store::open(&config.data_dir, config.store.clone())?;
    let mut manifest_config = config.manifest.clone();
    if let Some(events) = &config.events {
        manifest_config.events = Some(events.config.clone());
        manifest_config.outbox_bound = events.outbox_bound;
    }
    let manifest = Manifest::open(&config.data_dir.join("manifest.sqlite3"), manifest_config)?;
    let report = recovery::reenter_missing(&store, &manifest)?;
    tracing::info!(reentered = report.reentered, unreadable = report.unreadable, data_dir = %config.data_dir.display(), "storage recovered");

    let services = Arc::new(Services {
        store: store.clone(),
        manifest: manifest.clone(),
        policy: AcceptorPolicy {
            ae_title: config.ae_title.clone(),
            accept_any_called_ae: config.accept_any_called_ae,
            allowed_calling_ae_titles: config.allowed_calling_ae_titles.clone(),
            max_pdu_length: config.max_pdu_length,
        },
        limits: AssociationLimits {
            artim_timeout: config.artim_timeout,
            idle_timeout: config.idle_timeout,
            max_pdu_length: config.max_pdu_length,
        },
        remote_aes: config.remote_aes.clone(),
    });

    let system = actix_rt::System::new();
    let result = system.block_on(run_until_signal(&config, services, prometheus));

    // Storage and manifest close last, after every association has ended.
    let store_closed = store.close();
    let manifest_closed = manifest.close();
    result?;
    store_closed?;
    manifest_closed?;
    tracing::info!("nectar stopped");
    Ok(())
}

async fn run_until_signal(
    config: &ServeConfig,
    services: Arc<Services>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<(), ServeError> {
    let tcp = tokio::net::TcpListener::bind(config.dimse_address)
        .await
        .map_err(|source| ServeError::Bind { what: "DIMSE", address: config.dimse_address, source })?;
    let dimse_address = tcp.local_addr().unwrap_or(config.dimse_address);

    let ready = Arc::new(AtomicBool::new(false));
    let event_stream = config.events.as_ref().map(|_| EventStream {
        manifest: services.manifest.clone(),
        store: services.store.clone(),
    });
    let http_state = HttpState {
        ready: ready.clone(),
        prometheus,
        store: services.store.clone(),
        manifest: services.manifest.clone(),
        manifest_readers: crate::dicomweb::ManifestReaders::new(services.manifest.clone()),
        public_url: config.public_url.clone(),
        events: event_stream,
    };
    let (http_handle, http_address) = http::start(config.http_address, http_state)
        .map_err(|source| ServeError::Bind { what: "HTTP", address: config.http_address, source })?;

    let mut cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(limit) = config.pin_cores {
        cores.truncate(limit);
    }
    let pinned_cores: Vec<usize> = cores.iter().map(|core| core.id).collect();
    let workers = Arc::new(WorkerPool::start(config.workers, &cores));
    let (stop_events, stop_events_rx) = watch::channel(false);
    let event_tasks = start_event_consumers(config, &services, &workers, stop_events_rx);
    let permits = Arc::new(Semaphore::new(config.max_associations));
    let (controller, signals) = ShutdownController::new();
    let (stop_listener, stop_listener_rx) = watch::channel(false);
    let listener = Listener {
        listener: tcp,
        workers: workers.clone(),
        services,
        signals,
        permits: permits.clone(),
        max_associations: config.max_associations,
    };
    let listening = actix_rt::spawn(listener.run(stop_listener_rx));
    ready.store(true, Ordering::Release);
    tracing::info!(
        dimse = %dimse_address,
        http = %http_address,
        ae_title = config.ae_title.as_str(),
        workers = config.workers,
        pinned_cores = ?pinned_cores,
        max_associations = config.max_associations,
        "nectar listening"
    );

    wait_for_signal().await?;

    // Phase 1: stop accepting.
    ready.store(false, Ordering::Release);
    stop_listener.send_replace(true);
    let _ = listening.await;

    // Phase 2: open associations finish, or are aborted after the deadline.
    let all = config.max_associations as u32;
    let drained = tokio::time::timeout(config.shutdown_timeout, permits.acquire_many(all)).await;
    if drained.is_err() {
        let open = config.max_associations - permits.available_permits();
        tracing::warn!(open, deadline_s = config.shutdown_timeout.as_secs(), "aborting associations still open at the shutdown deadline");
        controller.abort_associations();
        let _ = tokio::time::timeout(ABORT_GRACE, permits.acquire_many(all)).await;
    }

    // Phase 3: HTTP, the event consumers and the workers stop.
    http_handle.stop(true).await;
    stop_events.send_replace(true);
    for task in event_tasks {
        let _ = task.await;
    }
    if let Ok(workers) = Arc::try_unwrap(workers) {
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    }
    Ok(())
}

/// Starts the study router and, when configured, the NATS publisher.
fn start_event_consumers(
    config: &ServeConfig,
    services: &Arc<Services>,
    workers: &WorkerPool,
    stop: watch::Receiver<bool>,
) -> Vec<actix_rt::task::JoinHandle<()>> {
    let Some(events) = &config.events else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    if let Some(touches) = services.manifest.take_study_touches() {
        let router = StudyRouter::new(workers.handles(), services.manifest.clone(), events.config.quiet_period);
        tasks.push(actix_rt::spawn(router.run(touches, stop.clone())));
    }
    if let Some(nats_config) = events.nats.clone() {
        // Ingest is held back from the start if the outbox is already full
        // and NATS does not come up.
        match services.manifest.event_cursor(nats::CONSUMER) {
            Ok(published) => services.manifest.report_published(published),
            Err(error) => tracing::error!(%error, "reading the NATS cursor failed"),
        }
        let publisher = nats::run(nats_config, services.manifest.clone(), services.store.clone(), stop);
        tasks.push(actix_rt::spawn(publisher));
    }
    tasks
}

async fn wait_for_signal() -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
    Ok(())
}
