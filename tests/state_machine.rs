//! Backup/restore exclusivity, proven against the live server: proptest draws sequences of
//! API calls (and releases of held creates and restores) from the reference model in
//! `pb_backups_spec::model`, runs them over HTTP against an in-process server, and checks
//! every answer and the listed keys against the model, and the data dir for leftovers.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default); the run must reach minimum
//! numbers of restores and of creates sent while one runs, in proportion to the cases. Failures are saved in
//! `proptest-regressions/state_machine.txt` and replayed first on the next run.
//! `scripts/check-broken-coordinator` runs this test against a deliberately broken
//! coordinator and expects it to fail.

mod support;

#[path = "state_machine/http.rs"]
mod http;
#[path = "state_machine/live.rs"]
mod live;
#[path = "state_machine/reference.rs"]
mod reference;
#[path = "state_machine/sut.rs"]
mod sut;

use std::sync::atomic::Ordering;

use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use reference::Reference;
use sut::{Machine, STATS};

const DEFAULT_CASES: u32 = 256;
const MAX_STEPS: usize = 30;

#[test]
fn the_server_follows_the_model() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    // The broken build's failures are expected and are not regressions to keep.
    let persistence = if cfg!(pb_broken_coordinator) {
        None
    } else {
        Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/state_machine.txt")) as _)
    };
    let config = Config {
        cases,
        failure_persistence: persistence,
        // Each case runs a server: keep shrinking within a few minutes.
        max_shrink_iters: 512,
        max_shrink_time: 180_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(&Reference::sequential_strategy(1..=MAX_STEPS), |(initial, ops, seen)| {
        Machine::test_sequential(config.clone(), initial, ops, seen);
        Ok(())
    });
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{cases} cases, {} steps, {} restores; while a restore was in flight: {} creates and {} other \
         ops answered by the old instance, {} ops not sent after it stopped",
        load(&STATS.steps),
        load(&STATS.restores),
        load(&STATS.creates_while_restoring),
        load(&STATS.others_while_restoring),
        load(&STATS.skipped_after_restart),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // A run that never got to the interesting states proves nothing: the strategy's weights
    // give several times these (about 57 restores in 256 cases).
    let (restores, creates) = (load(&STATS.restores), load(&STATS.creates_while_restoring));
    assert!(restores >= u64::from(cases / 16), "only {restores} restores in {cases} cases");
    assert!(creates >= u64::from(cases / 64), "only {creates} creates sent while a restore ran in {cases} cases");
}
