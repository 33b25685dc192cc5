//! Finding real DICOM files for the integration tests.
//!
//! The files are pydicom's test data (not committed here). They are looked
//! for in `$NECTAR_TEST_FILES` (pydicom's `data` folder, which holds
//! `test_files/` and `charset_files/`, or any folder of `.dcm` files), else
//! in the `data` folder of the pydicom that `python3` imports. Without
//! either, the tests print a note and pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folders pydicom keeps its test files in, relative to its data folder.
pub const PYDICOM_FOLDERS: [&str; 2] = ["test_files", "charset_files"];

/// The data folder, or `None` (with a note printed) when there is none.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NECTAR_TEST_FILES") {
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Some(dir);
        }
        eprintln!("note: NECTAR_TEST_FILES={} is not a folder", dir.display());
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import pydicom, os; print(os.path.dirname(pydicom.__file__))",
        ])
        .output();
    if let Ok(output) = output {
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("data");
            if dir.join("test_files").is_dir() {
                return Some(dir);
            }
        }
    }
    eprintln!(
        "note: no DICOM test files (set NECTAR_TEST_FILES to pydicom's data folder or `pip install pydicom==3.0.2`); skipping"
    );
    None
}

/// Every `.dcm` file to test, as (key, path): the key is
/// `<folder>/<file name>` for pydicom's layout, the file name otherwise.
pub fn dcm_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let layout_folders: Vec<&str> = PYDICOM_FOLDERS
        .iter()
        .copied()
        .filter(|f| dir.join(f).is_dir())
        .collect();
    if layout_folders.is_empty() {
        collect(dir, None, &mut files);
    } else {
        for folder in layout_folders {
            collect(&dir.join(folder), Some(folder), &mut files);
        }
    }
    files.sort();
    files
}

fn collect(dir: &Path, prefix: Option<&str>, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            };
            files.push((key, path));
        }
    }
}
