//! Runs a [`Query`] on a blocking thread and streams its matches.
//!
//! The thread reads candidate rows from SQLite one at a time, completes and
//! filters each with the stored data set when the query needs it, and sends
//! it over a bounded channel. When the channel is full the thread waits, so
//! at most `capacity` rows are held in memory. When the receiver is dropped
//! (a cancelled query, a closed association) the thread stops at its next row.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use rusqlite::types::ValueRef;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::attributes::{self, Source};
use super::dataset;
use super::{sql, Key, Query, QueryError, ResultAttribute, ResultRow, ResultValue};
use crate::storage::Store;
use crate::Location;

/// An item of the runner's channel: a match, or the error that ended the query.
pub type Message = Result<ResultRow, QueryError>;

/// Starts `query` on a blocking thread of the tokio runtime. `open` returns
/// the read-only manifest connection to use; it runs on that thread.
pub fn spawn<F>(query: Query, store: Store, open: F, capacity: usize) -> mpsc::Receiver<Message>
where
    F: FnOnce() -> Result<Connection, QueryError> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    tokio::task::spawn_blocking(move || {
        let result = open().and_then(|conn| run(&query, &conn, &store, |row| sender.blocking_send(Ok(row)).is_ok()));
        if let Err(error) = result {
            let _ = sender.blocking_send(Err(error));
        }
    });
    receiver
}

/// Runs `query` and calls `emit` with each match in order, until `emit`
/// returns false or the matches end. Returns the number of matches emitted.
pub fn run(
    query: &Query,
    conn: &Connection,
    store: &Store,
    mut emit: impl FnMut(ResultRow) -> bool,
) -> Result<usize, QueryError> {
    sql::register_functions(conn).map_err(manifest_error)?;
    let statement = sql::build(query);
    let stored_keys: Vec<&Key> = query.keys.iter().filter(|key| needs_stored(query, key)).collect();

    let mut prepared = conn.prepare(&statement.sql).map_err(manifest_error)?;
    let mut rows = prepared
        .query(params_from_iter(statement.params.iter()))
        .map_err(manifest_error)?;
    let mut skipped = 0;
    let mut emitted = 0;
    while let Some(row) = rows.next().map_err(manifest_error)? {
        if query.limit.is_some_and(|limit| emitted >= limit) {
            break;
        }
        let mut attributes = vec![ResultAttribute {
            tag: tags::QUERY_RETRIEVE_LEVEL,
            vr: VR::CS,
            value: ResultValue::Text(query.level.keyword().to_owned()),
        }];
        for (index, key) in statement.returned.iter().enumerate() {
            let value = column_value(row.get_ref(index + 2).map_err(manifest_error)?);
            attributes.push(ResultAttribute {
                tag: key.tag,
                vr: known_vr(key),
                value,
            });
        }

        if !stored_keys.is_empty() {
            let representative: Option<i64> = row.get(1).map_err(manifest_error)?;
            let object = representative.and_then(|id| load_representative(conn, store, id));
            let mut matched = true;
            for key in &stored_keys {
                match dataset::match_key(key, object.as_ref()) {
                    Some(value) => attributes.push(ResultAttribute {
                        tag: key.tag,
                        vr: known_vr(key),
                        value,
                    }),
                    None => {
                        matched = false;
                        break;
                    }
                }
            }
            if !matched {
                continue;
            }
        }
        add_fixed_values(query, &mut attributes);
        attributes.sort_by_key(|attribute| attribute.tag);

        if skipped < query.offset {
            skipped += 1;
            continue;
        }
        if !emit(ResultRow { attributes }) {
            break;
        }
        emitted += 1;
    }
    Ok(emitted)
}

/// Tells whether `key` is matched and returned from the stored data set: true for
/// attributes of no fixed level, and for those of the query level or above that
/// the manifest does not store.
fn needs_stored(query: &Query, key: &Key) -> bool {
    if key.tag == tags::RETRIEVE_AE_TITLE || attributes::CONSTANTS.iter().any(|(tag, _, _)| *tag == key.tag) {
        return false;
    }
    match attributes::find(key.tag) {
        None => true,
        Some(attribute) => attribute.level <= query.level && attribute.source == Source::Stored,
    }
}

/// Values that come neither from the manifest nor from a data set: Retrieve AE
/// Title, constants, and attributes of levels below the query level, which come back empty.
fn add_fixed_values(query: &Query, attributes: &mut Vec<ResultAttribute>) {
    for key in &query.keys {
        if key.tag == tags::RETRIEVE_AE_TITLE {
            let value = query.retrieve_ae_title.clone().map_or(ResultValue::Empty, ResultValue::Text);
            attributes.push(ResultAttribute { tag: key.tag, vr: VR::AE, value });
        } else if let Some((_, vr, value)) = attributes::CONSTANTS.iter().find(|(tag, _, _)| *tag == key.tag) {
            attributes.push(ResultAttribute {
                tag: key.tag,
                vr: *vr,
                value: ResultValue::Text((*value).to_owned()),
            });
        } else if attributes::level_of(key.tag).is_some_and(|level| level > query.level) {
            attributes.push(ResultAttribute {
                tag: key.tag,
                vr: known_vr(key),
                value: ResultValue::Empty,
            });
        }
    }
}

/// Returns the dictionary VR for attributes in the table, else the VR of the request.
fn known_vr(key: &Key) -> VR {
    attributes::find(key.tag).map_or(key.vr, |attribute| attribute.vr)
}

fn column_value(value: ValueRef<'_>) -> ResultValue {
    let text = match value {
        ValueRef::Null => return ResultValue::Empty,
        ValueRef::Integer(number) => number.to_string(),
        ValueRef::Real(number) => number.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    };
    if text.is_empty() {
        ResultValue::Empty
    } else {
        ResultValue::Text(text)
    }
}

/// Reads and parses the representative instance; `None` (logged) when it cannot be read.
fn load_representative(conn: &Connection, store: &Store, instance_id: i64) -> Option<InMemDicomObject> {
    let location = conn
        .prepare_cached(r#"SELECT segment, "offset", length FROM instances WHERE id = ?1"#)
        .and_then(|mut statement| {
            statement
                .query_row([instance_id], |r| {
                    Ok(Location {
                        segment: r.get(0)?,
                        offset: r.get(1)?,
                        length: r.get(2)?,
                    })
                })
                .optional()
        });
    let location = match location {
        Ok(Some(location)) => location,
        Ok(None) => return None,
        Err(error) => {
            crate::telemetry::find::representative_unreadable(instance_id, &error.to_string());
            return None;
        }
    };
    match dataset::read_stored(store, location) {
        Ok(object) => Some(object),
        Err(reason) => {
            crate::telemetry::find::representative_unreadable(instance_id, &reason);
            None
        }
    }
}

fn manifest_error(error: rusqlite::Error) -> QueryError {
    QueryError::unable_to_process(format!("manifest query failed: {error}"))
}
