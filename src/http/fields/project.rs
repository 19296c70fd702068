//! Picking the requested fields of a JSON value, applying their modifiers.

use serde_json::{Map, Value};

use super::excerpt::excerpt;
use super::{Fields, Modifier};

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
