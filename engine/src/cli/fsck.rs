//! `nectar fsck`: checks the store and the manifest against each other.

use std::collections::HashSet;

use clap::Args;

use super::DataDirArg;
use crate::manifest::{Manifest, ManifestConfig};
use crate::storage::{Store, StoreConfig};
use crate::Location;

#[derive(Debug, Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What fsck found. Torn tail bytes are the expected trace of a crash and are not damage.
#[derive(Debug, Default)]
struct Findings {
    segments: usize,
    records: u64,
    bytes: u64,
    instances: u64,
    replaced: u64,
    corrupt: Vec<String>,
    missing_from_manifest: u64,
    dangling_in_manifest: u64,
    torn_tail_bytes: u64,
}

impl Findings {
    fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing_from_manifest == 0 && self.dangling_in_manifest == 0
    }
}

pub fn run(args: FsckArgs) -> i32 {
    match check(&args) {
        Ok(findings) => {
            print(&findings, args.json);
            if findings.ok() {
                0
            } else {
                1
            }
        }
        Err(message) => {
            eprintln!("nectar fsck: {message}");
            2
        }
    }
}

fn check(args: &FsckArgs) -> Result<Findings, String> {
    let data_dir = &args.data.data_dir;
    if !data_dir.is_dir() {
        return Err(format!("data directory {} not found", data_dir.display()));
    }
    let store = Store::open(data_dir, StoreConfig::default()).map_err(|error| format!("failed to open the store: {error}"))?;
    let manifest = Manifest::open(&data_dir.join("manifest.sqlite3"), ManifestConfig::default())
        .map_err(|error| format!("failed to open the manifest: {error}"))?;

    let report = store.check().map_err(|error| format!("failed to check the segments: {error}"))?;
    let mut findings = Findings {
        segments: report.segments,
        records: report.records,
        bytes: report.bytes,
        torn_tail_bytes: report.torn_tail_bytes,
        corrupt: report
            .corrupt
            .iter()
            .map(|(segment, offset, why)| format!("segment {segment} offset {offset}: {why}"))
            .collect(),
        ..Findings::default()
    };

    let valid: HashSet<Location> = store
        .scan_from(&Default::default())
        .map_err(|error| format!("failed to scan the segments: {error}"))?
        .into_iter()
        .map(|scanned| scanned.location)
        .collect();
    let indexed = manifest.instance_locations().map_err(|error| format!("failed to read the manifest: {error}"))?;
    let replaced = manifest.replaced_locations().map_err(|error| format!("failed to read the manifest: {error}"))?;
    findings.instances = indexed.len() as u64;
    findings.replaced = replaced.len() as u64;

    let deleted = manifest.deleted_locations().map_err(|error| format!("failed to read the manifest: {error}"))?;
    let mut referenced: HashSet<Location> = replaced.into_iter().chain(deleted).collect();
    for (sop_instance_uid, location, _sequence) in &indexed {
        if !valid.contains(location) {
            findings.dangling_in_manifest += 1;
            findings.corrupt.push(format!("instance {sop_instance_uid} points at no valid record ({location:?})"));
        }
        referenced.insert(*location);
    }
    findings.missing_from_manifest = valid.iter().filter(|location| !referenced.contains(location)).count() as u64;

    let _ = manifest.close();
    let _ = store.close();
    Ok(findings)
}

fn print(findings: &Findings, json: bool) {
    if json {
        let corrupt: Vec<String> = findings.corrupt.iter().map(|line| json_string(line)).collect();
        println!(
            "{{\"ok\":{},\"segments\":{},\"records\":{},\"bytes\":{},\"instances\":{},\"replaced\":{},\"missing_from_manifest\":{},\"dangling_in_manifest\":{},\"torn_tail_bytes\":{},\"corrupt\":[{}]}}",
            findings.ok(),
            findings.segments,
            findings.records,
            findings.bytes,
            findings.instances,
            findings.replaced,
            findings.missing_from_manifest,
            findings.dangling_in_manifest,
            findings.torn_tail_bytes,
            corrupt.join(",")
        );
        return;
    }
    println!("segments:              {}", findings.segments);
    println!("records:               {} ({} bytes)", findings.records, findings.bytes);
    println!("instances:             {}", findings.instances);
    println!("replaced instances:    {}", findings.replaced);
    println!("missing from manifest: {}", findings.missing_from_manifest);
    println!("dangling in manifest:  {}", findings.dangling_in_manifest);
    println!("torn tail bytes:       {}", findings.torn_tail_bytes);
    for line in &findings.corrupt {
        println!("damage: {line}");
    }
    println!("{}", if findings.ok() { "clean" } else { "DAMAGED" });
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
