//! The table of C-MOVE destinations: AE title to host and port.
//!
//! Entries read `AE=host:port`, from `--remote-ae` flags or from a file with
//! one entry per line, where blank lines and lines starting with `#` are skipped.

use std::collections::HashMap;
use std::path::Path;

/// The address of a remote AE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteAeError {
    #[error("invalid remote AE entry {entry:?}: {reason}; expected AE=host:port")]
    Invalid { entry: String, reason: &'static str },
    #[error("failed to read the remote AE file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}: {source}")]
    InFile { path: String, line: usize, source: Box<RemoteAeError> },
}

/// Remote AEs by AE title (matched without leading or trailing spaces).
#[derive(Debug, Clone, Default)]
pub struct RemoteAeTable {
    entries: HashMap<String, RemoteAe>,
}

impl RemoteAeTable {
    /// Builds the table from the file (if any) and then the flag entries, so a
    /// flag replaces a file entry of the same AE title.
    pub fn load(file: Option<&Path>, entries: &[String]) -> Result<RemoteAeTable, RemoteAeError> {
        let mut table = RemoteAeTable::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| RemoteAeError::Read { path: path.display().to_string(), source })?;
            table.add_lines(&text, &path.display().to_string())?;
        }
        for entry in entries {
            table.insert(parse_entry(entry)?);
        }
        Ok(table)
    }

    fn add_lines(&mut self, text: &str, path: &str) -> Result<(), RemoteAeError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_entry(line).map_err(|source| RemoteAeError::InFile {
                path: path.to_owned(),
                line: index + 1,
                source: Box::new(source),
            })?;
            self.insert(entry);
        }
        Ok(())
    }

    pub fn insert(&mut self, remote: RemoteAe) {
        self.entries.insert(remote.ae_title.clone(), remote);
    }

    pub fn get(&self, ae_title: &str) -> Option<&RemoteAe> {
        self.entries.get(ae_title.trim())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses one `AE=host:port` entry. The host may be a name, an IPv4 address or
/// a bracketed IPv6 address.
pub fn parse_entry(entry: &str) -> Result<RemoteAe, RemoteAeError> {
    let invalid = |reason| RemoteAeError::Invalid { entry: entry.to_owned(), reason };
    let (ae_title, address) = entry.split_once('=').ok_or_else(|| invalid("no '='"))?;
    let ae_title = ae_title.trim();
    if ae_title.is_empty() || ae_title.len() > 16 {
        return Err(invalid("the AE title must have 1 to 16 characters"));
    }
    if !ae_title.chars().all(|c| c.is_ascii_graphic() || c == ' ') || ae_title.contains('\\') {
        return Err(invalid("the AE title may contain printable ASCII characters except backslash"));
    }
    let (host, port) = address.trim().rsplit_once(':').ok_or_else(|| invalid("no ':' before the port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    let port: u16 = port.parse().map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(invalid("the port is not a number from 1 to 65535"));
    }
    Ok(RemoteAe { ae_title: ae_title.to_owned(), host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_with_name_and_ipv6() {
        let remote = parse_entry("STORESCP=127.0.0.1:104").unwrap();
        assert_eq!(remote, RemoteAe { ae_title: "STORESCP".into(), host: "127.0.0.1".into(), port: 104 });
        let remote = parse_entry(" PACS = [::1]:11112").unwrap();
        assert_eq!(remote.ae_title, "PACS");
        assert_eq!(remote.host, "::1");
        assert_eq!(remote.port, 11112);
    }

    #[test]
    fn invalid_entries_rejected() {
        for entry in ["NOEQUALS", "=host:1", "AE=host", "AE=:104", "AE=host:0", "AE=host:70000", "WAY_TOO_LONG_AE_TITLE=h:1"] {
            assert!(parse_entry(entry).is_err(), "{entry} should be rejected");
        }
    }

    #[test]
    fn file_lines_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote-aes");
        std::fs::write(&path, "# destinations\n\nA=127.0.0.1:1000\n  B=localhost:2000  \n").unwrap();
        let table = RemoteAeTable::load(Some(&path), &["B=127.0.0.1:3000".into()]).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("A").unwrap().port, 1000);
        assert_eq!(table.get("B ").unwrap().port, 3000, "the flag replaces the file entry");
        assert!(table.get("C").is_none());
    }

    #[test]
    fn file_error_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote-aes");
        std::fs::write(&path, "A=127.0.0.1:1000\nbroken\n").unwrap();
        let error = RemoteAeTable::load(Some(&path), &[]).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}
