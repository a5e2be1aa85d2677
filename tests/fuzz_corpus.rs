//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same functions the
//! cargo-fuzz targets call, on stable: every input the fuzzer kept, and every crash it found
//! once fixed (copied into the corpus), stays a regression test. See fuzz/README.md.

use std::path::{Path, PathBuf};

use camgate::fuzzing::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file in `dir`, sorted so a failure names the same file on every run.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_it_replays_cleanly() {
    let mut failures = Vec::new();
    for &(target, run) in TARGETS {
        let dir = corpus_dir(target);
        let files = inputs(&dir);
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("read corpus file");
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
                    .to_owned();
                failures.push(format!("{}: {why}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus input(s) fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The list of targets and the fuzz crate's binaries are the same set: a target added on one
/// side only would never be fuzzed or never be replayed.
#[test]
fn the_fuzz_crate_builds_every_target() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
    let mut in_crate: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "camgate-fuzz")
        .collect();
    let mut listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    in_crate.sort_unstable();
    listed.sort_unstable();
    assert_eq!(in_crate, listed);
}
