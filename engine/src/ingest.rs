//! The path every received instance takes, whether it came over C-STORE or
//! STOW-RS: scan the data set, commit its record, and queue its manifest entry.

use nectar_codecs::meta;
use nectar_codecs::scan::{self, tags, DatasetEncoding, ScannedAttributes};

use crate::manifest::{InstanceRecord, Manifest};
use crate::storage::{PendingRecord, SegmentWriter, Store, StoreError};
use crate::Location;

/// Scans a received data set for the attributes the manifest indexes.
///
/// Returns an error message when the transfer syntax is unknown or the data
/// set cannot be parsed.
pub fn scan_data_set(dataset: &[u8], transfer_syntax_uid: &str) -> Result<ScannedAttributes, String> {
    let Some(encoding) = DatasetEncoding::for_transfer_syntax(transfer_syntax_uid) else {
        return Err(format!("transfer syntax {transfer_syntax_uid} cannot be parsed"));
    };
    // A deflated data set is a deflate bitstream, and real senders omit the
    // pad byte that would make it even (pydicom's image_dfl.dcm is 4303 bytes),
    // so only uncompressed encodings must have even length (PS3.5 section 7).
    let deflated = encoding == DatasetEncoding::DeflatedExplicitVrLittleEndian;
    if !dataset.len().is_multiple_of(2) && !deflated {
        return Err(format!("data set has odd length {}; DICOM data sets have even length", dataset.len()));
    }
    scan::scan_attributes(dataset, encoding).map_err(|error| format!("data set cannot be parsed: {error}"))
}

/// A finished record with its manifest entry, published in its segment but
/// not durable yet.
pub struct FinishedInstance {
    pending: PendingRecord,
    partial: PartialRecord,
    sequence: u64,
}

/// Finishes the writer's open record so the writer can start the next one.
pub fn finish_instance(store: &Store, writer: &mut SegmentWriter, partial: PartialRecord) -> Result<FinishedInstance, StoreError> {
    let sequence = store.next_sequence();
    let pending = writer.finish_record(sequence)?;
    Ok(FinishedInstance { pending, partial, sequence })
}

/// Waits until a finished record is durable, then queues its manifest entry.
/// Returns the record's location once it is durable.
///
/// A failure to queue the manifest entry is logged, not returned: the record
/// is durable, so recovery enters it at the next start.
pub async fn commit_finished(store: &Store, manifest: &Manifest, finished: FinishedInstance) -> Result<Location, StoreError> {
    let location = store.commit(finished.pending).await?;

    let row = finished.partial.complete(location, finished.sequence);
    let sop_instance_uid = row.sop_instance_uid.clone();
    if let Err(error) = manifest.insert(row).await {
        tracing::error!(%error, %sop_instance_uid, "failed to queue the manifest entry");
    }
    Ok(location)
}

/// Finishes the writer's open record and commits it ([`finish_instance`]
/// then [`commit_finished`]).
pub async fn commit_instance(
    store: &Store,
    manifest: &Manifest,
    writer: &mut SegmentWriter,
    partial: PartialRecord,
) -> Result<Location, StoreError> {
    let finished = finish_instance(store, writer, partial)?;
    commit_finished(store, manifest, finished).await
}

/// A manifest entry still missing its place in the store.
pub struct PartialRecord {
    record: InstanceRecord,
}

impl PartialRecord {
    /// Builds the entry from scanned attributes.
    ///
    /// Returns an error message when an attribute the manifest needs to
    /// group the instance (Study or Series Instance UID) is missing.
    pub fn from_attributes(
        attributes: &ScannedAttributes,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax_uid: &str,
        calling_ae_title: Option<&str>,
    ) -> Result<PartialRecord, String> {
        let required = |tag, keyword: &str| {
            attributes
                .text(tag)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("data set has no {keyword}"))
        };
        let text = |tag| attributes.text(tag).filter(|value| !value.is_empty());

        let record = InstanceRecord {
            sop_instance_uid: sop_instance_uid.to_string(),
            sop_class_uid: sop_class_uid.to_string(),
            transfer_syntax_uid: transfer_syntax_uid.to_string(),
            study_instance_uid: required(tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")?,
            series_instance_uid: required(tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")?,
            patient_id: text(tags::PATIENT_ID),
            issuer_of_patient_id: text(tags::ISSUER_OF_PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            patient_sex: text(tags::PATIENT_SEX),
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            accession_number: text(tags::ACCESSION_NUMBER),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
            study_id: text(tags::STUDY_ID),
            study_description: text(tags::STUDY_DESCRIPTION),
            timezone_offset_from_utc: text(tags::TIMEZONE_OFFSET_FROM_UTC),
            specific_character_set: text(tags::SPECIFIC_CHARACTER_SET),
            modality: text(tags::MODALITY),
            series_number: attributes.int(tags::SERIES_NUMBER),
            series_description: text(tags::SERIES_DESCRIPTION),
            series_date: text(tags::SERIES_DATE),
            series_time: text(tags::SERIES_TIME),
            performed_procedure_step_start_date: text(tags::PERFORMED_PROCEDURE_STEP_START_DATE),
            performed_procedure_step_start_time: text(tags::PERFORMED_PROCEDURE_STEP_START_TIME),
            institution_name: text(tags::INSTITUTION_NAME),
            instance_number: attributes.int(tags::INSTANCE_NUMBER),
            rows: attributes.uint(tags::ROWS),
            columns: attributes.uint(tags::COLUMNS),
            bits_allocated: attributes.uint(tags::BITS_ALLOCATED),
            number_of_frames: attributes.int(tags::NUMBER_OF_FRAMES),
            calling_ae_title: calling_ae_title.map(str::to_string),
            ..InstanceRecord::default()
        };
        Ok(PartialRecord { record })
    }

    /// Adds the committed record's place in the store.
    pub fn complete(mut self, location: Location, sequence: u64) -> InstanceRecord {
        self.record.location = location;
        self.record.record_end = crate::storage::record_end(&location);
        self.record.sequence = sequence;
        self.record.received_at_ms = unix_millis();
        self.record
    }
}

/// Builds the manifest entry of a record read back from the store (recovery).
pub fn record_from_part10(part10: &[u8], location: Location, sequence: u64) -> Result<InstanceRecord, String> {
    let file_meta = meta::read_file_meta(part10).map_err(|error| format!("invalid File Meta: {error}"))?;
    let encoding = DatasetEncoding::for_transfer_syntax(&file_meta.transfer_syntax_uid)
        .ok_or_else(|| format!("unknown transfer syntax {}", file_meta.transfer_syntax_uid))?;
    let dataset = &part10[file_meta.dataset_offset..];
    let attributes = scan::scan_attributes(dataset, encoding).map_err(|error| error.to_string())?;
    let partial = PartialRecord::from_attributes(
        &attributes,
        &file_meta.sop_class_uid,
        &file_meta.sop_instance_uid,
        &file_meta.transfer_syntax_uid,
        file_meta.source_ae_title.as_deref(),
    )?;
    Ok(partial.complete(location, sequence))
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
