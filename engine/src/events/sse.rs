//! `GET /events`: the outbox as a server-sent-events stream, and
//! `GET /events/{position}`: one event in binary mode.
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

/// The state of the `/events` handlers.
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

/// The handler of `GET /events/{position}`: one event in the CloudEvents HTTP
/// binding's binary mode. Its attributes are `ce-*` headers, `datacontenttype`
/// is the Content-Type, and the body is `data`. 404 when the outbox has no
/// event at that position (never written, or pruned).
pub async fn event(position: web::Path<i64>, state: web::Data<EventStream>) -> HttpResponse {
    let position = position.into_inner();
    let manifest = state.manifest.clone();
    let found = tokio::task::spawn_blocking(move || manifest.events_after(position - 1, 1)).await;
    let (event, record) = match found {
        Ok(Ok(mut events)) if events.first().is_some_and(|(e, _)| e.seq == position) => events.remove(0),
        Ok(Ok(_)) => {
            return HttpResponse::NotFound()
                .content_type("application/json")
                .body(serde_json::json!({"error": format!("no event at position {position}")}).to_string())
        }
        Ok(Err(error)) => {
            tracing::warn!(position, %error, "reading an outbox event failed");
            return HttpResponse::ServiceUnavailable().finish();
        }
        Err(error) => {
            tracing::warn!(position, %error, "reading an outbox event failed");
            return HttpResponse::ServiceUnavailable().finish();
        }
    };
    let body = deliver::render(&state.store, &event, record);
    let Ok(serde_json::Value::Object(mut cloud)) = serde_json::from_str(&body) else {
        tracing::error!(position, event_id = event.id.as_str(), "an outbox event is not a JSON object");
        return HttpResponse::InternalServerError().finish();
    };
    let data = cloud.remove("data").unwrap_or(serde_json::Value::Null);
    let content_type = cloud
        .remove("datacontenttype")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "application/json".to_owned());
    let mut response = HttpResponse::Ok();
    response.content_type(content_type);
    for (name, value) in cloud {
        if let Some(text) = value.as_str() {
            response.insert_header((format!("ce-{name}"), text.to_owned()));
        }
    }
    response.body(data.to_string())
}
