//! The OpenAPI document against the spec: the checked-in `openapi.yaml` is the generated
//! one, and each of the six operations documents exactly the spec's responses, with the
//! spec's bodies (zh and en) as examples and the spec's way of authorising.

use std::collections::BTreeSet;

use pb_backups::http::openapi::{document, document_yaml};
use pb_backups_spec::{catalog, BodyKind, Lang, Operation};
use serde_json::{json, Value};

const JSON: &str = "application/json; charset=utf-8";

fn operation_id(op: Operation) -> &'static str {
    match op {
        Operation::List => "listBackups",
        Operation::Create => "createBackup",
        Operation::Upload => "uploadBackup",
        Operation::Delete => "deleteBackup",
        Operation::Restore => "restoreBackup",
        Operation::Download => "downloadBackup",
    }
}

/// (path, method, operation object) of the operation with this id; fails if not exactly one.
fn find<'a>(doc: &'a Value, id: &str) -> (&'a str, &'a str, &'a Value) {
    let found: Vec<_> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| item.as_object().into_iter().flatten().map(move |(m, o)| (path.as_str(), m.as_str(), o)))
        .filter(|(_, _, o)| o["operationId"] == id)
        .collect();
    assert_eq!(found.len(), 1, "operationId {id} appears {} times", found.len());
    found[0]
}

fn lang_code(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "zh",
        Lang::En => "en",
    }
}

#[test]
fn openapi_yaml_is_the_generated_document() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let generated = document_yaml();
    let how = "regenerate it with `cargo run -- openapi > openapi.yaml`";
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}; {how}"));
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        let line = line.unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "openapi.yaml differs from the generated document from line {}:\n  file:      {:?}\n  generated: {:?}\n{how}",
            line + 1,
            committed.lines().nth(line),
            generated.lines().nth(line),
        );
    }
}

#[test]
fn each_operation_has_the_documented_statuses() {
    let doc = document();
    for op in Operation::ALL {
        let (_, _, operation) = find(&doc, operation_id(op));
        let listed: BTreeSet<u16> = operation["responses"].as_object().unwrap().keys().map(|s| s.parse().unwrap()).collect();
        let mut documented: BTreeSet<u16> = catalog::for_operation(op).map(|r| r.status).collect();
        if op == Operation::Download {
            // R25: Range requests are answered with 206.
            documented.insert(206);
        }
        assert_eq!(listed, documented, "{op:?}");
    }
}

#[test]
fn each_operation_has_the_documented_method_path_and_summary() {
    let doc = document();
    // Paths in the document are relative to its first server, if any.
    let base = doc["servers"][0]["url"].as_str().unwrap_or("").trim_end_matches('/').to_string();
    for op in Operation::ALL {
        let (path, method, operation) = find(&doc, operation_id(op));
        assert_eq!(method, op.method().as_str().to_lowercase(), "{op:?}");
        assert_eq!(format!("{base}{path}"), op.path(), "{op:?}: where Swagger UI sends it");
        assert_eq!(operation["summary"], op.doc(Lang::En).summary, "{op:?}");
    }
}

#[test]
fn documented_bodies_are_the_examples() {
    let doc = document();
    for response in catalog::RESPONSES {
        let op = response.operation;
        let (_, _, operation) = find(&doc, operation_id(op));
        let documented = &operation["responses"][response.status.to_string()];
        let what = format!("{op:?} {}", response.status);
        match response.kind {
            BodyKind::NoContent => assert_eq!(documented.get("content"), None, "{what}: no body"),
            BodyKind::FileStream => {
                let zip = &documented["content"]["application/zip"]["schema"];
                assert_eq!((zip["type"].as_str(), zip["format"].as_str()), (Some("string"), Some("binary")), "{what}");
            }
            BodyKind::Json if response.status >= 400 => {
                let examples = &documented["content"][JSON]["examples"];
                let names: BTreeSet<&String> = examples.as_object().unwrap_or_else(|| panic!("{what}: examples")).keys().collect();
                assert_eq!(names, ["en".to_string(), "zh".to_string()].iter().collect(), "{what}");
                for lang in Lang::ALL {
                    let example = &examples[lang_code(lang)]["value"];
                    let body = response.body(lang).unwrap();
                    assert_eq!(example, &body, "{what} {lang:?}");
                    assert_eq!(example.to_string(), body.to_string(), "{what} {lang:?}: field order");
                }
            }
            BodyKind::Json => {
                let example = &documented["content"][JSON]["example"];
                let body = response.body(Lang::Zh).unwrap();
                assert_eq!(example, &body, "{what}");
                assert_eq!(example.to_string(), body.to_string(), "{what}: field order");
            }
        }
    }
}

#[test]
fn five_operations_take_the_authorization_header_and_download_a_token_query() {
    let doc = document();
    let schemes = &doc["components"]["securitySchemes"];
    for op in Operation::ALL {
        let (_, _, operation) = find(&doc, operation_id(op));
        let security = operation["security"].as_array().unwrap_or_else(|| panic!("{op:?}: security"));
        assert_eq!(security.len(), 1, "{op:?}: one way to authorise");
        let (name, scopes) = security[0].as_object().unwrap().iter().next().unwrap();
        assert_eq!(scopes, &json!([]), "{op:?}");
        let scheme = &schemes[name];
        let expected = match op {
            Operation::Download => ("query", "token"),
            _ => ("header", "Authorization"),
        };
        assert_eq!(scheme["type"], "apiKey", "{op:?}: {name}");
        assert_eq!((scheme["in"].as_str(), scheme["name"].as_str()), (Some(expected.0), Some(expected.1)), "{op:?}: {name}");
    }
}

/// (id, operation) of every operation in the document.
fn operations(doc: &Value) -> Vec<(&str, &Value)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flatten().map(|(_, o)| (o["operationId"].as_str().unwrap(), o)))
        .collect()
}

#[test]
fn public_operations_say_so_with_an_empty_security() {
    let doc = document();
    let mut public: Vec<&str> = Vec::new();
    for (id, operation) in operations(&doc) {
        let security = operation["security"].as_array().unwrap_or_else(|| panic!("{id}: no `security`"));
        if security.is_empty() {
            public.push(id);
        }
    }
    public.sort();
    assert_eq!(public, ["authWithOTP", "authWithPassword", "health", "requestOTP"]);
}

#[test]
fn download_declares_its_token_parameter_beside_the_scheme() {
    let doc = document();
    let (_, _, operation) = find(&doc, operation_id(Operation::Download));
    let scheme = &doc["components"]["securitySchemes"][operation["security"][0].as_object().unwrap().keys().next().unwrap()];
    let token: Vec<&Value> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == scheme["in"] && p["name"] == scheme["name"])
        .collect();
    assert_eq!(token.len(), 1, "the file token as a parameter");
    assert_eq!(token[0]["required"], true);
    assert_eq!(token[0]["schema"]["type"], "string");
}

#[test]
fn server_license_and_no_unused_schema() {
    let doc = document();
    // Relative: Swagger UI and `/api/...` paths resolve against the server serving the document.
    assert_eq!(doc["servers"], json!([{"url": "/", "description": "The server this document is served by."}]));
    assert_eq!(doc["info"]["license"]["name"], env!("CARGO_PKG_LICENSE"));
    assert!(doc["info"]["license"]["url"].as_str().is_some_and(|u| u.starts_with("https://")));
    let text = doc.to_string();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let reference = format!("\"#/components/schemas/{name}\"");
        assert!(text.contains(&reference), "schema {name} is never used");
    }
}
