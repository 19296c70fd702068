//! Tests of the reference model of exclusivity.

use super::*;

const SU: Caller = Caller::Superuser;

fn list() -> Op {
    Op::List { caller: SU }
}
fn create(name: &str) -> Op {
    Op::Create {
        caller: SU,
        name: Some(name.to_string()),
    }
}
fn create_held(name: Option<&str>) -> Op {
    Op::CreateHeld {
        caller: SU,
        name: name.map(str::to_string),
    }
}
fn upload(key: &str, valid_zip: bool) -> Op {
    Op::Upload {
        caller: SU,
        key: key.to_string(),
        valid_zip,
    }
}
fn delete(key: &str) -> Op {
    Op::Delete {
        caller: SU,
        key: key.to_string(),
    }
}
fn restore(key: &str) -> Op {
    Op::RestoreAccepted {
        caller: SU,
        key: key.to_string(),
    }
}
fn download(key: &str) -> Op {
    Op::Download {
        caller: SU,
        key: key.to_string(),
    }
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|key| key.to_string()).collect()
}

fn creating(stored: &[&str], key: &str) -> State {
    State {
        active: Active::Creating(key.to_string()),
        ..State::with_keys(stored.iter().copied())
    }
}

fn restoring(stored: &[&str], key: &str) -> State {
    State {
        active: Active::Restoring(key.to_string()),
        ..State::with_keys(stored.iter().copied())
    }
}

/// Runs `ops` from `state`, checking the invariants after each step.
fn run(state: &State, ops: &[Op]) -> (State, Vec<Outcome>) {
    let mut state = state.clone();
    let mut outcomes = Vec::new();
    for op in ops {
        let (next, outcome) = step(&state, op);
        assert_eq!(next.check(), Ok(()), "after {op:?}");
        state = next;
        outcomes.push(outcome);
    }
    (state, outcomes)
}

fn assert_refused(state: &State, op: &Op, error: ErrorKind) {
    let (next, outcome) = step(state, op);
    assert_eq!(outcome.error, Some(error), "{op:?} in {state:?}");
    assert_eq!(outcome.status, error.status());
    assert_eq!(&next, state, "a refusal changes nothing: {op:?}");
}

/// One request of each kind, by `caller`, about `key`.
fn every_request() -> Vec<fn(Caller, &str) -> Op> {
    vec![
        |caller, _| Op::List { caller },
        |caller, key| Op::CreateHeld {
            caller,
            name: Some(key.to_string()),
        },
        |caller, key| Op::Create {
            caller,
            name: Some(key.to_string()),
        },
        |caller, _| Op::Create { caller, name: None },
        |caller, key| Op::Upload {
            caller,
            key: key.to_string(),
            valid_zip: true,
        },
        |caller, key| Op::Delete {
            caller,
            key: key.to_string(),
        },
        |caller, key| Op::RestoreAccepted {
            caller,
            key: key.to_string(),
        },
        |caller, key| Op::Download {
            caller,
            key: key.to_string(),
        },
    ]
}

// R4

#[test]
fn anonymous_gets_401_and_user_403_before_anything_else() {
    let states = [
        State::with_keys(["a.zip"]),
        creating(&["a.zip"], "b.zip"),
        restoring(&["a.zip"], "a.zip"),
    ];
    for state in &states {
        for make in every_request() {
            for key in ["a.zip", "new.zip", "a/../b.zip"] {
                assert_refused(
                    state,
                    &make(Caller::Anonymous, key),
                    ErrorKind::Unauthorized,
                );
                assert_refused(state, &make(Caller::User, key), ErrorKind::Forbidden);
            }
        }
    }
}

// R11, R15

#[test]
fn create_stores_a_valid_new_name() {
    let (state, outcomes) = run(&State::default(), &[create("my_backup-1.zip"), list()]);
    assert_eq!(
        outcomes[0],
        Outcome {
            status: 204,
            error: None,
            listed: None,
            held: false,
            scheduled: None,
        }
    );
    assert_eq!(outcomes[1].listed, Some(keys(&["my_backup-1.zip"])));
    assert_eq!(state.active, Active::Idle);
}

#[test]
fn create_is_refused_as_busy_first_even_with_a_bad_or_taken_name() {
    for state in [
        creating(&["a.zip"], "b.zip"),
        restoring(&["a.zip"], "a.zip"),
    ] {
        for name in ["fresh.zip", "BAD.zip", "a.zip", "b.zip", &"x".repeat(200)] {
            assert_refused(&state, &create(name), ErrorKind::BusyCreate);
            assert_refused(&state, &create_held(Some(name)), ErrorKind::BusyCreate);
        }
        assert_refused(
            &state,
            &Op::Create {
                caller: SU,
                name: None,
            },
            ErrorKind::BusyCreate,
        );
    }
}

#[test]
fn create_refuses_names_not_of_the_pattern() {
    let state = State::with_keys(["a.zip"]);
    for name in [
        "A.zip",
        "a.ZIP",
        "a",
        ".zip",
        "a b.zip",
        "a.zip.bak",
        "a.b.zip",
        "ü.zip",
        "a/b.zip",
        "a.zip\n",
    ] {
        assert_refused(&state, &create(name), ErrorKind::NameInvalid);
    }
}

#[test]
fn create_checks_length_before_pattern_and_allows_150() {
    let state = State::default();
    let longest = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 4));
    assert_eq!(step(&state, &create(&longest)).1.status, 204);
    let too_long = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 3));
    assert_refused(&state, &create(&too_long), ErrorKind::NameTooLong);
    // Both too long and off-pattern: the length error wins.
    assert_refused(
        &state,
        &create(&"A".repeat(MAX_KEY_CHARS + 1)),
        ErrorKind::NameTooLong,
    );
}

#[test]
fn create_checks_pattern_before_existence() {
    // "A.zip" is a possible key (an upload may store it) but not a valid name.
    let state = State::with_keys(["A.zip"]);
    assert_refused(&state, &create("A.zip"), ErrorKind::NameInvalid);
}

#[test]
fn create_refuses_a_stored_name() {
    assert_refused(
        &State::with_keys(["a.zip"]),
        &create("a.zip"),
        ErrorKind::NameExists,
    );
}

#[test]
fn empty_or_absent_name_gets_distinct_generated_keys() {
    let (state, _) = run(
        &State::default(),
        &[
            Op::Create {
                caller: SU,
                name: None,
            },
            Op::Create {
                caller: SU,
                name: Some(String::new()),
            },
        ],
    );
    assert_eq!(state.keys, keys(&["generated-0.zip", "generated-1.zip"]));
    for key in &state.keys {
        assert!(is_generated_key(key));
        assert_eq!(check_name(key), Ok(()));
    }
    // A later create may name the generated key, and finds it taken.
    assert_refused(&state, &create("generated-0.zip"), ErrorKind::NameExists);
}

#[test]
fn generated_key_recognition() {
    assert!(is_generated_key(&generated_key(42)));
    for key in [
        "generated-.zip",
        "generated-1a.zip",
        "generated-1.zip.zip",
        "pb_backup_1.zip",
    ] {
        assert!(!is_generated_key(key), "{key}");
    }
}

// R13, R15, R16: a held create.

#[test]
fn held_create_is_taken_but_not_listed_until_finished() {
    let (state, outcomes) = run(&State::default(), &[create_held(Some("b.zip")), list()]);
    assert_eq!(
        outcomes[0],
        Outcome {
            status: 204,
            error: None,
            listed: None,
            held: true,
            scheduled: None,
        }
    );
    assert_eq!(state.active, Active::Creating("b.zip".to_string()));
    assert_eq!(outcomes[1].listed, Some(BTreeSet::new()));
    assert_refused(&state, &download("b.zip"), ErrorKind::NotFound);
    assert_refused(&state, &upload("b.zip", true), ErrorKind::NameExists);

    let (state, outcomes) = run(&state, &[Op::FinishCreate, list(), download("b.zip")]);
    assert_eq!(outcomes[0], Outcome::success(204));
    assert_eq!(outcomes[1].listed, Some(keys(&["b.zip"])));
    assert_eq!(outcomes[2].status, 200);
    assert_eq!(state.active, Active::Idle);
}

#[test]
fn held_create_without_name_creates_the_generated_key() {
    let (state, outcomes) = run(
        &State::default(),
        &[
            create_held(None),
            upload("generated-0.zip", true),
            Op::FinishCreate,
        ],
    );
    assert_eq!(outcomes[1].error, Some(ErrorKind::NameExists));
    assert_eq!(state.keys, keys(&["generated-0.zip"]));
}

#[test]
fn generated_keys_skip_keys_already_taken() {
    let start = creating(&["generated-0.zip"], "generated-1.zip");
    let (state, _) = run(
        &start,
        &[
            Op::FinishCreate,
            Op::Create {
                caller: SU,
                name: None,
            },
        ],
    );
    assert_eq!(
        state.keys,
        keys(&["generated-0.zip", "generated-1.zip", "generated-2.zip"])
    );
}

#[test]
fn held_create_refuses_a_stored_name_and_stays_idle() {
    assert_refused(
        &State::with_keys(["a.zip"]),
        &create_held(Some("a.zip")),
        ErrorKind::NameExists,
    );
}

// R18, R19

#[test]
fn upload_goes_on_while_a_create_or_restore_runs() {
    for state in [
        creating(&["a.zip"], "b.zip"),
        restoring(&["a.zip"], "a.zip"),
    ] {
        let (next, outcome) = step(&state, &upload("c.zip", true));
        assert_eq!(outcome, Outcome::success(204));
        assert!(next.keys.contains("c.zip"));
        assert_eq!(next.active, state.active);
    }
}

#[test]
fn upload_checks_key_then_zip_then_existence() {
    let state = creating(&["a.zip"], "b.zip");
    // An impossible key is refused even when the file is not a zip either.
    for key in [
        "", "a", ".a.zip", "a/b.zip", "a\\b.zip", "a\0.zip", "a\t.zip", "a.ZIP",
    ] {
        assert_refused(&state, &upload(key, false), ErrorKind::KeyInvalid);
    }
    // Not a zip, under a taken key: the zip error wins.
    assert_refused(&state, &upload("a.zip", false), ErrorKind::InvalidZip);
    assert_refused(&state, &upload("b.zip", false), ErrorKind::InvalidZip);
    assert_refused(&state, &upload("a.zip", true), ErrorKind::NameExists);
    assert_refused(&state, &upload("b.zip", true), ErrorKind::NameExists);
}

#[test]
fn upload_accepts_possible_keys_that_are_not_valid_names() {
    let (next, outcome) = step(&State::default(), &upload("My Backup (1).zip", true));
    assert_eq!(outcome.status, 204);
    assert!(next.keys.contains("My Backup (1).zip"));
}

// R9, R20

#[test]
fn delete_of_an_impossible_key_is_404() {
    let long = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 3));
    let state = State::with_keys(["a.zip"]);
    for key in [
        "",
        "..",
        "a",
        ".a.zip",
        "a/b.zip",
        "../a.zip",
        "a\\b.zip",
        "a\0.zip",
        "a\u{7f}.zip",
        "a.zip/",
        long.as_str(),
    ] {
        assert_refused(&state, &delete(key), ErrorKind::NotFound);
    }
}

#[test]
fn delete_of_the_active_key_is_busy_before_not_found() {
    // The key being created is not stored yet: busy, not 404.
    assert_refused(
        &creating(&[], "b.zip"),
        &delete("b.zip"),
        ErrorKind::BusyDeleteRestore,
    );
    assert_refused(
        &restoring(&["a.zip"], "a.zip"),
        &delete("a.zip"),
        ErrorKind::BusyDeleteRestore,
    );
}

#[test]
fn delete_of_other_keys_goes_on_while_busy() {
    for state in [
        creating(&["a.zip", "c.zip"], "b.zip"),
        restoring(&["a.zip", "c.zip"], "a.zip"),
    ] {
        let (next, outcome) = step(&state, &delete("c.zip"));
        assert_eq!(outcome, Outcome::success(204));
        assert!(!next.keys.contains("c.zip"));
        assert_eq!(next.active, state.active);
        assert_refused(&next, &delete("c.zip"), ErrorKind::NotFound);
    }
}

#[test]
fn delete_removes_a_stored_key() {
    let (next, outcome) = step(&State::with_keys(["a.zip", "b.zip"]), &delete("a.zip"));
    assert_eq!(outcome.status, 204);
    assert_eq!(next.keys, keys(&["b.zip"]));
}

// R21, R23

#[test]
fn restore_checks_key_then_busy_then_existence() {
    let busy = creating(&["a.zip"], "b.zip");
    assert_refused(&busy, &restore("a/b.zip"), ErrorKind::NotFound);
    assert_refused(&busy, &restore("missing.zip"), ErrorKind::BusyDeleteRestore);
    assert_refused(&busy, &restore("a.zip"), ErrorKind::BusyDeleteRestore);
    assert_refused(
        &restoring(&["a.zip"], "a.zip"),
        &restore("a.zip"),
        ErrorKind::BusyDeleteRestore,
    );
    assert_refused(
        &State::with_keys(["a.zip"]),
        &restore("missing.zip"),
        ErrorKind::NotFound,
    );
}

#[test]
fn restore_runs_until_finished_and_keeps_the_keys() {
    let start = State::with_keys(["a.zip", "b.zip"]);
    let (state, outcomes) = run(&start, &[restore("a.zip"), download("a.zip")]);
    assert_eq!(outcomes[0], Outcome::success(204));
    assert_eq!(outcomes[1].status, 200);
    assert_eq!(state.active, Active::Restoring("a.zip".to_string()));
    assert_refused(&state, &create("c.zip"), ErrorKind::BusyCreate);

    let (state, outcomes) = run(&state, &[Op::FinishRestore, list()]);
    assert_eq!(outcomes[0].status, 200);
    assert_eq!(state.active, Active::Idle);
    assert_eq!(outcomes[1].listed, Some(start.keys.clone()));
    assert_eq!(step(&state, &create("c.zip")).1.status, 204);
}

// R25

#[test]
fn download_needs_a_stored_key() {
    let state = creating(&["a.zip"], "b.zip");
    assert_eq!(step(&state, &download("a.zip")).1, Outcome::success(200));
    assert_refused(&state, &download("b.zip"), ErrorKind::NotFound);
    assert_refused(&state, &download("missing.zip"), ErrorKind::NotFound);
    assert_refused(&state, &download("../a.zip"), ErrorKind::NotFound);
}

// Preconditions and invariants.

#[test]
fn releases_need_something_held() {
    for (state, op) in [
        (State::default(), Op::FinishCreate),
        (State::default(), Op::FinishRestore),
        (restoring(&["a.zip"], "a.zip"), Op::FinishCreate),
        (creating(&[], "b.zip"), Op::FinishRestore),
    ] {
        assert!(!op.precondition(&state));
        assert_eq!(step(&state, &op), (state.clone(), Outcome::NOTHING));
    }
    assert!(Op::FinishCreate.precondition(&creating(&[], "b.zip")));
    assert!(Op::FinishRestore.precondition(&restoring(&["a.zip"], "a.zip")));
}

#[test]
fn check_rejects_broken_states() {
    assert!(creating(&["b.zip"], "b.zip").check().is_err());
    assert!(creating(&[], "b").check().is_err());
    assert!(restoring(&[], "a.zip").check().is_err());
    assert!(State::with_keys(["../a.zip"]).check().is_err());
    assert_eq!(creating(&["a.zip"], "b.zip").check(), Ok(()));
    assert_eq!(restoring(&["a.zip"], "a.zip").check(), Ok(()));
}

#[test]
fn every_sequence_of_four_steps_keeps_the_invariants() {
    let alphabet = [
        list(),
        create("a.zip"),
        create_held(Some("b.zip")),
        create_held(None),
        Op::FinishCreate,
        upload("a.zip", true),
        upload("b.zip", true),
        upload("generated-0.zip", true),
        delete("a.zip"),
        delete("b.zip"),
        delete("generated-0.zip"),
        restore("a.zip"),
        restore("b.zip"),
        Op::FinishRestore,
    ];
    let mut frontier = vec![State::default()];
    for _ in 0..4 {
        let mut next_frontier = Vec::new();
        for state in &frontier {
            for op in &alphabet {
                let (next, outcome) = step(state, op);
                assert_eq!(next.check(), Ok(()), "{op:?} from {state:?}");
                if let Some(error) = outcome.error {
                    assert_eq!(&next, state, "refused {op:?} changed the state");
                    assert_eq!(outcome.status, error.status());
                }
                next_frontier.push(next);
            }
        }
        next_frontier.sort_by_key(|s| format!("{s:?}"));
        next_frontier.dedup();
        frontier = next_frontier;
    }
}

// Links to the catalog.

#[test]
fn documented_errors_point_at_bodies_with_the_same_message() {
    let cases = [
        (
            Op::List {
                caller: Caller::Anonymous,
            },
            ErrorKind::Unauthorized,
        ),
        (
            Op::Delete {
                caller: Caller::User,
                key: "a.zip".into(),
            },
            ErrorKind::Forbidden,
        ),
        (create("a.zip"), ErrorKind::BusyCreate),
        (delete("b.zip"), ErrorKind::BusyDeleteRestore),
        (restore("a.zip"), ErrorKind::BusyDeleteRestore),
        (download("missing.zip"), ErrorKind::NotFound),
        (upload("c.zip", false), ErrorKind::InvalidZip),
    ];
    let state = creating(&["a.zip"], "b.zip");
    for (op, error) in cases {
        let (_, outcome) = step(&state, &op);
        assert_eq!(outcome.error, Some(error), "{op:?}");
        let documented = outcome.documented(&op).expect("a documented response");
        for lang in Lang::ALL {
            let body = documented.body(lang).expect("error bodies are JSON");
            assert_eq!(
                body["message"].as_str(),
                error.message(lang),
                "{op:?} {lang:?}"
            );
        }
    }
}

#[test]
fn undocumented_errors_have_no_documented_response() {
    let state = State::with_keys(["a.zip"]);
    for op in [
        create("a.zip"),
        create("A.zip"),
        upload("a", true),
        upload("a.zip", true),
    ] {
        let (_, outcome) = step(&state, &op);
        assert!(outcome.error.is_some());
        assert_eq!(outcome.documented(&op), None, "{op:?}");
    }
}
fn scheduled(key: &str, keep: usize) -> Op {
    Op::ScheduledRun { key: key.to_string(), keep }
}

#[test]
fn scheduled_runs_keep_the_newest_of_their_own_only() {
    let (a, b, c) = ("@auto_pb_backup_x_1.zip", "@auto_pb_backup_x_2.zip", "@auto_pb_backup_x_3.zip");
    let (state, outcomes) = run(
        &State::with_keys(["manual.zip"]),
        &[scheduled(a, 2), upload("@auto_pb_backup_up.zip", true), scheduled(b, 2), scheduled(c, 2), list()],
    );
    let did = |i: usize| outcomes[i].scheduled.clone().unwrap();
    assert_eq!(did(0), Scheduled { created: true, pruned: keys(&[]) });
    // An upload under the prefix counts as one of them, by its time.
    assert_eq!(did(2), Scheduled { created: true, pruned: keys(&[a]) });
    assert_eq!(did(3), Scheduled { created: true, pruned: keys(&["@auto_pb_backup_up.zip"]) });
    assert_eq!(outcomes[4].listed, Some(keys(&["manual.zip", b, c])));
    assert_eq!(state.order, ["manual.zip", b, c]);
}

#[test]
fn a_busy_scheduled_run_is_skipped_but_still_prunes() {
    let (a, b) = ("@auto_pb_backup_x_1.zip", "@auto_pb_backup_x_2.zip");
    let start = State::with_keys([a, b]);
    let (state, outcome) = step(&creating(&[a, b], "held.zip"), &scheduled("@auto_pb_backup_x_3.zip", 1));
    assert_eq!(outcome.scheduled, Some(Scheduled { created: false, pruned: keys(&[a]) }));
    assert_eq!(state.active, Active::Creating("held.zip".into()));
    // A restore's key is spared: its delete would be refused.
    let (state, outcome) = step(&restoring(&[a, b], a), &scheduled("@auto_pb_backup_x_3.zip", 1));
    assert_eq!(outcome.scheduled, Some(Scheduled { created: false, pruned: keys(&[]) }));
    assert_eq!(state.keys, start.keys);
    // Not a request: nobody is refused it, and no status is expected.
    assert_eq!(outcome.status, 0);
    assert_eq!(scheduled("k", 1).caller(), None);
}
