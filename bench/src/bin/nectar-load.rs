//! nectar-load: a C-STORE load generator for nectar.
//!
//! Opens `--associations` concurrent associations on one current-thread
//! tokio runtime, sends `--instances` C-STORE-RQs in total (one outstanding
//! request per association) built from `--template` Part 10 files with fresh
//! Study, Series and SOP Instance UIDs, and reports throughput, latency and
//! its own CPU time. Exits 1 if any store failed or any association could
//! not be established or released, 2 on bad arguments or templates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nectar_bench::client::ClientConfig;
use nectar_bench::load::{run, LoadConfig, DEFAULT_TIMEOUT};
use nectar_bench::template::Template;
use nectar_bench::uid::UidGen;

#[derive(Debug, Parser)]
#[command(
    name = "nectar-load",
    version,
    about = "C-STORE load generator for nectar"
)]
struct Args {
    /// Host of the SCP.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// DIMSE port of the SCP.
    #[arg(long, default_value_t = 11112)]
    port: u16,
    /// Called AE title.
    #[arg(long, default_value = "NECTAR")]
    called_ae: String,
    /// Calling AE title.
    #[arg(long, default_value = "NECTARLOAD")]
    calling_ae: String,
    /// Concurrent associations.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    associations: u32,
    /// Instances in total, split across the associations.
    #[arg(long, default_value_t = 100)]
    instances: u64,
    /// Studies the instances are spread over; each gets fresh Study and
    /// Series Instance UIDs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    studies: u64,
    /// Part 10 file to send (repeatable; instances cycle through them).
    #[arg(long = "template", required = true)]
    templates: Vec<PathBuf>,
    /// Our Maximum Length Received, in bytes (0 = unlimited).
    #[arg(long, default_value_t = 1_048_576)]
    max_pdu: u32,
    /// Seconds allowed for connecting, for each response and for the release.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    /// Also print the results as one JSON object on stdout (the text then
    /// goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut templates = Vec::with_capacity(args.templates.len());
    for path in &args.templates {
        match Template::load(path) {
            Ok(t) => templates.push(t),
            Err(e) => {
                eprintln!("nectar-load: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let config = LoadConfig {
        client: ClientConfig {
            host: args.host,
            port: args.port,
            called_ae: args.called_ae,
            calling_ae: args.calling_ae,
            max_pdu: args.max_pdu,
            timeout: Duration::from_secs(args.timeout.max(1)),
        },
        associations: args.associations as usize,
        instances: args.instances,
        studies: args.studies,
    };
    let report = run(config, templates, UidGen::from_clock());
    if args.json {
        eprint!("{}", report.to_text());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
