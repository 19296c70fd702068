//! The `?fields=` projection of JSON responses, with the semantics of PocketBase's picker:
//! a comma separated list of dot paths (`a`, `a.b.c`), `*` for every key at its depth, and
//! the `:excerpt(max, withEllipsis?)` modifier that turns an HTML string into a short plain
//! text. Parsing is separate from projecting so that a bad expression is refused up front.

//!
//! Response shaping for the HTTP layer, in three parts: `parse` (the expression), `project`
//! (picking the fields of a JSON value) and `excerpt` (the modifier's plain-text cut).

mod excerpt;
mod parse;
mod project;
#[cfg(test)]
mod tests;

pub use excerpt::excerpt;
pub use parse::parse;
pub use project::project;

/// A parsed `fields` expression.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// One entry per distinct path; a path listed twice keeps its last modifier.
    pub(crate) entries: Vec<Field>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) path: String,
    pub(crate) modifier: Option<Modifier>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Modifier {
    Excerpt { max: usize, ellipsis: bool },
}

impl Fields {
    /// True when the expression names no field: the value is then returned unchanged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a `fields` expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("unbalanced parenthesis or quoted expression: {0:?}")]
    Unbalanced(String),
    #[error("invalid or empty modifier expression {0:?}")]
    EmptyModifier(String),
    #[error("missing or invalid modifier {0:?}")]
    UnknownModifier(String),
    #[error("max argument is required - expected (max, withEllipsis?)")]
    ExcerptMissingMax,
    #[error("too many arguments - expected (max, withEllipsis?)")]
    ExcerptTooManyArgs,
    #[error("max argument must be a whole number > 0, got {0:?}")]
    ExcerptInvalidMax(String),
}
