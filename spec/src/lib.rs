//! The executable specification of the Backups API: the oracle that tests hold the
//! server to. It shares no code with the server and does no I/O.
//!
//! - [`catalog`]: the 27 documented responses (Chinese spec and English edition), the
//!   message texts, and each operation's method, path, summary and description.
//! - [`rules`]: our reading of the spec as numbered rules (R1..), cited by tests and code.
//! - [`model`]: the pure reference model of backup/restore exclusivity, `step(state, op)`,
//!   for the state-machine test against the live server.

pub mod catalog;
pub mod model;
pub mod rules;

pub use catalog::{
    find, for_operation, BodyKind, DocumentedResponse, Lang, Messages, Method, Operation,
    OperationDoc, RESPONSES,
};
pub use model::{step, Active, Caller, ErrorKind, Op, Outcome, State};
pub use rules::{Rule, RULES};
