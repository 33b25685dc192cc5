//! Read-only manifest connections kept open between DICOMweb requests, so a
//! request does not pay for opening and configuring a SQLite connection.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::manifest::{Manifest, ManifestError};

/// Maximum idle connections kept; more are closed after use.
const MAX_IDLE: usize = 4;

/// A pool of read-only connections to one manifest. Cheap to clone.
#[derive(Clone)]
pub struct ManifestReaders {
    manifest: Manifest,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl ManifestReaders {
    pub fn new(manifest: Manifest) -> ManifestReaders {
        ManifestReaders { manifest, idle: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Runs `query` on an idle connection, or on a new one when none is idle.
    /// Blocking: call it from a blocking task.
    pub fn with<T, E>(&self, query: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<ManifestError>,
    {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.manifest.read_connection()?,
        };
        let result = query(&connection);
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
        result
    }
}
