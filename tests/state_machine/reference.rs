//! The reference side: `pb_backups_spec::model` as a proptest `ReferenceStateMachine`, and
//! the strategies that draw ops for it.
//!
//! Keys come from a small pool so that names collide, plus stand-ins for generated names
//! and keys that can never be backups. While a restore runs, creates are drawn more often:
//! "create while a restore runs" is the refusal a broken coordinator lets through.

use pb_backups_spec::model::{self, Active, Caller, Op, State, AUTO_KEY_PREFIX, MAX_KEY_CHARS};
use proptest::prelude::*;
use proptest::sample::select;
use proptest_state_machine::ReferenceStateMachine;

pub struct Reference;

const KEYS: [&str; 3] = ["a.zip", "b.zip", "c.zip"];
const STAND_INS: [&str; 2] = ["generated-0.zip", "generated-1.zip"];
/// For delete, restore and download: keys no backup can have.
const IMPOSSIBLE: [&str; 2] = ["..", "a/b.zip"];
/// For uploads: file names whose base name is not a possible key.
const BAD_UPLOAD_KEYS: [&str; 2] = ["no-extension", ".hidden.zip"];

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        10 => Just(Caller::Superuser),
        1 => Just(Caller::User),
        1 => Just(Caller::Anonymous),
    ]
}

fn pool_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&KEYS[..]),
        2 => select(&STAND_INS[..]),
    ]
    .prop_map(str::to_string)
}

/// A key for delete, restore and download.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => pool_key(),
        1 => select(&IMPOSSIBLE[..]).prop_map(str::to_string),
    ]
}

fn upload_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => pool_key(),
        1 => select(&BAD_UPLOAD_KEYS[..]).prop_map(str::to_string),
    ]
}

/// The key of a scheduled backup made at one of a few minutes (so that they collide too), as
/// the server names them for its app name `pb-backups`.
fn scheduled_key() -> impl Strategy<Value = String> {
    (0u32..4).prop_map(|minute| format!("{AUTO_KEY_PREFIX}pb_backups_202601010{minute}0000.zip"))
}

/// A create name: `None` and `""` ask for a generated one.
fn name() -> impl Strategy<Value = Option<String>> {
    let too_long = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 3));
    prop_oneof![
        6 => select(&KEYS[..]).prop_map(|k| Some(k.to_string())),
        3 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("Bad Name.zip".to_string())),
        1 => Just(Some(too_long)),
    ]
}

impl ReferenceStateMachine for Reference {
    type State = State;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<State> {
        Just(State::default()).boxed()
    }

    fn transitions(state: &State) -> BoxedStrategy<Op> {
        // While a restore runs, most draws are creates (see the module doc).
        let (create_weight, restore_weight) = match state.active {
            Active::Restoring(_) => (8, 1),
            _ => (3, 1),
        };
        let mut ops: Vec<(u32, BoxedStrategy<Op>)> = vec![
            (1, caller().prop_map(|caller| Op::List { caller }).boxed()),
            (create_weight, (caller(), name()).prop_map(|(caller, name)| Op::Create { caller, name }).boxed()),
            (2, (caller(), name()).prop_map(|(caller, name)| Op::CreateHeld { caller, name }).boxed()),
            (
                3,
                (caller(), upload_key(), prop::bool::weighted(0.85))
                    .prop_map(|(caller, key, valid_zip)| Op::Upload { caller, key, valid_zip })
                    .boxed(),
            ),
            (3, (caller(), key()).prop_map(|(caller, key)| Op::Delete { caller, key }).boxed()),
            (restore_weight, (caller(), key()).prop_map(|(caller, key)| Op::RestoreAccepted { caller, key }).boxed()),
            (2, (caller(), key()).prop_map(|(caller, key)| Op::Download { caller, key }).boxed()),
            (2, (scheduled_key(), 1..=2usize).prop_map(|(key, keep)| Op::ScheduledRun { key, keep }).boxed()),
        ];
        // A release is drawn only when something is held.
        match state.active {
            Active::Idle => {}
            Active::Creating(_) => ops.push((4, Just(Op::FinishCreate).boxed())),
            Active::Restoring(_) => ops.push((3, Just(Op::FinishRestore).boxed())),
        }
        prop::strategy::Union::new_weighted(ops)
        .boxed()
    }

    fn apply(state: State, op: &Op) -> State {
        model::step(&state, op).0
    }

    fn preconditions(state: &State, op: &Op) -> bool {
        op.precondition(state)
    }
}
