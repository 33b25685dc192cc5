//! The HTTP endpoint: health, Prometheus metrics and DICOMweb under `/dicomweb`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{dev::ServerHandle, web, App, HttpResponse, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dicomweb;
use crate::manifest::Manifest;
use crate::storage::Store;

/// State the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// True once the DIMSE listener accepts associations.
    pub ready: Arc<AtomicBool>,
    pub prometheus: PrometheusHandle,
    /// The segment store STOW-RS writes to and WADO-RS reads from.
    pub store: Store,
    /// The manifest STOW-RS enters instances in and WADO-RS queries.
    pub manifest: Manifest,
    /// Read-only manifest connections reused across requests.
    pub manifest_readers: dicomweb::ManifestReaders,
    /// Base URL of the DICOMweb service for RetrieveURL and BulkDataURI values;
    /// `None`: built from each request's Host header.
    pub public_url: Option<String>,
    /// The outbox for `GET /events`; `None` when events are off.
    pub events: Option<crate::events::sse::EventStream>,
}

/// Starts the HTTP server on `address` and returns its handle for shutdown.
pub fn start(address: SocketAddr, state: HttpState) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics))
            .app_data(web::Data::new(state.manifest.clone()))
            .configure(dicomweb::configure);
        if let Some(events) = &state.events {
            app = app
                .app_data(web::Data::new(events.clone()))
                .route("/events", web::get().to(crate::events::sse::events))
                .route("/events/{position}", web::get().to(crate::events::sse::event));
        }
        app
    })
    // A multipart response is written as several chunks (part headers, then
    // the record borrowed from its segment), so Nagle's algorithm would hold
    // the last small chunk until the client's delayed ACK, about 40 ms.
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "failed to set TCP_NODELAY on an HTTP connection");
            }
        }
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(address)?;
    let bound = server.addrs().first().copied().unwrap_or(address);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((handle, bound))
}

async fn health(state: web::Data<HttpState>) -> HttpResponse {
    if state.ready.load(Ordering::Acquire) {
        HttpResponse::Ok().content_type("text/plain").body("ok\n")
    } else {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("starting\n")
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.prometheus.render())
}
