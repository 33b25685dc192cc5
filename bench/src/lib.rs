//! nectar's load generator, `nectar-load`, and helpers shared with the
//! criterion benchmarks in `benches/`.
//!
//! * [`template`]: Part 10 files held in memory, with the byte ranges of the
//!   Study, Series and SOP Instance UIDs so each instance can be given fresh
//!   ones by patching bytes in place;
//! * [`uid`]: fixed-length `2.25.` UIDs, unique per run, written without
//!   allocating;
//! * [`client`]: a minimal C-STORE SCU (association, C-STORE, release) built
//!   on `nectar_codecs` and `dicom-ul`, tuned to cost little CPU per instance;
//! * [`load`]: the run itself, associations on one current-thread runtime;
//! * [`report`]: the run's figures, as text and as JSON;
//! * [`cpu`]: the process's own CPU time (getrusage);
//! * [`synthetic`]: data sets and Part 10 files built in code, for the
//!   benchmarks and for tests that must not depend on external files.

pub mod client;
pub mod cpu;
pub mod load;
pub mod report;
pub mod synthetic;
pub mod template;
pub mod uid;

/// Where pydicom's test files are: `$NECTAR_TEST_FILES` when set, otherwise
/// `<pydicom package>/data/test_files` as `python3` reports it. `None` when
/// neither gives an existing folder.
pub fn pydicom_test_files() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("NECTAR_TEST_FILES") {
        let dir = std::path::PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import pydicom,os;print(os.path.dirname(pydicom.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let base = String::from_utf8(out.stdout).ok()?;
    let dir = std::path::Path::new(base.trim())
        .join("data")
        .join("test_files");
    dir.is_dir().then_some(dir)
}
