//! Talking to the audited server: requests described so a report can show them (tokens
//! as names, never values) and replay them with `curl`, and responses read whole.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// Who a request claims to be.
#[derive(Clone, Debug)]
pub enum Cred {
    /// The superuser's auth token.
    Su,
    /// The regular user's auth token.
    User,
    /// The superuser's file token (sent as an auth token by the hostile probes).
    SuFile,
    /// A token made up by the auditor, shown by its label.
    Crafted { label: &'static str, token: String },
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    Json(Value),
    /// A multipart upload in field `file`; `shown` says what the bytes are.
    File { name: String, bytes: Vec<u8>, shown: &'static str },
}

/// One request, as the report shows it.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: reqwest::Method,
    /// Path and query; `$SUPERUSER_FILE_TOKEN` and `$USER_FILE_TOKEN` stand for file tokens.
    pub path: String,
    pub auth: Option<Cred>,
    pub lang: Option<&'static str>,
    pub body: Body,
    pub range: Option<&'static str>,
}

impl Req {
    pub fn new(method: reqwest::Method, path: impl Into<String>) -> Req {
        Req { method, path: path.into(), auth: None, lang: None, body: Body::None, range: None }
    }

    pub fn get(path: impl Into<String>) -> Req {
        Req::new(reqwest::Method::GET, path)
    }

    pub fn post(path: impl Into<String>) -> Req {
        Req::new(reqwest::Method::POST, path)
    }

    pub fn delete(path: impl Into<String>) -> Req {
        Req::new(reqwest::Method::DELETE, path)
    }

    pub fn auth(mut self, cred: Cred) -> Req {
        self.auth = Some(cred);
        self
    }

    pub fn lang(mut self, lang: Option<&'static str>) -> Req {
        self.lang = lang;
        self
    }

    pub fn json(mut self, body: Value) -> Req {
        self.body = Body::Json(body);
        self
    }

    pub fn file(mut self, name: &str, bytes: Vec<u8>, shown: &'static str) -> Req {
        self.body = Body::File { name: name.to_string(), bytes, shown };
        self
    }

    pub fn range(mut self, range: &'static str) -> Req {
        self.range = Some(range);
        self
    }

    fn cred_name(cred: &Cred) -> &'static str {
        match cred {
            Cred::Su => "$SUPERUSER_TOKEN",
            Cred::User => "$USER_TOKEN",
            Cred::SuFile => "$SUPERUSER_FILE_TOKEN",
            Cred::Crafted { label, .. } => label,
        }
    }

    /// One line: method, path, and the headers and body that matter.
    pub fn shown(&self) -> String {
        let mut line = format!("{} {}", self.method, self.path);
        if let Some(cred) = &self.auth {
            line.push_str(&format!(", Authorization: {}", Self::cred_name(cred)));
        }
        if let Some(lang) = self.lang {
            line.push_str(&format!(", Accept-Language: {lang}"));
        }
        if let Some(range) = self.range {
            line.push_str(&format!(", Range: {range}"));
        }
        match &self.body {
            Body::None => {}
            Body::Json(value) => line.push_str(&format!(", body {value}")),
            Body::File { name, shown, .. } => line.push_str(&format!(", file {name:?} ({shown})")),
        }
        line
    }

    /// A `curl` command that sends this request again (tokens as shell variables).
    pub fn curl(&self) -> String {
        let mut cmd = String::new();
        if let Body::File { shown, .. } = &self.body {
            cmd.push_str(&format!("# the file: {shown}\n"));
        }
        cmd.push_str(&format!("curl -i -X {} \"$URL{}\"", self.method, self.path));
        if let Some(cred) = &self.auth {
            cmd.push_str(&format!(" -H \"Authorization: {}\"", Self::cred_name(cred)));
        }
        if let Some(lang) = self.lang {
            cmd.push_str(&format!(" -H 'Accept-Language: {lang}'"));
        }
        if let Some(range) = self.range {
            cmd.push_str(&format!(" -H 'Range: {range}'"));
        }
        match &self.body {
            Body::None => {}
            Body::Json(value) => cmd.push_str(&format!(" -H 'Content-Type: application/json' -d '{value}'")),
            Body::File { name, .. } => cmd.push_str(&format!(" -F 'file=@FILE;filename={name}'")),
        }
        cmd
    }
}

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The audited server and the tokens the auditor holds for it.
#[derive(Clone)]
pub struct Target {
    pub base: String,
    pub http: reqwest::Client,
    pub su: String,
    pub user: String,
    pub su_file: String,
    pub user_file: String,
    /// Text that must never appear in a report (the data dir's path), with its stand-in.
    pub redactions: Vec<(String, &'static str)>,
}

/// Why a request got no response.
pub fn describe_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "no answer in time".into()
    } else {
        "connection closed without an answer".into()
    }
}

impl Target {
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("an HTTP client")
    }

    fn token(&self, cred: &Cred) -> String {
        match cred {
            Cred::Su => self.su.clone(),
            Cred::User => self.user.clone(),
            Cred::SuFile => self.su_file.clone(),
            Cred::Crafted { token, .. } => token.clone(),
        }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&self, req: &Req) -> Result<Got, reqwest::Error> {
        self.send_with(&self.http, req).await
    }

    /// Sends `req` on a given client (a fresh one opens a fresh connection).
    pub async fn send_with(&self, http: &reqwest::Client, req: &Req) -> Result<Got, reqwest::Error> {
        let path = req.path.replace("$SUPERUSER_FILE_TOKEN", &self.su_file).replace("$USER_FILE_TOKEN", &self.user_file);
        let mut r = http.request(req.method.clone(), format!("{}{}", self.base, path));
        if let Some(cred) = &req.auth {
            r = r.header("Authorization", self.token(cred));
        }
        if let Some(lang) = req.lang {
            r = r.header("Accept-Language", lang);
        }
        if let Some(range) = req.range {
            r = r.header("Range", range);
        }
        r = match &req.body {
            Body::None => r,
            Body::Json(value) => r.json(value),
            Body::File { name, bytes, .. } => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(name.clone())
                    .mime_str("application/zip")
                    .expect("a valid mime type");
                r.multipart(reqwest::multipart::Form::new().part("file", part))
            }
        };
        let response = r.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Got { status, headers, body })
    }

    /// Replaces tokens, the base URL and the data dir's path by their names.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (token, name) in [
            (&self.su_file, "$SUPERUSER_FILE_TOKEN"),
            (&self.user_file, "$USER_FILE_TOKEN"),
            (&self.su, "$SUPERUSER_TOKEN"),
            (&self.user, "$USER_TOKEN"),
        ] {
            if !token.is_empty() {
                text = text.replace(token.as_str(), name);
            }
        }
        for (secret, name) in &self.redactions {
            text = text.replace(secret.as_str(), name);
        }
        random_names(&text.replace(&self.base, "$URL"))
    }

    /// What came back, in one short line for a report.
    pub fn shown(&self, got: &Result<Got, reqwest::Error>) -> String {
        let got = match got {
            Ok(got) => got,
            Err(e) => return describe_error(e),
        };
        let kind = got.header("content-type").unwrap_or("");
        let body = if got.body.is_empty() {
            "(no body)".to_string()
        } else if kind.starts_with("application/zip") {
            "(a zip archive)".to_string()
        } else if let Some(value) = got.json() {
            steady(value).to_string()
        } else {
            format!("{:?}", String::from_utf8_lossy(&got.body))
        };
        let body = self.redact(&body);
        let body = shorten(&body, 200);
        format!("{} {body}", got.status)
    }
}

/// Temp names a server made up from a sent name (`NAME_` + 10 random characters + `.zip`,
/// as PocketBase does) with the random part blanked, so that reports stay the same.
fn random_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('_') {
        let (before, tail) = rest.split_at(at);
        out.push_str(before);
        let candidate = &tail[1..];
        let random = candidate.len() >= 14
            && candidate.as_bytes()[..10].iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && candidate[10..].starts_with(".zip")
            && !candidate[14..].starts_with(|c: char| c.is_ascii_alphanumeric());
        if random {
            out.push_str("_[random]");
            rest = &candidate[10..];
        } else {
            out.push('_');
            rest = candidate;
        }
    }
    out.push_str(rest);
    out
}

/// A list with its times and sizes blanked: they change from run to run.
fn steady(mut value: Value) -> Value {
    if let Some(items) = value.as_array_mut() {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for (field, blank) in [("modified", "[time]"), ("size", "[size]")] {
                if let Some(v) = item.get_mut(field) {
                    *v = Value::String(blank.into());
                }
            }
        }
    }
    value
}

/// At most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_temp_names_are_blanked_and_others_kept() {
        assert_eq!(random_names(r#""audit_d_notzip_en_lmpli32xej.zip" mime type"#), r#""audit_d_notzip_en_[random].zip" mime type"#);
        for kept in ["audit_a_seed.zip", "audit_d_notzip_default.zip", "x_abcdefghij.zipper_", "_", "a_b"] {
            assert_eq!(random_names(kept), kept);
        }
    }

    #[test]
    fn requests_are_shown_and_replayed_with_token_names() {
        let req = Req::post("/api/backups").auth(Cred::Su).lang(Some("en")).json(serde_json::json!({"name": "a.zip"}));
        assert_eq!(req.shown(), r#"POST /api/backups, Authorization: $SUPERUSER_TOKEN, Accept-Language: en, body {"name":"a.zip"}"#);
        assert_eq!(
            req.curl(),
            r#"curl -i -X POST "$URL/api/backups" -H "Authorization: $SUPERUSER_TOKEN" -H 'Accept-Language: en' -H 'Content-Type: application/json' -d '{"name":"a.zip"}'"#
        );
    }
}
