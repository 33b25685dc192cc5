//! The DIMSE listener: accepts connections, admits each under the
//! association limit, and hands it to a worker arbiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nectar_codecs::negotiation;
use nectar_codecs::pdu::{self, pdu_type, PDU_HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::workers::WorkerPool;
use crate::association::{self, AssociationId, Services};
use crate::shutdown::ShutdownSignals;
use crate::telemetry;

/// Everything the accept loop needs.
pub struct Listener {
    pub listener: TcpListener,
    pub workers: Arc<WorkerPool>,
    pub services: Arc<Services>,
    pub signals: ShutdownSignals,
    /// One permit per open association; `max_associations` in all.
    pub permits: Arc<Semaphore>,
    pub max_associations: usize,
}

impl Listener {
    /// Accepts connections until `stop` becomes true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let next_id = AtomicU64::new(1);
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE; pausing keeps a full descriptor table from spinning the loop.
                    tracing::error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small responses must leave at once: with Nagle's algorithm and
            // delayed ACKs each C-STORE-RSP would wait about 40 ms.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, %peer, "failed to set TCP_NODELAY");
            }
            let id = AssociationId { id: next_id.fetch_add(1, Ordering::Relaxed), peer };
            self.admit(stream, id);
        }
        tracing::info!("DIMSE listener stopped");
    }

    fn admit(&self, stream: TcpStream, id: AssociationId) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            telemetry::association_over_limit(self.max_associations);
            let artim = self.services.limits.artim_timeout;
            actix_rt::spawn(reject_over_limit(stream, artim));
            return;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%error, peer = %id.peer, "failed to detach the socket from the listener runtime");
                return;
            }
        };
        let services = self.services.clone();
        let signals = self.signals.clone();
        self.workers.next().spawn(async move {
            telemetry::association_opened();
            association::supervise(stream, id, services, signals).await;
            telemetry::association_ended();
            drop(permit);
        });
    }
}

/// Reads the A-ASSOCIATE-RQ of a connection above the limit and answers
/// A-ASSOCIATE-RJ, transient, local limit exceeded (PS3.8 section 9.3.4).
async fn reject_over_limit(mut stream: TcpStream, artim: Duration) {
    let read_request = async {
        let mut header = [0u8; PDU_HEADER_LEN];
        stream.read_exact(&mut header).await?;
        let header = pdu::parse_pdu_header(&header).expect("six bytes were read");
        let mut body = (&mut stream).take(u64::from(header.length));
        tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
        Ok::<u8, std::io::Error>(header.pdu_type)
    };
    if let Ok(Ok(pdu_type::ASSOCIATE_RQ)) = tokio::time::timeout(artim, read_request).await {
        if let Ok(bytes) = pdu::encode_pdu(&negotiation::reject_local_limit().into()) {
            let _ = stream.write_all(&bytes).await;
        }
    }
    let _ = stream.shutdown().await;
}
