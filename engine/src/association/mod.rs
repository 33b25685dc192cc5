//! One association: negotiation, then DIMSE messages until release or abort.
//!
//! Each association is a supervised task on one worker arbiter for its whole
//! life. Its state is private to the task; the server reaches it only through
//! the shutdown signals. A panic inside it is caught by [`supervise`], which
//! aborts that association alone and leaves the server serving.

mod accept;
mod error;
mod find_scp;
mod get_scp;
mod io;
mod move_scp;
mod retrieve;
mod session;
mod store_scp;
mod store_scu;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use nectar_codecs::negotiation::AcceptorPolicy;
use nectar_codecs::pdu;
use tokio::net::TcpStream;
use tracing::{info_span, Instrument};

use crate::manifest::Manifest;
use crate::retrieve::RemoteAeTable;
use crate::shutdown::ShutdownSignals;
use crate::storage::Store;
use crate::telemetry;

pub use error::AssociationError;

/// Timers and sizes that apply to every association.
#[derive(Debug, Clone)]
pub struct AssociationLimits {
    /// How long a new connection may take to send its A-ASSOCIATE-RQ (ARTIM, PS3.8 section 9.1.5).
    pub artim_timeout: Duration,
    /// How long an established association may stay silent between PDUs.
    pub idle_timeout: Duration,
    /// Largest P-DATA-TF PDU this SCP accepts, announced in A-ASSOCIATE-AC; 0 means unlimited.
    pub max_pdu_length: u32,
}

/// Resources shared by every association on this server.
pub struct Services {
    pub store: Store,
    pub manifest: Manifest,
    pub policy: AcceptorPolicy,
    pub limits: AssociationLimits,
    /// C-MOVE destinations by AE title.
    pub remote_aes: RemoteAeTable,
}

/// The identity of one association, carried into its span and its log lines.
#[derive(Debug, Clone, Copy)]
pub struct AssociationId {
    pub id: u64,
    pub peer: SocketAddr,
}

/// Runs one association to its end, catching a panic inside it.
///
/// On a panic the association is aborted with an A-ABORT sent on a second
/// handle of the same socket; the panic is logged and counted.
pub async fn supervise(
    stream: std::net::TcpStream,
    id: AssociationId,
    services: Arc<Services>,
    signals: ShutdownSignals,
) {
    let span = info_span!(
        "association",
        association_id = id.id,
        peer = %id.peer,
        calling_ae = tracing::field::Empty,
        called_ae = tracing::field::Empty,
    );
    let abort_handle = stream.try_clone().ok();
    contain_panic(abort_handle, run(stream, services, signals)).instrument(span).await
}

/// Runs `association`; if it panics, logs and counts the panic and sends
/// A-ABORT on `abort_handle`, a second handle of the association's socket.
async fn contain_panic<F>(abort_handle: Option<std::net::TcpStream>, association: F)
where
    F: std::future::Future<Output = ()>,
{
    let Err(panic) = AssertUnwindSafe(association).catch_unwind().await else {
        return;
    };
    telemetry::association_panicked(&telemetry::panic_message(&panic));
    if let Some(mut socket) = abort_handle {
        send_abort_blocking(&mut socket);
    }
}

async fn run(
    stream: std::net::TcpStream,
    services: Arc<Services>,
    signals: ShutdownSignals,
) {
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "failed to register the socket with the worker runtime");
            return;
        }
    };
    let mut conn = io::Connection::new(stream);
    let Some(established) = accept::negotiate_association(&mut conn, &services).await else {
        return;
    };
    session::Session::new(conn, established, services, signals).run().await;
}

fn send_abort_blocking(socket: &mut std::net::TcpStream) {
    use std::io::Write;
    // The socket is non-blocking because the runtime owned it. A 10-byte write
    // to a healthy socket completes at once; any failure means the peer is gone.
    let _ = socket.write_all(&pdu::encode_abort(Some(pdu::abort_reason::NOT_SPECIFIED)));
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::contain_panic;

    #[tokio::test]
    async fn panic_sends_abort_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let abort_handle = server_side.try_clone().ok();

        contain_panic(abort_handle, async move {
            let _socket = server_side;
            panic!("injected failure");
        })
        .await;

        let mut received = Vec::new();
        peer.read_to_end(&mut received).unwrap();
        assert_eq!(received.len(), 10, "one A-ABORT PDU, then EOF");
        assert_eq!(received[0], 0x07, "PDU type A-ABORT");
        assert_eq!(received[8], 2, "source: service provider");
    }

    #[tokio::test]
    async fn completed_association_sends_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let abort_handle = server_side.try_clone().ok();

        contain_panic(abort_handle, async move { drop(server_side) }).await;

        peer.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 16];
        let read = (&peer).read(&mut buffer);
        assert!(!matches!(read, Ok(n) if n > 0), "no bytes sent by a normal end");
    }
}
