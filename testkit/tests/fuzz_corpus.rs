//! The fuzz corpora kept in `fuzz/corpus/<target>/` (and the genuine seeds), replayed
//! through the fuzz targets' bodies as ordinary tests: an input that once crashed a target
//! stays a regression test, without a sanitizer build in the default suite.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tandem_testkit::fuzz::{TARGETS, seeds};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect()
}

#[test]
fn every_target_has_seeds_and_survives_them() {
    let seeds = seeds();
    for (name, f) in TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|(t, _)| t == name).collect();
        assert!(!mine.is_empty(), "target {name} has no seed");
        for (_, input) in mine {
            f(input);
        }
    }
}

#[test]
fn every_corpus_input_replays_without_a_crash() {
    let mut total = 0;
    for (name, f) in TARGETS {
        for (path, input) in corpus(name) {
            let result = std::panic::catch_unwind(|| f(&input));
            assert!(result.is_ok(), "{name}: {} crashed the target", path.display());
            total += 1;
        }
    }
    println!("replayed {total} corpus inputs over {} targets", TARGETS.len());
}
