//! Publication of the outbox to a NATS JetStream stream.
//!
//! One task takes the outbox in order from its cursor (`event_cursors`,
//! consumer `nats`) and publishes each event to `<prefix>.<type>` with
//! `Nats-Msg-Id` set to the event id. It publishes a batch on one connection,
//! then waits for JetStream's acknowledgements in order before it moves the
//! cursor, so the stream keeps the events in outbox order and drops the
//! copies a retry or a restart publishes again. While NATS is unreachable the
//! events wait in the outbox and the task retries with a growing delay. The
//! manifest holds ingest back once the outbox contains more unpublished events than
//! its bound.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

use super::deliver;
use crate::manifest::Manifest;
use crate::storage::Store;

/// The cursor name of this consumer.
pub const CONSUMER: &str = "nats";

/// Events published per outbox read.
const BATCH: usize = 256;
/// Maximum wait for one publish acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How to authenticate to the NATS server.
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    Token(String),
    UserPassword { user: String, password: String },
    /// An NKey seed.
    NKey(String),
    /// A `.creds` file (JWT and NKey seed).
    CredentialsFile(PathBuf),
}

/// The NATS server, authentication and stream events are published to.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub auth: NatsAuth,
    /// CA certificates that sign the server's certificate. Setting it requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// The JetStream stream, created if missing.
    pub stream: String,
    /// Events go to `<subject_prefix>.<type>`; the stream takes `<subject_prefix>.>`.
    pub subject_prefix: String,
    pub retention: stream::RetentionPolicy,
    /// How long JetStream remembers message ids to drop duplicates.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    /// Returns the subject an event of `event_type` is published to.
    pub fn subject(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.subject_prefix)
    }
}

/// Parses a retention policy name as JetStream spells it.
pub fn parse_retention(name: &str) -> Result<stream::RetentionPolicy, String> {
    match name {
        "limits" => Ok(stream::RetentionPolicy::Limits),
        "interest" => Ok(stream::RetentionPolicy::Interest),
        "workqueue" => Ok(stream::RetentionPolicy::WorkQueue),
        other => Err(format!("unknown retention {other:?}: expected limits, interest or workqueue")),
    }
}

/// Publishes the outbox until `stop` turns true. Never returns early: every
/// failure is logged, counted and retried.
pub async fn run(config: NatsConfig, manifest: Manifest, store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut delay = RETRY_MIN;
    loop {
        let outcome = tokio::select! {
            outcome = publish_until_error(&config, &manifest, &store) => outcome,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        if let Err(error) = outcome {
            metrics::counter!("nectar_nats_retries_total").increment(1);
            tracing::warn!(url = config.url.as_str(), %error, retry_in_ms = delay.as_millis() as u64, "NATS publication interrupted");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn connect(config: &NatsConfig) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("nectar")
        .connection_timeout(Duration::from_secs(5));
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
        NatsAuth::NKey(seed) => options.nkey(seed.clone()),
        NatsAuth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| format!("reading credentials {}: {e}", path.display()))?,
    };
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    options.connect(config.url.as_str()).await.map_err(|e| format!("connecting: {e}"))
}

async fn publish_until_error(config: &NatsConfig, manifest: &Manifest, store: &Store) -> Result<(), String> {
    let client = connect(config).await?;
    let context = jetstream::new(client);
    context
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            retention: config.retention,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating stream {}: {e}", config.stream))?;
    tracing::info!(url = config.url.as_str(), stream = config.stream.as_str(), "publishing events to NATS JetStream");

    let mut head = manifest.subscribe_outbox().map_err(|e| e.to_string())?;
    let mut cursor = read_cursor(manifest).await?;
    manifest.report_published(cursor);
    loop {
        let batch = read_batch(manifest, cursor).await?;
        if batch.is_empty() {
            metrics::gauge!("nectar_outbox_depth").set(0.0);
            head.wait_for(|newest| *newest > cursor).await.map_err(|_| "the manifest closed".to_string())?;
            continue;
        }
        // Publish the whole batch, then wait for the acknowledgements in order:
        // one connection keeps the publish order, and after a failure the batch
        // is sent again from the cursor, where JetStream drops what it has.
        let started = Instant::now();
        let mut pending = Vec::with_capacity(batch.len());
        for (event, record) in &batch {
            let body = deliver::render(store, event, *record);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            let ack = context
                .publish_with_headers(config.subject(&event.event_type), headers, body.into())
                .await
                .map_err(|e| format!("publishing {}: {e}", event.id))?;
            pending.push((event, ack));
        }
        for (event, ack) in pending {
            tokio::time::timeout(ACK_TIMEOUT, ack)
                .await
                .map_err(|_| format!("no acknowledgement for {} within {ACK_TIMEOUT:?}", event.id))?
                .map_err(|e| format!("acknowledgement for {}: {e}", event.id))?;
            // Time from the start of the batch's publishing to this event's acknowledgement.
            metrics::histogram!("nectar_nats_publish_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("nectar_events_published_total", "sink" => "nats", "type" => deliver::type_label(&event.event_type)).increment(1);
            cursor = event.seq;
        }
        save_cursor(manifest, cursor).await?;
        manifest.report_published(cursor);
        let newest = *head.borrow();
        metrics::gauge!("nectar_outbox_depth").set((newest - cursor).max(0) as f64);
    }
}

async fn read_cursor(manifest: &Manifest) -> Result<i64, String> {
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || manifest.event_cursor(CONSUMER))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the cursor: {e}"))
}

async fn save_cursor(manifest: &Manifest, seq: i64) -> Result<(), String> {
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || manifest.advance_event_cursor(CONSUMER, seq))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("saving the cursor: {e}"))
}

async fn read_batch(
    manifest: &Manifest,
    after: i64,
) -> Result<Vec<(super::OutboxEvent, Option<crate::Location>)>, String> {
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || manifest.events_after(after, BATCH))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the outbox: {e}"))
}
