//! Writes the fuzz targets' genuine seeds into `DIR/<target>/seed-<n>` (scripts/fuzz.sh
//! starts each target's corpus with them).
#![allow(clippy::unwrap_used)]

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: write_fuzz_seeds DIR"));
    let mut n = 0;
    for (target, bytes) in tandem_testkit::fuzz::seeds() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{n:02}")), bytes).unwrap();
        n += 1;
    }
    println!("wrote {n} seeds under {}", dir.display());
}
