//! A parsed rule turned into an SQL condition over the record's own table: column names taken
//! from the table's real columns (never from the rule), every value a bound parameter, and
//! comparisons as PocketBase makes them (`~` a `LIKE` with its escapes, `null` and `''` alike).

use super::{Comparison, Filter, OpKind, Operand, RuleError};

/// A column of the record's table that rules may name, as the collection's fields list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleColumn {
    pub name: String,
    /// JSON and geo-point fields (compared through `json_extract` in PocketBase) and field types
    /// we do not know: not evaluated.
    pub opaque: bool,
}

/// A value bound to the condition's `?N` placeholders, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlParam {
    Text(String),
    Real(f64),
}

impl rusqlite::ToSql for SqlParam {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            SqlParam::Text(s) => s.to_sql(),
            SqlParam::Real(n) => n.to_sql(),
        }
    }
}

/// A condition over the table aliased `r`, with its parameters for `?{first}`, `?{first+1}`, …
#[derive(Clone, Debug, PartialEq)]
pub struct SqlCondition {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

/// An operand once resolved against the columns.
#[derive(Clone, Debug)]
enum Resolved<'a> {
    Column(&'a str),
    Param(SqlParam),
    Null,
    Bool(bool),
}

impl Resolved<'_> {
    /// PocketBase's "empty" operand: `null`, or a text parameter that is `""`.
    fn is_empty(&self) -> bool {
        matches!(self, Resolved::Null) || matches!(self, Resolved::Param(SqlParam::Text(s)) if s.is_empty())
    }

    /// PocketBase's "known non-empty" operand: a boolean, or a parameter that is not `""`.
    fn is_known_non_empty(&self) -> bool {
        matches!(self, Resolved::Bool(_)) || (matches!(self, Resolved::Param(_)) && !self.is_empty())
    }
}

/// Collects the parameters, numbering their placeholders from `first`.
struct SqlBuilder {
    params: Vec<SqlParam>,
    first: usize,
}

impl SqlBuilder {
    fn operand(&mut self, o: &Resolved<'_>) -> String {
        match o {
            Resolved::Column(name) => format!("r.\"{}\"", name.replace('"', "\"\"")),
            Resolved::Param(p) => self.param(p.clone()),
            Resolved::Null => "NULL".into(),
            Resolved::Bool(true) => "1".into(),
            Resolved::Bool(false) => "0".into(),
        }
    }

    fn param(&mut self, p: SqlParam) -> String {
        self.params.push(p);
        format!("?{}", self.first + self.params.len() - 1)
    }
}

/// Turns `filter` into a condition over the record's table (aliased `r`), with placeholders
/// numbered from `first_param`. Field names must be among `columns`.
pub fn to_sql(filter: &Filter, columns: &[RuleColumn], first_param: usize) -> Result<SqlCondition, RuleError> {
    let mut b = SqlBuilder { params: Vec::new(), first: first_param };
    let sql = build(filter, columns, &mut b)?;
    Ok(SqlCondition { sql, params: b.params })
}

fn build(filter: &Filter, columns: &[RuleColumn], b: &mut SqlBuilder) -> Result<String, RuleError> {
    match filter {
        Filter::Compare(c) => compare(c, columns, b),
        Filter::All(parts) | Filter::Any(parts) => {
            let join = if matches!(filter, Filter::All(_)) { " AND " } else { " OR " };
            let parts = parts.iter().map(|p| build(p, columns, b)).collect::<Result<Vec<_>, _>>()?;
            Ok(format!("({})", parts.join(join)))
        }
    }
}

fn resolve<'a>(o: &Operand, columns: &'a [RuleColumn]) -> Result<Resolved<'a>, RuleError> {
    Ok(match o {
        Operand::Text(s) => Resolved::Param(SqlParam::Text(s.clone())),
        Operand::Number(n) => Resolved::Param(SqlParam::Real(*n)),
        // A field by that exact name wins; only then do the keywords count (PocketBase's order).
        Operand::Name(name) => match columns.iter().find(|c| &c.name == name) {
            Some(c) if c.opaque => return Err(RuleError::Unsupported(format!("JSON or unknown-type field {name}"))),
            Some(c) => Resolved::Column(&c.name),
            None if name.eq_ignore_ascii_case("null") => Resolved::Null,
            None if name.eq_ignore_ascii_case("true") => Resolved::Bool(true),
            None if name.eq_ignore_ascii_case("false") => Resolved::Bool(false),
            None => return Err(RuleError::UnknownField(name.clone())),
        },
    })
}

fn compare(c: &Comparison, columns: &[RuleColumn], b: &mut SqlBuilder) -> Result<String, RuleError> {
    let left = resolve(&c.left, columns)?;
    let right = resolve(&c.right, columns)?;
    // On the record's own (single-column) fields an any-of operator is the plain one.
    Ok(match c.op.kind {
        OpKind::Eq => equal(true, &left, &right, b),
        OpKind::Neq => equal(false, &left, &right, b),
        OpKind::Like => like("LIKE", &left, &right, b),
        OpKind::NotLike => like("NOT LIKE", &left, &right, b),
        OpKind::Lt | OpKind::Lte | OpKind::Gt | OpKind::Gte => {
            let op = match c.op.kind {
                OpKind::Lt => "<",
                OpKind::Lte => "<=",
                OpKind::Gt => ">",
                _ => ">=",
            };
            let (l, r) = (b.operand(&left), b.operand(&right));
            format!("{l} {op} {r}")
        }
    })
}

/// `=` and `!=` with PocketBase's treatment of `null` and `""` as one "empty" value, and `IS NOT`
/// for `!=` so that a NULL column differs from a value.
fn equal(eq: bool, left: &Resolved<'_>, right: &Resolved<'_>, b: &mut SqlBuilder) -> String {
    let (op, join, null_test) = if eq { ("=", "OR", "IS NULL") } else { ("IS NOT", "AND", "IS NOT NULL") };
    let (l_empty, r_empty) = (left.is_empty(), right.is_empty());
    if l_empty && r_empty {
        return format!("'' {op} ''");
    }
    if left.is_known_non_empty() || right.is_known_non_empty() {
        let l = if l_empty { "''".to_string() } else { b.operand(left) };
        let r = if r_empty { "''".to_string() } else { b.operand(right) };
        return format!("{l} {op} {r}");
    }
    if l_empty {
        let r = b.operand(right);
        return format!("('' {op} {r} {join} {r} {null_test})");
    }
    if r_empty {
        let l = b.operand(left);
        return format!("({l} {op} '' {join} {l} {null_test})");
    }
    let (l, r) = (b.operand(left), b.operand(right));
    format!("COALESCE({l}, '') {op} COALESCE({r}, '')")
}

/// `~` / `!~`: a text or number on the right is a "contains" pattern (wrapped in `%` and its
/// `\`, `%`, `_` escaped, unless it holds a `%` of its own); anything else is wrapped in SQL.
fn like(op: &str, left: &Resolved<'_>, right: &Resolved<'_>, b: &mut SqlBuilder) -> String {
    let l = b.operand(left);
    match right {
        Resolved::Param(p) => {
            let text = match p {
                SqlParam::Text(s) => s.clone(),
                SqlParam::Real(n) => format_number(*n),
            };
            let r = b.param(SqlParam::Text(like_pattern(&text)));
            format!("{l} {op} {r} ESCAPE '\\'")
        }
        _ => {
            let r = b.operand(right);
            format!("{l} {op} ('%' || {r} || '%') ESCAPE '\\'")
        }
    }
}

/// A number as PocketBase turns it into text: shortest form, no exponent.
pub(super) fn format_number(n: f64) -> String {
    format!("{n}")
}

/// PocketBase's contains-pattern for `~`.
pub(super) fn like_pattern(value: &str) -> String {
    if contains_unescaped(value, '%') {
        return value.to_string();
    }
    format!("%{}%", escape_unescaped(value, &['\\', '%', '_']))
}

/// Whether `c` occurs not preceded by a backslash (a doubled backslash escapes nothing).
fn contains_unescaped(s: &str, c: char) -> bool {
    let mut prev = '\0';
    for ch in s.chars() {
        if ch == c && prev != '\\' {
            return true;
        }
        prev = if ch == '\\' && prev == '\\' { '\0' } else { ch };
    }
    false
}

/// Puts a backslash before each of `specials` not already preceded by one, walking from the
/// end exactly as PocketBase does (so in a run of specials the character right before an
/// escaped one is taken as its escape check, not escaped itself).
fn escape_unescaped(s: &str, specials: &[char]) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::with_capacity(chars.len() + 2);
    let mut pending = false;
    for i in (0..chars.len()).rev() {
        if pending {
            if chars[i] != '\\' {
                out.push('\\');
            }
            pending = false;
        } else if specials.contains(&chars[i]) {
            pending = true;
        }
        out.push(chars[i]);
        if i == 0 && pending {
            out.push('\\');
        }
    }
    out.iter().rev().collect()
}
