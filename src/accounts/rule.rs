//! PocketBase's filter syntax, the language of its API rules (`authRule`, `mfa.rule`): parsed
//! into a small typed AST, then turned into a parameterised SQL condition over one record's
//! own table.
//!
//! The rule comes from a data dir, so it is foreign input: its length, nesting depth and number
//! of comparisons are bounded, identifiers are looked up in the table's real columns (and the
//! SQL names taken from that list, never from the rule), and every value is a bound parameter.
//!
//! Evaluated as PocketBase evaluates them: comparisons `= != > >= < <= ~ !~` and their any-of
//! forms (`?=`, `?!=`, … which on a record's own columns mean what the plain ones mean), `&&`,
//! `||` (`&&` binds tighter, as in SQL), parentheses, `//` comments, quoted text, numbers,
//! `true`/`false`/`null`, and the record's own fields. Refused as [`RuleError::Unsupported`]
//! (so a rule holding them refuses every record): `@request.*`, `@collection.*`, the `@now`-style
//! macros, `:modifiers`, relation paths `a.b`, functions, and JSON or geo-point fields.

mod sql;

use std::fmt;

pub use sql::{to_sql, RuleColumn, SqlCondition, SqlParam};

/// Longest rule read, in bytes.
pub const MAX_RULE_LEN: usize = 16 * 1024;
/// Deepest nesting of parentheses.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons in one rule (PocketBase's own limit for a filter).
pub const MAX_COMPARISONS: usize = 200;

/// A parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Compare(Comparison),
    /// Every part holds (`&&`).
    All(Vec<Filter>),
    /// At least one part holds (`||`).
    Any(Vec<Filter>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub left: Operand,
    pub op: Op,
    pub right: Operand,
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A bare identifier: a field of the record, or else `true`, `false` or `null` (any case),
    /// decided against the collection's fields as PocketBase decides it.
    Name(String),
    Text(String),
    Number(f64),
}

/// A comparison operator. The any-of forms (`?=` …) are the same operators with `any` set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub any: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Eq,
    Neq,
    Like,
    NotLike,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("empty rule")]
    Empty,
    #[error("rule longer than {MAX_RULE_LEN} bytes")]
    TooLong,
    #[error("parentheses nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_COMPARISONS} comparisons")]
    TooManyComparisons,
    #[error("invalid rule: {0}")]
    Syntax(String),
    #[error("not evaluated here: {0}")]
    Unsupported(String),
    #[error("unknown field {0:?}")]
    UnknownField(String),
}

/// Parses a rule. An empty rule (or one of only blanks and comments) is [`RuleError::Empty`]:
/// the caller decides what no rule means (PocketBase: `""` allows everyone).
pub fn parse(rule: &str) -> Result<Filter, RuleError> {
    if rule.len() > MAX_RULE_LEN {
        return Err(RuleError::TooLong);
    }
    let tokens = tokenize(rule)?;
    if tokens.is_empty() {
        return Err(RuleError::Empty);
    }
    let mut parser = Parser { tokens: &tokens, pos: 0, comparisons: 0 };
    let filter = parser.or_expr()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(filter),
        Some(t) => Err(RuleError::Syntax(format!("expected && or ||, got {t}"))),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Number(f64),
    Op(Op),
    And,
    Or,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "identifier {s:?}"),
            Token::Text(s) => write!(f, "text {s:?}"),
            Token::Number(n) => write!(f, "number {n}"),
            Token::Op(_) => f.write_str("an operator"),
            Token::And => f.write_str("&&"),
            Token::Or => f.write_str("||"),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '@' | '#')
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_sign(c: char) -> bool {
    matches!(c, '=' | '?' | '!' | '>' | '<' | '~')
}

/// PocketBase's identifier shape: an optional `@`, `#` or `_`, then word characters, `.` and
/// `:`, ending in a word character.
fn valid_identifier(s: &str) -> bool {
    let rest = s.strip_prefix(['@', '#', '_']).unwrap_or(s);
    let rest = if rest.is_empty() { s } else { rest };
    !rest.is_empty()
        && rest.chars().all(|c| is_word(c) || c == '.' || c == ':')
        && rest.chars().last().is_some_and(is_word)
}

fn sign(s: &str) -> Option<Op> {
    let (any, s) = match s.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let kind = match s {
        "=" => OpKind::Eq,
        "!=" => OpKind::Neq,
        "~" => OpKind::Like,
        "!~" => OpKind::NotLike,
        "<" => OpKind::Lt,
        "<=" => OpKind::Lte,
        ">" => OpKind::Gt,
        ">=" => OpKind::Gte,
        _ => return None,
    };
    Some(Op { kind, any })
}

/// Splits a rule into tokens the way PocketBase's scanner does (whitespace is space, tab and
/// newline only; `\r` is an error there too).
fn tokenize(rule: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = rule.chars().collect();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let take_while = |i: &mut usize, pred: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < chars.len() && pred(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '/' if chars.get(i + 1) == Some(&'/') => {
                let start = i;
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                // Inside parentheses PocketBase scans a comment as part of the group: a
                // parenthesis or quote in it breaks the group there (measured), so refuse it.
                if depth > 0 && chars[start..i].iter().any(|c| matches!(c, '(' | ')' | '\'' | '"')) {
                    return Err(RuleError::Syntax("a parenthesis or quote in a comment inside parentheses".into()));
                }
            }
            '(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(RuleError::TooDeep);
                }
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| RuleError::Syntax("unexpected ')'".into()))?;
                tokens.push(Token::Close);
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut raw = String::new();
                let mut prev = '\0';
                let mut closed = false;
                i += 1;
                while i < chars.len() {
                    let ch = chars[i];
                    i += 1;
                    // A quote preceded by a backslash does not end the text, whatever precedes
                    // that backslash: PocketBase's scanner looks one character back only.
                    if ch == quote && prev != '\\' {
                        closed = true;
                        break;
                    }
                    raw.push(ch);
                    prev = ch;
                }
                if !closed {
                    return Err(RuleError::Syntax("unterminated quoted text".into()));
                }
                let text = raw.replace(&format!("\\{quote}"), &quote.to_string());
                // Inside parentheses PocketBase re-quotes text with `"` and scans it again, and
                // then reads some text with a `"` otherwise than at the top level (`'a\"b'`
                // becomes `a"b`): refuse rather than guess which reading it meant.
                if depth > 0 && text.contains('"') {
                    return Err(RuleError::Syntax("a double quote in text inside parentheses".into()));
                }
                tokens.push(Token::Text(text));
            }
            c if is_ident_start(c) => {
                let ident = take_while(&mut i, &|c| is_ident_start(c) || c.is_ascii_digit() || c == '.' || c == ':');
                if !valid_identifier(&ident) {
                    return Err(RuleError::Syntax(format!("invalid identifier {ident:?}")));
                }
                if chars.get(i) == Some(&'(') {
                    return Err(RuleError::Unsupported(format!("function {ident}()")));
                }
                tokens.push(Token::Ident(ident));
            }
            c if c == '-' || c.is_ascii_digit() => {
                i += 1;
                let rest = take_while(&mut i, &|c| c.is_ascii_digit() || c == '.');
                let literal = format!("{c}{rest}");
                let number = (!literal.ends_with('.'))
                    .then(|| literal.parse::<f64>().ok())
                    .flatten()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| RuleError::Syntax(format!("invalid number {literal:?}")))?;
                tokens.push(Token::Number(number));
            }
            c if is_sign(c) => {
                let literal = take_while(&mut i, &is_sign);
                let op = sign(&literal).ok_or_else(|| RuleError::Syntax(format!("invalid operator {literal:?}")))?;
                tokens.push(Token::Op(op));
            }
            '&' | '|' => {
                let literal = take_while(&mut i, &|c| c == '&' || c == '|');
                tokens.push(match literal.as_str() {
                    "&&" => Token::And,
                    "||" => Token::Or,
                    _ => return Err(RuleError::Syntax(format!("invalid join operator {literal:?}"))),
                });
            }
            other => return Err(RuleError::Syntax(format!("unexpected character {other:?}"))),
        }
    }
    if depth > 0 {
        return Err(RuleError::Syntax("missing ')'".into()));
    }
    Ok(tokens)
}

/// Recursive descent over the tokens: `or := and ('||' and)*`, `and := primary ('&&' primary)*`,
/// `primary := '(' or ')' | operand op operand`. The tokenizer has bounded the nesting, and so
/// the recursion.
struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    comparisons: usize,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or_expr(&mut self) -> Result<Filter, RuleError> {
        let mut parts = vec![self.and_expr()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Filter::Any(parts) })
    }

    fn and_expr(&mut self) -> Result<Filter, RuleError> {
        let mut parts = vec![self.primary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            parts.push(self.primary()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Filter::All(parts) })
    }

    fn primary(&mut self) -> Result<Filter, RuleError> {
        if self.peek() == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.or_expr()?;
            return match self.next() {
                Some(Token::Close) => Ok(inner),
                other => Err(RuleError::Syntax(format!("expected ')', got {}", describe(other)))),
            };
        }
        let left = self.operand("left operand")?;
        let op = match self.next() {
            Some(Token::Op(op)) => *op,
            other => return Err(RuleError::Syntax(format!("expected an operator, got {}", describe(other)))),
        };
        let right = self.operand("right operand")?;
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(RuleError::TooManyComparisons);
        }
        Ok(Filter::Compare(Comparison { left, op, right }))
    }

    fn operand(&mut self, what: &str) -> Result<Operand, RuleError> {
        match self.next() {
            Some(Token::Ident(name)) => {
                if name.starts_with('@') {
                    return Err(RuleError::Unsupported(format!("{name} (only the record's own fields are evaluated)")));
                }
                if name.contains(':') {
                    return Err(RuleError::Unsupported(format!("modifier in {name}")));
                }
                if name.contains('.') {
                    return Err(RuleError::Unsupported(format!("relation or JSON path {name}")));
                }
                Ok(Operand::Name(name.clone()))
            }
            Some(Token::Text(text)) => Ok(Operand::Text(text.clone())),
            Some(Token::Number(n)) => Ok(Operand::Number(*n)),
            other => Err(RuleError::Syntax(format!("expected {what}, got {}", describe(other)))),
        }
    }
}

fn describe(token: Option<&Token>) -> String {
    token.map_or_else(|| "the end".to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests;
