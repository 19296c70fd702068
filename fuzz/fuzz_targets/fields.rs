//! `?fields=` parsing, projection and excerpts on arbitrary text.
//!
//! Input: the first line is the expression; the rest is both a string to excerpt and, when
//! it parses, the JSON document to project (else a small document holding it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_backups::http::fields;
use serde_json::{json, Value};

/// `out` only holds keys found at the same place in `input`; strings may be shortened.
fn is_projection_of(out: &Value, input: &Value) -> bool {
    match (out, input) {
        (Value::Object(o), Value::Object(i)) => {
            o.iter().all(|(k, v)| i.get(k).is_some_and(|iv| is_projection_of(v, iv)))
        }
        (Value::Array(o), Value::Array(i)) => {
            o.len() == i.len() && o.iter().zip(i).all(|(ov, iv)| is_projection_of(ov, iv))
        }
        (Value::String(_), Value::String(_)) => true,
        _ => out == input,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (expr, rest) = text.split_once('\n').unwrap_or((text, ""));

    if let Ok(parsed) = fields::parse(expr) {
        let value = serde_json::from_str::<Value>(rest).unwrap_or_else(|_| {
            json!({"key": rest, "size": 1, "rel": {"key": rest, "sub": [rest]}, "list": [{"key": rest}, 2]})
        });
        let out = fields::project(&value, &parsed);
        assert!(is_projection_of(&out, &value), "{expr:?}: {value} -> {out}");
        if parsed.is_empty() {
            assert_eq!(out, value);
        }
    }

    let max = data.len() % 40;
    for ellipsis in [false, true] {
        let cut = fields::excerpt(rest, max, ellipsis);
        let limit = max + if ellipsis { 3 } else { 0 };
        assert!(cut.chars().count() <= limit, "{rest:?} ({max}, {ellipsis}) -> {cut:?}");
    }
});
