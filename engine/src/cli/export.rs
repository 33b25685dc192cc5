//! `nectar export`: writes every indexed instance as a Part 10 file.

use std::path::PathBuf;

use clap::Args;

use super::DataDirArg;
use crate::manifest::{Manifest, ManifestConfig};
use crate::storage::{Store, StoreConfig};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// Folder to write `<SOP Instance UID>.dcm` files into; created if missing.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> i32 {
    match export(&args) {
        Ok(count) => {
            println!("exported {count} instances to {}", args.out.display());
            0
        }
        Err(message) => {
            eprintln!("nectar export: {message}");
            1
        }
    }
}

fn export(args: &ExportArgs) -> Result<usize, String> {
    let data_dir = &args.data.data_dir;
    if !data_dir.is_dir() {
        return Err(format!("data directory {} not found", data_dir.display()));
    }
    std::fs::create_dir_all(&args.out).map_err(|error| format!("failed to create {}: {error}", args.out.display()))?;
    let store = Store::open(data_dir, StoreConfig::default()).map_err(|error| format!("failed to open the store: {error}"))?;
    let manifest = Manifest::open(&data_dir.join("manifest.sqlite3"), ManifestConfig::default())
        .map_err(|error| format!("failed to open the manifest: {error}"))?;

    let instances = manifest.instance_locations().map_err(|error| format!("failed to read the manifest: {error}"))?;
    for (sop_instance_uid, location, _sequence) in &instances {
        let record = store
            .read(*location)
            .map_err(|error| format!("failed to read instance {sop_instance_uid}: {error}"))?;
        let path = args.out.join(format!("{sop_instance_uid}.dcm"));
        std::fs::write(&path, record.bytes()).map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    }
    let _ = manifest.close();
    let _ = store.close();
    Ok(instances.len())
}
