//! Second factors and login origins, kept exactly as PocketBase keeps them so that a flow
//! started on one server can be finished on the other: one-time passwords in `_otps` (the
//! code bcrypt-hashed at cost 8, `sentTo` the address it is mailed to), MFA sessions in `_mfas` (the method
//! of the first step), login origins in `_authOrigins` (an MD5 of client address and user
//! agent). Expiry is `created` plus the collection's `duration`, as PocketBase counts it.
//!
//! These tables are foreign data like the rest of `data.db`: rows are looked up by key with a
//! limit, text is read through `substr` (a huge value costs no memory), and a row whose
//! timestamp does not parse counts as expired. The clock is passed in (`now_ms`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rand::Rng;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{
    find_in, hash_password, quoted, random_id, random_secret, AccountsError, Accounts, AuthAlertOptions, AuthCollection,
    MfaOptions, OtpOptions, Record,
};
use crate::mail::Template;

/// bcrypt cost of OTP hashes (PocketBase's `_otps.password` field).
const OTP_HASH_COST: u32 = 8;
/// Beyond this many unexpired codes for one record, the newest is handed out again and no
/// mail is sent (PocketBase's bound on mail a stranger can trigger).
pub const MAX_RECENT_OTPS: usize = 10;
/// Code checks per record in [`OTP_ATTEMPT_WINDOW`] (PocketBase's: 5 in 180 s).
pub const OTP_ATTEMPTS: u32 = 5;
pub const OTP_ATTEMPT_WINDOW: Duration = Duration::from_secs(180);
/// Login origins kept per record; the oldest go when a new one comes.
pub const MAX_AUTH_ORIGINS: usize = 5;
/// bcrypt reads 72 bytes; PocketBase takes OTPs of at most 71.
pub const MAX_OTP_LENGTH: usize = 71;
/// User agents are cut to this many bytes before fingerprinting, as PocketBase does.
const USER_AGENT_BYTES: usize = 300;

const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 60 * 60;
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Longest text read from a row of these tables (ids, hashes, addresses, timestamps).
const MAX_CELL: i64 = 512;

/// The first or second step of a login, as `_mfas.method` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Password,
    Otp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Otp => "otp",
        }
    }
}

/// A section of a collection's options that is present but unusable: `(section, reason)`.
pub type OptionsProblem = (&'static str, &'static str);

/// The `mfa`, `otp` and `authAlert` options of a collection. An absent section is off, as
/// PocketBase reads it; one that is present but malformed is refused, so that a collection
/// whose second factor cannot be read is never served without it.
pub fn parse_options(options: &Value) -> Result<(MfaOptions, OtpOptions, AuthAlertOptions), OptionsProblem> {
    let (mfa, otp, alert) = (&options["mfa"], &options["otp"], &options["authAlert"]);
    let mfa = MfaOptions {
        enabled: enabled(mfa, "mfa")?,
        duration_secs: duration(mfa, "mfa")?,
        rule: text(&mfa["rule"], super::rule::MAX_RULE_LEN).ok_or(("mfa", "rule is not a string of at most 16 KiB"))?,
    };
    if mfa.enabled && mfa.duration_secs == 0 {
        return Err(("mfa", "enabled without a duration"));
    }
    let length = match &otp["length"] {
        Value::Null => 0,
        v => v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or(("otp", "length is not a number"))?,
    };
    let otp = OtpOptions {
        enabled: enabled(otp, "otp")?,
        duration_secs: duration(otp, "otp")?,
        length,
        email_template: template(&otp["emailTemplate"], "otp")?,
    };
    if otp.enabled && (otp.duration_secs == 0 || !(1..=MAX_OTP_LENGTH).contains(&otp.length)) {
        return Err(("otp", "enabled without a duration, or with a length not in 1..=71"));
    }
    let auth_alert = AuthAlertOptions { enabled: enabled(alert, "authAlert")?, email_template: template(&alert["emailTemplate"], "authAlert")? };
    Ok((mfa, otp, auth_alert))
}

fn enabled(section: &Value, name: &'static str) -> Result<bool, OptionsProblem> {
    match &section["enabled"] {
        Value::Null => Ok(false),
        v => v.as_bool().ok_or((name, "enabled is not a boolean")),
    }
}

fn duration(section: &Value, name: &'static str) -> Result<u64, OptionsProblem> {
    match &section["duration"] {
        Value::Null => Ok(0),
        v => v.as_u64().filter(|d| *d <= MAX_DURATION_SECS).ok_or((name, "duration is not a number of seconds within ten years")),
    }
}

fn text(v: &Value, max: usize) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::String(s) if s.len() <= max => Some(s.clone()),
        _ => None,
    }
}

fn template(v: &Value, name: &'static str) -> Result<Template, OptionsProblem> {
    let bad = (name, "emailTemplate is not a subject and body of at most 64 KiB each");
    Ok(Template {
        subject: text(&v["subject"], MAX_TEMPLATE_BYTES).ok_or(bad)?,
        body: text(&v["body"], MAX_TEMPLATE_BYTES).ok_or(bad)?,
    })
}

/// A code of `length` decimal digits. `rand::rng()` is a CSPRNG (ChaCha, seeded and reseeded
/// from the OS), so the code cannot be predicted from earlier ones.
pub fn generate_code(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

/// The code as `_otps.password` holds it: bcrypt at cost 8, `$2a$`.
pub fn hash_code(code: &str) -> Result<String, AccountsError> {
    let parts = bcrypt::hash_with_result(code, OTP_HASH_COST).map_err(|_| AccountsError::Hash)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA))
}

/// bcrypt's own comparison (constant in time for a given hash). The row may come from a
/// foreign data dir: its cost is bounded as for passwords ([`super::hashes`]), and a hash
/// that does not parse, or is not bcrypt, matches nothing.
pub fn code_matches(code: &str, hash: &str) -> bool {
    code.len() <= MAX_OTP_LENGTH
        && !super::legacy::is_legacy_hash(hash)
        && super::hashes::verify(code, hash).unwrap_or(false)
}

/// PocketBase's login origin: MD5 (hex) of the client's address followed by its user agent,
/// the latter cut to 300 bytes.
pub fn fingerprint(client_ip: &str, user_agent: &str) -> String {
    let ua = user_agent.as_bytes();
    let mut md5 = Md5::new();
    md5.update(client_ip.as_bytes());
    md5.update(&ua[..ua.len().min(USER_AGENT_BYTES)]);
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `{ALERT_INFO}` of a login alert: when, from which address, with which user agent.
pub fn alert_info(now_ms: i64, client_ip: &str, user_agent: &str) -> String {
    format!("{} - {client_ip} {user_agent}", format_timestamp(now_ms))
}

/// PocketBase's datetime text, e.g. `2023-05-19 16:25:57.542Z`.
pub fn format_timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Milliseconds since the epoch of a PocketBase datetime (`…Z`, any fraction digits).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]Z"
    );
    let t = time::PrimitiveDateTime::parse(text.trim(), format).ok()?.assume_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Whether a row made at `created` is past its `duration_secs` at `now_ms`; an unreadable
/// `created` is.
pub fn expired(created: &str, duration_secs: u64, now_ms: i64) -> bool {
    let lifetime = i64::try_from(duration_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    parse_timestamp(created).is_none_or(|at| at.saturating_add(lifetime) < now_ms)
}

/// What became of a request for a code.
#[derive(Debug, PartialEq, Eq)]
pub enum IssuedOtp {
    /// A new row: mail `code` and note where it went.
    New { id: String },
    /// Too many unexpired codes already: the newest id again, nothing to mail.
    Reused { id: String },
}

/// An unexpired code of a collection, with the record it was made for.
#[derive(Debug)]
pub struct FoundOtp {
    pub id: String,
    pub record: Record,
    pub hash: String,
    pub sent_to: String,
}

/// The outcome of an `mfaId` given with a login's second step.
#[derive(Debug, PartialEq, Eq)]
pub enum MfaCheck {
    /// The session was valid and is used up.
    Passed,
    /// No such session, or expired (then deleted).
    InvalidOrExpired,
    /// A session of another record.
    OtherRecord,
    /// Started with the same method as this step.
    SameMethod,
}

/// Whether a login comes from an origin the record has used before.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// The record has no origin at all: recorded, no alert (its first login).
    First,
    /// Seen before: its row is touched.
    Known { id: String },
    /// New for a record that has others: alert, then record it.
    New,
}

/// Code checks per record: [`OTP_ATTEMPTS`] in each [`OTP_ATTEMPT_WINDOW`], the window
/// starting at the first check. In memory, as PocketBase keeps it.
#[derive(Debug, Default)]
pub struct OtpAttempts {
    windows: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

/// Records followed at once before the memory is swept of finished windows.
const MAX_TRACKED_RECORDS: usize = 10_000;

impl OtpAttempts {
    /// Counts one check for the record; false when it has had its share in this window.
    pub fn try_acquire(&self, collection_id: &str, record_id: &str, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED_RECORDS {
            windows.retain(|_, (start, _)| now.saturating_duration_since(*start) < OTP_ATTEMPT_WINDOW);
        }
        let key = (collection_id.to_string(), record_id.to_string());
        let window = windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(window.0) >= OTP_ATTEMPT_WINDOW {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= OTP_ATTEMPTS
    }
}

impl Accounts {
    /// The account of `c` with exactly this email, as request-otp looks it up in PocketBase.
    pub fn find_by_email(&self, c: &AuthCollection, email: &str) -> Result<Option<Record>, AccountsError> {
        let sql = format!("SELECT {} FROM {} WHERE email = ?1 LIMIT 1", c.record_columns, quoted(&c.name));
        Ok(self.lock().query_row(&sql, [email], |row| super::record_from_row(c, row)).optional()?)
    }

    /// Stores a code (already hashed) for `record`, to be mailed to its email, unless it has
    /// [`MAX_RECENT_OTPS`] unexpired ones: then the newest is handed out again. Expired codes
    /// of the collection are swept on the way, so the table cannot grow without bound.
    ///
    /// `sentTo` is filled at once, where PocketBase fills it once the mail is out: a code whose
    /// mail fails is deleted either way, and a code used the moment it arrives still counts as
    /// mailed to the record's address (which verifies the account, see [`Accounts::complete_otp`]).
    pub fn create_otp(&self, c: &AuthCollection, record: &Record, hash: &str, now_ms: i64) -> Result<IssuedOtp, AccountsError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let cutoff = format_timestamp(now_ms.saturating_sub(i64::try_from(c.otp.duration_secs * 1000).unwrap_or(i64::MAX)));
        tx.execute("DELETE FROM _otps WHERE collectionRef = ?1 AND created < ?2", params![c.id, cutoff])?;
        let recent: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT substr(id, 1, ?4) FROM _otps WHERE collectionRef = ?1 AND recordRef = ?2 AND created >= ?3
                 ORDER BY created DESC LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![c.id, record.id, cutoff, MAX_CELL, MAX_RECENT_OTPS as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if recent.len() >= MAX_RECENT_OTPS {
            tx.commit()?;
            return Ok(IssuedOtp::Reused { id: recent[0].clone() });
        }
        let (id, now) = (random_id(), format_timestamp(now_ms));
        tx.execute(
            "INSERT INTO _otps (id, collectionRef, recordRef, password, sentTo, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![id, c.id, record.id, hash, record.email, now],
        )?;
        tx.commit()?;
        Ok(IssuedOtp::New { id })
    }

    /// Drops a code (its mail could not be sent).
    pub fn delete_otp(&self, otp_id: &str) -> Result<(), AccountsError> {
        self.lock().execute("DELETE FROM _otps WHERE id = ?1", [otp_id])?;
        Ok(())
    }

    /// The code `otp_id` if it belongs to `c`, has not expired and its record exists.
    pub fn find_otp(&self, c: &AuthCollection, otp_id: &str, now_ms: i64) -> Result<Option<FoundOtp>, AccountsError> {
        let conn = self.lock();
        type Row = (String, String, String, String, String, String);
        let row: Option<Row> = conn
            .query_row(
                "SELECT substr(id, 1, ?2), substr(collectionRef, 1, ?2), substr(recordRef, 1, ?2), substr(password, 1, ?2),
                        substr(sentTo, 1, ?2), substr(created, 1, ?2)
                 FROM _otps WHERE id = ?1 LIMIT 1",
                params![otp_id, MAX_CELL],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((id, collection, record_id, hash, sent_to, created)) = row else { return Ok(None) };
        if collection != c.id || expired(&created, c.otp.duration_secs, now_ms) {
            return Ok(None);
        }
        let Some(record) = find_in(&conn, c, &record_id)? else { return Ok(None) };
        Ok(Some(FoundOtp { id, record, hash, sent_to }))
    }

    /// A checked code is used up: its row goes, and an unverified record whose email the code
    /// was mailed to becomes verified. Without MFA on the collection the record's password is
    /// also replaced by a random one (and so its token key): whoever set it before the owner
    /// proved the address cannot log in with it (PocketBase 0.40's guard against accounts
    /// pre-registered under someone else's address). Returns the record as it is now, or
    /// `None` when the code was used up meanwhile (two requests with one code: one wins).
    pub fn complete_otp(&self, c: &AuthCollection, otp: &FoundOtp, now_ms: i64) -> Result<Option<Record>, AccountsError> {
        let record = &otp.record;
        let upgrade = !record.verified && !otp.sent_to.is_empty() && record.email == otp.sent_to;
        // Hashed before the lock: bcrypt is deliberately slow.
        let new_password = match upgrade && !c.mfa.enabled {
            true => Some(hash_password(&random_secret()[..30])?),
            false => None,
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM _otps WHERE id = ?1", [&otp.id])? == 0 {
            return Ok(None);
        }
        let (table, now) = (quoted(&c.name), format_timestamp(now_ms));
        if upgrade {
            // A collection may have no `updated` field (PocketBase makes new ones without it).
            let has_updated: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = 'updated')",
                [&c.name],
                |r| r.get(0),
            )?;
            if has_updated {
                tx.execute(&format!("UPDATE {table} SET verified = TRUE, updated = ?2 WHERE id = ?1"), params![record.id, now])?;
            } else {
                tx.execute(&format!("UPDATE {table} SET verified = TRUE WHERE id = ?1"), [&record.id])?;
            }
        }
        if let Some(hash) = new_password {
            tx.execute(
                &format!("UPDATE {table} SET password = ?2, tokenKey = ?3 WHERE id = ?1"),
                params![record.id, hash, random_secret()],
            )?;
        }
        let fresh = find_in(&tx, c, &record.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        tx.commit()?;
        Ok(Some(fresh))
    }

    /// Opens an MFA session after a first step by `method`; its id goes to the client.
    pub fn begin_mfa(&self, c: &AuthCollection, record: &Record, method: Method, now_ms: i64) -> Result<String, AccountsError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let cutoff = format_timestamp(now_ms.saturating_sub(i64::try_from(c.mfa.duration_secs * 1000).unwrap_or(i64::MAX)));
        tx.execute("DELETE FROM _mfas WHERE collectionRef = ?1 AND created < ?2", params![c.id, cutoff])?;
        let (id, now) = (random_id(), format_timestamp(now_ms));
        tx.execute(
            "INSERT INTO _mfas (id, collectionRef, recordRef, method, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![id, c.id, record.id, method.as_str(), now],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Checks the session `mfa_id` for a second step by `method` of `record`, as PocketBase
    /// does: a valid one is used up; an expired one is deleted.
    pub fn check_mfa(&self, c: &AuthCollection, record: &Record, mfa_id: &str, method: Method, now_ms: i64) -> Result<MfaCheck, AccountsError> {
        let conn = self.lock();
        let row: Option<(String, String, String, String)> = conn
            .query_row(
                "SELECT substr(collectionRef, 1, ?2), substr(recordRef, 1, ?2), substr(method, 1, ?2), substr(created, 1, ?2)
                 FROM _mfas WHERE id = ?1 LIMIT 1",
                params![mfa_id, MAX_CELL],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((collection, record_id, first, created)) = row else { return Ok(MfaCheck::InvalidOrExpired) };
        if expired(&created, c.mfa.duration_secs, now_ms) {
            conn.execute("DELETE FROM _mfas WHERE id = ?1", [mfa_id])?;
            return Ok(MfaCheck::InvalidOrExpired);
        }
        if record_id != record.id || collection != c.id {
            return Ok(MfaCheck::OtherRecord);
        }
        if first == method.as_str() {
            return Ok(MfaCheck::SameMethod);
        }
        conn.execute("DELETE FROM _mfas WHERE id = ?1", [mfa_id])?;
        Ok(MfaCheck::Passed)
    }

    /// Whether `fingerprint` is a known origin of `record`.
    pub fn origin(&self, c: &AuthCollection, record: &Record, fingerprint: &str) -> Result<Origin, AccountsError> {
        let conn = self.lock();
        let known: Option<String> = conn
            .query_row(
                "SELECT substr(id, 1, ?4) FROM _authOrigins WHERE collectionRef = ?1 AND recordRef = ?2 AND fingerprint = ?3 LIMIT 1",
                params![c.id, record.id, fingerprint, MAX_CELL],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = known {
            return Ok(Origin::Known { id });
        }
        let any: Option<i64> = conn
            .query_row("SELECT 1 FROM _authOrigins WHERE collectionRef = ?1 AND recordRef = ?2 LIMIT 1", params![c.id, record.id], |r| r.get(0))
            .optional()?;
        Ok(if any.is_some() { Origin::New } else { Origin::First })
    }

    /// Records (or touches) the origin, keeping the newest [`MAX_AUTH_ORIGINS`] of the record.
    pub fn save_origin(&self, c: &AuthCollection, record: &Record, fingerprint: &str, origin: &Origin, now_ms: i64) -> Result<(), AccountsError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = format_timestamp(now_ms);
        match origin {
            Origin::Known { id } => {
                tx.execute("UPDATE _authOrigins SET updated = ?2 WHERE id = ?1", params![id, now])?;
            }
            Origin::First | Origin::New => {
                tx.execute(
                    "DELETE FROM _authOrigins WHERE collectionRef = ?1 AND recordRef = ?2 AND id NOT IN (
                         SELECT id FROM _authOrigins WHERE collectionRef = ?1 AND recordRef = ?2 ORDER BY created DESC LIMIT ?3)",
                    params![c.id, record.id, (MAX_AUTH_ORIGINS - 1) as i64],
                )?;
                tx.execute(
                    "INSERT INTO _authOrigins (id, collectionRef, recordRef, fingerprint, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![random_id(), c.id, record.id, fingerprint, now],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `{RECORD:field}` placeholders of `record`: every field of its collection that is not
    /// hidden, as text; values HTML-escaped except booleans, numbers and dates (PocketBase's
    /// rule). Fields are the collection's own list, bounded in number and value length.
    pub fn record_placeholders(&self, c: &AuthCollection, record: &Record) -> Result<Vec<(String, String)>, AccountsError> {
        let conn = self.lock();
        let fields: String = conn
            .query_row("SELECT substr(fields, 1, 262144) FROM _collections WHERE id = ?1", [&c.id], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        let fields: Vec<(String, String)> = serde_json::from_str::<Value>(&fields)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|f| !f["hidden"].as_bool().unwrap_or(false))
            .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["type"].as_str().unwrap_or_default().to_string())))
            .filter(|(name, _)| !name.is_empty() && name.len() <= 255)
            .take(200)
            .collect();
        let mut out = Vec::with_capacity(fields.len());
        for (name, kind) in fields {
            let sql = format!("SELECT substr(CAST({} AS TEXT), 1, 4096) FROM {} WHERE id = ?1", quoted(&name), quoted(&c.name));
            // A field without a column of that name is left out rather than failing the mail.
            let Ok(value) = conn.query_row(&sql, [&record.id], |r| r.get::<_, Option<String>>(0)) else { continue };
            let mut value = value.unwrap_or_default();
            if kind == "bool" {
                value = if value == "1" || value.eq_ignore_ascii_case("true") { "true".into() } else { "false".into() };
            }
            let plain = matches!(kind.as_str(), "bool" | "number" | "date" | "autodate");
            out.push((format!("{{RECORD:{name}}}"), if plain { value } else { crate::mail::escape_html(&value) }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
