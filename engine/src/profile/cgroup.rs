//! The CPU quota and memory limit of the cgroup this process runs in.
//!
//! cgroup v2 (unified hierarchy, `/sys/fs/cgroup/cgroup.controllers` exists):
//! `cpu.max` is `max PERIOD` or `QUOTA PERIOD` in microseconds, and
//! `memory.max` is `max` or a byte count. cgroup v1: `cpu.cfs_quota_us` is -1
//! or the quota, `cpu.cfs_period_us` the period, and `memory.limit_in_bytes`
//! a byte count where a value near `i64::MAX` means no limit.
//!
//! The process's own cgroup path comes from `/proc/self/cgroup`. Each limit is
//! read at that path and at every ancestor that exists under the mount, and
//! the smallest wins, because a parent's limit bounds its children. Inside a
//! container whose cgroup namespace hides the host path, only the mount root
//! exists, and that root is the container's own cgroup.

use std::fmt;
use std::path::{Path, PathBuf};

/// Values of `memory.limit_in_bytes` at or above this mean "no limit" (the
/// kernel reports `i64::MAX` rounded down to a page, e.g. 9223372036854771712).
const V1_UNLIMITED_MEMORY: u64 = 1 << 62;

/// Which cgroup hierarchy the limits were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V2,
    V1,
    /// Neither hierarchy was found, e.g. outside Linux.
    Unavailable,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
            CgroupVersion::Unavailable => "unavailable",
        })
    }
}

/// Limits of this process's cgroup; `None` means no limit was found.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupLimits {
    pub version: CgroupVersion,
    /// CPU quota in cores (quota / period), e.g. 1.5.
    pub cpu_quota_cores: Option<f64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Files that existed but could not be read or parsed, with the reason.
    pub problems: Vec<String>,
}

impl CgroupLimits {
    /// The memory limit in MiB, rounded down.
    pub fn memory_limit_mib(&self) -> Option<u64> {
        self.memory_limit_bytes.map(|bytes| bytes / (1024 * 1024))
    }
}

/// Errors of parsing one cgroup file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cgroup value {contents:?}: {reason}")]
pub struct ParseError {
    contents: String,
    reason: &'static str,
}

fn invalid(contents: &str, reason: &'static str) -> ParseError {
    ParseError { contents: contents.trim().to_owned(), reason }
}

/// Parses cgroup v2 `cpu.max` ("max 100000" or "QUOTA PERIOD") into cores.
pub fn parse_cpu_max(contents: &str) -> Result<Option<f64>, ParseError> {
    let mut fields = contents.split_whitespace();
    let quota = fields.next().ok_or_else(|| invalid(contents, "empty"))?;
    let period = match fields.next() {
        Some(period) => period.parse::<u64>().map_err(|_| invalid(contents, "period is not an integer"))?,
        // The kernel always writes the period, but "max" alone is unambiguous.
        None if quota == "max" => return Ok(None),
        None => return Err(invalid(contents, "period missing")),
    };
    if fields.next().is_some() {
        return Err(invalid(contents, "more than two fields"));
    }
    if quota == "max" {
        return Ok(None);
    }
    let quota = quota.parse::<u64>().map_err(|_| invalid(contents, "quota is neither 'max' nor an integer"))?;
    if period == 0 {
        return Err(invalid(contents, "period is 0"));
    }
    Ok(Some(quota as f64 / period as f64))
}

/// Parses cgroup v2 `memory.max` ("max" or a byte count).
pub fn parse_memory_max(contents: &str) -> Result<Option<u64>, ParseError> {
    match contents.trim() {
        "max" => Ok(None),
        value => value.parse::<u64>().map(Some).map_err(|_| invalid(contents, "neither 'max' nor a byte count")),
    }
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` into cores;
/// a negative quota (-1) means no limit.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Result<Option<f64>, ParseError> {
    let quota_us = quota.trim().parse::<i64>().map_err(|_| invalid(quota, "quota is not an integer"))?;
    if quota_us < 0 {
        return Ok(None);
    }
    let period_us = period.trim().parse::<u64>().map_err(|_| invalid(period, "period is not an integer"))?;
    if period_us == 0 {
        return Err(invalid(period, "period is 0"));
    }
    Ok(Some(quota_us as f64 / period_us as f64))
}

/// Parses cgroup v1 `memory.limit_in_bytes`; values from 2^62 up mean no limit.
pub fn parse_memory_limit_in_bytes(contents: &str) -> Result<Option<u64>, ParseError> {
    let bytes = contents.trim().parse::<u64>().map_err(|_| invalid(contents, "not a byte count"))?;
    Ok((bytes < V1_UNLIMITED_MEMORY).then_some(bytes))
}

/// The cgroup path of this process for a v1 `controller` (e.g. "memory"), or
/// for the v2 hierarchy when `controller` is `None`, from `/proc/self/cgroup`
/// lines of the form `ID:CONTROLLERS:PATH`.
pub fn own_cgroup_path(proc_self_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        let matches = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(name) => controllers.split(',').any(|c| c == name),
        };
        matches.then(|| path.to_owned())
    })
}

/// `dir` joined with `cgroup_path` and each of its ancestors, deepest first,
/// ending with `dir` itself.
fn candidate_dirs(dir: &Path, cgroup_path: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut relative = PathBuf::from(cgroup_path.unwrap_or("/").trim_start_matches('/'));
    loop {
        out.push(dir.join(&relative));
        if !relative.pop() {
            break;
        }
    }
    if out.last().map(PathBuf::as_path) != Some(dir) {
        out.push(dir.to_owned());
    }
    out.dedup();
    out
}

/// Reads the limits from a cgroup mount at `root` (normally `/sys/fs/cgroup`)
/// for a process whose `/proc/self/cgroup` reads `proc_self_cgroup`.
pub fn read_limits_at(root: &Path, proc_self_cgroup: &str) -> CgroupLimits {
    let mut problems = Vec::new();
    if root.join("cgroup.controllers").is_file() {
        let dirs = candidate_dirs(root, own_cgroup_path(proc_self_cgroup, None).as_deref());
        let cpu = smallest(&dirs, &mut problems, |dir| read_parsed(&dir.join("cpu.max"), parse_cpu_max));
        let memory = smallest(&dirs, &mut problems, |dir| read_parsed(&dir.join("memory.max"), parse_memory_max));
        return CgroupLimits { version: CgroupVersion::V2, cpu_quota_cores: cpu, memory_limit_bytes: memory, problems };
    }

    // NOTE: v1 controllers are looked for at their usual mount points only,
    // not found through /proc/self/mountinfo.
    let cpu_mount = ["cpu,cpuacct", "cpu"].iter().map(|name| root.join(name)).find(|dir| dir.is_dir());
    let memory_mount = Some(root.join("memory")).filter(|dir| dir.is_dir());
    if cpu_mount.is_none() && memory_mount.is_none() {
        return CgroupLimits { version: CgroupVersion::Unavailable, cpu_quota_cores: None, memory_limit_bytes: None, problems };
    }
    let cpu = cpu_mount.and_then(|mount| {
        let dirs = candidate_dirs(&mount, own_cgroup_path(proc_self_cgroup, Some("cpu")).as_deref());
        smallest(&dirs, &mut problems, |dir| {
            let quota = read_optional(&dir.join("cpu.cfs_quota_us"))?;
            let period = read_optional(&dir.join("cpu.cfs_period_us"))?;
            match (quota, period) {
                (Some(quota), Some(period)) => parse_cfs_quota(&quota, &period).map_err(|e| format!("{}: {e}", dir.display())),
                _ => Ok(None),
            }
        })
    });
    let memory = memory_mount.and_then(|mount| {
        let dirs = candidate_dirs(&mount, own_cgroup_path(proc_self_cgroup, Some("memory")).as_deref());
        smallest(&dirs, &mut problems, |dir| read_parsed(&dir.join("memory.limit_in_bytes"), parse_memory_limit_in_bytes))
    });
    CgroupLimits { version: CgroupVersion::V1, cpu_quota_cores: cpu, memory_limit_bytes: memory, problems }
}

/// Reads the limits of this process from `/sys/fs/cgroup` and `/proc/self/cgroup`.
pub fn read_limits() -> CgroupLimits {
    let proc_self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    read_limits_at(Path::new("/sys/fs/cgroup"), &proc_self_cgroup)
}

/// The smallest limit any of `dirs` sets; read failures go to `problems`.
fn smallest<T: PartialOrd + Copy>(
    dirs: &[PathBuf],
    problems: &mut Vec<String>,
    read: impl Fn(&Path) -> Result<Option<T>, String>,
) -> Option<T> {
    let mut best: Option<T> = None;
    for dir in dirs {
        match read(dir) {
            Ok(Some(limit)) => {
                if best.is_none_or(|current| limit < current) {
                    best = Some(limit);
                }
            }
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
    }
    best
}

/// The file's contents, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("failed to read {}: {e}", path.display())),
    }
}

fn read_parsed<T>(path: &Path, parse: fn(&str) -> Result<Option<T>, ParseError>) -> Result<Option<T>, String> {
    match read_optional(path)? {
        Some(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_unlimited() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("max"), Ok(None));
    }

    #[test]
    fn cpu_max_quota() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Ok(Some(2.0)));
        assert_eq!(parse_cpu_max("50000 100000"), Ok(Some(0.5)));
        assert_eq!(parse_cpu_max("150000 100000"), Ok(Some(1.5)));
    }

    #[test]
    fn cpu_max_invalid() {
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("100000").is_err());
        assert!(parse_cpu_max("abc 100000").is_err());
        assert!(parse_cpu_max("100000 0").is_err());
        assert!(parse_cpu_max("1 2 3").is_err());
    }

    #[test]
    fn memory_max_values() {
        assert_eq!(parse_memory_max("max\n"), Ok(None));
        assert_eq!(parse_memory_max("536870912\n"), Ok(Some(512 << 20)));
        assert!(parse_memory_max("lots").is_err());
        assert!(parse_memory_max("").is_err());
    }

    #[test]
    fn cfs_quota_values() {
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), Ok(None));
        assert_eq!(parse_cfs_quota("400000\n", "100000\n"), Ok(Some(4.0)));
        assert!(parse_cfs_quota("x", "100000").is_err());
        assert!(parse_cfs_quota("100000", "0").is_err());
    }

    #[test]
    fn memory_limit_in_bytes_values() {
        assert_eq!(parse_memory_limit_in_bytes("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_memory_limit_in_bytes("2147483648\n"), Ok(Some(2 << 30)));
        assert!(parse_memory_limit_in_bytes("-1").is_err());
    }

    #[test]
    fn own_path_v2_and_v1() {
        let v2 = "0::/kubepods.slice/pod1/cri-abc.scope\n";
        assert_eq!(own_cgroup_path(v2, None).as_deref(), Some("/kubepods.slice/pod1/cri-abc.scope"));
        assert_eq!(own_cgroup_path(v2, Some("memory")), None);

        let v1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(own_cgroup_path(v1, Some("memory")).as_deref(), Some("/docker/abc"));
        assert_eq!(own_cgroup_path(v1, Some("cpu")).as_deref(), Some("/docker/abc"));
        assert_eq!(own_cgroup_path(v1, Some("cpuacct")).as_deref(), Some("/docker/abc"));
        assert_eq!(own_cgroup_path(v1, None).as_deref(), Some("/"));
    }

    #[test]
    fn candidate_dirs_deepest_first() {
        let dirs = candidate_dirs(Path::new("/cg"), Some("/a/b"));
        assert_eq!(dirs, vec![PathBuf::from("/cg/a/b"), PathBuf::from("/cg/a"), PathBuf::from("/cg")]);
        assert_eq!(candidate_dirs(Path::new("/cg"), Some("/")), vec![PathBuf::from("/cg")]);
        assert_eq!(candidate_dirs(Path::new("/cg"), None), vec![PathBuf::from("/cg")]);
    }

    fn write(path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    #[test]
    fn v2_tree_takes_smallest_limit() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cgroup.controllers"), "cpu memory\n");
        write(&root.path().join("cpu.max"), "max 100000\n");
        write(&root.path().join("memory.max"), "max\n");
        write(&root.path().join("pod/cpu.max"), "200000 100000\n");
        write(&root.path().join("pod/memory.max"), "1073741824\n");
        write(&root.path().join("pod/app/cpu.max"), "400000 100000\n");
        write(&root.path().join("pod/app/memory.max"), "max\n");

        let limits = read_limits_at(root.path(), "0::/pod/app\n");
        assert_eq!(limits.version, CgroupVersion::V2);
        assert_eq!(limits.cpu_quota_cores, Some(2.0));
        assert_eq!(limits.memory_limit_bytes, Some(1 << 30));
        assert_eq!(limits.memory_limit_mib(), Some(1024));
        assert!(limits.problems.is_empty(), "{:?}", limits.problems);
    }

    #[test]
    fn v2_namespaced_root_only() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cgroup.controllers"), "cpu memory\n");
        write(&root.path().join("cpu.max"), "100000 100000\n");
        write(&root.path().join("memory.max"), "536870912\n");

        let limits = read_limits_at(root.path(), "0::/\n");
        assert_eq!(limits.cpu_quota_cores, Some(1.0));
        assert_eq!(limits.memory_limit_mib(), Some(512));
    }

    #[test]
    fn v2_invalid_file_reported() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cgroup.controllers"), "cpu memory\n");
        write(&root.path().join("cpu.max"), "garbage\n");

        let limits = read_limits_at(root.path(), "0::/\n");
        assert_eq!(limits.cpu_quota_cores, None);
        assert_eq!(limits.memory_limit_bytes, None);
        assert_eq!(limits.problems.len(), 1, "{:?}", limits.problems);
        assert!(limits.problems[0].contains("cpu.max"), "{:?}", limits.problems);
    }

    #[test]
    fn v1_tree_host_path_hidden() {
        // Inside a container the host path from /proc/self/cgroup does not
        // exist under the mount; the mount root is the container's cgroup.
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cpu,cpuacct/cpu.cfs_quota_us"), "150000\n");
        write(&root.path().join("cpu,cpuacct/cpu.cfs_period_us"), "100000\n");
        write(&root.path().join("memory/memory.limit_in_bytes"), "2147483648\n");

        let proc_self_cgroup = "5:memory:/kubepods/pod1/abc\n3:cpu,cpuacct:/kubepods/pod1/abc\n";
        let limits = read_limits_at(root.path(), proc_self_cgroup);
        assert_eq!(limits.version, CgroupVersion::V1);
        assert_eq!(limits.cpu_quota_cores, Some(1.5));
        assert_eq!(limits.memory_limit_mib(), Some(2048));
    }

    #[test]
    fn v1_unlimited() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cpu/cpu.cfs_quota_us"), "-1\n");
        write(&root.path().join("cpu/cpu.cfs_period_us"), "100000\n");
        write(&root.path().join("memory/memory.limit_in_bytes"), "9223372036854771712\n");
        write(&root.path().join("memory/job/memory.limit_in_bytes"), "9223372036854771712\n");

        let limits = read_limits_at(root.path(), "4:memory:/job\n1:cpu:/\n");
        assert_eq!(limits.version, CgroupVersion::V1);
        assert_eq!(limits.cpu_quota_cores, None);
        assert_eq!(limits.memory_limit_bytes, None);
    }

    #[test]
    fn no_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let limits = read_limits_at(root.path(), "");
        assert_eq!(limits.version, CgroupVersion::Unavailable);
        assert_eq!(limits.cpu_quota_cores, None);
    }
}
