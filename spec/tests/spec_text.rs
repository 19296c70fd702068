//! The catalog against the spec's own text: every documented response block of
//! `api-backups.zh.md` (the ```` ```json [STATUS] ```` and ```` ```text [200] ```` blocks
//! under each operation) must be the catalog's entry, in the spec's order, with the same
//! status and the same body, as JSON and word for word; each section's heading, method and
//! path must be the operation's. A transcription slip in the catalog fails here, however
//! many other tests agree with it.

use pb_backups_spec::{BodyKind, Lang, Operation};
use serde_json::Value;

/// One operation's section of the spec: its heading, the method and path of its
/// `::: info` box, and its response blocks as (status, language tag, text).
#[derive(Debug)]
struct Section {
    heading: String,
    method: Option<String>,
    path: Option<String>,
    responses: Vec<(u16, String, String)>,
}

fn sections(markdown: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix("## ") {
            out.push(Section { heading: heading.trim().to_string(), method: None, path: None, responses: Vec::new() });
            continue;
        }
        let Some(section) = out.last_mut() else { continue };
        // The endpoint's box: `::: info GET`, `::: tip POST`, `::: danger DELETE` (a
        // `::: warning` box has no method), with the path on the next line.
        let method = line.strip_prefix("::: ").and_then(|rest| rest.split_once(' ')).map(|(_, m)| m.trim());
        if let Some(method) = method.filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase())) {
            assert!(section.method.is_none(), "{}: two endpoint boxes", section.heading);
            section.method = Some(method.to_string());
            section.path = lines.next().map(|l| l.trim().trim_matches('`').to_string());
            continue;
        }
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut block = Vec::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            block.push(inner);
        }
        // Only the response blocks, `json [200]` or `text [200]`; the SDK examples are
        // `javascript` and `dart`.
        let Some((tag, status)) = info.trim().split_once(' ') else { continue };
        let Some(status) = status.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else { continue };
        let status: u16 = status.parse().unwrap_or_else(|_| panic!("a response block with status {status:?}"));
        section.responses.push((status, tag.to_string(), block.join("\n")));
    }
    out
}

fn spec_sections() -> Vec<Section> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/api-backups.zh.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    sections(&text)
}

#[test]
fn every_documented_response_block_is_the_catalog_s_entry() {
    let sections = spec_sections();
    let headings: Vec<&str> = sections.iter().map(|s| s.heading.as_str()).collect();
    let summaries: Vec<&str> = Operation::ALL.iter().map(|op| op.doc(Lang::Zh).summary).collect();
    assert_eq!(headings, summaries, "the spec's sections are the six operations, in order");

    let mut blocks = 0;
    for (section, op) in sections.iter().zip(Operation::ALL) {
        assert_eq!(section.method.as_deref(), Some(op.method().as_str()), "{op:?}: method");
        assert_eq!(section.path.as_deref(), Some(op.path()), "{op:?}: path");
        let catalog: Vec<_> = pb_backups_spec::for_operation(op).collect();
        let statuses: Vec<u16> = section.responses.iter().map(|(status, ..)| *status).collect();
        let catalog_statuses: Vec<u16> = catalog.iter().map(|r| r.status).collect();
        assert_eq!(statuses, catalog_statuses, "{op:?}: the documented statuses, in order");
        for ((status, tag, text), entry) in section.responses.iter().zip(&catalog) {
            let what = format!("{op:?} {status}");
            assert_eq!(entry.text(Lang::Zh), text, "{what}: the catalog's text is not the spec's block");
            match entry.kind {
                BodyKind::FileStream => assert_eq!(tag, "text", "{what}"),
                BodyKind::Json | BodyKind::NoContent => {
                    assert_eq!(tag, "json", "{what}");
                    let spec: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: the spec's block: {e}"));
                    assert_eq!(entry.body(Lang::Zh), Some(spec), "{what}: as JSON");
                }
            }
            blocks += 1;
        }
    }
    assert_eq!(blocks, 27, "the spec documents 27 responses");
}

/// The reader itself: it finds what a section holds and nothing else.
#[test]
fn the_reader_takes_response_blocks_only() {
    let text = "# T\n\n## 甲\n\n```javascript\nx\n```\n\n::: warning\nw\n:::\n\n::: tip POST\n`/api/x`\n:::\n\n```json [204]\nnull\n```\n\n```json [400]\n{\n  \"a\": 1\n}\n```\n\n## 乙\n\n```text [200]\n[流]\n```\n";
    let s = sections(text);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].heading.as_str(), s[0].method.as_deref(), s[0].path.as_deref()), ("甲", Some("POST"), Some("/api/x")));
    assert_eq!(s[0].responses, [(204, "json".into(), "null".into()), (400, "json".into(), "{\n  \"a\": 1\n}".into())]);
    assert_eq!(s[1].responses, [(200, "text".into(), "[流]".into())]);
}
