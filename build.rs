//! Build script: turns on the deliberately broken exclusivity coordinator only when
//! `PB_BROKEN_COORDINATOR` is set, which `scripts/check-broken-coordinator` alone does. A cfg
//! rather than a feature, so that `--all-features` can never build it by accident. Also
//! rebuilds when the console's assets change.

fn main() {
    // The console's assets are compiled in (rust-embed): a new or changed file rebuilds.
    println!("cargo::rerun-if-changed=src/http/console");
    println!("cargo::rustc-check-cfg=cfg(pb_broken_coordinator)");
    println!("cargo::rerun-if-env-changed=PB_BROKEN_COORDINATOR");
    if std::env::var_os("PB_BROKEN_COORDINATOR").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pb_broken_coordinator");
    }
}
