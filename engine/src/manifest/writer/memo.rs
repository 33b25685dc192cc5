//! A memo of the patients, studies and series the writer has written. A row
//! whose series was entered before, with the same parents and attributes, costs
//! no select and no sequence update at any of the three levels. The newest
//! sequence is written once per batch, by [`HierarchyMemo::flush`], before the
//! transaction commits. The writer keeps the memo from one committed batch to
//! the next, and drops it when a batch fails and before a deletion.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params, Connection};

/// One patient, study or series as this transaction left it.
struct Known {
    id: i64,
    parent: Option<i64>,
    attrs: Vec<Value>,
    attrs_seq: i64,
    /// The statement that writes `attrs_seq`, which identifies the level.
    touch: &'static str,
    /// `attrs_seq` is newer than the database's.
    dirty: bool,
}

/// The result of [`HierarchyMemo::lookup`].
pub(super) enum Lookup {
    /// The entity is known with these parent and attributes: its id.
    Hit(i64),
    /// Not known, or known with other values: ask the database.
    Miss,
}

/// Entities written in this batch, keyed by level and natural keys.
pub(super) struct HierarchyMemo {
    /// Off in the row-by-row retry of a failed batch, whose savepoints can roll
    /// back what an entry describes.
    enabled: bool,
    known: HashMap<(&'static str, String), Known>,
}

/// Returns the memo key of natural keys that are all text, or `None`.
fn key_text(keys: &[Value]) -> Option<String> {
    let mut joined = String::new();
    for key in keys {
        let Value::Text(text) = key else { return None };
        joined.push_str(text);
        joined.push('\0');
    }
    Some(joined)
}

/// Maximum number of entries the writer keeps for the next batch (three per series).
pub(super) const KEPT_ENTRIES: usize = 3 * 1024;

impl Default for HierarchyMemo {
    fn default() -> Self {
        HierarchyMemo::new(true)
    }
}

impl HierarchyMemo {
    pub(super) fn new(enabled: bool) -> HierarchyMemo {
        HierarchyMemo { enabled, known: HashMap::new() }
    }

    /// Looks an entity up. On a hit the row's sequence is kept if it is newer.
    /// On a miss any entry for the entity is written out and dropped, because
    /// the database path that follows reads and may change it.
    pub(super) fn lookup(
        &mut self,
        conn: &Connection,
        touch: &'static str,
        keys: &[Value],
        parent: Option<i64>,
        attrs: &[Value],
        seq: i64,
    ) -> rusqlite::Result<Lookup> {
        if !self.enabled {
            return Ok(Lookup::Miss);
        }
        let Some(key) = key_text(keys) else { return Ok(Lookup::Miss) };
        let map_key = (touch, key);
        let Some(known) = self.known.get_mut(&map_key) else { return Ok(Lookup::Miss) };
        if known.parent == parent && known.attrs == attrs {
            if seq > known.attrs_seq {
                known.attrs_seq = seq;
                known.dirty = true;
            }
            return Ok(Lookup::Hit(known.id));
        }
        if let Some(known) = self.known.remove(&map_key) {
            write_sequence(conn, &known)?;
        }
        Ok(Lookup::Miss)
    }

    /// Records an entity the database path left with exactly these values.
    pub(super) fn remember(&mut self, touch: &'static str, keys: &[Value], id: i64, parent: Option<i64>, attrs: &[Value], seq: i64) {
        if !self.enabled {
            return;
        }
        if let Some(key) = key_text(keys) {
            let known = Known { id, parent, attrs: attrs.to_vec(), attrs_seq: seq, touch, dirty: false };
            self.known.insert((touch, key), known);
        }
    }

    /// Returns the number of entities in the memo.
    pub(super) fn len(&self) -> usize {
        self.known.len()
    }

    /// Writes every newer sequence to the database.
    pub(super) fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for known in self.known.values_mut() {
            write_sequence(conn, known)?;
            known.dirty = false;
        }
        Ok(())
    }

    /// Writes every newer sequence, then drops every entry. Called before rows
    /// are deleted, because a deletion may remove an entity an entry describes.
    pub(super) fn clear(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.flush(conn)?;
        self.known.clear();
        Ok(())
    }
}

fn write_sequence(conn: &Connection, known: &Known) -> rusqlite::Result<()> {
    if known.dirty {
        conn.prepare_cached(known.touch)?.execute(params![known.id, known.attrs_seq])?;
    }
    Ok(())
}
