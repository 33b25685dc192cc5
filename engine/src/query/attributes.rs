//! The attributes with a fixed Query/Retrieve level, and the source of each value
//! (PS3.4 section C.6.1.1 and C.6.2.1 key tables, PS3.18 table 6.7.1-2).
//!
//! Column expressions use the table aliases of [`super::sql`]: `p` patients,
//! `st` studies, `se` series, `i` instances.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::Level;

/// The source of an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An SQL expression on the manifest. `single_valued` expressions can be
    /// compared with `=` and `IN` in SQL.
    Column {
        expression: &'static str,
        single_valued: bool,
    },
    /// The stored data set of a representative instance.
    Stored,
    /// The same value for every entity.
    Constant(&'static str),
}

/// An attribute with a fixed level in the Query/Retrieve hierarchy.
#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    pub tag: Tag,
    pub vr: VR,
    pub level: Level,
    pub source: Source,
}

const fn column(tag: Tag, vr: VR, level: Level, expression: &'static str) -> Attribute {
    Attribute {
        tag,
        vr,
        level,
        source: Source::Column {
            expression,
            single_valued: true,
        },
    }
}

const fn multi_valued(tag: Tag, vr: VR, level: Level, expression: &'static str) -> Attribute {
    Attribute {
        tag,
        vr,
        level,
        source: Source::Column {
            expression,
            single_valued: false,
        },
    }
}

const fn stored(tag: Tag, vr: VR, level: Level) -> Attribute {
    Attribute {
        tag,
        vr,
        level,
        source: Source::Stored,
    }
}

use Level::{Image, Patient, Series, Study};

/// Every attribute with a known level. Attributes not listed here are read
/// from the stored data set at the level of the query.
pub const ATTRIBUTES: &[Attribute] = &[
    // Patient level.
    column(tags::PATIENT_NAME, VR::PN, Patient, "p.patient_name"),
    column(tags::PATIENT_ID, VR::LO, Patient, "p.patient_id"),
    // A patient without PatientID keeps a per-study marker in this column.
    column(
        tags::ISSUER_OF_PATIENT_ID,
        VR::LO,
        Patient,
        "(CASE WHEN p.patient_id = '' THEN NULL ELSE p.issuer_of_patient_id END)",
    ),
    column(tags::PATIENT_BIRTH_DATE, VR::DA, Patient, "p.patient_birth_date"),
    column(tags::PATIENT_SEX, VR::CS, Patient, "p.patient_sex"),
    stored(tags::PATIENT_BIRTH_TIME, VR::TM, Patient),
    stored(tags::OTHER_PATIENT_I_DS_SEQUENCE, VR::SQ, Patient),
    stored(tags::OTHER_PATIENT_NAMES, VR::PN, Patient),
    stored(tags::PATIENT_COMMENTS, VR::LT, Patient),
    column(
        tags::NUMBER_OF_PATIENT_RELATED_STUDIES,
        VR::IS,
        Patient,
        "(SELECT count(*) FROM studies x WHERE x.patient_pk = p.id)",
    ),
    column(
        tags::NUMBER_OF_PATIENT_RELATED_SERIES,
        VR::IS,
        Patient,
        "(SELECT count(*) FROM series x JOIN studies y ON y.id = x.study_pk WHERE y.patient_pk = p.id)",
    ),
    column(
        tags::NUMBER_OF_PATIENT_RELATED_INSTANCES,
        VR::IS,
        Patient,
        "(SELECT count(*) FROM instances x JOIN series y ON y.id = x.series_pk \
          JOIN studies z ON z.id = y.study_pk WHERE z.patient_pk = p.id)",
    ),
    // Study level.
    column(tags::STUDY_INSTANCE_UID, VR::UI, Study, "st.study_instance_uid"),
    column(tags::STUDY_DATE, VR::DA, Study, "st.study_date"),
    column(tags::STUDY_TIME, VR::TM, Study, "st.study_time"),
    column(tags::ACCESSION_NUMBER, VR::SH, Study, "st.accession_number"),
    column(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        Study,
        "st.referring_physician_name",
    ),
    column(tags::STUDY_ID, VR::SH, Study, "st.study_id"),
    column(tags::STUDY_DESCRIPTION, VR::LO, Study, "st.study_description"),
    column(
        tags::TIMEZONE_OFFSET_FROM_UTC,
        VR::SH,
        Study,
        "st.timezone_offset_from_utc",
    ),
    multi_valued(
        tags::MODALITIES_IN_STUDY,
        VR::CS,
        Study,
        "replace((SELECT x.modalities_in_study FROM study_summary x WHERE x.study_pk = st.id), ',', '\\')",
    ),
    multi_valued(
        tags::SOP_CLASSES_IN_STUDY,
        VR::UI,
        Study,
        "replace((SELECT group_concat(DISTINCT x.sop_class_uid) FROM instances x \
          JOIN series y ON y.id = x.series_pk WHERE y.study_pk = st.id), ',', '\\')",
    ),
    column(
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        VR::IS,
        Study,
        "(SELECT x.number_of_study_related_series FROM study_summary x WHERE x.study_pk = st.id)",
    ),
    column(
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        VR::IS,
        Study,
        "(SELECT x.number_of_study_related_instances FROM study_summary x WHERE x.study_pk = st.id)",
    ),
    stored(tags::ADMITTING_DIAGNOSES_DESCRIPTION, VR::LO, Study),
    stored(tags::PATIENT_AGE, VR::AS, Study),
    stored(tags::PATIENT_SIZE, VR::DS, Study),
    stored(tags::PATIENT_WEIGHT, VR::DS, Study),
    stored(tags::NAME_OF_PHYSICIANS_READING_STUDY, VR::PN, Study),
    stored(tags::PROCEDURE_CODE_SEQUENCE, VR::SQ, Study),
    // Series level.
    column(tags::SERIES_INSTANCE_UID, VR::UI, Series, "se.series_instance_uid"),
    column(tags::MODALITY, VR::CS, Series, "se.modality"),
    column(tags::SERIES_NUMBER, VR::IS, Series, "se.series_number"),
    column(tags::SERIES_DESCRIPTION, VR::LO, Series, "se.series_description"),
    column(tags::SERIES_DATE, VR::DA, Series, "se.series_date"),
    column(tags::SERIES_TIME, VR::TM, Series, "se.series_time"),
    column(
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        Series,
        "se.performed_procedure_step_start_date",
    ),
    column(
        tags::PERFORMED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        Series,
        "se.performed_procedure_step_start_time",
    ),
    column(tags::INSTITUTION_NAME, VR::LO, Series, "se.institution_name"),
    column(
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        VR::IS,
        Series,
        "(SELECT x.number_of_series_related_instances FROM series_summary x WHERE x.series_pk = se.id)",
    ),
    stored(tags::BODY_PART_EXAMINED, VR::CS, Series),
    stored(tags::PROTOCOL_NAME, VR::LO, Series),
    stored(tags::REQUEST_ATTRIBUTES_SEQUENCE, VR::SQ, Series),
    // Image level.
    column(tags::SOP_INSTANCE_UID, VR::UI, Image, "i.sop_instance_uid"),
    column(tags::SOP_CLASS_UID, VR::UI, Image, "i.sop_class_uid"),
    column(tags::INSTANCE_NUMBER, VR::IS, Image, "i.instance_number"),
    column(tags::ROWS, VR::US, Image, "i.\"rows\""),
    column(tags::COLUMNS, VR::US, Image, "i.\"columns\""),
    column(tags::BITS_ALLOCATED, VR::US, Image, "i.bits_allocated"),
    column(tags::NUMBER_OF_FRAMES, VR::IS, Image, "i.number_of_frames"),
    column(
        tags::AVAILABLE_TRANSFER_SYNTAX_UID,
        VR::UI,
        Image,
        "i.transfer_syntax_uid",
    ),
    stored(tags::CONTENT_DATE, VR::DA, Image),
    stored(tags::CONTENT_TIME, VR::TM, Image),
    stored(tags::IMAGE_TYPE, VR::CS, Image),
    stored(tags::ACQUISITION_NUMBER, VR::IS, Image),
];

/// Attributes of every level whose value this server sets itself.
pub const CONSTANTS: &[(Tag, VR, &str)] = &[
    // Instance Availability (C.4.1.1.3.2): everything stored is on line.
    (tags::INSTANCE_AVAILABILITY, VR::CS, "ONLINE"),
];

/// Looks an attribute up by tag.
pub fn find(tag: Tag) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|attribute| attribute.tag == tag)
}

/// Returns the unique key of a level (C.6.1.1.1, C.6.2.1.1).
pub fn unique_key(level: Level) -> Attribute {
    let tag = match level {
        Level::Patient => tags::PATIENT_ID,
        Level::Study => tags::STUDY_INSTANCE_UID,
        Level::Series => tags::SERIES_INSTANCE_UID,
        Level::Image => tags::SOP_INSTANCE_UID,
    };
    *find(tag).expect("every unique key is in the table")
}

/// Returns the level of `tag`, or `None` for an attribute of no fixed level.
pub fn level_of(tag: Tag) -> Option<Level> {
    find(tag).map(|attribute| attribute.level)
}
