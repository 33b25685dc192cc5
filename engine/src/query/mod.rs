//! Queries on the manifest for C-FIND and QIDO-RS (PS3.4 annex C, PS3.18 section 10.6).
//!
//! A [`Query`] is transport-neutral: a level, the matching keys (tag, VR and a
//! [`Matcher`]) and the return keys. C-FIND builds one from its identifier
//! ([`identifier::parse`]); QIDO-RS builds one from its query parameters. The
//! [`runner`] executes it on a blocking thread and streams [`ResultRow`]s over a
//! bounded channel: C-FIND writes each row as a data set, QIDO-RS as DICOM JSON.
//!
//! Attributes the manifest stores are matched in SQL ([`sql`]); every other key
//! is matched and answered from the stored data set of one representative
//! instance of each candidate entity. SQL and in-memory matching call the same
//! functions in [`matching`], so both sides agree on every rule.

pub mod attributes;
pub mod identifier;
pub mod matching;
pub mod qido;
pub mod runner;
pub mod sql;

mod dataset;

pub(crate) use dataset::read_stored;

use dicom_core::{Tag, VR};

pub use matching::Matcher;

/// The Query/Retrieve information model (PS3.4 section C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Patient Root: PATIENT, STUDY, SERIES, IMAGE.
    PatientRoot,
    /// Study Root: STUDY, SERIES, IMAGE, with the patient attributes on the study.
    StudyRoot,
}

/// A Query/Retrieve level, from the top of the hierarchy down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    /// Returns the value of QueryRetrieveLevel (0008,0052) for this level.
    pub fn keyword(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }

    /// Parses a QueryRetrieveLevel value; leading and trailing spaces are ignored.
    pub fn from_keyword(value: &str) -> Option<Level> {
        match value.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    /// Returns the label of this level in metrics and logs: its keyword, as the
    /// retrieve metrics use it.
    pub fn label(self) -> &'static str {
        self.keyword()
    }
}

/// One key of a query: the attribute, its VR and how it matches.
///
/// A key with [`Matcher::Universal`] only requests the attribute in each response.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub tag: Tag,
    pub vr: VR,
    pub matcher: Matcher,
}

/// A query, independent of the protocol that carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub model: Model,
    pub level: Level,
    /// Matching and return keys, at most one per tag.
    pub keys: Vec<Key>,
    /// Matches to skip before the first one returned.
    pub offset: usize,
    /// Most matches returned; `None` returns all.
    pub limit: Option<usize>,
    /// Specific Character Set (0008,0005) of the request, if it had one.
    pub specific_character_set: Option<String>,
    /// The value returned for Retrieve AE Title (0008,0054) when it is requested.
    pub retrieve_ae_title: Option<String>,
}

/// The value of one returned attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultValue {
    /// Present with zero length: unknown, absent or not held.
    Empty,
    /// Text in UTF-8, several values separated by backslashes.
    Text(String),
    /// The items of a sequence, each a list of attributes.
    Items(Vec<Vec<ResultAttribute>>),
}

/// One returned attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultAttribute {
    pub tag: Tag,
    pub vr: VR,
    pub value: ResultValue,
}

/// One match: its attributes in ascending tag order, QueryRetrieveLevel included.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub attributes: Vec<ResultAttribute>,
}

impl ResultRow {
    /// True when any text value, at any depth, is outside US-ASCII.
    pub fn has_non_ascii(&self) -> bool {
        fn any(attributes: &[ResultAttribute]) -> bool {
            attributes.iter().any(|a| match &a.value {
                ResultValue::Empty => false,
                ResultValue::Text(text) => !text.is_ascii(),
                ResultValue::Items(items) => items.iter().any(|item| any(item)),
            })
        }
        any(&self.attributes)
    }
}

/// The reason a query cannot run, with the DIMSE status and Error Comment (0000,0902) to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{comment}")]
pub struct QueryError {
    pub status: u16,
    pub comment: String,
}

impl QueryError {
    /// Identifier Does Not Match SOP Class (0xA900).
    pub fn invalid_identifier(comment: impl Into<String>) -> QueryError {
        QueryError {
            status: nectar_codecs::command::status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            comment: comment.into(),
        }
    }

    /// Unable to Process (0xC000 range).
    pub fn unable_to_process(comment: impl Into<String>) -> QueryError {
        QueryError {
            status: nectar_codecs::command::status::CANNOT_UNDERSTAND,
            comment: comment.into(),
        }
    }
}
