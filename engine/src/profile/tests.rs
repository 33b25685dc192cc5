use std::path::{Path, PathBuf};

use super::*;

const SAMPLE: &str = "\
name: sample
cores: 2
memory_mib: 2048
workers: 2
max_associations: 64
segment_size_mib: 128
max_pdu_length: 1048576
commit:
  max_batch: 256
  queue: 1024
manifest:
  max_batch: 512
  queue: 4096
measured:
  small_8_associations_instances_per_s: null
  large_4_associations_mb_per_s: null
  date: null
  machine: null
  command: null
";

fn repo_profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(PROFILE_DIR_NAME)
}

#[test]
fn sample_parses() {
    let profile = Profile::from_yaml(SAMPLE, Path::new("sample.yaml")).unwrap();
    assert_eq!(profile.name, "sample");
    assert_eq!(profile.cores, 2);
    assert_eq!(profile.memory_mib, 2048);
    assert_eq!(profile.workers, 2);
    assert_eq!(profile.max_associations, 64);
    assert_eq!(profile.segment_size_mib, 128);
    assert_eq!(profile.max_pdu_length, 1 << 20);
    assert_eq!(profile.commit, Batching { max_batch: 256, queue: 1024 });
    assert_eq!(profile.manifest, Batching { max_batch: 512, queue: 4096 });
    assert_eq!(profile.measured, Measured::default());
}

#[test]
fn measured_values_and_extra_keys() {
    let text = SAMPLE
        .replace("small_8_associations_instances_per_s: null", "small_8_associations_instances_per_s: 812.5")
        .replace("date: null", "date: 2026-11-01")
        .replace("command: null", "command: bench/compare --profile sample\n  runs: 3");
    let profile = Profile::from_yaml(&text, Path::new("sample.yaml")).unwrap();
    assert_eq!(profile.measured.small_8_associations_instances_per_s, Some(812.5));
    assert_eq!(profile.measured.date.as_deref(), Some("2026-11-01"));
    assert_eq!(profile.measured.command.as_deref(), Some("bench/compare --profile sample"));
}

#[test]
fn unknown_key_rejected() {
    let text = SAMPLE.replace("workers: 2", "workers: 2\nworker: 3");
    let error = Profile::from_yaml(&text, Path::new("typo.yaml")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("typo.yaml"), "{message}");
    assert!(message.contains("worker"), "{message}");
}

#[test]
fn missing_key_rejected() {
    let text = SAMPLE.replace("max_associations: 64\n", "");
    let message = Profile::from_yaml(&text, Path::new("short.yaml")).unwrap_err().to_string();
    assert!(message.contains("max_associations"), "{message}");
}

#[test]
fn zero_values_rejected() {
    for (from, key) in [
        ("cores: 2", "cores"),
        ("workers: 2", "workers"),
        ("max_associations: 64", "max_associations"),
        ("segment_size_mib: 128", "segment_size_mib"),
        ("queue: 1024", "commit.queue"),
        ("max_batch: 512", "manifest.max_batch"),
    ] {
        let to = format!("{}: 0", from.split(':').next().unwrap());
        let text = SAMPLE.replacen(from, &to, 1);
        let message = Profile::from_yaml(&text, Path::new("zero.yaml")).unwrap_err().to_string();
        assert!(message.contains(key), "{key}: {message}");
    }
}

#[test]
fn negative_value_rejected() {
    let text = SAMPLE.replace("cores: 2", "cores: -1");
    assert!(Profile::from_yaml(&text, Path::new("negative.yaml")).is_err());
}

#[test]
fn unlimited_pdu_allowed() {
    let text = SAMPLE.replace("max_pdu_length: 1048576", "max_pdu_length: 0");
    let profile = Profile::from_yaml(&text, Path::new("unlimited.yaml")).unwrap();
    assert_eq!(profile.anonymous_memory_budget_mib(), None);
}

#[test]
fn memory_budget() {
    assert_eq!(anonymous_memory_budget_mib(16, 1 << 20), Some(64 + 32));
    assert_eq!(anonymous_memory_budget_mib(256, 1 << 20), Some(64 + 512));
    assert_eq!(anonymous_memory_budget_mib(1, 16384), Some(64 + 1));
    assert_eq!(anonymous_memory_budget_mib(4, 0), None);
}

#[test]
fn path_or_name() {
    assert!(is_path_argument("./small.yaml"));
    assert!(is_path_argument("/etc/nectar/custom.yaml"));
    assert!(is_path_argument("custom.yaml"));
    assert!(is_path_argument("dir/custom"));
    assert!(!is_path_argument("small"));
    assert!(!is_path_argument("large-ssd"));
}

#[test]
fn search_order() {
    let exe = Path::new("/repo/target/release/nectar");
    let dirs = search_dirs(Some("/etc/nectar/profiles"), Some(exe));
    assert_eq!(
        dirs,
        vec![
            PathBuf::from("./capacity-profiles"),
            PathBuf::from("/etc/nectar/profiles"),
            PathBuf::from("/repo/capacity-profiles"),
        ]
    );
    assert_eq!(search_dirs(Some(""), None), vec![PathBuf::from("./capacity-profiles")]);
}

#[test]
fn name_found_in_first_dir_that_has_it() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    std::fs::write(second.path().join("sample.yaml"), SAMPLE).unwrap();
    let other = SAMPLE.replace("name: sample", "name: sample-first");
    std::fs::write(first.path().join("other.yaml"), &other).unwrap();

    let dirs = vec![first.path().to_owned(), second.path().to_owned()];
    let loaded = load_from("sample", &dirs).unwrap();
    assert_eq!(loaded.profile.name, "sample");
    assert_eq!(loaded.path, std::fs::canonicalize(second.path().join("sample.yaml")).unwrap());

    std::fs::write(first.path().join("sample.yaml"), &other).unwrap();
    assert_eq!(load_from("sample", &dirs).unwrap().profile.name, "sample-first");
}

#[test]
fn missing_name_lists_available() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small.yaml"), SAMPLE).unwrap();
    std::fs::write(dir.path().join("large.yaml"), SAMPLE).unwrap();

    let error = load_from("huge", &[dir.path().to_owned()]).unwrap_err();
    assert!(matches!(error, ProfileError::NotFound { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\"huge\""), "{message}");
    assert!(message.contains("huge.yaml"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains("large, small"), "{message}");
}

#[test]
fn invalid_name_rejected() {
    let error = load_from("..", &[repo_profiles()]).unwrap_err();
    assert!(matches!(error, ProfileError::InvalidName(_)), "{error:?}");
}

#[test]
fn missing_path_reported() {
    let error = load_from("/nonexistent/custom.yaml", &[]).unwrap_err();
    assert!(matches!(error, ProfileError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/custom.yaml"), "{error}");
}

#[test]
fn shipped_profiles_valid() {
    let expected = [("small", 1, 512, 16), ("medium", 2, 2048, 64), ("large", 4, 8192, 256)];
    for (name, cores, memory_mib, max_associations) in expected {
        let loaded = load_from(name, &[repo_profiles()]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let profile = loaded.profile;
        assert_eq!(profile.name, name);
        assert_eq!(profile.cores, cores, "{name}");
        assert_eq!(profile.memory_mib, memory_mib, "{name}");
        assert_eq!(profile.max_associations, max_associations, "{name}");
        assert!(profile.workers <= profile.cores, "{name}: more workers than cores");

        let budget = profile.anonymous_memory_budget_mib().expect("shipped profiles bound the PDU size");
        assert!(budget <= profile.memory_mib / 2, "{name}: anonymous budget {budget} MiB leaves too little page cache");
        assert!(profile.commit.queue >= profile.max_associations, "{name}: commit queue smaller than the association limit");
        assert!(profile.commit.max_batch <= profile.commit.queue, "{name}");
        assert!(profile.manifest.max_batch <= profile.manifest.queue, "{name}");
    }
}
