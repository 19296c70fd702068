//! The settings' JSON bodies as the API documents them: what `GET` serves (no password or
//! secret), what a `PATCH` may send, and the nested validation error.

use std::collections::BTreeMap;

use poem_openapi::Object;
use serde_json::Value;

use crate::backends::Override;
use crate::settings::{S3Settings, Settings};

/// The settings served: the others PocketBase keeps in the same row are left as they are.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "Settings")]
pub struct SettingsBody {
    pub meta: MetaSettings,
    pub backups: BackupsSettingsBody,
    /// Addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`) superusers may log in and
    /// send requests from; empty: anywhere. Others get 403.
    #[oai(rename = "superuserIPs")]
    pub superuser_ips: Vec<String>,
    pub trusted_proxy: TrustedProxyBody,
    pub smtp: SmtpSettingsBody,
    /// PocketBase's file storage in S3: stored and tested here (`POST /api/settings/test/s3`
    /// with `storage`), not used, as this server serves no files.
    pub s3: S3SettingsBody,
}

/// An S3-compatible bucket. The secret is never served.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3Settings")]
pub struct S3SettingsBody {
    pub enabled: bool,
    pub bucket: String,
    pub region: String,
    /// Base URL of the store, e.g. `https://s3.amazonaws.com` or `http://127.0.0.1:9000`
    /// (`https://` when no scheme is given).
    pub endpoint: String,
    pub access_key: String,
    /// `ENDPOINT/BUCKET/KEY` requests instead of `BUCKET.ENDPOINT/KEY` (IP addresses, MinIO).
    pub force_path_style: bool,
}

/// The bucket the server's `--backups-s3-*` flags (or `PB_BACKUPS_S3_*` environment) name:
/// while they do, backups go there, whatever `backups.s3` says.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3Override")]
pub struct S3OverrideBody {
    pub bucket: String,
    /// Empty: AWS S3.
    pub endpoint: String,
    pub region: String,
    /// The folder inside the bucket; empty: its root.
    pub prefix: String,
}

impl From<&Override> for S3OverrideBody {
    fn from(o: &Override) -> Self {
        S3OverrideBody { bucket: o.bucket.clone(), endpoint: o.endpoint.clone(), region: o.region.clone(), prefix: o.prefix.clone() }
    }
}

impl From<S3Settings> for S3SettingsBody {
    fn from(s: S3Settings) -> Self {
        // No secret: it is write only.
        S3SettingsBody {
            enabled: s.enabled,
            bucket: s.bucket,
            region: s.region,
            endpoint: s.endpoint,
            access_key: s.access_key,
            force_path_style: s.force_path_style,
        }
    }
}

/// Which request headers name the client, for the peers listed with `--trusted-proxy`.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "TrustedProxySettings")]
pub struct TrustedProxyBody {
    /// Header names (e.g. `X-Forwarded-For`), tried in order; empty: the client is the
    /// connection's peer. The last instance of a header counts.
    pub headers: Vec<String>,
    /// Take the leftmost address of the header's list instead of the rightmost (the one the
    /// nearest proxy wrote). The leftmost is whatever the client sent: only for proxies that
    /// replace the header.
    #[oai(rename = "useLeftmostIP")]
    pub use_leftmost_ip: bool,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct MetaSettings {
    /// Part of the names of scheduled backups (snake_case, at most 50 bytes); `{APP_NAME}`
    /// in mail. Read only here.
    #[oai(read_only)]
    pub app_name: String,
    /// `{APP_URL}` in mail. Read only here.
    #[oai(rename = "appURL", read_only)]
    pub app_url: String,
    /// The name mail is sent from.
    pub sender_name: String,
    /// The address mail is sent from.
    pub sender_address: String,
}

/// How mail leaves: this SMTP server when `enabled`, else the local `sendmail`. The password
/// is never served.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SmtpSettings")]
pub struct SmtpSettingsBody {
    pub enabled: bool,
    pub host: String,
    pub port: i64,
    /// Empty: no login.
    pub username: String,
    /// `PLAIN` (also when empty) or `LOGIN`.
    pub auth_method: String,
    /// TLS from the first byte (SMTPS, usually port 465); otherwise STARTTLS when offered.
    pub tls: bool,
    /// The name given in EHLO (empty: `localhost`).
    pub local_name: String,
}


/// Automatic backups.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "BackupsSettings")]
pub struct BackupsSettingsBody {
    /// Five-field cron expression (minute hour day-of-month month day-of-week; `*`, ranges,
    /// steps, lists) or `@yearly @annually @monthly @weekly @daily @midnight @hourly`,
    /// in UTC; empty: no scheduled backups.
    pub cron: String,
    /// How many scheduled backups (`@auto_pb_backup_*`) to keep; at least 1 with a cron.
    pub cron_max_keep: i64,
    /// Where backups are kept: this bucket (at its root, as PocketBase keeps them) while
    /// `enabled`, else the data dir's `backups` folder. Read for every operation: a change
    /// applies to the next one; one running keeps the storage it started with.
    pub s3: S3SettingsBody,
    /// Present only when the server's `--backups-s3-*` flags name a bucket: backups then go
    /// there, and `s3` is stored but not used.
    #[oai(read_only, skip_serializing_if_is_none)]
    pub s3_override: Option<S3OverrideBody>,
}

/// A change to the settings: absent fields keep their value.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SettingsPatch")]
pub struct SettingsPatchBody {
    pub backups: Option<BackupsPatchBody>,
    /// Replaces the whole list; each entry an address or a CIDR range.
    #[oai(rename = "superuserIPs")]
    pub superuser_ips: Option<Vec<String>>,
    pub trusted_proxy: Option<TrustedProxyPatchBody>,
    pub smtp: Option<SmtpPatchBody>,
    pub meta: Option<MetaPatchBody>,
    pub s3: Option<S3PatchBody>,
}

/// A change to an S3 section: absent fields keep their value. With `enabled`, `endpoint`,
/// `bucket`, `region`, `accessKey` and `secret` are required (a stored secret counts).
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "S3SettingsPatch")]
pub struct S3PatchBody {
    pub enabled: Option<bool>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// A URL.
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    /// Write only: absent keeps the stored one, empty (or null) clears it.
    #[oai(write_only)]
    pub secret: Option<String>,
    pub force_path_style: Option<bool>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "TrustedProxySettingsPatch")]
pub struct TrustedProxyPatchBody {
    pub headers: Option<Vec<String>>,
    #[oai(rename = "useLeftmostIP")]
    pub use_leftmost_ip: Option<bool>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "SmtpSettingsPatch")]
pub struct SmtpPatchBody {
    pub enabled: Option<bool>,
    /// An IP address or DNS name; required while `enabled`.
    pub host: Option<String>,
    /// Required while `enabled`.
    #[oai(validator(minimum(value = "0"), maximum(value = "65535")))]
    pub port: Option<i64>,
    pub username: Option<String>,
    /// Write only: absent keeps the stored one, empty (or null) clears it.
    #[oai(write_only)]
    pub password: Option<String>,
    /// `PLAIN`, `LOGIN` or empty.
    pub auth_method: Option<String>,
    pub tls: Option<bool>,
    pub local_name: Option<String>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "MetaSettingsPatch")]
pub struct MetaPatchBody {
    pub sender_name: Option<String>,
    /// An email address.
    pub sender_address: Option<String>,
}

#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", rename = "BackupsSettingsPatch")]
pub struct BackupsPatchBody {
    pub cron: Option<String>,
    /// 0 or more (at least 1 with a cron), as a 32-bit integer.
    #[oai(validator(minimum(value = "0"), maximum(value = "2147483647")))]
    pub cron_max_keep: Option<i64>,
    pub s3: Option<S3PatchBody>,
}

/// A validation error, with the refused fields under their section:
/// `{"data": {"backups": {"cron": {"code", "message"}}}}`; a list's entries by index:
/// `{"data": {"superuserIPs": {"0": {"code", "message"}}}}`; a field of `backups.s3` one level
/// deeper: `{"data": {"backups": {"s3": {"bucket": {"code", "message"}}}}}`; sections
/// `backups`, `s3`, `superuserIPs`, `trustedProxy`, `smtp`, `meta`.
#[derive(Object, Debug)]
#[oai(rename = "SettingsValidationError")]
pub struct SettingsError400 {
    pub status: u16,
    pub message: String,
    /// Section → field → `{"code", "message"}` (or, for `backups.s3`, field → `{"code",
    /// "message"}` once more).
    pub data: BTreeMap<String, BTreeMap<String, Value>>,
}

impl SettingsBody {
    /// The settings served, with the flags' bucket when it wins over `backups.s3`.
    pub(super) fn served(s: Settings, s3_override: Option<&Override>) -> Self {
        let mut body = SettingsBody::from(s);
        body.backups.s3_override = s3_override.map(S3OverrideBody::from);
        body
    }
}

impl From<Settings> for SettingsBody {
    fn from(s: Settings) -> Self {
        let smtp = s.smtp;
        SettingsBody {
            meta: MetaSettings {
                app_name: s.app_name,
                app_url: s.app_url,
                sender_name: s.sender_name,
                sender_address: s.sender_address,
            },
            // No password: it is write only.
            smtp: SmtpSettingsBody {
                enabled: smtp.enabled,
                host: smtp.host,
                port: smtp.port,
                username: smtp.username,
                auth_method: smtp.auth_method,
                tls: smtp.tls,
                local_name: smtp.local_name,
            },
            backups: BackupsSettingsBody {
                cron: s.backups.cron,
                cron_max_keep: s.backups.cron_max_keep,
                s3: s.backups_s3.into(),
                s3_override: None,
            },
            superuser_ips: s.superuser_ips,
            trusted_proxy: TrustedProxyBody {
                headers: s.trusted_proxy.headers,
                use_leftmost_ip: s.trusted_proxy.use_leftmost_ip,
            },
            s3: s.storage_s3.into(),
        }
    }
}
