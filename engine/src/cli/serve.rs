//! `nectar serve`.

use std::fmt::Display;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::DataDirArg;
use crate::manifest::ManifestConfig;
use crate::profile::cgroup::{self, CgroupLimits};
use crate::profile::{self, Batching, LoadedProfile, Profile};
use crate::retrieve::RemoteAeTable;
use crate::server::{self, ServeConfig};
use crate::storage::StoreConfig;

/// Built-in defaults, used when neither a flag nor a profile sets the value.
const DEFAULT_MAX_ASSOCIATIONS: usize = 64;
const DEFAULT_MAX_PDU_LENGTH: u32 = 1024 * 1024;
const DEFAULT_SEGMENT_SIZE_MIB: u64 = 256;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// AE title of this SCP; A-ASSOCIATE-RQs must call it unless --accept-any-called-ae is set.
    #[arg(long, env = "NECTAR_AE_TITLE", default_value = "NECTAR")]
    pub ae_title: String,

    /// TCP port of the DIMSE listener.
    #[arg(long, env = "NECTAR_DIMSE_PORT", default_value_t = 11112)]
    pub dimse_port: u16,

    /// TCP port of the HTTP endpoint (/health, /metrics, DICOMweb under /dicomweb, /events).
    #[arg(long, env = "NECTAR_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// Address both listeners bind to.
    #[arg(long, env = "NECTAR_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Capacity profile: a name looked up as NAME.yaml in ./capacity-profiles, $NECTAR_PROFILE_DIR
    /// and the repository's capacity-profiles, or a path to a .yaml file. It sets the defaults of
    /// the sizing flags below, and a sizing flag given explicitly overrides it.
    #[arg(long, env = "NECTAR_PROFILE")]
    pub profile: Option<String>,

    /// Worker threads (actix arbiters), pinned in turn to the cores in use: the first `cores`
    /// cores of a profile, else every core this process may use. Default: the profile's
    /// workers, else the cores this process may use.
    #[arg(long, env = "NECTAR_WORKERS")]
    pub workers: Option<usize>,

    /// Open associations at most; one more is rejected as "local limit exceeded". Default: the
    /// profile's, else 64.
    #[arg(long, env = "NECTAR_MAX_ASSOCIATIONS")]
    pub max_associations: Option<usize>,

    /// Accept any called AE title instead of only --ae-title.
    #[arg(long, env = "NECTAR_ACCEPT_ANY_CALLED_AE")]
    pub accept_any_called_ae: bool,

    /// Calling AE title allowed to associate (repeatable; comma-separated in the environment). Default: any.
    #[arg(long = "allowed-calling-ae", env = "NECTAR_ALLOWED_CALLING_AE", value_delimiter = ',')]
    pub allowed_calling_ae: Vec<String>,

    /// Largest P-DATA-TF PDU accepted, in bytes, announced in A-ASSOCIATE-AC; 0 means unlimited.
    /// Default: the profile's, else 1048576.
    #[arg(long, env = "NECTAR_MAX_PDU_LENGTH")]
    pub max_pdu_length: Option<u32>,

    /// Seconds a new connection may take to send A-ASSOCIATE-RQ (ARTIM timer).
    #[arg(long, env = "NECTAR_ARTIM_TIMEOUT", default_value_t = 30)]
    pub artim_timeout: u64,

    /// Seconds an association may stay silent between PDUs before it is aborted.
    #[arg(long, env = "NECTAR_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Seconds open associations get to finish after SIGINT or SIGTERM before they are aborted.
    #[arg(long, env = "NECTAR_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Size of each storage segment file, in MiB. Default: the profile's, else 256.
    #[arg(long, env = "NECTAR_SEGMENT_SIZE_MIB")]
    pub segment_size_mib: Option<u64>,

    /// Commit requests the storage committer flushes in one batch, at most. Default: the
    /// profile's, else 256.
    #[arg(long, env = "NECTAR_COMMIT_MAX_BATCH")]
    pub commit_max_batch: Option<usize>,

    /// Capacity of the queue in front of the storage committer. Default: the profile's, else 1024.
    #[arg(long, env = "NECTAR_COMMIT_QUEUE")]
    pub commit_queue: Option<usize>,

    /// Manifest rows written in one SQLite transaction, at most. Default: the profile's, else 512.
    #[arg(long, env = "NECTAR_MANIFEST_MAX_BATCH")]
    pub manifest_max_batch: Option<usize>,

    /// Capacity of the queue in front of the manifest writer. Default: the profile's, else 4096.
    #[arg(long, env = "NECTAR_MANIFEST_QUEUE")]
    pub manifest_queue: Option<usize>,

    /// C-MOVE destination as AE=host:port (repeatable; comma-separated in the environment). It
    /// replaces an entry of the same AE title from --remote-ae-file.
    #[arg(long = "remote-ae", env = "NECTAR_REMOTE_AE", value_delimiter = ',')]
    pub remote_ae: Vec<String>,

    /// File of C-MOVE destinations: one AE=host:port per line; blank lines and lines starting
    /// with # are skipped.
    #[arg(long, env = "NECTAR_REMOTE_AE_FILE")]
    pub remote_ae_file: Option<PathBuf>,

    #[command(flatten)]
    pub events: super::event_args::EventArgs,
}


/// The sizing settings after flags, profile and built-in defaults are combined.
#[derive(Debug, Clone, PartialEq)]
struct Sizing {
    workers: usize,
    pin_cores: Option<usize>,
    max_associations: usize,
    max_pdu_length: u32,
    segment_size_mib: u64,
    commit: Batching,
    manifest: Batching,
}

/// A setting whose flag (or environment variable) replaced the profile's value.
#[derive(Debug, Clone, PartialEq)]
struct Override {
    setting: &'static str,
    profile_value: String,
    value: String,
}

/// Picks the flag's value, else the profile's, else the built-in default, and
/// records an [`Override`] when the flag differs from the profile.
fn pick<T: Copy + PartialEq + Display>(
    setting: &'static str,
    flag: Option<T>,
    from_profile: Option<T>,
    default: T,
    overrides: &mut Vec<Override>,
) -> T {
    if let (Some(value), Some(profile_value)) = (flag, from_profile) {
        if value != profile_value {
            overrides.push(Override { setting, profile_value: profile_value.to_string(), value: value.to_string() });
        }
    }
    flag.or(from_profile).unwrap_or(default)
}

/// Combines the flags with the profile. `available_cores` is the worker
/// count when neither sets one.
fn resolve_sizing(args: &ServeArgs, profile: Option<&Profile>, available_cores: usize) -> (Sizing, Vec<Override>) {
    let store_default = StoreConfig::default();
    let manifest_default = ManifestConfig::default();
    let mut overrides = Vec::new();
    let o = &mut overrides;
    let sizing = Sizing {
        workers: pick("workers", args.workers, profile.map(|p| p.workers), available_cores, o).max(1),
        pin_cores: profile.map(|p| p.cores),
        max_associations: pick(
            "max_associations",
            args.max_associations,
            profile.map(|p| p.max_associations),
            DEFAULT_MAX_ASSOCIATIONS,
            o,
        )
        .max(1),
        max_pdu_length: pick("max_pdu_length", args.max_pdu_length, profile.map(|p| p.max_pdu_length), DEFAULT_MAX_PDU_LENGTH, o),
        segment_size_mib: pick(
            "segment_size_mib",
            args.segment_size_mib,
            profile.map(|p| p.segment_size_mib),
            DEFAULT_SEGMENT_SIZE_MIB,
            o,
        )
        .max(1),
        commit: Batching {
            max_batch: pick(
                "commit.max_batch",
                args.commit_max_batch,
                profile.map(|p| p.commit.max_batch),
                store_default.max_commit_batch,
                o,
            ),
            queue: pick("commit.queue", args.commit_queue, profile.map(|p| p.commit.queue), store_default.commit_queue, o),
        },
        manifest: Batching {
            max_batch: pick(
                "manifest.max_batch",
                args.manifest_max_batch,
                profile.map(|p| p.manifest.max_batch),
                manifest_default.max_batch,
                o,
            ),
            queue: pick("manifest.queue", args.manifest_queue, profile.map(|p| p.manifest.queue), manifest_default.queue, o),
        },
    };
    (sizing, overrides)
}

/// Formats an optional limit, `None` being "unlimited".
fn limit_text<T: Display>(limit: Option<T>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |value| value.to_string())
}

fn log_cgroup_limits(limits: &CgroupLimits, usable_cores: usize) {
    for problem in &limits.problems {
        tracing::warn!(%problem, "failed to read a cgroup limit; treating it as unlimited");
    }
    tracing::info!(
        cgroup = %limits.version,
        cpu_quota_cores = %limit_text(limits.cpu_quota_cores),
        memory_limit_mib = %limit_text(limits.memory_limit_mib()),
        usable_cores,
        "cgroup limits"
    );
}

fn log_profile(loaded: &LoadedProfile) {
    let profile = &loaded.profile;
    tracing::info!(
        profile = %profile.name,
        path = %loaded.path.display(),
        cores = profile.cores,
        memory_mib = profile.memory_mib,
        workers = profile.workers,
        max_associations = profile.max_associations,
        segment_size_mib = profile.segment_size_mib,
        max_pdu_length = profile.max_pdu_length,
        commit_max_batch = profile.commit.max_batch,
        commit_queue = profile.commit.queue,
        manifest_max_batch = profile.manifest.max_batch,
        manifest_queue = profile.manifest.queue,
        anonymous_memory_budget_mib = %limit_text(profile.anonymous_memory_budget_mib()),
        "capacity profile applied"
    );
}

/// Warns where the profile asks for more than the cgroup or the CPU affinity gives.
fn warn_profile_limits(profile: &Profile, limits: &CgroupLimits, usable_cores: usize) {
    let name = profile.name.as_str();
    if let Some(quota) = limits.cpu_quota_cores {
        if quota < profile.cores as f64 {
            tracing::warn!(profile = name, cores = profile.cores, cpu_quota_cores = quota, "the cgroup CPU quota is smaller than the profile's cores; workers will be throttled");
        }
        if usable_cores as f64 > quota.ceil() {
            tracing::warn!(
                profile = name,
                usable_cores,
                cpu_quota_cores = quota,
                "the process may run on more cores than its CPU quota, so the workers are pinned to cores that other processes may share; give the pod exclusive cores (kubelet static CPU manager policy, Guaranteed QoS with integer cpu)"
            );
        }
    }
    if let Some(limit_mib) = limits.memory_limit_mib() {
        if limit_mib < profile.memory_mib {
            tracing::warn!(profile = name, memory_mib = profile.memory_mib, memory_limit_mib = limit_mib, "the cgroup memory limit is smaller than the profile's memory_mib");
        }
    }
    if usable_cores < profile.cores {
        tracing::warn!(profile = name, cores = profile.cores, usable_cores, "the process may use fewer cores than the profile's cores; workers share them");
    }
    match profile.anonymous_memory_budget_mib() {
        Some(budget) if budget > profile.memory_mib => {
            tracing::warn!(profile = name, anonymous_memory_budget_mib = budget, memory_mib = profile.memory_mib, "the profile's anonymous memory budget exceeds its memory_mib; lower max_associations or max_pdu_length");
        }
        Some(_) => {}
        None => tracing::warn!(profile = name, "max_pdu_length is 0 (unlimited), so the profile's memory use has no bound"),
    }
}

pub fn run(args: ServeArgs) -> i32 {
    let usable_cores = core_affinity::get_core_ids().map_or(0, |cores| cores.len());
    let limits = cgroup::read_limits();
    log_cgroup_limits(&limits, usable_cores);

    let loaded = match args.profile.as_deref().map(profile::load).transpose() {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(%error, "nectar serve failed");
            eprintln!("nectar serve: {error}");
            return 2;
        }
    };
    if let Some(loaded) = &loaded {
        log_profile(loaded);
        warn_profile_limits(&loaded.profile, &limits, usable_cores);
    }

    let remote_aes = match RemoteAeTable::load(args.remote_ae_file.as_deref(), &args.remote_ae) {
        Ok(table) => table,
        Err(error) => {
            tracing::error!(%error, "nectar serve failed");
            eprintln!("nectar serve: {error}");
            return 2;
        }
    };
    tracing::info!(remote_aes = remote_aes.len(), "C-MOVE destinations loaded");

    let available_cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (sizing, overrides) = resolve_sizing(&args, loaded.as_ref().map(|l| &l.profile), available_cores);
    for o in &overrides {
        tracing::info!(setting = o.setting, profile_value = %o.profile_value, value = %o.value, "a flag or its environment variable overrides the capacity profile");
    }
    // The server pins the workers to the first `pin_cores` of the cores the
    // process may use, so no more than `usable_cores` are pinned.
    let pinned_core_count = sizing.pin_cores.map_or(usable_cores, |count| count.min(usable_cores));
    tracing::info!(
        workers = sizing.workers,
        pinned_core_count,
        max_associations = sizing.max_associations,
        max_pdu_length = sizing.max_pdu_length,
        segment_size_mib = sizing.segment_size_mib,
        commit_max_batch = sizing.commit.max_batch,
        commit_queue = sizing.commit.queue,
        manifest_max_batch = sizing.manifest.max_batch,
        manifest_queue = sizing.manifest.queue,
        "serve settings"
    );

    let events = match args.events.setup(args.bind, args.http_port) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("nectar serve: {error}");
            return 2;
        }
    };
    let public_url = args.events.public_url.as_ref().map(|url| url.trim_end_matches('/').to_owned());
    let config = ServeConfig {
        events,
        public_url,
        data_dir: args.data.data_dir,
        ae_title: args.ae_title,
        dimse_address: (args.bind, args.dimse_port).into(),
        http_address: (args.bind, args.http_port).into(),
        workers: sizing.workers,
        pin_cores: sizing.pin_cores,
        max_associations: sizing.max_associations,
        accept_any_called_ae: args.accept_any_called_ae,
        allowed_calling_ae_titles: args.allowed_calling_ae,
        max_pdu_length: sizing.max_pdu_length,
        artim_timeout: Duration::from_secs(args.artim_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        remote_aes,
        store: StoreConfig {
            segment_size: sizing.segment_size_mib * 1024 * 1024,
            commit_queue: sizing.commit.queue,
            max_commit_batch: sizing.commit.max_batch,
        },
        manifest: ManifestConfig { queue: sizing.manifest.queue, max_batch: sizing.manifest.max_batch, ..ManifestConfig::default() },
    };
    match server::serve(config) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "nectar serve failed");
            eprintln!("nectar serve: {error}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        Command::try_parse_from(std::iter::once("nectar").chain(flags.iter().copied())).unwrap().serve
    }

    fn small() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capacity-profiles/small.yaml");
        Profile::from_yaml(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    }

    #[test]
    fn remote_ae_flags_repeat() {
        let parsed = args(&["--remote-ae", "A=127.0.0.1:104", "--remote-ae", "B=localhost:11112"]);
        assert_eq!(parsed.remote_ae, ["A=127.0.0.1:104", "B=localhost:11112"]);
        let table = RemoteAeTable::load(None, &parsed.remote_ae).unwrap();
        assert_eq!(table.get("B").unwrap().port, 11112);
    }

    #[test]
    fn sizing_without_profile() {
        let (sizing, overrides) = resolve_sizing(&args(&[]), None, 3);
        assert_eq!(sizing.workers, 3);
        assert_eq!(sizing.pin_cores, None);
        assert_eq!(sizing.max_associations, DEFAULT_MAX_ASSOCIATIONS);
        assert_eq!(sizing.max_pdu_length, DEFAULT_MAX_PDU_LENGTH);
        assert_eq!(sizing.segment_size_mib, DEFAULT_SEGMENT_SIZE_MIB);
        assert_eq!(sizing.commit, Batching { max_batch: 256, queue: 1024 });
        assert_eq!(sizing.manifest, Batching { max_batch: 512, queue: 4096 });
        assert!(overrides.is_empty());
    }

    #[test]
    fn sizing_from_profile() {
        let profile = small();
        let (sizing, overrides) = resolve_sizing(&args(&[]), Some(&profile), 8);
        assert_eq!(sizing.workers, profile.workers);
        assert_eq!(sizing.pin_cores, Some(profile.cores));
        assert_eq!(sizing.max_associations, profile.max_associations);
        assert_eq!(sizing.max_pdu_length, profile.max_pdu_length);
        assert_eq!(sizing.segment_size_mib, profile.segment_size_mib);
        assert_eq!(sizing.commit, profile.commit);
        assert_eq!(sizing.manifest, profile.manifest);
        assert!(overrides.is_empty());
    }

    #[test]
    fn flags_override_profile() {
        let profile = small();
        let flags = ["--max-associations", "4", "--commit-queue", "99", "--workers", "1"];
        let (sizing, overrides) = resolve_sizing(&args(&flags), Some(&profile), 8);
        assert_eq!(sizing.max_associations, 4);
        assert_eq!(sizing.commit.queue, 99);
        assert_eq!(sizing.commit.max_batch, profile.commit.max_batch);
        assert_eq!(sizing.workers, 1);
        let settings: Vec<&str> = overrides.iter().map(|o| o.setting).collect();
        assert_eq!(settings, ["max_associations", "commit.queue"], "a flag equal to the profile value is no override");
        assert_eq!(overrides[0].profile_value, profile.max_associations.to_string());
        assert_eq!(overrides[0].value, "4");
    }
}
