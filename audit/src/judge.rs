//! Holding one response to its documented one: status, body word for word, field order,
//! content type, download headers, and no internal detail leaked.

use pb_backups_spec::{BodyKind, DocumentedResponse, Lang, Operation};
use serde_json::Value;

use crate::http::{shorten, Got};

/// Text that must never reach a client: paths on the server and internal error detail.
const LEAK_MARKERS: &[&str] =
    &["/tmp/", "/home/", "/root/", "/var/", ".pb_temp", "os error", "Raw error", "panicked", "No such file", "goroutine"];

/// The leak markers found in a body (and the data dir's path, when known).
pub fn leaks(body: &[u8], data_dir: Option<&str>) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut found: Vec<String> =
        LEAK_MARKERS.iter().filter(|m| text.contains(**m)).map(|m| format!("{m:?}")).collect();
    if data_dir.is_some_and(|d| text.contains(d)) {
        found.push("the data dir's path".into());
    }
    found
}

/// Whether a Content-Type names `media` (parameters aside).
fn media_type_is(got: &Got, media: &str) -> bool {
    got.header("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(media))
}

/// The differences between `got` and the documented response in `lang`; empty when it conforms.
/// `key` is the backup a download 200 must name.
pub fn differences(doc: &DocumentedResponse, lang: Lang, got: &Got, key: Option<&str>) -> Vec<String> {
    let mut why = Vec::new();
    if got.status != doc.status {
        why.push(format!("status {} where the spec documents {}", got.status, doc.status));
    }
    match doc.kind {
        BodyKind::NoContent => {
            if !got.body.is_empty() {
                why.push("a body where the spec documents none".into());
            }
        }
        BodyKind::Json if doc.status >= 400 => why.extend(error_body(doc, lang, got)),
        BodyKind::Json => why.extend(list_body(got)),
        BodyKind::FileStream => why.extend(download(got, key)),
    }
    why
}

fn error_body(doc: &DocumentedResponse, lang: Lang, got: &Got) -> Vec<String> {
    let mut why = Vec::new();
    let expected = doc.body(lang).expect("documented error bodies are JSON");
    let Some(body) = got.json() else {
        return vec![format!("the body is not JSON: {:?}", shorten(&String::from_utf8_lossy(&got.body), 80))];
    };
    if !media_type_is(got, "application/json") {
        why.push(format!("Content-Type {:?} where JSON is sent", got.header("content-type").unwrap_or("(none)")));
    }
    let Some(object) = body.as_object() else {
        return vec!["the body is not a JSON object".into()];
    };
    let expected_object = expected.as_object().expect("an object");
    for (name, want) in expected_object {
        match object.get(name) {
            None => why.push(format!("field `{name}` is missing")),
            Some(have) if name == "data" => why.extend(data_field(want, have)),
            Some(have) if have != want => why.push(format!("`{name}` is {} where the spec says {}", shorten(&have.to_string(), 120), want)),
            Some(_) => {}
        }
    }
    for name in object.keys().filter(|k| !expected_object.contains_key(*k)) {
        why.push(format!("undocumented field `{name}`"));
    }
    let order: Vec<&str> = object.keys().map(String::as_str).collect();
    let want_order: Vec<&str> = expected_object.keys().map(String::as_str).collect();
    if order.iter().all(|k| expected_object.contains_key(*k)) && order.len() == want_order.len() && order != want_order {
        why.push(format!("fields in the order {} where the spec has {}", order.join(", "), want_order.join(", ")));
    }
    why
}

/// `data`: the documented fields, each word for word (order included).
fn data_field(want: &Value, have: &Value) -> Vec<String> {
    if want == have {
        // Equal as JSON objects; their text shows the order of the fields.
        let (want_text, have_text) = (want.to_string(), have.to_string());
        if want_text != have_text {
            return vec![format!("`data` fields in another order: {have}")];
        }
        return Vec::new();
    }
    match (want.as_object(), have.as_object()) {
        (Some(w), Some(h)) if w.is_empty() => {
            vec![format!("`data` is {} where the spec shows {{}}", shorten(&Value::Object(h.clone()).to_string(), 120))]
        }
        (Some(w), Some(h)) => {
            let mut why = Vec::new();
            for (name, want) in w {
                match h.get(name) {
                    None => why.push(format!("`data.{name}` is missing")),
                    Some(have) => {
                        for (field, want) in want.as_object().into_iter().flatten() {
                            match have.get(field) {
                                None => why.push(format!("`data.{name}.{field}` is missing")),
                                Some(v) if v != want => why.push(format!("`data.{name}.{field}` is {} where the spec says {want}", shorten(&v.to_string(), 120))),
                                Some(_) => {}
                            }
                        }
                    }
                }
            }
            for name in h.keys().filter(|k| !w.contains_key(*k)) {
                why.push(format!("undocumented `data.{name}`"));
            }
            why
        }
        _ => vec![format!("`data` is {} where the spec shows an object", shorten(&have.to_string(), 120))],
    }
}

const MODIFIED: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z");

/// The list: an array of `{key, modified, size}` (the spec's example's fields, in order),
/// newest first, then by key.
fn list_body(got: &Got) -> Vec<String> {
    let mut why = Vec::new();
    if !media_type_is(got, "application/json") {
        why.push(format!("Content-Type {:?} where JSON is sent", got.header("content-type").unwrap_or("(none)")));
    }
    let example = pb_backups_spec::find(Operation::List, 200).and_then(|d| d.body(Lang::Zh)).expect("the list example");
    let fields: Vec<&str> = example[0].as_object().expect("an object").keys().map(String::as_str).collect();
    let Some(items) = got.json().and_then(|b| b.as_array().cloned()) else {
        return vec!["the body is not a JSON array".into()];
    };
    let mut previous: Option<(String, String)> = None;
    for item in &items {
        let Some(object) = item.as_object() else {
            why.push("an item is not an object".into());
            continue;
        };
        let have: Vec<&str> = object.keys().map(String::as_str).collect();
        if have != fields {
            why.push(format!("an item has the fields {} where the spec has {}", have.join(", "), fields.join(", ")));
            break;
        }
        let (Some(key), Some(modified)) = (item["key"].as_str(), item["modified"].as_str()) else {
            why.push("key and modified are not strings".into());
            break;
        };
        if time::PrimitiveDateTime::parse(modified, MODIFIED).is_err() {
            why.push(format!("modified {modified:?} is not like 2023-05-19 16:25:57.542Z"));
            break;
        }
        if item["size"].as_u64().is_none() {
            why.push("size is not a whole number of bytes".into());
            break;
        }
        if let Some((prev_key, prev_modified)) = &previous {
            let in_order = prev_modified.as_str() > modified || (prev_modified == modified && prev_key.as_str() < key);
            if !in_order {
                why.push(format!("not newest first: {prev_key:?} is listed before the newer or equal {key:?}"));
                break;
            }
        }
        previous = Some((key.to_string(), modified.to_string()));
    }
    why
}

/// The download: zip bytes with the documented headers.
fn download(got: &Got, key: Option<&str>) -> Vec<String> {
    let mut why = Vec::new();
    if !media_type_is(got, "application/zip") {
        why.push(format!("Content-Type {:?} where application/zip is documented", got.header("content-type").unwrap_or("(none)")));
    }
    if let Some(key) = key {
        let want = format!("attachment; filename=\"{key}\"");
        match got.header("content-disposition") {
            None => why.push("no Content-Disposition header".into()),
            Some(have) if have != want => why.push(format!("Content-Disposition {have:?} where {want:?} is documented")),
            Some(_) => {}
        }
    }
    if got.header("accept-ranges") != Some("bytes") {
        why.push("no `Accept-Ranges: bytes` header".into());
    }
    if got.status == 200 {
        if let Err(problem) = readable_zip(&got.body) {
            why.push(format!("the body is not a readable zip archive: {problem}"));
        }
    } else if got.status < 300 && !got.body.starts_with(b"PK\x03\x04") {
        // A part (206) cannot be read alone; it starts like a zip when it starts at 0.
        why.push("the body is not a zip archive".into());
    }
    why
}

/// Reads a whole archive: its central directory parses and every entry decodes to its
/// recorded size and CRC.
fn readable_zip(bytes: &[u8]) -> Result<(), zip::result::ZipError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    for index in 0..archive.len() {
        std::io::copy(&mut archive.by_index(index)?, &mut std::io::sink())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

    fn got(status: u16, body: &str) -> Got {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        Got { status, headers, body: body.as_bytes().to_vec() }
    }

    fn documented(op: Operation, status: u16) -> &'static DocumentedResponse {
        pb_backups_spec::find(op, status).unwrap()
    }

    #[test]
    fn the_documented_body_passes_in_its_language_only() {
        let doc = documented(Operation::Upload, 400);
        let zh = serde_json::to_string(&doc.body(Lang::Zh).unwrap()).unwrap();
        assert_eq!(differences(doc, Lang::Zh, &got(400, &zh), None), Vec::<String>::new());
        let why = differences(doc, Lang::En, &got(400, &zh), None);
        assert!(why.iter().any(|w| w.starts_with("`message` is")), "{why:?}");
        assert!(why.iter().any(|w| w.starts_with("`data.file.message` is")), "{why:?}");
    }

    #[test]
    fn order_status_type_and_extra_fields_are_named() {
        let doc = documented(Operation::List, 401);
        let reordered = r#"{"data":{},"message":"请求需要有效的记录授权令牌。","status":401}"#;
        assert_eq!(
            differences(doc, Lang::Zh, &got(401, reordered), None),
            ["fields in the order data, message, status where the spec has status, message, data"]
        );
        let why = differences(doc, Lang::Zh, &got(403, r#"{"status":401,"message":"请求需要有效的记录授权令牌。","data":{},"code":1}"#), None);
        assert_eq!(why, ["status 403 where the spec documents 401", "undocumented field `code`"]);
        let mut plain = got(401, r#"{"status":401,"message":"请求需要有效的记录授权令牌。","data":{}}"#);
        plain.headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(differences(doc, Lang::Zh, &plain, None), ["Content-Type \"text/plain\" where JSON is sent"]);
    }

    #[test]
    fn the_list_must_be_newest_first_with_the_documented_fields() {
        let doc = documented(Operation::List, 200);
        let newest_first = r#"[{"key":"b.zip","modified":"2023-05-19 16:25:57.542Z","size":2},{"key":"a.zip","modified":"2023-05-18 16:25:57.542Z","size":1}]"#;
        assert_eq!(differences(doc, Lang::Zh, &got(200, newest_first), None), Vec::<String>::new());
        let by_key = r#"[{"key":"a.zip","modified":"2023-05-18 16:25:57.542Z","size":1},{"key":"b.zip","modified":"2023-05-19 16:25:57.542Z","size":2}]"#;
        assert_eq!(differences(doc, Lang::Zh, &got(200, by_key), None), ["not newest first: \"a.zip\" is listed before the newer or equal \"b.zip\""]);
        let bad_time = r#"[{"key":"a.zip","modified":"2023-05-18T16:25:57Z","size":1}]"#;
        assert_eq!(differences(doc, Lang::Zh, &got(200, bad_time), None), ["modified \"2023-05-18T16:25:57Z\" is not like 2023-05-19 16:25:57.542Z"]);
    }

    #[test]
    fn a_download_needs_its_headers_and_zip_bytes() {
        let doc = documented(Operation::Download, 200);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
        headers.insert("accept-ranges", HeaderValue::from_static("bytes"));
        headers.insert("content-disposition", HeaderValue::from_static("attachment; filename=\"a.zip\""));
        let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        archive.start_file("data.db", zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut archive, b"SQLite format 3\0").unwrap();
        let archive = archive.finish().unwrap().into_inner();
        let zip = Got { status: 200, headers, body: archive.clone() };
        assert_eq!(differences(doc, Lang::Zh, &zip, Some("a.zip")), Vec::<String>::new());
        assert_eq!(differences(doc, Lang::Zh, &zip, Some("b.zip")).len(), 1);
        let mut bare = zip.clone();
        bare.headers.remove("accept-ranges");
        bare.body = b"not a zip".to_vec();
        let found = differences(doc, Lang::Zh, &bare, Some("a.zip"));
        // The second names the zip reader's own error, whose wording is not ours to pin.
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], "no `Accept-Ranges: bytes` header");
        assert!(found[1].starts_with("the body is not a readable zip archive: "), "{found:?}");
        // Cut short: the local header is there, the directory is not.
        let mut cut = zip.clone();
        cut.body.truncate(archive.len() / 2);
        assert_eq!(differences(doc, Lang::Zh, &cut, Some("a.zip")).len(), 1);
        // A part starts like the archive it comes from.
        let mut part = cut.clone();
        part.status = 206;
        let part_differences = differences(doc, Lang::Zh, &part, Some("a.zip"));
        assert!(!part_differences.iter().any(|d| d.contains("zip")), "{part_differences:?}");
    }

    #[test]
    fn leaks_are_found() {
        assert_eq!(leaks(br#"{"message":"remove /srv/pb/backups/x: no such file"}"#, Some("/srv/pb")), ["the data dir's path"]);
        assert_eq!(leaks(br#"{"message":"Raw error: os error 2"}"#, None), ["\"os error\"", "\"Raw error\""]);
        assert!(leaks(br#"{"message":"Not found."}"#, Some("/srv/pb")).is_empty());
    }
}
