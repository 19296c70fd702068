//! The two S3 sections of PocketBase's settings row: `backups.s3` (where backups are kept) and
//! `s3` (PocketBase's file storage, which this server only stores and tests). Same shape in
//! both: `enabled, bucket, region, endpoint, accessKey, secret, forcePathStyle`. Read from the
//! row, changed by a patch (an absent `secret` keeps the stored one), and checked with
//! PocketBase's codes. The secret never reaches a log line or a response.

use serde_json::{json, Map, Value};

use super::{FieldProblem, Invalid};

/// Longest value of any field read from a stored row: longer ones (foreign data) read as
/// empty, which leaves such a section unusable rather than half-read.
const MAX_FIELD_BYTES: usize = 4096;

/// One S3 section, as stored.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub enabled: bool,
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub access_key: String,
    pub secret: String,
    pub force_path_style: bool,
}

// Hand-written so that the secret never reaches a log line.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("enabled", &self.enabled)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .finish_non_exhaustive()
    }
}

/// A change to one S3 section: absent fields keep their stored value. A `secret` of
/// `Some("")` clears it; `None` keeps it (it is never served, so clients send none).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Patch {
    pub enabled: Option<bool>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    pub secret: Option<String>,
    pub force_path_style: Option<bool>,
}

// Hand-written so that the secret never reaches a log line.
impl std::fmt::Debug for S3Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Patch")
            .field("enabled", &self.enabled)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl S3Patch {
    pub fn is_empty(&self) -> bool {
        *self == S3Patch::default()
    }
}

/// The section at `value` (anything but an object reads as PocketBase's defaults: off).
pub fn from_value(value: &Value) -> S3Settings {
    let text = |key: &str| {
        let s = value[key].as_str().unwrap_or_default();
        if s.len() > MAX_FIELD_BYTES {
            tracing::warn!(field = key, "an S3 setting is too long to be used: read as empty");
            return String::new();
        }
        s.to_string()
    };
    S3Settings {
        enabled: value["enabled"].as_bool().unwrap_or(false),
        bucket: text("bucket"),
        region: text("region"),
        endpoint: text("endpoint"),
        access_key: text("accessKey"),
        secret: text("secret"),
        force_path_style: value["forcePathStyle"].as_bool().unwrap_or(false),
    }
}

/// `current` with `patch` applied; text is taken as sent, as PocketBase stores it.
pub fn merged(current: &S3Settings, patch: &S3Patch) -> S3Settings {
    let keep = |new: &Option<String>, old: &str| new.clone().unwrap_or_else(|| old.to_string());
    S3Settings {
        enabled: patch.enabled.unwrap_or(current.enabled),
        bucket: keep(&patch.bucket, &current.bucket),
        region: keep(&patch.region, &current.region),
        endpoint: keep(&patch.endpoint, &current.endpoint),
        access_key: keep(&patch.access_key, &current.access_key),
        secret: keep(&patch.secret, &current.secret),
        force_path_style: patch.force_path_style.unwrap_or(current.force_path_style),
    }
}

/// Writes `s3` into the section object `stored`, keeping its other keys. An empty secret is
/// left out, as PocketBase leaves it out.
pub fn store(stored: &mut Map<String, Value>, s3: &S3Settings) {
    for (key, v) in [
        ("enabled", json!(s3.enabled)),
        ("bucket", json!(s3.bucket)),
        ("region", json!(s3.region)),
        ("endpoint", json!(s3.endpoint)),
        ("accessKey", json!(s3.access_key)),
        ("forcePathStyle", json!(s3.force_path_style)),
    ] {
        stored.insert(key.into(), v);
    }
    if s3.secret.is_empty() {
        stored.remove("secret");
    } else {
        stored.insert("secret".into(), json!(s3.secret));
    }
}

/// Checks a section as PocketBase does: while it is on, `endpoint`, `bucket`, `region`,
/// `accessKey` and `secret` are required; an endpoint, when given, must be a URL, on or off.
/// `section` and `prefix` place the fields in the error (`backups` + `s3.`, or `s3` + ``).
pub fn validate(s3: &S3Settings, section: &'static str, prefix: &str, invalid: &mut Invalid) {
    let mut refuse = |field: &str, problem| invalid.push(section, format!("{prefix}{field}"), problem);
    if s3.enabled && s3.endpoint.is_empty() {
        refuse("endpoint", FieldProblem::Required);
    } else if !s3.endpoint.is_empty() && !is_url(&s3.endpoint) {
        refuse("endpoint", FieldProblem::NotAUrl);
    }
    if s3.enabled {
        for (field, value) in [
            ("bucket", &s3.bucket),
            ("region", &s3.region),
            ("accessKey", &s3.access_key),
            ("secret", &s3.secret),
        ] {
            if value.is_empty() {
                refuse(field, FieldProblem::Required);
            }
        }
    }
}

/// The URL schemes PocketBase's check accepts (measured on 0.40.6: `s3://` is refused,
/// `ftp://` and no scheme at all are taken).
const URL_SCHEMES: [&str; 7] = ["http", "https", "ftp", "tcp", "udp", "ws", "wss"];

/// A URL as PocketBase checks an endpoint: an optional lowercase scheme of [`URL_SCHEMES`]
/// then a host (a DNS name, an IPv4 address or a bracketed IPv6 one), an optional port and
/// an optional path and query, without blanks. `example.com` and `localhost:9000` pass.
pub fn is_url(s: &str) -> bool {
    if s.is_empty() || s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if URL_SCHEMES.contains(&scheme) => rest,
        Some(_) => return false,
        None => s,
    };
    if rest.starts_with('/') {
        return false;
    }
    // Parsed as an http URL, which checks the host and the port and splits off the rest.
    match url::Url::parse(&format!("http://{rest}")) {
        Ok(url) => match url.host() {
            Some(url::Host::Domain(name)) => super::is_host(name),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
            None => false,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_as_pocketbase_checks_them() {
        // Each answered by PocketBase 0.40.6 as here.
        for ok in [
            "example.com",
            "localhost:9000",
            "127.0.0.1:9000",
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
            "https://s3.amazonaws.com/",
            "http://localhost",
            "http://a_b.example.com",
            "http://x.com/path?q=1",
            "ftp://x",
        ] {
            assert!(is_url(ok), "{ok}");
        }
        for bad in ["http://x y", "s3://bucket", "http://", "//x.com", "HTTP://X.COM", " http://x.com", ""] {
            assert!(!is_url(bad), "{bad}");
        }
    }

    fn on() -> S3Settings {
        S3Settings {
            enabled: true,
            bucket: "b".into(),
            region: "r".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            access_key: "a".into(),
            secret: "s".into(),
            force_path_style: true,
        }
    }

    fn codes(s3: &S3Settings) -> Vec<String> {
        let mut invalid = Invalid::default();
        validate(s3, "backups", "s3.", &mut invalid);
        invalid.fields.iter().map(|f| format!("{}.{}: {}", f.section, f.field, f.problem.code())).collect()
    }

    #[test]
    fn an_enabled_section_needs_every_field_as_pocketbase_s_does() {
        assert!(codes(&on()).is_empty());
        let empty = S3Settings { enabled: true, ..Default::default() };
        assert_eq!(codes(&empty), [
            "backups.s3.endpoint: validation_required",
            "backups.s3.bucket: validation_required",
            "backups.s3.region: validation_required",
            "backups.s3.accessKey: validation_required",
            "backups.s3.secret: validation_required",
        ]);
        // Off: only a given endpoint is checked.
        assert!(codes(&S3Settings::default()).is_empty());
        let off_bad = S3Settings { endpoint: "not a url".into(), ..Default::default() };
        assert_eq!(codes(&off_bad), ["backups.s3.endpoint: validation_is_url"]);
    }

    #[test]
    fn a_patch_keeps_the_secret_unless_sent_and_an_empty_one_is_not_stored() {
        let stored = on();
        let no_secret = S3Patch { bucket: Some("b2".into()), ..Default::default() };
        let next = merged(&stored, &no_secret);
        assert_eq!((next.bucket.as_str(), next.secret.as_str()), ("b2", "s"));
        let cleared = merged(&stored, &S3Patch { secret: Some(String::new()), ..Default::default() });
        assert_eq!(cleared.secret, "");

        let mut section = serde_json::Map::new();
        section.insert("custom".into(), json!(1));
        store(&mut section, &next);
        assert_eq!(section["secret"], "s");
        assert_eq!(from_value(&Value::Object(section.clone())), next);
        store(&mut section, &cleared);
        assert!(!section.contains_key("secret"), "left out, as PocketBase leaves it out");
        assert_eq!(section["custom"], 1, "other keys stay");
        assert!(!format!("{next:?} {:?}", S3Patch { secret: Some("s".into()), ..Default::default() }).contains("\"s\""));
    }

    #[test]
    fn a_stored_section_of_odd_shape_reads_as_off() {
        assert_eq!(from_value(&json!(null)), S3Settings::default());
        assert_eq!(from_value(&json!("x")), S3Settings::default());
        let long = from_value(&json!({"enabled": true, "bucket": "x".repeat(MAX_FIELD_BYTES + 1)}));
        assert!(long.enabled && long.bucket.is_empty());
    }
}
