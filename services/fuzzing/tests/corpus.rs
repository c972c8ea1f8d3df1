//! The fuzz targets' smoke run in the test command: every file of
//! `fuzz/corpus/<target>/` (seeds and the minimised corpus the long runs
//! grew) and of `fuzz/regressions/<target>/` (inputs that once found a
//! bug, kept with the fix) goes through the target's function, in the
//! workspace's ordinary build. A panic names the target and the file.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Replays every corpus and regression file of `name`; returns how many
/// corpus files there were.
fn replay(name: &str) -> usize {
    let target = poz_fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {name}"));
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("target {name} panicked on {}: {msg}", path.display());
        }
    }
    corpus.len()
}

#[test]
fn every_target_has_a_corpus_and_the_fuzz_crate_builds_it() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in poz_fuzzing::TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name} is empty"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no binary {name}"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
}

#[test]
fn record_corpus() {
    replay("record");
}

#[test]
fn entry_corpus() {
    replay("entry");
}

#[test]
fn frame_corpus() {
    replay("frame");
}

#[test]
fn codec_corpus() {
    replay("codec");
}

#[test]
fn noise_corpus() {
    replay("noise");
}

#[cfg(feature = "grpc")]
#[test]
fn grpc_corpus() {
    replay("grpc");
}
