//! The HTTP endpoint: health, Prometheus metrics and DICOMweb under `/dicomweb`.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{self, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::FutureExt;
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
        app.wrap(middleware::from_fn(contain_panic))
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

/// Runs a request's handler. If the handler panics, logs and counts the panic and
/// returns 500 Internal Server Error, so the other requests on the worker go on.
async fn contain_panic(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (method, path) = (request.method().clone(), request.path().to_owned());
    match AssertUnwindSafe(next.call(request)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            crate::telemetry::http_handler_panicked(method.as_str(), &path, &crate::telemetry::panic_message(&panic));
            Err(actix_web::error::ErrorInternalServerError("the request handler failed; see the server log"))
        }
    }
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

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};

    use super::{contain_panic, middleware};

    async fn fails() -> HttpResponse {
        panic!("handler bug")
    }

    async fn works() -> HttpResponse {
        HttpResponse::Ok().body("ok")
    }

    #[actix_web::test]
    async fn handler_panic_returns_500() {
        let app = test::init_service(
            App::new()
                .route("/fails", web::get().to(fails))
                .route("/works", web::get().to(works))
                .wrap(middleware::from_fn(contain_panic)),
        )
        .await;
        // The server writes an error returned by the service as its response.
        let Err(failed) = test::try_call_service(&app, test::TestRequest::get().uri("/fails").to_request()).await else {
            panic!("a panicking handler must end in an error");
        };
        assert_eq!(failed.error_response().status(), 500);
        let next = test::call_service(&app, test::TestRequest::get().uri("/works").to_request()).await;
        assert_eq!(next.status(), 200);
    }
}
