//! The `:excerpt` modifier: an HTML (or plain) string as a short plain text.

use std::collections::HashMap;

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
