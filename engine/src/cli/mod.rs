//! Command-line interface of the `nectar` binary.

mod event_args;
mod export;
mod fsck;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use export::ExportArgs;
pub use fsck::FsckArgs;
pub use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "nectar", version, about = "High-throughput DICOM ingestion engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive DICOM instances over DIMSE and store them durably.
    Serve(Box<ServeArgs>),
    /// Verify every stored record's checksum and the manifest against the segments.
    Fsck(FsckArgs),
    /// Write every instance in the manifest to a folder as Part 10 files.
    Export(ExportArgs),
}

/// The data directory argument shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Folder that holds the segments and the manifest.
    #[arg(long, env = "NECTAR_DATA_DIR", default_value = "./nectar-data")]
    pub data_dir: PathBuf,
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> i32 {
        match self.command {
            Command::Serve(args) => serve::run(*args),
            Command::Fsck(args) => fsck::run(args),
            Command::Export(args) => export::run(args),
        }
    }
}
