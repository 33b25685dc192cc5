//! QIDO-RS query parameters (PS3.18 section 8.3.4 and 10.6.1) as a [`Query`].
//!
//! A parameter is a match on an attribute (`PatientName=Doe*`, `00100010=Doe*`,
//! `00400275.00321060=CHEST` for an attribute inside a sequence), `includefield`,
//! `fuzzymatching`, `limit` or `offset`. Values are matched by the rules of
//! [`super::matching`]; UID lists may be separated by commas or backslashes.
//! Any other parameter name is an error, as is a value invalid for its VR.
//!
//! The returned attributes are those PS3.18 table 6.7.1-2 lists for the level.
//! A search not scoped to a study adds the study attributes, and an instance
//! search not scoped to a series adds the series attributes. The unique keys
//! of every level down to the searched one and the included fields come too.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};

use super::attributes::{self, ATTRIBUTES};
use super::matching::parse_matcher;
use super::{Key, Level, Matcher, Model, Query};

/// The study and series UIDs in the path of a search.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub study: Option<String>,
    pub series: Option<String>,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct Search {
    pub query: Query,
    /// The `fuzzymatching` value. Person names match case-insensitively with
    /// or without it, so it changes nothing.
    pub fuzzy: bool,
}

const STUDY_FIELDS: &[Tag] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::MODALITIES_IN_STUDY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

const SERIES_FIELDS: &[Tag] = &[
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_NUMBER,
    tags::SERIES_INSTANCE_UID,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
    tags::REQUEST_ATTRIBUTES_SEQUENCE,
    tags::TIMEZONE_OFFSET_FROM_UTC,
];

const INSTANCE_FIELDS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_AVAILABILITY,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
];

/// Builds the query of a search at `level` from its decoded query parameters.
/// Fails with the reason to send back with status 400.
pub fn parse(level: Level, scope: &Scope, params: &[(String, String)]) -> Result<Search, String> {
    if level == Level::Patient {
        return Err("QIDO-RS has no patient-level search".to_owned());
    }
    let mut keys = Vec::new();
    for tag in default_fields(level, scope) {
        merge(&mut keys, &[(*tag, vr_of(*tag))], universal(vr_of(*tag)))?;
    }
    let mut search = Search {
        query: Query {
            model: Model::StudyRoot,
            level,
            keys: Vec::new(),
            offset: 0,
            limit: None,
            specific_character_set: None,
            retrieve_ae_title: None,
        },
        fuzzy: false,
    };
    for (name, value) in params {
        match name.as_str() {
            "limit" => search.query.limit = Some(parse_count(name, value)?),
            "offset" => search.query.offset = parse_count(name, value)?,
            "fuzzymatching" => search.fuzzy = parse_bool(value)?,
            "includefield" => include_fields(&mut keys, level, value)?,
            _ => add_match(&mut keys, level, name, value)?,
        }
    }
    add_path_uids(&mut keys, scope)?;
    for unique_level in [Level::Study, Level::Series, Level::Image] {
        if unique_level <= level {
            let unique = attributes::unique_key(unique_level);
            merge(&mut keys, &[(unique.tag, unique.vr)], Matcher::Universal)?;
        }
    }
    keys.sort_by_key(|key| key.tag);
    search.query.keys = keys;
    Ok(search)
}

/// Lists the fields of PS3.18 table 6.7.1-2 for a search at `level` within `scope`.
fn default_fields(level: Level, scope: &Scope) -> Vec<&'static Tag> {
    let mut fields: Vec<&Tag> = Vec::new();
    let with_study = level == Level::Study || scope.study.is_none();
    let with_series = level == Level::Series || (level == Level::Image && scope.series.is_none());
    if with_study {
        fields.extend(STUDY_FIELDS);
    }
    if with_series {
        fields.extend(SERIES_FIELDS);
    }
    if level == Level::Image {
        fields.extend(INSTANCE_FIELDS);
    }
    fields
}

fn parse_count(name: &str, value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name} must be a non-negative integer, not {value:?}"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("fuzzymatching must be true or false, not {value:?}")),
    }
}

/// Adds the fields of one `includefield` value: `all`, or attributes separated by commas.
fn include_fields(keys: &mut Vec<Key>, level: Level, value: &str) -> Result<(), String> {
    for field in value.split(',').map(str::trim).filter(|field| !field.is_empty()) {
        if field == "all" {
            for attribute in ATTRIBUTES.iter().filter(|attribute| attribute.level <= level) {
                merge(keys, &[(attribute.tag, attribute.vr)], universal(attribute.vr))?;
            }
            for (tag, vr, _) in attributes::CONSTANTS {
                merge(keys, &[(*tag, *vr)], Matcher::Universal)?;
            }
            continue;
        }
        let path = parse_path(field)?;
        // Attributes of a lower level than the search have no single value here.
        if attributes::level_of(path[0].0).is_some_and(|of| of > level) {
            continue;
        }
        let leaf_vr = path[path.len() - 1].1;
        merge(keys, &path, universal(leaf_vr))?;
    }
    Ok(())
}

/// Adds the matching key of one `{attribute}={value}` parameter.
fn add_match(keys: &mut Vec<Key>, level: Level, name: &str, value: &str) -> Result<(), String> {
    let path = parse_path(name).map_err(|reason| format!("unknown query parameter {name:?}: {reason}"))?;
    if let Some(of) = attributes::level_of(path[0].0) {
        if of > level {
            return Err(format!(
                "{name} is a {} attribute and cannot be matched in a {} search",
                of.label().to_lowercase(),
                level.label().to_lowercase()
            ));
        }
    }
    let (tag, vr) = path[path.len() - 1];
    let matcher = if vr == VR::SQ {
        if !value.trim().is_empty() {
            return Err(format!("{name} is a sequence; match an attribute inside it"));
        }
        Matcher::Sequence(Vec::new())
    } else {
        let value = if vr == VR::UI { value.replace(',', "\\") } else { value.to_owned() };
        parse_matcher(vr, &value)
            .map_err(|reason| format!("invalid value for {name} ({:04X},{:04X}): {reason}", tag.0, tag.1))?
    };
    merge(keys, &path, matcher)
}

/// Adds the study and series UIDs of the path as single-value matches.
fn add_path_uids(keys: &mut Vec<Key>, scope: &Scope) -> Result<(), String> {
    let path_uids = [
        (tags::STUDY_INSTANCE_UID, scope.study.as_ref()),
        (tags::SERIES_INSTANCE_UID, scope.series.as_ref()),
    ];
    for (tag, uid) in path_uids {
        let Some(uid) = uid else { continue };
        if keys.iter().any(|key| key.tag == tag && !matches!(key.matcher, Matcher::Universal)) {
            return Err(format!(
                "({:04X},{:04X}) is given in the path and cannot be a query parameter too",
                tag.0, tag.1
            ));
        }
        merge(keys, &[(tag, VR::UI)], Matcher::Single(uid.clone()))?;
    }
    Ok(())
}

/// Parses an attribute path: keywords or `GGGGEEEE` tags joined by dots, every
/// one but the last a sequence.
pub fn parse_path(text: &str) -> Result<Vec<(Tag, VR)>, String> {
    let mut path = Vec::new();
    for part in text.split('.') {
        let tag = parse_attribute(part)?;
        path.push((tag, vr_of(tag)));
    }
    if path[..path.len() - 1].iter().any(|(_, vr)| *vr != VR::SQ) {
        return Err(format!("{text} names an attribute inside one that is not a sequence"));
    }
    Ok(path)
}

/// Parses one keyword or eight hex digits; the attribute must be in the standard dictionary.
fn parse_attribute(text: &str) -> Result<Tag, String> {
    let dictionary = StandardDataDictionary;
    if text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&text[..4], 16).map_err(|error| error.to_string())?;
        let element = u16::from_str_radix(&text[4..], 16).map_err(|error| error.to_string())?;
        let tag = Tag(group, element);
        if dictionary.by_tag(tag).is_none() {
            return Err(format!("{text} is not an attribute of the standard dictionary"));
        }
        return Ok(tag);
    }
    match dictionary.by_name(text) {
        Some(entry) => Ok(entry.tag()),
        None => Err(format!("{text:?} is neither an attribute keyword nor a tag")),
    }
}

/// Returns the VR of the attribute table, else of the dictionary.
fn vr_of(tag: Tag) -> VR {
    if let Some(attribute) = attributes::find(tag) {
        return attribute.vr;
    }
    StandardDataDictionary
        .by_tag(tag)
        .map_or(VR::UN, |entry| entry.vr().relaxed())
}

/// A return key without condition: an empty sequence key returns whole items.
fn universal(vr: VR) -> Matcher {
    if vr == VR::SQ {
        Matcher::Sequence(Vec::new())
    } else {
        Matcher::Universal
    }
}

/// Adds a key at `path`, creating or extending sequence keys on the way. A
/// matching key replaces a return key; two matching keys for one attribute are an error.
fn merge(keys: &mut Vec<Key>, path: &[(Tag, VR)], matcher: Matcher) -> Result<(), String> {
    let (tag, vr) = path[0];
    let position = keys.iter().position(|key| key.tag == tag);
    if path.len() > 1 {
        let index = match position {
            Some(index) => index,
            None => {
                keys.push(Key { tag, vr, matcher: Matcher::Sequence(Vec::new()) });
                keys.len() - 1
            }
        };
        if !matches!(keys[index].matcher, Matcher::Sequence(_)) {
            keys[index].matcher = Matcher::Sequence(Vec::new());
        }
        let Matcher::Sequence(items) = &mut keys[index].matcher else {
            unreachable!("set to a sequence above");
        };
        return merge(items, &path[1..], matcher);
    }
    let Some(index) = position else {
        keys.push(Key { tag, vr, matcher });
        return Ok(());
    };
    let existing = &mut keys[index].matcher;
    match (is_condition(existing), is_condition(&matcher)) {
        (true, true) => Err(format!("({:04X},{:04X}) is matched twice", tag.0, tag.1)),
        (false, true) => {
            *existing = matcher;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn is_condition(matcher: &Matcher) -> bool {
    match matcher {
        Matcher::Universal => false,
        Matcher::Sequence(keys) => !keys.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
