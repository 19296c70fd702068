//! Times `archive::extract` alone (no fetch, no SQLite checks): `extract ZIP DEST`, where
//! DEST must not exist. For comparing extraction speed with `unzip -q` + `sync`.

use std::path::PathBuf;
use std::time::Instant;

use pb_backups::archive::{extract, ArchiveLimits};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [zip, dest] = args.as_slice() else {
        eprintln!("usage: extract ZIP DEST");
        std::process::exit(2);
    };
    std::fs::create_dir(dest).expect("create DEST");
    let started = Instant::now();
    extract(zip, dest, &ArchiveLimits::default()).expect("extract");
    println!("extract: {:.3} s", started.elapsed().as_secs_f64());
}
