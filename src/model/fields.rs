//! The `?fields=` projection of JSON responses, with the semantics of PocketBase's picker:
//! a comma separated list of dot paths (`a`, `a.b.c`), `*` for every key at its depth, and
//! the `:excerpt(max, withEllipsis?)` modifier that turns an HTML string into a short plain
//! text. Parsing is separate from projecting so that a bad expression is refused up front.

use serde_json::{Map, Value};
use std::collections::HashMap;

/// A parsed `fields` expression.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// One entry per distinct path; a path listed twice keeps its last modifier.
    entries: Vec<Field>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    path: String,
    modifier: Option<Modifier>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modifier {
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

fn parse_modifier(expr: &str) -> Result<Modifier, FieldsError> {
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
fn tokenize<'a>(
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

/// Keeps only the requested fields of `value`. Objects are projected; arrays have each of
/// their object elements projected (other elements are kept as they are); any other value is
/// returned unchanged. Key order follows the input.
pub fn project(value: &Value, fields: &Fields) -> Value {
    if fields.is_empty() {
        return value.clone();
    }
    let level: Vec<(&str, Option<Modifier>)> = fields
        .entries
        .iter()
        .map(|f| (f.path.as_str(), f.modifier))
        .collect();
    pick_value(value, &level)
}

/// Paths relative to the current depth, with their modifiers.
type Level<'a> = [(&'a str, Option<Modifier>)];

fn pick_value(value: &Value, fields: &Level<'_>) -> Value {
    match value {
        Value::Object(map) => Value::Object(pick_object(map, fields)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => Value::Object(pick_object(map, fields)),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn pick_object(map: &Map<String, Value>, fields: &Level<'_>) -> Map<String, Value> {
    let star = fields
        .iter()
        .find(|(path, _)| *path == "*")
        .map(|(_, m)| *m);
    let mut out = Map::new();
    for (key, value) in map {
        let mut exact = None;
        let mut nested = Vec::new();
        for &(path, modifier) in fields {
            if path == key {
                exact = Some(modifier);
            } else if let Some(rest) = path
                .strip_prefix(key.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                nested.push((rest, modifier));
            }
        }
        // A field naming the key itself keeps the whole value, even if deeper paths are
        // listed too; `*` only takes keys that no field mentions.
        let kept = match (exact, star) {
            (Some(modifier), _) => apply(value, modifier),
            (None, _) if !nested.is_empty() => pick_value(value, &nested),
            (None, Some(modifier)) => apply(value, modifier),
            (None, None) => continue,
        };
        out.insert(key.clone(), kept);
    }
    out
}

fn apply(value: &Value, modifier: Option<Modifier>) -> Value {
    match (modifier, value) {
        (Some(Modifier::Excerpt { max, ellipsis }), Value::String(s)) => {
            Value::String(excerpt(s, max, ellipsis))
        }
        // Non-string values are left alone, as upstream does.
        _ => value.clone(),
    }
}

/// A short plain-text version of an HTML (or plain) string: tags stripped (with the content
/// of script-like and form elements dropped), block elements separated by a space, whitespace
/// collapsed, then cut to at most `max` characters. When it was cut and `ellipsis` is set,
/// `"..."` is appended; it does not count toward `max`.
pub fn excerpt(s: &str, max: usize, ellipsis: bool) -> String {
    let text = plain_text(s);
    match text.char_indices().nth(max) {
        None => text,
        Some((cut, _)) => {
            let mut short = text[..cut].trim_end().to_owned();
            if ellipsis {
                short.push_str("...");
            }
            short
        }
    }
}

/// Elements dropped with everything inside them.
const EXCLUDED_TAGS: [&str; 18] = [
    "head", "style", "script", "iframe", "embed", "applet", "object", "svg", "img", "picture",
    "dialog", "template", "button", "form", "textarea", "input", "select", "option",
];

/// Elements that do not start a new block (no space around them).
const INLINE_TAGS: [&str; 21] = [
    "a", "abbr", "acronym", "b", "bdo", "big", "br", "button", "cite", "code", "em", "i", "label",
    "q", "small", "span", "strong", "strike", "sub", "sup", "time",
];

/// Elements that never have content.
const VOID_TAGS: [&str; 15] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr",
];

/// Elements whose content is text up to their end tag, never markup.
const RAW_TEXT_TAGS: [&str; 10] = [
    "script",
    "style",
    "textarea",
    "title",
    "iframe",
    "xmp",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
];

/// Collects text with at most one space between words and around blocks.
#[derive(Default)]
struct TextBuilder {
    out: String,
    prev_space: bool,
}

impl TextBuilder {
    fn text(&mut self, raw: &str) {
        let mut collapsed = String::with_capacity(raw.len());
        let mut in_space = false;
        for c in raw.chars() {
            // Go's `\s`: ASCII space, tab, newline, form feed, carriage return.
            if matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r') {
                if !in_space {
                    collapsed.push(' ');
                }
                in_space = true;
            } else {
                collapsed.push(c);
                in_space = false;
            }
        }
        let txt = if self.prev_space {
            collapsed.trim_start_matches(' ')
        } else {
            &collapsed
        };
        if !txt.is_empty() {
            self.prev_space = txt.ends_with(' ');
            self.out.push_str(txt);
        }
    }

    fn block_boundary(&mut self) {
        if !self.prev_space {
            self.out.push(' ');
            self.prev_space = true;
        }
    }
}

/// One piece of markup found at a `<`.
enum Markup {
    Start {
        name: String,
        self_closing: bool,
    },
    End {
        name: String,
    },
    /// Comments, doctypes, processing instructions, `</>`.
    Ignored,
    /// A `<` that does not open markup.
    LiteralLt,
    /// A tag cut off by the end of the input: dropped.
    Truncated,
}

/// Strips HTML the way a browser would read it, closely enough for excerpts: text of
/// non-excluded elements, entities decoded, whitespace collapsed, trimmed.
fn plain_text(html: &str) -> String {
    let mut builder = TextBuilder::default();
    let mut open: Vec<String> = Vec::new();
    let mut open_count: HashMap<String, usize> = HashMap::new();
    // Inside an excluded element: its name and how many of it are open.
    let mut excluded: Option<(String, usize)> = None;
    let mut pos = 0;

    while pos < html.len() {
        let Some(lt) = html[pos..].find('<').map(|i| pos + i) else {
            if excluded.is_none() {
                builder.text(&decode_entities(&html[pos..]));
            }
            break;
        };
        if excluded.is_none() && lt > pos {
            builder.text(&decode_entities(&html[pos..lt]));
        }
        let (markup, next) = read_markup(html, lt);
        pos = next;
        match markup {
            Markup::LiteralLt => {
                if excluded.is_none() {
                    builder.text("<");
                }
            }
            Markup::Ignored | Markup::Truncated => {}
            Markup::Start { name, self_closing } => {
                let is_void = VOID_TAGS.contains(&name.as_str()) || (self_closing && name == "svg");
                if RAW_TEXT_TAGS.contains(&name.as_str()) {
                    let (content, after) = raw_text(html, pos, &name);
                    pos = after;
                    if excluded.is_none() && !EXCLUDED_TAGS.contains(&name.as_str()) {
                        builder.block_boundary();
                        if matches!(name.as_str(), "title" | "textarea") {
                            builder.text(&decode_entities(content));
                        } else {
                            builder.text(content);
                        }
                        builder.block_boundary();
                    }
                    continue;
                }
                match &mut excluded {
                    Some((ex_name, depth)) => {
                        if *ex_name == name && !is_void {
                            *depth += 1;
                        }
                    }
                    None if EXCLUDED_TAGS.contains(&name.as_str()) => {
                        if !is_void {
                            excluded = Some((name, 1));
                        }
                    }
                    None => {
                        if !INLINE_TAGS.contains(&name.as_str()) {
                            builder.block_boundary();
                        }
                        if !is_void {
                            *open_count.entry(name.clone()).or_default() += 1;
                            open.push(name);
                        }
                    }
                }
            }
            Markup::End { name } => match &mut excluded {
                Some((ex_name, depth)) => {
                    if *ex_name == name {
                        *depth -= 1;
                        if *depth == 0 {
                            excluded = None;
                        }
                    }
                }
                None => {
                    if open_count.get(&name).copied().unwrap_or(0) > 0 {
                        // Close it and everything opened inside it.
                        while let Some(top) = open.pop() {
                            if let Some(n) = open_count.get_mut(&top) {
                                *n -= 1;
                            }
                            if !INLINE_TAGS.contains(&top.as_str()) {
                                builder.block_boundary();
                            }
                            if top == name {
                                break;
                            }
                        }
                    } else if name == "p" {
                        // A stray `</p>` makes an empty paragraph.
                        builder.block_boundary();
                    }
                }
            },
        }
    }
    builder.out.trim().to_owned()
}

fn is_html_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r')
}

/// Reads the markup starting at `html[lt] == '<'`; returns it and the index after it.
fn read_markup(html: &str, lt: usize) -> (Markup, usize) {
    let bytes = html.as_bytes();
    let after_lt = lt + 1;
    match bytes.get(after_lt) {
        Some(b) if b.is_ascii_alphabetic() => {
            let (name, name_end) = read_tag_name(html, after_lt);
            match find_tag_end(bytes, name_end) {
                Some(gt) => {
                    let self_closing = gt > name_end && bytes[gt - 1] == b'/';
                    (Markup::Start { name, self_closing }, gt + 1)
                }
                None => (Markup::Truncated, html.len()),
            }
        }
        Some(b'/') => match bytes.get(after_lt + 1) {
            Some(b) if b.is_ascii_alphabetic() => {
                let (name, name_end) = read_tag_name(html, after_lt + 1);
                match find_tag_end(bytes, name_end) {
                    Some(gt) => (Markup::End { name }, gt + 1),
                    None => (Markup::Truncated, html.len()),
                }
            }
            Some(b'>') => (Markup::Ignored, after_lt + 2),
            None => (Markup::LiteralLt, after_lt),
            Some(_) => (Markup::Ignored, skip_past(html, after_lt, ">")),
        },
        Some(b'!') if html[after_lt..].starts_with("!--") => {
            (Markup::Ignored, skip_past(html, after_lt + 3, "-->"))
        }
        Some(b'!' | b'?') => (Markup::Ignored, skip_past(html, after_lt, ">")),
        _ => (Markup::LiteralLt, after_lt),
    }
}

/// The lower-cased tag name starting at `start`, and the index after it.
fn read_tag_name(html: &str, start: usize) -> (String, usize) {
    let bytes = html.as_bytes();
    let end = (start..bytes.len())
        .find(|&i| is_html_space(bytes[i]) || bytes[i] == b'/' || bytes[i] == b'>')
        .unwrap_or(bytes.len());
    (html[start..end].to_ascii_lowercase(), end)
}

/// The index of the `>` closing a tag, skipping quoted attribute values.
fn find_tag_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'>' => return Some(i),
            b'=' => {
                i += 1;
                while i < bytes.len() && is_html_space(bytes[i]) {
                    i += 1;
                }
                if let Some(&q @ (b'"' | b'\'')) = bytes.get(i) {
                    let close = bytes[i + 1..].iter().position(|&b| b == q)?;
                    i += close + 2;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The index just past the next `pattern` at or after `from`, or the end of the input.
fn skip_past(html: &str, from: usize, pattern: &str) -> usize {
    html[from..]
        .find(pattern)
        .map_or(html.len(), |i| from + i + pattern.len())
}

/// The content of a raw text element up to its end tag, and the index after that end tag.
fn raw_text<'a>(html: &'a str, from: usize, name: &str) -> (&'a str, usize) {
    let bytes = html.as_bytes();
    let mut i = from;
    while let Some(off) = html[i..].find("</") {
        let start = i + off;
        let name_start = start + 2;
        let name_end = name_start + name.len();
        let closes = bytes
            .get(name_start..name_end)
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            && bytes
                .get(name_end)
                .is_none_or(|&b| is_html_space(b) || b == b'/' || b == b'>');
        if closes {
            let after = find_tag_end(bytes, name_end).map_or(html.len(), |gt| gt + 1);
            return (&html[from..start], after);
        }
        i = name_start;
    }
    (&html[from..], html.len())
}

/// Decodes character references: numeric ones and the common named ones. Unknown names are
/// kept as written.
fn decode_entities(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('&') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match decode_one(after) {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// Decodes the reference at the start of `s` (just after a `&`): the char and bytes used.
fn decode_one(s: &str) -> Option<(char, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (digits, radix, prefix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (num, 10, 1),
        };
        let len = digits
            .bytes()
            .take_while(|b| (*b as char).is_digit(radix))
            .count();
        if len == 0 {
            return None;
        }
        let code = u32::from_str_radix(&digits[..len], radix).unwrap_or(u32::MAX);
        let c = match code {
            0 => '\u{fffd}',
            _ => char::from_u32(code).unwrap_or('\u{fffd}'),
        };
        let semicolon = usize::from(digits[len..].starts_with(';'));
        return Some((c, prefix + len + semicolon));
    }
    let len = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if !s[len..].starts_with(';') {
        return None;
    }
    let c = match &s[..len] {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "euro" => '€',
        "shy" => '\u{ad}',
        _ => return None,
    };
    Some((c, len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn pick(value: Value, raw: &str) -> Result<String, FieldsError> {
        let fields = parse(raw)?;
        Ok(project(&value, &fields).to_string())
    }

    // Cases from upstream `pick_test.go` (expected key order is the input's here).

    #[test]
    fn empty_fields_keep_everything() {
        assert_eq!(
            pick(json!({"a": 1, "b": 2, "c": "test"}), "").unwrap(),
            r#"{"a":1,"b":2,"c":"test"}"#
        );
        assert_eq!(pick(json!({"a": 1}), " , ,").unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn missing_fields_give_an_empty_object() {
        assert_eq!(
            pick(json!({"a": 1, "b": 2, "c": "test"}), "missing").unwrap(),
            "{}"
        );
    }

    #[test]
    fn non_object_data_is_untouched() {
        assert_eq!(pick(json!("test"), "a,b,test").unwrap(), r#""test""#);
        assert_eq!(
            pick(json!(["a", "b", "test"]), "a,test").unwrap(),
            r#"["a","b","test"]"#
        );
    }

    #[test]
    fn existing_and_missing_fields_with_spaces() {
        let data = json!({"a": 1, "b": 2, "c": "test"});
        assert_eq!(
            pick(data, "a,  c  ,missing").unwrap(),
            r#"{"a":1,"c":"test"}"#
        );
        let list = json!([{"a": 11, "b": 11, "c": "test1"}, {"a": 22, "b": 22, "c": "x"}]);
        assert_eq!(
            pick(list, "a,  c  ,missing").unwrap(),
            r#"[{"a":11,"c":"test1"},{"a":22,"c":"x"}]"#
        );
    }

    #[test]
    fn nested_fields_with_arrays() {
        let data = json!({
            "a": 1, "b": 2, "c": "test",
            "anySlice": [
                {"A": [1, 2, 3], "B": ["1", "2", 3], "C": "test", "D": {"DA": 1, "DB": 2}},
                {"A": "test"}
            ],
            "mapSlice": [
                {"A": [1, 2, 3], "B": ["1", "2", 3], "C": "test", "D": [{"DA": 1}]},
                {"B": ["1", "2", 3], "D": [{"DA": 2}, {"DA": 3}, {"DB": 4}]}
            ],
            "fullMap": [
                {"A": [1, 2, 3], "B": ["1", "2", 3], "C": "test"},
                {"B": ["1", "2", 3], "D": [{"DA": 2}, {"DA": 3}]}
            ]
        });
        let got = pick(
            data,
            "a, c, anySlice.A, mapSlice.C, mapSlice.D.DA, anySlice.D,fullMap",
        )
        .unwrap();
        let want = json!({
            "a": 1, "c": "test",
            "anySlice": [{"A": [1, 2, 3], "D": {"DA": 1, "DB": 2}}, {"A": "test"}],
            "mapSlice": [{"C": "test", "D": [{"DA": 1}]}, {"D": [{"DA": 2}, {"DA": 3}, {}]}],
            "fullMap": [
                {"A": [1, 2, 3], "B": ["1", "2", 3], "C": "test"},
                {"B": ["1", "2", 3], "D": [{"DA": 2}, {"DA": 3}]}
            ]
        });
        assert_eq!(got, want.to_string());
    }

    #[test]
    fn root_wildcard() {
        let list = json!([{"a": 11, "b": 11, "c": "test1"}, {"a": 22, "b": 22, "c": "test2"}]);
        assert_eq!(pick(list.clone(), "*").unwrap(), list.to_string());
    }

    #[test]
    fn root_wildcard_with_nested_exception() {
        let data =
            json!({"id": "123", "title": "lorem", "rel": {"id": "456", "title": "rel_title"}});
        assert_eq!(
            pick(data, "*,rel.id").unwrap(),
            r#"{"id":"123","title":"lorem","rel":{"id":"456"}}"#
        );
    }

    fn rel_sub() -> Value {
        json!({
            "id": "123", "title": "lorem",
            "rel": {"id": "456", "title": "rel_title", "sub": {"id": "789", "title": "sub_title"}}
        })
    }

    #[test]
    fn sub_wildcard() {
        assert_eq!(
            pick(rel_sub(), "id,rel.*").unwrap(),
            r#"{"id":"123","rel":{"id":"456","title":"rel_title","sub":{"id":"789","title":"sub_title"}}}"#
        );
    }

    #[test]
    fn sub_wildcard_with_nested_exception() {
        assert_eq!(
            pick(rel_sub(), "id,rel.*,rel.sub.id").unwrap(),
            r#"{"id":"123","rel":{"id":"456","title":"rel_title","sub":{"id":"789"}}}"#
        );
    }

    #[test]
    fn invalid_excerpt_modifier_is_an_error() {
        assert_eq!(
            pick(json!({"a": 1}), "*:excerpt"),
            Err(FieldsError::ExcerptMissingMax)
        );
    }

    #[test]
    fn valid_excerpt_modifiers() {
        let mut data = rel_sub();
        data["rel"]["title"] = json!("<p>rel_title</p>");
        assert_eq!(
            pick(data, "*:excerpt(2),rel.title:excerpt(3, true)").unwrap(),
            r#"{"id":"12","title":"lo","rel":{"title":"rel..."}}"#
        );
    }

    #[test]
    fn a_field_naming_the_key_keeps_it_whole() {
        assert_eq!(
            pick(rel_sub(), "rel.sub.id,rel").unwrap(),
            json!({"rel": rel_sub()["rel"]}).to_string()
        );
    }

    #[test]
    fn modifiers_leave_non_strings_alone() {
        let data = json!({"n": 12345, "o": {"x": "long text"}, "l": ["long text"]});
        assert_eq!(
            pick(data.clone(), "*:excerpt(2)").unwrap(),
            data.to_string()
        );
    }

    #[test]
    fn the_last_listing_of_a_path_wins() {
        let data = json!({"a": "abcdef"});
        assert_eq!(
            pick(data.clone(), "a:excerpt(2),a").unwrap(),
            r#"{"a":"abcdef"}"#
        );
        assert_eq!(pick(data, "a,a:excerpt(2)").unwrap(), r#"{"a":"ab"}"#);
    }

    #[test]
    fn backup_list_projection() {
        let list = json!([
            {"key": "pb_backup_20230519162514.zip", "modified": "2023-05-19 16:25:57.542Z", "size": 251316185},
            {"key": "b.zip", "modified": "2023-05-18 16:25:57.542Z", "size": 7}
        ]);
        assert_eq!(
            pick(list.clone(), "key").unwrap(),
            r#"[{"key":"pb_backup_20230519162514.zip"},{"key":"b.zip"}]"#
        );
        assert_eq!(
            pick(list, "size,key:excerpt(4,true)").unwrap(),
            r#"[{"key":"pb_b...","size":251316185},{"key":"b.zi...","size":7}]"#
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(matches!(parse("a,(b"), Err(FieldsError::Unbalanced(_))));
        assert!(matches!(
            parse("a:excerpt(2"),
            Err(FieldsError::Unbalanced(_))
        ));
        assert!(matches!(parse("'a"), Err(FieldsError::Unbalanced(_))));
        assert_eq!(parse("a:"), Err(FieldsError::EmptyModifier(String::new())));
        assert_eq!(
            parse("a:upper(2)"),
            Err(FieldsError::UnknownModifier("upper".into()))
        );
        assert_eq!(
            parse("a:Excerpt(2)"),
            Err(FieldsError::UnknownModifier("Excerpt".into()))
        );
        assert_eq!(
            parse("a:excerpt(1,2,3)"),
            Err(FieldsError::ExcerptTooManyArgs)
        );
        for max in ["0", "-3", "x", "1.5", "0x10", "99999999999999999999999"] {
            assert_eq!(
                parse(&format!("a:excerpt({max})")),
                Err(FieldsError::ExcerptInvalidMax(max.into()))
            );
        }
    }

    #[test]
    fn commas_inside_parentheses_and_quotes_do_not_split() {
        assert_eq!(
            tokenize(r#"a, b, c, d e, "a,b,  c  ", (123, 456)"#, &[','], false).unwrap(),
            ["a", "b", "c", "d e", r#""a,b,  c  ""#, "(123, 456)"]
        );
        assert_eq!(
            tokenize("excerpt( 3 ,true )", &['(', ')', ',', ' '], true).unwrap(),
            ["excerpt", "3", "true"]
        );
        assert_eq!(tokenize(r"a\(,b", &[','], false).unwrap(), [r"a\(", "b"]);
    }

    // Cases from upstream `excerpt_modifier_test.go`.

    #[test]
    fn excerpt_arguments() {
        let excerpt_of = |raw: &str| parse_modifier(raw);
        assert_eq!(excerpt_of("excerpt"), Err(FieldsError::ExcerptMissingMax));
        assert_eq!(
            excerpt_of("excerpt(12, false, something)"),
            Err(FieldsError::ExcerptTooManyArgs)
        );
        assert!(matches!(
            excerpt_of("excerpt(something)"),
            Err(FieldsError::ExcerptInvalidMax(_))
        ));
        assert_eq!(
            excerpt_of("excerpt(12)"),
            Ok(Modifier::Excerpt {
                max: 12,
                ellipsis: false
            })
        );
        assert_eq!(
            excerpt_of("excerpt(12, something)"),
            Ok(Modifier::Excerpt {
                max: 12,
                ellipsis: false
            })
        );
        assert_eq!(
            excerpt_of("excerpt(12, t)"),
            Ok(Modifier::Excerpt {
                max: 12,
                ellipsis: true
            })
        );
        assert_eq!(
            excerpt_of("excerpt(+12,1)"),
            Ok(Modifier::Excerpt {
                max: 12,
                ellipsis: true
            })
        );
    }

    const HTML: &str = " <script>var a = 123;</script>   <p>Hello</p><div id=\"test_id\">t   est<b>12\n\t3</b><span>456</span></div><span>word <b>7</b> 89<span>!<b>?</b><b> a </b><b>b </b>c</span>#<h1>title</h1>";
    const PLAIN: &str = "Hello t est12 3456 word 7 89!? a b c# title";

    #[test]
    fn excerpt_without_ellipsis() {
        assert_eq!(excerpt(HTML, 2, false), "He");
        assert_eq!(excerpt(HTML, PLAIN.len(), false), PLAIN);
        assert_eq!(excerpt(HTML, PLAIN.len() + 5, false), PLAIN);
    }

    #[test]
    fn excerpt_with_ellipsis() {
        assert_eq!(excerpt(HTML, 2, true), "He...");
        assert_eq!(excerpt(HTML, PLAIN.len(), true), PLAIN);
        assert_eq!(excerpt(HTML, PLAIN.len() + 5, true), PLAIN);
    }

    #[test]
    fn excerpt_counts_chars() {
        assert_eq!(excerpt("аб\nв ", 4, true), "аб в");
        assert_eq!(excerpt("аб\nв ", 3, true), "аб...");
    }

    #[test]
    fn excerpt_strips_markup() {
        assert_eq!(
            excerpt(
                "<p>a&amp;b &lt;c&gt; &#233;&#x41;&nbsp;x &bogus;</p>",
                100,
                false
            ),
            "a&b <c> éA\u{a0}x &bogus;"
        );
        assert_eq!(excerpt("a < b, 1<2", 100, false), "a < b, 1<2");
        // As in a browser, `<d` opens a tag, and one cut off by the end is dropped.
        assert_eq!(excerpt("c<d", 100, false), "c");
        assert_eq!(
            excerpt(
                "a<!-- <p>hidden</p> -->b<!DOCTYPE html>c<?php x ?>d",
                100,
                false
            ),
            "abcd"
        );
        assert_eq!(
            excerpt("<form>x<form>y</form>z</form>after", 100, false),
            "after"
        );
        assert_eq!(
            excerpt("a<img src=\"x>y\" alt='>'>b<input>c<br>d<hr>e", 100, false),
            "abcd e"
        );
        assert_eq!(
            excerpt("<title><b>t</b></title>body", 100, false),
            "<b>t</b> body"
        );
        assert_eq!(
            excerpt(
                "<style>p { color: red }</STYLE >x<svg/>y<svg><text>z</text></svg>",
                100,
                false
            ),
            "xy"
        );
        assert_eq!(
            excerpt("<ul><li>one</li><li>two</ul>three", 100, false),
            "one two three"
        );
        assert_eq!(excerpt("a<div class=\"x", 100, false), "a");
        assert_eq!(excerpt("<script>never closed", 100, false), "");
        assert_eq!(excerpt("a</p>b", 100, false), "a b");
    }

    #[test]
    fn excerpt_trims_before_the_ellipsis() {
        assert_eq!(excerpt("ab cd", 3, true), "ab...");
        assert_eq!(excerpt("abc", 0, true), "...");
        assert_eq!(excerpt("abc", 0, false), "");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just("a.b")]
            .prop_map(String::from);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z <>&;/]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn fields_expr() -> impl Strategy<Value = String> {
        let segment = prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just("z")];
        let path = prop::collection::vec(segment, 1..4).prop_map(|s| s.join("."));
        let field =
            (path, prop::option::of((1usize..6, any::<bool>()))).prop_map(|(p, m)| match m {
                Some((max, e)) => format!("{p}:excerpt({max},{e})"),
                None => p,
            });
        prop::collection::vec(field, 0..5).prop_map(|f| f.join(","))
    }

    /// `out` only holds keys found at the same place in `input`; strings may be shortened.
    fn is_projection_of(out: &Value, input: &Value) -> bool {
        match (out, input) {
            (Value::Object(o), Value::Object(i)) => o
                .iter()
                .all(|(k, v)| i.get(k).is_some_and(|iv| is_projection_of(v, iv))),
            (Value::Array(o), Value::Array(i)) => {
                o.len() == i.len() && o.iter().zip(i).all(|(ov, iv)| is_projection_of(ov, iv))
            }
            (Value::String(_), Value::String(_)) => true,
            _ => out == input,
        }
    }

    proptest! {
        #[test]
        fn projection_never_invents_keys(value in json_value(), raw in fields_expr()) {
            let fields = parse(&raw).unwrap();
            let out = project(&value, &fields);
            prop_assert!(is_projection_of(&out, &value), "{} -> {}", value, out);
        }

        #[test]
        fn star_alone_keeps_the_value(value in json_value()) {
            let out = project(&value, &parse("*").unwrap());
            prop_assert_eq!(out.to_string(), value.to_string());
        }

        #[test]
        fn excerpt_respects_max(s in "(\\PC|[<>&; \n/]|<p>|</p>|<script>|&amp;){0,40}", max in 0usize..30, ellipsis: bool) {
            let out = excerpt(&s, max, ellipsis);
            let limit = max + if ellipsis { 3 } else { 0 };
            prop_assert!(out.chars().count() <= limit, "{:?} -> {:?}", s, out);
        }

        #[test]
        fn excerpt_cuts_whole_chars(s in "[a-zя語😀é]{0,30}", max in 0usize..40) {
            let want: String = s.chars().take(max).collect();
            prop_assert_eq!(excerpt(&s, max, false), want);
        }
    }
}
