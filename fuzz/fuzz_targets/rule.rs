//! Access rules (`Accounts::record_matches`: `accounts::rule::parse`, `to_sql` and the query
//! they make) against a record of a temp data dir opened once.
//!
//! Checks: no panic and no error; whatever the rule, the SQL built from it is valid, so a rule
//! is `Unsupported` only because it does not parse or names what is not evaluated, never
//! because its query failed.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pb_backups::accounts::{Accounts, Collection, RuleOutcome};

struct Fixture {
    _dir: tempfile::TempDir,
    accounts: Accounts,
    record_id: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path()).unwrap();
        let user = accounts.upsert(Collection::Users, "user@example.com", "password-2").unwrap();
        Fixture { _dir: dir, accounts, record_id: user.id }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let rule = String::from_utf8_lossy(data);
    let users = f.accounts.collection("users").unwrap();
    let outcome = f.accounts.record_matches(users, &f.record_id, &rule).unwrap();
    if let RuleOutcome::Unsupported(reason) = &outcome {
        assert!(!reason.starts_with("evaluation failed"), "{rule:?}: {reason}");
    }
});
