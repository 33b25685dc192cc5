//! multipart/related response bodies. Part contents are `Bytes`, which for
//! stored instances borrow the memory-mapped segment, and the body streams
//! them one after the other with a known total length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::SizedStream;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::stream;

/// One part of a multipart response.
pub struct Part {
    /// The part's Content-Type, with parameters.
    pub content_type: String,
    /// Content-Location of the part, if any.
    pub location: Option<String>,
    pub body: Bytes,
}

/// Builds a `multipart/related; type="<related_type>"` response from `parts`.
pub fn multipart(related_type: &str, parts: Vec<Part>) -> HttpResponse {
    let boundary = new_boundary();
    let mut chunks = Vec::with_capacity(parts.len() * 2 + 1);
    for (index, part) in parts.into_iter().enumerate() {
        let separator = if index == 0 { "" } else { "\r\n" };
        let mut head = format!(
            "{separator}--{boundary}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            part.content_type,
            part.body.len()
        );
        if let Some(location) = part.location {
            head.push_str(&format!("Content-Location: {location}\r\n"));
        }
        head.push_str("\r\n");
        chunks.push(Bytes::from(head));
        chunks.push(part.body);
    }
    chunks.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));

    let total: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    let body = SizedStream::new(total, stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>)));
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            format!("multipart/related; type=\"{related_type}\"; boundary={boundary}"),
        ))
        .body(body)
}

/// Makes a boundary unlikely to occur in any part from the current time and a
/// counter mixed into 64 bits, in hex.
fn new_boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos() as u64).unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = (nanos ^ count.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("nectar-{mixed:016x}{count:x}")
}
