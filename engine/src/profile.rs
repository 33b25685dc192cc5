//! Capacity profiles: YAML files that fix the pod size nectar runs in (cores,
//! memory) and the serve settings sized for it (workers, association limit,
//! segment size, PDU size, commit and manifest batching), plus the throughput
//! measured at that size.
//!
//! `nectar serve --profile NAME|PATH` loads one; explicit flags still override
//! each value. [`cgroup`] reads the CPU quota and memory limit the process
//! actually runs under, so a profile larger than its container can be reported.

pub mod cgroup;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Folder name of the profiles shipped in the repository.
pub const PROFILE_DIR_NAME: &str = "capacity-profiles";

/// Environment variable naming an extra folder to look for profiles in.
pub const PROFILE_DIR_ENV: &str = "NECTAR_PROFILE_DIR";

/// Anonymous (non-file-backed) memory nectar needs besides its PDU buffers,
/// in MiB: heap, thread stacks, SQLite's cache, the commit and manifest
/// queues and the metrics registry.
///
/// NOTE: an estimate, not a measurement. Mapped segment pages are file-backed
/// page cache and are not part of this budget.
pub const BASE_ANONYMOUS_MEMORY_MIB: u64 = 64;

/// One capacity profile, as read from its YAML file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, e.g. `small`.
    pub name: String,
    /// CPUs the pod gets; workers are pinned to the first `cores` cores the process may use.
    pub cores: usize,
    /// Memory limit of the pod, in MiB.
    pub memory_mib: u64,
    /// Worker threads (actix arbiters).
    pub workers: usize,
    /// Open associations at most.
    pub max_associations: usize,
    /// Size of each storage segment file, in MiB.
    pub segment_size_mib: u64,
    /// Largest P-DATA-TF PDU accepted, in bytes; 0 means unlimited.
    pub max_pdu_length: u32,
    /// Batching of the storage committer (one msync per segment per batch).
    pub commit: Batching,
    /// Batching of the manifest writer (one SQLite transaction per batch).
    pub manifest: Batching,
    /// Throughput measured at this size; every value is null until measured.
    pub measured: Measured,
}

/// A bounded queue in front of a writer thread and the largest batch it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Requests per batch, at most.
    pub max_batch: usize,
    /// Capacity of the queue.
    pub queue: usize,
}

/// Throughput a profile sustains, written by `bench/compare --update-results`.
///
/// Unknown keys are accepted here, so the benchmark can record more than this
/// struct reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Measured {
    pub small_8_associations_instances_per_s: Option<f64>,
    pub large_4_associations_mb_per_s: Option<f64>,
    pub date: Option<String>,
    pub machine: Option<String>,
    pub command: Option<String>,
}

/// Errors of finding, reading and checking a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("capacity profile {name:?} not found; looked for {file} in {searched}. {available}")]
    NotFound { name: String, file: String, searched: String, available: String },
    #[error("invalid capacity profile name {0:?}: use letters, digits, '-' and '_', or give a path to a .yaml file")]
    InvalidName(String),
    #[error("failed to read capacity profile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid capacity profile {path}: {source}")]
    Parse { path: PathBuf, source: serde_norway::Error },
    #[error("invalid capacity profile {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A profile and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    pub path: PathBuf,
}

impl Profile {
    /// Parses a profile from YAML text and checks its values.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let profile: Profile =
            serde_norway::from_str(text).map_err(|source| ProfileError::Parse { path: path.to_owned(), source })?;
        profile.validate().map_err(|reason| ProfileError::Invalid { path: path.to_owned(), reason })?;
        Ok(profile)
    }

    /// Checks that every count and size is at least 1 (max_pdu_length may be 0, unlimited).
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        let positive = [
            ("cores", self.cores as u64),
            ("memory_mib", self.memory_mib),
            ("workers", self.workers as u64),
            ("max_associations", self.max_associations as u64),
            ("segment_size_mib", self.segment_size_mib),
            ("commit.max_batch", self.commit.max_batch as u64),
            ("commit.queue", self.commit.queue as u64),
            ("manifest.max_batch", self.manifest.max_batch as u64),
            ("manifest.queue", self.manifest.queue as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key} is 0; it must be at least 1"));
            }
        }
        Ok(())
    }

    /// Anonymous memory this profile needs, in MiB, or `None` when
    /// max_pdu_length is 0 (unlimited) and so the PDU buffers have no bound.
    pub fn anonymous_memory_budget_mib(&self) -> Option<u64> {
        anonymous_memory_budget_mib(self.max_associations, self.max_pdu_length)
    }
}

/// [`BASE_ANONYMOUS_MEMORY_MIB`] plus two PDUs of `max_pdu_length` bytes per
/// association, rounded up to MiB; `None` when `max_pdu_length` is 0 (unlimited).
///
/// NOTE: the two PDUs are an allowance for each association's buffers, not a
/// measured peak. They cover the socket buffer and the storage writer's buffer
/// of at most 256 KiB. The writer's buffer keeps a small instance whole, or the
/// next piece of a larger one, before it goes to the segment file, which is page
/// cache and not anonymous memory.
pub fn anonymous_memory_budget_mib(max_associations: usize, max_pdu_length: u32) -> Option<u64> {
    if max_pdu_length == 0 {
        return None;
    }
    let pdu_bytes = 2 * max_associations as u64 * u64::from(max_pdu_length);
    Some(BASE_ANONYMOUS_MEMORY_MIB + pdu_bytes.div_ceil(1024 * 1024))
}

/// Returns true when a `--profile` argument names a file rather than a profile.
pub fn is_path_argument(argument: &str) -> bool {
    argument.contains('/') || argument.ends_with(".yaml") || argument.ends_with(".yml")
}

/// Folders searched for `NAME.yaml`, in order: `./capacity-profiles`, then
/// `$NECTAR_PROFILE_DIR`, then `capacity-profiles` two levels above the folder
/// of the running binary (the repository root for `target/release/nectar`).
pub fn search_dirs(profile_dir_env: Option<&str>, current_exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(".").join(PROFILE_DIR_NAME)];
    if let Some(dir) = profile_dir_env.filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(repo) = current_exe.and_then(|exe| exe.parent()?.parent()?.parent()) {
        dirs.push(repo.join(PROFILE_DIR_NAME));
    }
    dirs
}

/// Finds and loads a profile given as a name or a path, searching the
/// folders of [`search_dirs`] for this process.
pub fn load(argument: &str) -> Result<LoadedProfile, ProfileError> {
    let env_dir = std::env::var(PROFILE_DIR_ENV).ok();
    let exe = std::env::current_exe().ok();
    load_from(argument, &search_dirs(env_dir.as_deref(), exe.as_deref()))
}

/// Loads a profile: a path is read directly, a name is looked up as
/// `NAME.yaml` in each of `dirs` in order.
pub fn load_from(argument: &str, dirs: &[PathBuf]) -> Result<LoadedProfile, ProfileError> {
    let path = if is_path_argument(argument) {
        PathBuf::from(argument)
    } else {
        find_by_name(argument, dirs)?
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Read { path: path.clone(), source })?;
    let profile = Profile::from_yaml(&text, &path)?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    Ok(LoadedProfile { profile, path })
}

fn find_by_name(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, ProfileError> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ProfileError::InvalidName(name.to_owned()));
    }
    let file = format!("{name}.yaml");
    if let Some(path) = dirs.iter().map(|dir| dir.join(&file)).find(|path| path.is_file()) {
        return Ok(path);
    }
    let searched = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let names = available_names(dirs);
    let available = if names.is_empty() {
        format!("No profiles found there: set {PROFILE_DIR_ENV} or pass a path to a .yaml file.")
    } else {
        format!("Available: {}; or pass a path to a .yaml file.", names.join(", "))
    };
    Err(ProfileError::NotFound { name: name.to_owned(), file, searched, available })
}

/// Names of the `*.yaml` files in `dirs`, sorted, without duplicates.
fn available_names(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".yaml").map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

impl fmt::Display for Batching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max_batch={} queue={}", self.max_batch, self.queue)
    }
}

#[cfg(test)]
mod tests;
