//! The row the engine hands to the manifest: one stored instance with the
//! patient, study and series attributes it carries.

use crate::Location;

/// One stored SOP instance, as the engine extracted it from the received
/// dataset, plus where the storage layer put it.
///
/// Strings hold the DICOM values as received (trailing padding removed by the
/// caller); `None` means the attribute was absent or empty.
///
/// On read ([`super::Manifest::instance`]) the patient, study and series
/// fields come from the normalized tables, so they show the newest values
/// known for that patient / study / series (see the module documentation),
/// and an empty PatientID or IssuerOfPatientID reads back as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    // Instance identity.
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,

    // Patient.
    pub patient_id: Option<String>,
    pub issuer_of_patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,

    // Study.
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub referring_physician_name: Option<String>,
    pub study_id: Option<String>,
    pub study_description: Option<String>,
    pub timezone_offset_from_utc: Option<String>,
    pub specific_character_set: Option<String>,

    // Series.
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub series_date: Option<String>,
    pub series_time: Option<String>,
    pub performed_procedure_step_start_date: Option<String>,
    pub performed_procedure_step_start_time: Option<String>,
    pub institution_name: Option<String>,

    // Instance.
    pub instance_number: Option<i64>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub bits_allocated: Option<u32>,
    pub number_of_frames: Option<i64>,

    // Storage.
    /// Where the record lives in the segment store.
    pub location: Location,
    /// The byte offset in `location.segment` just past this record (header,
    /// payload and any trailer/padding), as computed by the storage layer.
    /// The writer advances `segments.indexed_end` to the largest
    /// `record_end` it has committed for each segment.
    pub record_end: u64,
    /// The global store sequence number of this record; larger is newer.
    pub sequence: u64,
    /// When the instance was received, in milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// The calling AE title of the association that sent it, if any.
    pub calling_ae_title: Option<String>,
}

// `crate::Location` has no `Default`, so this one is written out.
impl Default for InstanceRecord {
    fn default() -> Self {
        InstanceRecord {
            sop_instance_uid: String::new(),
            sop_class_uid: String::new(),
            transfer_syntax_uid: String::new(),
            study_instance_uid: String::new(),
            series_instance_uid: String::new(),
            patient_id: None,
            issuer_of_patient_id: None,
            patient_name: None,
            patient_birth_date: None,
            patient_sex: None,
            study_date: None,
            study_time: None,
            accession_number: None,
            referring_physician_name: None,
            study_id: None,
            study_description: None,
            timezone_offset_from_utc: None,
            specific_character_set: None,
            modality: None,
            series_number: None,
            series_description: None,
            series_date: None,
            series_time: None,
            performed_procedure_step_start_date: None,
            performed_procedure_step_start_time: None,
            institution_name: None,
            instance_number: None,
            rows: None,
            columns: None,
            bits_allocated: None,
            number_of_frames: None,
            location: Location {
                segment: 0,
                offset: 0,
                length: 0,
            },
            record_end: 0,
            sequence: 0,
            received_at_ms: 0,
            calling_ae_title: None,
        }
    }
}

/// Row counts of the manifest's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ManifestCounts {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    /// Rows of `replaced_instances`: superseded copies of duplicate SOP
    /// Instance UIDs.
    pub replaced: u64,
}

/// The derived study attributes (PS3.4 C.6.1.1.4 / PS3.18 table 6.7.1-2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudySummary {
    /// ModalitiesInStudy: the distinct non-empty Modality values of the
    /// study's series, sorted.
    pub modalities_in_study: Vec<String>,
    /// NumberOfStudyRelatedSeries.
    pub number_of_series: u64,
    /// NumberOfStudyRelatedInstances.
    pub number_of_instances: u64,
}

/// A superseded copy of a duplicate SOP Instance UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedInstance {
    pub sop_instance_uid: String,
    pub location: Location,
    pub sequence: u64,
    pub replaced_at_ms: i64,
    pub replaced_by_sequence: u64,
}
