//! Unit tests of the rule parser and its SQL: what parses (as PocketBase's scanner reads it),
//! what each rule admits on real rows in SQLite, and that no rule text reaches the SQL.

use proptest::prelude::*;
use rusqlite::Connection;

use super::sql::{format_number, like_pattern};
use super::*;

fn cmp(left: Operand, kind: OpKind, right: Operand) -> Filter {
    Filter::Compare(Comparison { left, op: Op { kind, any: false }, right })
}

fn name(s: &str) -> Operand {
    Operand::Name(s.into())
}

fn text(s: &str) -> Operand {
    Operand::Text(s.into())
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_group() {
    let a = cmp(name("a"), OpKind::Eq, Operand::Number(1.0));
    let b = cmp(name("b"), OpKind::Eq, Operand::Number(2.0));
    let c = cmp(name("c"), OpKind::Eq, Operand::Number(3.0));
    assert_eq!(
        parse("a = 1 || b = 2 && c = 3").unwrap(),
        Filter::Any(vec![a.clone(), Filter::All(vec![b.clone(), c.clone()])])
    );
    assert_eq!(
        parse("(a = 1 || b = 2) && c = 3").unwrap(),
        Filter::All(vec![Filter::Any(vec![a.clone(), b.clone()]), c.clone()])
    );
    assert_eq!(parse("((((a=1))))").unwrap(), a);
}

#[test]
fn tokens_as_pocketbase_scans_them() {
    assert_eq!(parse("name = 'it\\'s'").unwrap(), cmp(name("name"), OpKind::Eq, text("it's")));
    assert_eq!(parse(r#"name = "say \"hi\"""#).unwrap(), cmp(name("name"), OpKind::Eq, text("say \"hi\"")));
    // Only the backslash before the closing quote's own kind is removed.
    assert_eq!(parse(r"name = 'a\b\'c'").unwrap(), cmp(name("name"), OpKind::Eq, text(r"a\b'c")));
    assert_eq!(parse("n >= -1.5").unwrap(), cmp(name("n"), OpKind::Gte, Operand::Number(-1.5)));
    assert_eq!(parse("verified=true//a comment").unwrap(), cmp(name("verified"), OpKind::Eq, name("true")));
    assert_eq!(parse("// lead\nverified\t=\ttrue").unwrap(), cmp(name("verified"), OpKind::Eq, name("true")));
    let any = parse("tags ?!~ 'x'").unwrap();
    let op = Op { kind: OpKind::NotLike, any: true };
    assert_eq!(any, Filter::Compare(Comparison { left: name("tags"), op, right: text("x") }));
    let ops = [
        ("=", OpKind::Eq),
        ("!=", OpKind::Neq),
        ("~", OpKind::Like),
        ("!~", OpKind::NotLike),
        ("<", OpKind::Lt),
        ("<=", OpKind::Lte),
        (">", OpKind::Gt),
        (">=", OpKind::Gte),
    ];
    for (op, kind) in ops {
        assert_eq!(parse(&format!("a {op} 1")).unwrap(), cmp(name("a"), kind, Operand::Number(1.0)), "{op}");
        assert!(matches!(parse(&format!("a ?{op} 1")).unwrap(), Filter::Compare(c) if c.op == Op { kind, any: true }));
    }
}

/// Each of these PocketBase 0.40.6 refused as an auth rule (measured through its API).
#[test]
fn what_pocketbase_refuses_is_refused() {
    for rule in [
        "verified = true\r",
        "name = 1.",
        "name = .5",
        "name = --1",
        "name = 1e3",
        "name == 1",
        "name =! 1",
        "name = 1 &&",
        "name = 1 &",
        "(name = 1",
        "name = 1)",
        "name = 1 ||| name = 2",
        "name = 'open",
        "a@b = 1",
        "a. = 1",
        "name = 1 name = 2",
    ] {
        assert!(matches!(parse(rule), Err(RuleError::Syntax(_))), "{rule:?}: {:?}", parse(rule));
    }
    for rule in ["", "   ", "// only a comment", "\n\t"] {
        assert_eq!(parse(rule), Err(RuleError::Empty), "{rule:?}");
    }
}

#[test]
fn what_we_do_not_evaluate_is_unsupported() {
    for rule in [
        "@request.auth.id != ''",
        "@request.method = 'POST'",
        "@collection.users.id ?= id",
        "created > @now",
        "name:lower = 'x'",
        "avatar:length = 1",
        "author.name = 'x'",
        "geoDistance(1, 2, 3, 4) > 1",
        "verified = true && @request.body.x = 1",
    ] {
        assert!(matches!(parse(rule), Err(RuleError::Unsupported(_))), "{rule:?}: {:?}", parse(rule));
    }
}

/// Quirks of PocketBase's parser that we refuse rather than copy: a group right after a
/// comparison with no `&&`/`||` (PocketBase joins it with the previous join, or drops a
/// half-read comparison), an empty group, a double quote in text inside parentheses
/// (PocketBase re-quotes it and reads `'a\"b'` as `a"b` there), and a parenthesis or quote in
/// a comment inside parentheses (PocketBase refuses those, measured on 0.40.6).
#[test]
fn pocketbase_parser_quirks_are_refused() {
    for rule in [
        "verified = true (name = 'x')",
        "a = (b = 1)",
        "() && a = 1",
        "(name = 'a\"b')",
        "(name = 'a\\\"b')",
        "(verified = true // )\n)",
        "(verified = true // it's\n)",
        "(verified = true // (\n)",
    ] {
        assert!(matches!(parse(rule), Err(RuleError::Syntax(_))), "{rule:?}: {:?}", parse(rule));
    }
    assert!(parse("name = 'a\"b'").is_ok(), "outside parentheses it reads as written");
    assert!(parse("(verified = true // c\n) // (it's)").is_ok(), "comments without them, or outside");
}

#[test]
fn size_depth_and_count_are_bounded() {
    assert_eq!(parse(&format!("a = '{}'", "x".repeat(MAX_RULE_LEN))), Err(RuleError::TooLong));
    let deep = format!("{}a = 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert_eq!(parse(&deep), Err(RuleError::TooDeep));
    let ok = format!("{}a = 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    let many = vec!["a = 1"; MAX_COMPARISONS + 1].join(" && ");
    assert_eq!(parse(&many), Err(RuleError::TooManyComparisons));
    assert!(parse(&vec!["a = 1"; MAX_COMPARISONS].join(" || ")).is_ok());
}

// ---- evaluation on real rows ----

const COLUMNS: &[&str] = &["id", "email", "name", "verified", "age", "created", "roles", "meta"];

fn columns() -> Vec<RuleColumn> {
    COLUMNS.iter().map(|c| RuleColumn { name: c.to_string(), opaque: *c == "meta" }).collect()
}

/// A table shaped as PocketBase makes them (its column types and defaults), with one row per
/// case: `full` has every field set, `blank` has PocketBase's zero values, `nulls` has NULLs
/// (as rows written before a field existed have).
fn table() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, email TEXT DEFAULT '' NOT NULL, name TEXT DEFAULT '',
                 verified BOOLEAN DEFAULT FALSE, age NUMERIC DEFAULT 0, created TEXT DEFAULT '', roles JSON DEFAULT '[]',
                 meta JSON DEFAULT NULL);
         INSERT INTO users VALUES ('full', 'Ann@Example.com', 'Ann_100%', TRUE, 42, '2024-01-02 03:04:05.000Z',
                 '[\"admin\",\"dev\"]', '{}');
         INSERT INTO users (id) VALUES ('blank');
         INSERT INTO users (id, name, verified, age, created) VALUES ('nulls', NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    conn
}

/// The ids of the rows `rule` admits, in table order.
fn admitted(conn: &Connection, rule: &str) -> Vec<String> {
    let cond = to_sql(&parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}")), &columns(), 1)
        .unwrap_or_else(|e| panic!("{rule}: {e}"));
    let sql = format!("SELECT id FROM users AS r WHERE {} ORDER BY rowid", cond.sql);
    let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{rule}: {sql}: {e}"));
    let params = rusqlite::params_from_iter(cond.params.iter());
    stmt.query_map(params, |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn comparisons_admit_the_rows_pocketbase_s_sql_would() {
    let conn = table();
    let cases: &[(&str, &[&str])] = &[
        ("verified = true", &["full"]),
        ("verified = false", &["blank"]),
        ("verified != true", &["blank", "nulls"]),
        ("verified = 1", &["full"]),
        ("verified = 'true'", &[]),
        // null and "" are one empty value; `!=` is `IS NOT`, so NULL differs from a value.
        ("name = ''", &["blank", "nulls"]),
        ("name = null", &["blank", "nulls"]),
        ("name != null", &["full"]),
        ("name != 'Ann_100%'", &["blank", "nulls"]),
        ("null = name", &["blank", "nulls"]),
        ("null = null", &["full", "blank", "nulls"]),
        ("'' != null", &[]),
        ("id = id", &["full", "blank", "nulls"]),
        ("name = email", &["blank", "nulls"]),
        // Numbers compare as numbers, text as text.
        ("age > 40", &["full"]),
        ("age >= 0", &["full", "blank"]),
        ("age < 1", &["blank"]),
        ("age = '42'", &["full"]),
        ("created > '2024-01-01'", &["full"]),
        // `~` is a case-insensitive "contains" with the value's own % and _ escaped...
        ("email ~ 'example.COM'", &["full"]),
        ("name ~ '_'", &["full"]),
        ("name ~ 'n_1'", &["full"]),
        ("name ~ 'A_n'", &[]),
        ("name ~ '100%'", &[]),
        ("name !~ 'ann'", &["blank"]),
        // ...unless it holds an unescaped % of its own: then it is the whole pattern.
        ("name ~ 'A%'", &["full"]),
        ("name ~ '%100\\%'", &["full"]),
        ("age ~ 4", &["full"]),
        ("name ~ null", &[]),
        // On a record's own field an any-of operator is the plain one, also for multi-value
        // fields, which compare as their stored JSON text.
        ("roles ?= 'admin'", &[]),
        ("roles ~ 'admin'", &["full"]),
        ("roles = '[\"admin\",\"dev\"]'", &["full"]),
        ("name ?= 'Ann_100%'", &["full"]),
        ("(verified = true || age = 0) && name != ''", &["full"]),
        ("verified = true || age = 0 && name != ''", &["full"]),
        ("TRUE = tRuE && NULL = nuLL", &["full", "blank", "nulls"]),
    ];
    for (rule, expected) in cases {
        assert_eq!(admitted(&conn, rule), *expected, "{rule}");
    }
}

#[test]
fn unknown_and_json_fields_are_refused() {
    let f = parse("nosuch = 1").unwrap();
    assert_eq!(to_sql(&f, &columns(), 1), Err(RuleError::UnknownField("nosuch".into())));
    assert_eq!(to_sql(&parse("Verified = true").unwrap(), &columns(), 1), Err(RuleError::UnknownField("Verified".into())));
    assert!(matches!(to_sql(&parse("meta = 1").unwrap(), &columns(), 1), Err(RuleError::Unsupported(_))));
    // A field named like a keyword is the field.
    let cols = vec![RuleColumn { name: "true".into(), opaque: false }];
    assert_eq!(to_sql(&parse("true = 1").unwrap(), &cols, 1).unwrap().sql, "r.\"true\" = ?1");
}

#[test]
fn the_sql_shapes_are_pocketbase_s() {
    let sql = |rule: &str| to_sql(&parse(rule).unwrap(), &columns(), 3).unwrap();
    assert_eq!(sql("name = 'x'").sql, "r.\"name\" = ?3");
    assert_eq!(sql("name != 'x'").sql, "r.\"name\" IS NOT ?3");
    assert_eq!(sql("name = ''").sql, "(r.\"name\" = '' OR r.\"name\" IS NULL)");
    assert_eq!(sql("null != name").sql, "('' IS NOT r.\"name\" AND r.\"name\" IS NOT NULL)");
    assert_eq!(sql("name = email").sql, "COALESCE(r.\"name\", '') = COALESCE(r.\"email\", '')");
    assert_eq!(sql("verified = true").sql, "r.\"verified\" = 1");
    assert_eq!(sql("'' = null").sql, "'' = ''");
    let like = sql("name ~ 'a_b'");
    assert_eq!((like.sql.as_str(), like.params), ("r.\"name\" LIKE ?3 ESCAPE '\\'", vec![SqlParam::Text("%a\\_b%".into())]));
    assert_eq!(sql("name ~ email").sql, "r.\"name\" LIKE ('%' || r.\"email\" || '%') ESCAPE '\\'");
    assert_eq!(sql("age > 1 && (name = 'a' || name = 'b')").sql, "(r.\"age\" > ?3 AND (r.\"name\" = ?4 OR r.\"name\" = ?5))");
}

#[test]
fn like_patterns_escape_as_pocketbase_does() {
    assert_eq!(like_pattern("abc"), "%abc%");
    assert_eq!(like_pattern("a_b"), "%a\\_b%");
    assert_eq!(like_pattern("a\\_b"), "%a\\_b%", "already escaped");
    assert_eq!(like_pattern("a%"), "a%", "a % of its own: the pattern as given");
    assert_eq!(like_pattern("a\\%"), "%a\\%%", "an escaped % is not a wildcard");
    assert_eq!(like_pattern("a__b"), "%a_\\_b%", "PocketBase's walk from the end");
    assert_eq!(like_pattern("_"), "%\\_%");
    assert_eq!(format_number(5.0), "5");
    assert_eq!(format_number(0.1), "0.1");
    assert_eq!(format_number(1e21), "1000000000000000000000");
}

// ---- properties ----

fn arb_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        prop::sample::select(COLUMNS).prop_map(|c| Operand::Name(c.to_string())),
        prop::sample::select(&["true", "false", "null", "TRUE"][..]).prop_map(|c| Operand::Name(c.to_string())),
        // Marked text: the SQL must never contain it.
        "[a-z%_'\"\\\\ ]{0,8}".prop_map(|s| Operand::Text(format!("MARK{s}"))),
        (-1000i32..1000).prop_map(|n| Operand::Number(f64::from(n) / 4.0)),
    ]
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let kinds = vec![OpKind::Eq, OpKind::Neq, OpKind::Like, OpKind::NotLike, OpKind::Lt, OpKind::Lte, OpKind::Gt, OpKind::Gte];
    let leaf = (arb_operand(), prop::sample::select(kinds), any::<bool>(), arb_operand())
        .prop_map(|(left, kind, any, right)| Filter::Compare(Comparison { left, op: Op { kind, any }, right }));
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::All),
            prop::collection::vec(inner, 2..4).prop_map(Filter::Any),
        ]
    })
}

/// Writes a filter back as rule text (each operand as the scanner reads it back).
fn render(f: &Filter) -> String {
    let operand = |o: &Operand| match o {
        Operand::Name(n) => n.clone(),
        Operand::Text(t) => format!("'{}'", t.replace('\'', "\\'")),
        Operand::Number(n) => format!("{n}"),
    };
    match f {
        Filter::Compare(c) => {
            let op = match c.op.kind {
                OpKind::Eq => "=",
                OpKind::Neq => "!=",
                OpKind::Like => "~",
                OpKind::NotLike => "!~",
                OpKind::Lt => "<",
                OpKind::Lte => "<=",
                OpKind::Gt => ">",
                OpKind::Gte => ">=",
            };
            format!("{} {}{} {}", operand(&c.left), if c.op.any { "?" } else { "" }, op, operand(&c.right))
        }
        Filter::All(parts) => format!("({})", parts.iter().map(render).collect::<Vec<_>>().join(" && ")),
        Filter::Any(parts) => format!("({})", parts.iter().map(render).collect::<Vec<_>>().join(" || ")),
    }
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_without_panicking(rule in "\\PC{0,60}") {
        let _ = parse(&rule);
    }

    #[test]
    fn rule_like_text_parses_or_is_refused_without_panicking(rule in "[a-z@.:()'\"\\\\ =!?<>~&|0-9_-]{0,40}") {
        if let Ok(f) = parse(&rule) {
            let _ = to_sql(&f, &columns(), 1);
        }
    }

    /// No value of the rule reaches the SQL text: every one is a numbered, bound parameter,
    /// and the condition runs on a real table.
    #[test]
    fn every_value_is_a_bound_parameter(f in arb_filter()) {
        let cond = to_sql(&f, &columns(), 1);
        let Ok(cond) = cond else {
            // Only a JSON field is refused among the columns drawn.
            prop_assert!(render(&f).contains("meta"));
            return Ok(());
        };
        prop_assert!(!cond.sql.contains("MARK"), "{}", cond.sql);
        for (i, _) in cond.params.iter().enumerate() {
            let placeholder = format!("?{}", i + 1);
            prop_assert!(cond.sql.contains(&placeholder), "{} lacks {}", cond.sql, placeholder);
        }
        let beyond = format!("?{}", cond.params.len() + 1);
        prop_assert!(!cond.sql.contains(&beyond), "{} has {}", cond.sql, beyond);
        let conn = table();
        let sql = format!("SELECT count(*) FROM users AS r WHERE {}", cond.sql);
        let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(cond.params.iter()), |r| r.get(0))
            .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
        prop_assert!((0..=3).contains(&n));
    }

    /// What we print back parses to the same filter (the scanner and the AST agree). Text
    /// ending in a backslash cannot be written in the syntax, and a `"` in parentheses is
    /// refused (see above): those are left out.
    #[test]
    fn rendered_filters_parse_back(f in arb_filter()) {
        let text = render(&f);
        prop_assume!(!text.contains('"') && !text.contains("\\'"));
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, f);
    }
}
