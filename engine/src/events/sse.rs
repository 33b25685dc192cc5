//! `GET /events`: the outbox as a server-sent-events stream.
//!
//! Each event is one SSE message: `id` is its outbox position, `event` its
//! CloudEvents type, `data` the CloudEvent in structured JSON. A client that
//! reconnects with `Last-Event-ID` (or `?after=N`) gets every event after that
//! position, then new ones as they are committed. Without either it gets only
//! new ones (`?after=0` replays the whole outbox). A comment line goes out
//! every 15 s of silence so proxies keep the connection open.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream;

use super::{deliver, OutboxEvent};
use crate::manifest::Manifest;
use crate::storage::Store;
use crate::Location;

const BATCH: usize = 128;
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What the `/events` handler needs.
#[derive(Clone)]
pub struct EventStream {
    pub manifest: Manifest,
    pub store: Store,
}

#[derive(serde::Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
}

/// The handler of `GET /events`.
pub async fn events(
    request: HttpRequest,
    query: web::Query<StreamQuery>,
    state: web::Data<EventStream>,
) -> HttpResponse {
    let Ok(head) = state.manifest.subscribe_outbox() else {
        return HttpResponse::NotFound().content_type("text/plain").body("events are not enabled\n");
    };
    let last_event_id = request
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = match last_event_id.or(query.after) {
        Some(after) => after,
        None => *head.borrow(),
    };
    metrics::gauge!("nectar_event_streams_open").increment(1.0);
    tracing::info!(after, "event stream opened");
    let reader = Reader { state: state.get_ref().clone(), head, after, pending: Vec::new(), _open: StreamOpen };
    let body = stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((Ok::<Bytes, actix_web::Error>(chunk), reader))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body)
}

/// Counts the stream as closed when the client goes away.
struct StreamOpen;

impl Drop for StreamOpen {
    fn drop(&mut self) {
        metrics::gauge!("nectar_event_streams_open").decrement(1.0);
    }
}

struct Reader {
    state: EventStream,
    head: tokio::sync::watch::Receiver<i64>,
    after: i64,
    pending: Vec<(OutboxEvent, Option<Location>)>,
    _open: StreamOpen,
}

impl Reader {
    /// Returns the next message or keep-alive comment, or `None` at the end of the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                let (event, record) = self.pending.remove(0);
                self.after = event.seq;
                let body = deliver::render(&self.state.store, &event, record);
                metrics::counter!("nectar_events_published_total", "sink" => "sse", "type" => deliver::type_label(&event.event_type)).increment(1);
                return Some(Bytes::from(format!("id: {}\nevent: {}\ndata: {body}\n\n", event.seq, event.event_type)));
            }
            if *self.head.borrow() > self.after {
                let manifest = self.state.manifest.clone();
                let after = self.after;
                let batch = tokio::task::spawn_blocking(move || manifest.events_after(after, BATCH)).await;
                match batch {
                    Ok(Ok(batch)) if !batch.is_empty() => {
                        self.pending = batch;
                        continue;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "reading the outbox for an event stream failed");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
            let after = self.after;
            match tokio::time::timeout(KEEPALIVE, self.head.wait_for(|newest| *newest > after)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return None,
                Err(_) => return Some(Bytes::from_static(b": keepalive\n\n")),
            }
        }
    }
}
