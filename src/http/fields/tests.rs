//! Unit tests and properties of the `fields` projection, many from upstream's picker tests.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::parse::{parse_modifier, tokenize};
use super::*;

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
