//! `nectar serve`.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

use super::DataDirArg;
use crate::server::{self, ServeConfig};

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

    /// TCP port of the HTTP endpoint (/health, /metrics).
    #[arg(long, env = "NECTAR_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// Address both listeners bind to.
    #[arg(long, env = "NECTAR_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Worker threads (actix arbiters), each pinned to a core. Default: the cores this process may use.
    #[arg(long, env = "NECTAR_WORKERS")]
    pub workers: Option<usize>,

    /// Open associations at most; one more is rejected as "local limit exceeded".
    #[arg(long, env = "NECTAR_MAX_ASSOCIATIONS", default_value_t = 64)]
    pub max_associations: usize,

    /// Accept any called AE title instead of only --ae-title.
    #[arg(long, env = "NECTAR_ACCEPT_ANY_CALLED_AE")]
    pub accept_any_called_ae: bool,

    /// Calling AE title allowed to associate (repeatable; comma-separated in the environment). Default: any.
    #[arg(long = "allowed-calling-ae", env = "NECTAR_ALLOWED_CALLING_AE", value_delimiter = ',')]
    pub allowed_calling_ae: Vec<String>,

    /// Largest P-DATA-TF PDU accepted, in bytes, announced in A-ASSOCIATE-AC; 0 means unlimited.
    #[arg(long, env = "NECTAR_MAX_PDU_LENGTH", default_value_t = 1024 * 1024)]
    pub max_pdu_length: u32,

    /// Seconds a new connection may take to send A-ASSOCIATE-RQ (ARTIM timer).
    #[arg(long, env = "NECTAR_ARTIM_TIMEOUT", default_value_t = 30)]
    pub artim_timeout: u64,

    /// Seconds an association may stay silent between PDUs before it is aborted.
    #[arg(long, env = "NECTAR_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Seconds open associations get to finish after SIGINT or SIGTERM before they are aborted.
    #[arg(long, env = "NECTAR_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Size of each storage segment file, in MiB.
    #[arg(long, env = "NECTAR_SEGMENT_SIZE_MIB", default_value_t = 256)]
    pub segment_size_mib: u64,
}

pub fn run(args: ServeArgs) -> i32 {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let config = ServeConfig {
        data_dir: args.data.data_dir,
        ae_title: args.ae_title,
        dimse_address: (args.bind, args.dimse_port).into(),
        http_address: (args.bind, args.http_port).into(),
        workers,
        max_associations: args.max_associations.max(1),
        accept_any_called_ae: args.accept_any_called_ae,
        allowed_calling_ae_titles: args.allowed_calling_ae,
        max_pdu_length: args.max_pdu_length,
        artim_timeout: Duration::from_secs(args.artim_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        segment_size: args.segment_size_mib.max(1) * 1024 * 1024,
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
