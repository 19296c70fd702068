//! A `PATCH /api/settings` body read into a [`SettingsPatch`] by hand rather than by serde, so
//! that a value of the wrong type is refused per field, with PocketBase's code, and absent,
//! `null` and empty can mean different things (a secret kept, cleared).

use serde_json::{Map, Value};

use crate::i18n::Message;
use crate::settings::{BackupsPatch, MetaPatch, S3Patch, SettingsPatch, SmtpPatch, TrustedProxyPatch};

/// Refused fields: section, field (a list entry's index), code, message.
pub(super) type FieldErrors = Vec<(&'static str, String, &'static str, Message)>;

/// The patch in a PATCH body. A body that is not a JSON object (or a section that is not of
/// its type: `backups` and `trustedProxy` objects, `superuserIPs` a list) is `Err(None)`;
/// values of the wrong type are per-field errors.
pub(super) fn parse_patch(bytes: &[u8]) -> Result<SettingsPatch, Option<FieldErrors>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(SettingsPatch::default());
    }
    let body: Value = serde_json::from_slice(bytes).map_err(|_| None)?;
    let body = body.as_object().ok_or(None)?;
    let mut wrong = Vec::new();
    let invalid_type = |section, field: &str| (section, field.to_string(), "validation_invalid_type", Message::InvalidType);
    // An absent field keeps its value; an explicit null is not a value of its type.
    let backups = match body.get("backups") {
        None => BackupsPatch::default(),
        Some(Value::Object(b)) => {
            let cron = match b.get("cron") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    wrong.push(invalid_type("backups", "cron"));
                    None
                }
            };
            let cron_max_keep = match b.get("cronMaxKeep") {
                None => None,
                Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
                    Some(n) => Some(n),
                    None => {
                        wrong.push(invalid_type("backups", "cronMaxKeep"));
                        None
                    }
                },
            };
            BackupsPatch { cron, cron_max_keep }
        }
        Some(_) => return Err(None),
    };
    let backups_s3 = match body.get("backups").and_then(|b| b.get("s3")) {
        None => S3Patch::default(),
        Some(Value::Object(fields)) => parse_s3_patch(fields, "backups", "s3.", &mut wrong),
        Some(_) => return Err(None),
    };
    let storage_s3 = match body.get("s3") {
        None => S3Patch::default(),
        Some(Value::Object(fields)) => parse_s3_patch(fields, "s3", "", &mut wrong),
        Some(_) => return Err(None),
    };
    let superuser_ips = match body.get("superuserIPs") {
        None => None,
        Some(Value::Array(items)) => {
            let mut ips = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(ip) => ips.push(ip.to_string()),
                    None => wrong.push(invalid_type("superuserIPs", &i.to_string())),
                }
            }
            Some(ips)
        }
        Some(_) => return Err(None),
    };
    let trusted_proxy = match body.get("trustedProxy") {
        None => TrustedProxyPatch::default(),
        Some(Value::Object(p)) => {
            let headers = match p.get("headers") {
                None => None,
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                    Some(items.iter().filter_map(Value::as_str).map(str::to_string).collect())
                }
                Some(_) => {
                    wrong.push(invalid_type("trustedProxy", "headers"));
                    None
                }
            };
            let use_leftmost_ip = match p.get("useLeftmostIP") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    wrong.push(invalid_type("trustedProxy", "useLeftmostIP"));
                    None
                }
            };
            TrustedProxyPatch { headers, use_leftmost_ip }
        }
        Some(_) => return Err(None),
    };
    let (smtp, meta) = parse_mail_patch(body, &mut wrong)?;
    if wrong.is_empty() {
        Ok(SettingsPatch { backups, superuser_ips, trusted_proxy, smtp, meta, backups_s3, storage_s3 })
    } else {
        Err(Some(wrong))
    }
}

/// An S3 section of a PATCH body. An absent field keeps its value; another type, an explicit
/// null too, is a per-field error, but for the secret, which null clears as in PocketBase.
fn parse_s3_patch(
    fields: &Map<String, Value>,
    section: &'static str,
    prefix: &str,
    wrong: &mut FieldErrors,
) -> S3Patch {
    let mut refuse = |name: &str| {
        wrong.push((section, format!("{prefix}{name}"), "validation_invalid_type", Message::InvalidType));
    };
    let mut text = |name: &str| match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            refuse(name);
            None
        }
    };
    let (bucket, region, endpoint, access_key) = (text("bucket"), text("region"), text("endpoint"), text("accessKey"));
    let secret = match fields.get("secret") {
        Some(Value::Null) => Some(String::new()),
        _ => text("secret"),
    };
    let mut flag = |name: &str| match fields.get(name)? {
        Value::Bool(b) => Some(*b),
        _ => {
            wrong.push((section, format!("{prefix}{name}"), "validation_invalid_type", Message::InvalidType));
            None
        }
    };
    let (enabled, force_path_style) = (flag("enabled"), flag("forcePathStyle"));
    S3Patch { enabled, bucket, region, endpoint, access_key, secret, force_path_style }
}

/// The `smtp` and `meta` sections of a PATCH body (a section that is not an object is
/// `Err(None)`). An absent field keeps its value; another type, an explicit null too, is a
/// per-field error, but for the SMTP password, which null clears as in PocketBase.
fn parse_mail_patch(
    body: &serde_json::Map<String, Value>,
    wrong: &mut FieldErrors,
) -> Result<(SmtpPatch, MetaPatch), Option<FieldErrors>> {
    let empty = serde_json::Map::new();
    let section = |name: &str| match body.get(name) {
        None => Ok(&empty),
        Some(Value::Object(fields)) => Ok(fields),
        Some(_) => Err(None),
    };
    let (smtp, meta) = (section("smtp")?, section("meta")?);
    let mut refuse = |section: &'static str, name: &str| {
        wrong.push((section, name.to_string(), "validation_invalid_type", Message::InvalidType));
    };
    let mut text = |section: &'static str, fields: &serde_json::Map<String, Value>, name: &str| match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            refuse(section, name);
            None
        }
    };
    let host = text("smtp", smtp, "host");
    let username = text("smtp", smtp, "username");
    let password = match smtp.get("password") {
        Some(Value::Null) => Some(String::new()),
        _ => text("smtp", smtp, "password"),
    };
    let auth_method = text("smtp", smtp, "authMethod");
    let local_name = text("smtp", smtp, "localName");
    let sender_name = text("meta", meta, "senderName");
    let sender_address = text("meta", meta, "senderAddress");
    let mut flag = |name: &str| match smtp.get(name)? {
        Value::Bool(b) => Some(*b),
        _ => {
            wrong.push(("smtp", name.to_string(), "validation_invalid_type", Message::InvalidType));
            None
        }
    };
    let (enabled, tls) = (flag("enabled"), flag("tls"));
    let port = match smtp.get("port") {
        None => None,
        Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                wrong.push(("smtp", "port".to_string(), "validation_invalid_type", Message::InvalidType));
                None
            }
        },
    };
    Ok((
        SmtpPatch { enabled, host, port, username, password, auth_method, tls, local_name },
        MetaPatch { sender_name, sender_address },
    ))
}


#[cfg(test)]
mod tests {
    use super::*;

    fn backups(cron: Option<&str>, keep: Option<i64>) -> SettingsPatch {
        SettingsPatch { backups: BackupsPatch { cron: cron.map(Into::into), cron_max_keep: keep }, ..Default::default() }
    }

    fn wrong(body: &[u8]) -> Vec<(&'static str, String, &'static str)> {
        parse_patch(body).unwrap_err().unwrap().into_iter().map(|(s, f, c, _)| (s, f, c)).collect()
    }

    #[test]
    fn patch_bodies() {
        assert_eq!(parse_patch(b"  "), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"meta": {"appName": "x"}}"#), Ok(SettingsPatch::default()));
        assert_eq!(parse_patch(br#"{"backups": {"cron": "@daily", "cronMaxKeep": 2}}"#), Ok(backups(Some("@daily"), Some(2))));
        assert_eq!(parse_patch(b"[1]"), Err(None));
        assert_eq!(parse_patch(b"{\"backups\": 3}"), Err(None));
        assert_eq!(parse_patch(b"{"), Err(None));
        assert_eq!(wrong(br#"{"backups": {"cron": 5, "cronMaxKeep": "3"}}"#), [
            ("backups", "cron".to_string(), "validation_invalid_type"),
            ("backups", "cronMaxKeep".to_string(), "validation_invalid_type")
        ]);
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 2.5}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cron": null}}"#).is_err());
        assert!(parse_patch(br#"{"backups": null}"#).is_err());
        assert!(parse_patch(br#"{"backups": {"cronMaxKeep": 99999999999}}"#).is_err());
    }

    #[test]
    fn access_patch_bodies() {
        let patch = parse_patch(br#"{"superuserIPs": ["10.0.0.0/8", ""], "trustedProxy": {"headers": ["X-Real-IP"]}}"#);
        assert_eq!(
            patch,
            Ok(SettingsPatch {
                superuser_ips: Some(vec!["10.0.0.0/8".into(), "".into()]),
                trusted_proxy: TrustedProxyPatch { headers: Some(vec!["X-Real-IP".into()]), use_leftmost_ip: None },
                ..Default::default()
            })
        );
        let patch = parse_patch(br#"{"superuserIPs": [], "trustedProxy": {"useLeftmostIP": true}}"#).unwrap();
        assert_eq!((patch.superuser_ips, patch.trusted_proxy.use_leftmost_ip), (Some(vec![]), Some(true)));
        // Not a list, not an object: the body is unreadable, as PocketBase finds it.
        assert_eq!(parse_patch(br#"{"superuserIPs": "10.0.0.1"}"#), Err(None));
        assert_eq!(parse_patch(br#"{"superuserIPs": null}"#), Err(None));
        assert_eq!(parse_patch(br#"{"trustedProxy": ["x"]}"#), Err(None));
        assert_eq!(wrong(br#"{"superuserIPs": ["10.0.0.1", 5], "trustedProxy": {"headers": [1], "useLeftmostIP": "yes"}}"#), [
            ("superuserIPs", "1".to_string(), "validation_invalid_type"),
            ("trustedProxy", "headers".to_string(), "validation_invalid_type"),
            ("trustedProxy", "useLeftmostIP".to_string(), "validation_invalid_type"),
        ]);
    }

    #[test]
    fn s3_patch_bodies() {
        let patch = parse_patch(
            br#"{"backups": {"s3": {"enabled": true, "bucket": "b", "region": "r", "endpoint": "http://e",
                                    "accessKey": "a", "secret": "s", "forcePathStyle": true}},
                 "s3": {"bucket": "files", "secret": null}}"#,
        )
        .unwrap();
        assert_eq!(patch.backups_s3, S3Patch {
            enabled: Some(true),
            bucket: Some("b".into()),
            region: Some("r".into()),
            endpoint: Some("http://e".into()),
            access_key: Some("a".into()),
            secret: Some("s".into()),
            force_path_style: Some(true),
        });
        // Absent keeps the secret, null clears it; other fields stay unset.
        assert_eq!(patch.storage_s3, S3Patch { bucket: Some("files".into()), secret: Some(String::new()), ..Default::default() });
        assert_eq!(parse_patch(br#"{"backups": {"s3": {"bucket": "b"}}}"#).unwrap().backups_s3.secret, None);
        assert_eq!(parse_patch(br#"{"backups": {"s3": 5}}"#), Err(None));
        assert_eq!(parse_patch(br#"{"s3": null}"#), Err(None));
        let mut got = wrong(br#"{"backups": {"s3": {"enabled": "yes", "bucket": 5}}, "s3": {"forcePathStyle": 1}}"#);
        got.sort();
        assert_eq!(got, [
            ("backups", "s3.bucket".to_string(), "validation_invalid_type"),
            ("backups", "s3.enabled".to_string(), "validation_invalid_type"),
            ("s3", "forcePathStyle".to_string(), "validation_invalid_type"),
        ]);
    }

    #[test]
    fn mail_patch_bodies() {
        let patch = parse_patch(
            br#"{"smtp": {"enabled": true, "host": "127.0.0.1", "port": 2525, "username": "u", "password": "p",
                          "authMethod": "LOGIN", "tls": false, "localName": "me.example"},
                 "meta": {"senderName": "Ops", "senderAddress": "ops@example.com", "appName": "ignored"}}"#,
        )
        .unwrap();
        assert_eq!(patch.smtp, SmtpPatch {
            enabled: Some(true),
            host: Some("127.0.0.1".into()),
            port: Some(2525),
            username: Some("u".into()),
            password: Some("p".into()),
            auth_method: Some("LOGIN".into()),
            tls: Some(false),
            local_name: Some("me.example".into()),
        });
        assert_eq!(patch.meta, MetaPatch { sender_name: Some("Ops".into()), sender_address: Some("ops@example.com".into()) });
        // Absent keeps the password, null and empty clear it.
        assert_eq!(parse_patch(br#"{"smtp": {"host": "h"}}"#).unwrap().smtp.password, None);
        assert_eq!(parse_patch(br#"{"smtp": {"password": null}}"#).unwrap().smtp.password, Some(String::new()));
        assert_eq!(parse_patch(b"{\"smtp\": []}"), Err(None));
        let mut got = wrong(br#"{"smtp": {"enabled": "yes", "port": "25", "host": 1}, "meta": {"senderName": false}}"#);
        got.sort();
        assert_eq!(got, [
            ("meta", "senderName".to_string(), "validation_invalid_type"),
            ("smtp", "enabled".to_string(), "validation_invalid_type"),
            ("smtp", "host".to_string(), "validation_invalid_type"),
            ("smtp", "port".to_string(), "validation_invalid_type"),
        ]);
    }
}
