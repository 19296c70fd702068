//! Parsing a `fields` expression: paths, `*`, and the `:excerpt(max, withEllipsis?)` modifier.

use super::{Field, Fields, FieldsError, Modifier};

/// Parses a raw `fields` query value. An empty value (or only commas and spaces) parses to
/// an empty `Fields`.
pub fn parse(raw: &str) -> Result<Fields, FieldsError> {
    let mut entries: Vec<Field> = Vec::new();
    for token in tokenize(raw, &[','], false)? {
        let token = token.trim();
        let (path, modifier) = match token.split_once(':') {
            Some((path, expr)) => (path, Some(parse_modifier(expr)?)),
            None => (token, None),
        };
        match entries.iter_mut().find(|f| f.path == path) {
            Some(existing) => existing.modifier = modifier,
            None => entries.push(Field {
                path: path.to_owned(),
                modifier,
            }),
        }
    }
    Ok(Fields { entries })
}

pub(super) fn parse_modifier(expr: &str) -> Result<Modifier, FieldsError> {
    let parts = tokenize(expr, &['(', ')', ',', ' '], true)?;
    let Some((name, args)) = parts.split_first() else {
        return Err(FieldsError::EmptyModifier(expr.to_owned()));
    };
    match *name {
        "excerpt" => parse_excerpt_args(args),
        other => Err(FieldsError::UnknownModifier(other.to_owned())),
    }
}

fn parse_excerpt_args(args: &[&str]) -> Result<Modifier, FieldsError> {
    let (max, ellipsis) = match args {
        [] => return Err(FieldsError::ExcerptMissingMax),
        [max] => (*max, None),
        [max, ellipsis] => (*max, Some(*ellipsis)),
        _ => return Err(FieldsError::ExcerptTooManyArgs),
    };
    let digits = max.strip_prefix('+').unwrap_or(max);
    let max = match digits.parse::<usize>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(FieldsError::ExcerptInvalidMax(max.to_owned())),
    };
    // Go's strconv.ParseBool truthy spellings; anything else (even garbage) means false.
    let ellipsis = matches!(ellipsis, Some("1" | "t" | "T" | "true" | "TRUE" | "True"));
    Ok(Modifier::Excerpt { max, ellipsis })
}

/// Whitespace trimmed from both ends of each token (unless it is a separator).
const TRIM_CHARS: [char; 8] = ['\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}'];

/// Splits on `separators` outside quotes (and outside parentheses unless `ignore_parens`),
/// trims each token and drops empty ones. A backslash disables the special meaning of the
/// next quote or parenthesis and is kept in the token.
pub(super) fn tokenize<'a>(
    raw: &'a str,
    separators: &[char],
    ignore_parens: bool,
) -> Result<Vec<&'a str>, FieldsError> {
    let is_trimmed = |c: char| TRIM_CHARS.contains(&c) && !separators.contains(&c);
    let mut tokens = Vec::new();
    let mut push = |token: &'a str| {
        let token = token.trim_matches(is_trimmed);
        if !token.is_empty() {
            tokens.push(token);
        }
    };

    let mut start = 0;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    for (i, ch) in raw.char_indices() {
        if prev != Some('\\') {
            if !ignore_parens && ch == '(' && quote.is_none() {
                depth += 1;
            } else if !ignore_parens && ch == ')' && depth > 0 && quote.is_none() {
                depth -= 1;
            } else if matches!(ch, '\'' | '"' | '`') {
                if quote == Some(ch) {
                    quote = None;
                } else if quote.is_none() {
                    quote = Some(ch);
                }
            }
        }
        if separators.contains(&ch) && depth == 0 && quote.is_none() {
            push(&raw[start..i]);
            start = i + ch.len_utf8();
            prev = None;
            continue;
        }
        prev = Some(ch);
    }
    if depth > 0 || quote.is_some() {
        return Err(FieldsError::Unbalanced(raw[start..].to_owned()));
    }
    push(&raw[start..]);
    Ok(tokens)
}
