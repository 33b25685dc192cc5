//! The C-STORE SCP (PS3.4 Annex B, PS3.7 section 9.1.1): the data set goes
//! from the socket into the instance's record in the store, behind a Part 10
//! File Meta header, and C-STORE-RSP Success is sent only after the commit.

use std::time::Instant;

use nectar_codecs::command::{self, status, Command};
use nectar_codecs::meta::{self, FileMetaFields};
use nectar_codecs::negotiation::{AcceptedContext, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use nectar_codecs::scan::tags;

use super::error::AssociationError;
use super::session::Session;
use crate::ingest;
use crate::storage::{StoreError, STAGE_LIMIT};
use crate::telemetry;

/// A C-STORE whose data set is arriving.
pub struct StoreInProgress {
    pub context_id: u8,
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
    /// Length of the File Meta header at the start of the record.
    meta_len: usize,
    started: Instant,
    received: u64,
    /// Set once the store cannot succeed; later fragments are read and dropped.
    failure: Option<Failure>,
    record_open: bool,
}

/// A C-STORE failure status with its Error Comment (0000,0902).
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub comment: String,
}

impl Failure {
    fn new(status: u16, comment: impl Into<String>) -> Failure {
        Failure { status, comment: comment.into() }
    }
}

impl Session {
    /// Starts a C-STORE: checks the command and opens a record with its File Meta header.
    pub(super) async fn begin_store(&mut self, command: &Command, context: &AcceptedContext) -> Result<(), AssociationError> {
        let message_id = command.message_id.unwrap_or(0);
        let sop_class_uid = command.affected_sop_class_uid.clone().unwrap_or_default();
        let sop_instance_uid = command.affected_sop_instance_uid.clone().unwrap_or_default();
        let mut store = StoreInProgress {
            context_id: context.id,
            message_id,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid: context.transfer_syntax.clone(),
            meta_len: 0,
            started: Instant::now(),
            received: 0,
            failure: check_command(command, context),
            record_open: false,
        };

        if !command.has_data_set() {
            let failure = store.failure.take().unwrap_or_else(|| {
                Failure::new(status::CANNOT_UNDERSTAND, "C-STORE-RQ announces no data set")
            });
            return self.respond_store(&store, Some(failure)).await;
        }
        if store.failure.is_none() {
            store.failure = self.open_record(&mut store).err();
        }
        self.set_store(store);
        Ok(())
    }

    fn open_record(&mut self, store: &mut StoreInProgress) -> Result<(), Failure> {
        self.writer
            .begin_record()
            .map_err(|error| Failure::new(status::OUT_OF_RESOURCES, format!("storage unavailable: {error}")))?;
        store.record_open = true;

        let mut header = Vec::with_capacity(512);
        meta::write_file_meta(
            &mut header,
            &FileMetaFields {
                sop_class_uid: &store.sop_class_uid,
                sop_instance_uid: &store.sop_instance_uid,
                transfer_syntax_uid: &store.transfer_syntax_uid,
                source_ae_title: Some(&self.calling_ae_title),
                implementation_class_uid: IMPLEMENTATION_CLASS_UID,
                implementation_version_name: IMPLEMENTATION_VERSION_NAME,
            },
        );
        store.meta_len = header.len();
        self.writer
            .append(&header)
            .map_err(|error| Failure::new(status::OUT_OF_RESOURCES, format!("storage write failed: {error}")))
    }

    /// Reads `len` data set bytes of the current C-STORE into its record, or drops them after a failure.
    pub(super) async fn receive_store_fragment(&mut self, len: usize) -> Result<(), AssociationError> {
        let Some(store) = self.current_store() else {
            unreachable!("called only while a C-STORE data set arrives");
        };
        store.received += len as u64;
        if store.failure.is_some() {
            self.conn.skip(len).await?;
            return Ok(());
        }
        // In pieces of at most STAGE_LIMIT, so the writer's buffer stays that small
        // whatever the PDU size.
        let mut left = len;
        while left > 0 {
            let piece = left.min(STAGE_LIMIT as usize);
            let slot = match self.writer.spare(piece) {
                Ok(slot) => slot,
                Err(error) => {
                    self.fail_store_write(error);
                    self.conn.skip(left).await?;
                    return Ok(());
                }
            };
            self.conn.read_into(slot).await?;
            left -= piece;
            if let Err(error) = self.writer.advance(piece) {
                self.fail_store_write(error);
                self.conn.skip(left).await?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Drops the current C-STORE's record after a storage error; the rest of its data set
    /// is read and discarded, and the response carries the failure.
    fn fail_store_write(&mut self, error: StoreError) {
        self.writer.abort_record();
        let store = self.current_store().expect("called while a C-STORE data set arrives");
        store.record_open = false;
        store.failure = Some(Failure::new(status::OUT_OF_RESOURCES, format!("storage write failed: {error}")));
    }

    /// Completes a C-STORE after its last fragment: checks the data set,
    /// commits the record, sends the response, then enters the instance in the manifest.
    pub(super) async fn finish_store(&mut self, mut store: StoreInProgress) -> Result<(), AssociationError> {
        if store.failure.is_none() {
            store.failure = self.commit_store(&store).await.err();
        }
        if store.failure.is_some() && store.record_open {
            self.writer.abort_record();
        }
        let failure = store.failure.take();
        self.respond_store(&store, failure).await
    }

    async fn commit_store(&mut self, store: &StoreInProgress) -> Result<(), Failure> {
        let record = self
            .writer
            .record_bytes()
            .map_err(|error| Failure::new(status::OUT_OF_RESOURCES, format!("storage write failed: {error}")))?;
        let dataset = &record[store.meta_len..];
        let row = check_data_set(store, dataset, &self.calling_ae_title)?;
        ingest::commit_instance(&self.services.store, &self.services.manifest, &mut self.writer, row)
            .await
            .map_err(|error| Failure::new(status::OUT_OF_RESOURCES, format!("storage commit failed: {error}")))?;
        Ok(())
    }

    async fn respond_store(&mut self, store: &StoreInProgress, failure: Option<Failure>) -> Result<(), AssociationError> {
        let (code, comment) = match &failure {
            Some(failure) => (failure.status, Some(failure.comment.as_str())),
            None => (status::SUCCESS, None),
        };
        let response =
            command::c_store_rsp(store.message_id, &store.sop_class_uid, &store.sop_instance_uid, code, comment);
        self.send_command(store.context_id, &response).await?;
        match failure {
            None => telemetry::instance_stored(&store.sop_instance_uid, store.received, store.started.elapsed()),
            Some(failure) => telemetry::store_failed(&store.sop_instance_uid, failure.status, &failure.comment),
        }
        Ok(())
    }
}

/// Checks a C-STORE-RQ against its presentation context (PS3.7 section 9.1.1.1).
fn check_command(command: &Command, context: &AcceptedContext) -> Option<Failure> {
    let Some(sop_class_uid) = command.affected_sop_class_uid.as_deref() else {
        return Some(Failure::new(status::CANNOT_UNDERSTAND, "C-STORE-RQ has no Affected SOP Class UID"));
    };
    if sop_class_uid != context.abstract_syntax {
        return Some(Failure::new(
            status::SOP_CLASS_NOT_SUPPORTED,
            format!(
                "Affected SOP Class UID {sop_class_uid} differs from presentation context {} ({})",
                context.id, context.abstract_syntax
            ),
        ));
    }
    if command.affected_sop_instance_uid.as_deref().unwrap_or("").is_empty() {
        return Some(Failure::new(status::CANNOT_UNDERSTAND, "C-STORE-RQ has no Affected SOP Instance UID"));
    }
    None
}

/// Checks a received data set and scans the attributes the manifest indexes.
fn check_data_set(store: &StoreInProgress, dataset: &[u8], calling_ae_title: &str) -> Result<ingest::PartialRecord, Failure> {
    let attributes = ingest::scan_data_set(dataset, &store.transfer_syntax_uid)
        .map_err(|message| Failure::new(status::CANNOT_UNDERSTAND, message))?;

    match attributes.text(tags::SOP_INSTANCE_UID).filter(|uid| !uid.is_empty()) {
        None => {
            return Err(Failure::new(status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Instance UID (0008,0018)"));
        }
        Some(uid) if uid != store.sop_instance_uid => {
            return Err(Failure::new(
                status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                format!(
                    "SOP Instance UID {uid} in the data set differs from Affected SOP Instance UID {}",
                    store.sop_instance_uid
                ),
            ));
        }
        Some(_) => {}
    }
    ingest::PartialRecord::from_attributes(
        &attributes,
        &store.sop_class_uid,
        &store.sop_instance_uid,
        &store.transfer_syntax_uid,
        Some(calling_ae_title),
    )
    .map_err(|missing| Failure::new(status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, missing))
}

impl Session {
    fn current_store(&mut self) -> Option<&mut StoreInProgress> {
        self.store_in_progress()
    }
}
