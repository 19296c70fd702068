//! The auth collections of a `data.db`, read from PocketBase's `_collections`: token secrets
//! and lifetimes, the access options, and what needs the records table itself (its columns,
//! the identity fields a login can search by). A foreign `_collections` is bounded: how many
//! collections, how long their names and JSON.

use std::fmt;

use rusqlite::{params, Connection};
use serde_json::Value;

use super::rule::RuleColumn;
use super::{mfa, plain_table, quoted, record_columns, schema, AccountsError, LayoutError};
use crate::mail::Template;

/// An auth collection as PocketBase keeps it in `_collections`.
#[derive(Clone, PartialEq)]
pub struct AuthCollection {
    pub id: String,
    pub name: String,
    pub(crate) auth_token: TokenSettings,
    pub(crate) file_token: TokenSettings,
    pub(super) password_auth: bool,
    /// `authRule`, checked before any token is issued: `None` (JSON null) lets nobody log in,
    /// `""` everyone, anything else is a filter over the record's own fields.
    pub auth_rule: Option<String>,
    /// `passwordAuth.identityFields` as stored: what a login's `identityField` may name.
    pub identity_fields: Vec<String>,
    /// Those a login can search by: columns with a single-column unique index.
    pub(super) identity_columns: Vec<IdentityColumn>,
    /// The fields a rule may name, from the collection's `fields` and the table's columns.
    pub(crate) rule_columns: Vec<RuleColumn>,
    /// What the queries select for a [`Record`] (see [`record_columns`]).
    pub(super) record_columns: String,
    pub mfa: MfaOptions,
    pub otp: OtpOptions,
    pub auth_alert: AuthAlertOptions,
}

/// `options.mfa`: a second method is required to log in, within `duration_secs` of the first,
/// for the records `rule` selects (empty: all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MfaOptions {
    pub enabled: bool,
    pub duration_secs: u64,
    pub rule: String,
}

/// `options.otp`: one-time passwords of `length` digits by mail, valid `duration_secs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtpOptions {
    pub enabled: bool,
    pub duration_secs: u64,
    pub length: usize,
    pub email_template: Template,
}

/// `options.authAlert`: a mail to the account on a login from a new origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthAlertOptions {
    pub enabled: bool,
    pub email_template: Template,
}

/// An identity field as a login searches it: case-insensitively when its unique index says
/// `COLLATE NOCASE`, as PocketBase does (its `email` index does not, so emails match exactly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IdentityColumn {
    pub(super) name: String,
    pub(super) nocase: bool,
}

/// Largest `options` or `fields` JSON of a collection read from `_collections`.
const MAX_COLLECTION_JSON: i64 = 1024 * 1024;

/// One token kind's signing secret (second half of the key) and lifetime.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenSettings {
    pub(crate) secret: String,
    pub(crate) duration_secs: u64,
}

// Hand-written so that secrets never reach a log line.
impl fmt::Debug for AuthCollection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCollection").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

impl AuthCollection {
    pub fn is_superusers(&self) -> bool {
        self.name == schema::SUPERUSERS
    }
}

/// More auth collections than any PocketBase app has: a bound on what a foreign
/// `_collections` makes us read.
pub(super) const MAX_AUTH_COLLECTIONS: usize = 100;
/// PocketBase's own limit on collection names (ids are shorter).
const MAX_COLLECTION_NAME_BYTES: i64 = 255;

/// Every auth collection whose options and table are usable; `_superusers` must be.
/// Others that are not are left out with a warning (their accounts cannot log in here).
pub(super) fn load_auth_collections(conn: &Connection) -> Result<Vec<AuthCollection>, AccountsError> {
    if !plain_table(conn, "_collections")? {
        return Err(LayoutError::Foreign.into());
    }
    // Oversized JSON comes back as NULL: refused below without being read (octet_length
    // reads only the size).
    let mut stmt = conn.prepare(
        "SELECT id, name, CASE WHEN octet_length(options) <= ?1 THEN options END,
                CASE WHEN octet_length(fields) <= ?1 THEN fields END
         FROM _collections
         WHERE type = 'auth' AND octet_length(id) <= ?2 AND octet_length(name) <= ?2 LIMIT ?3",
    )?;
    let limit = MAX_AUTH_COLLECTIONS as i64 + 1;
    let rows: Vec<(String, String, Option<String>, Option<String>)> = stmt
        .query_map(params![MAX_COLLECTION_JSON, MAX_COLLECTION_NAME_BYTES, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    if rows.len() > MAX_AUTH_COLLECTIONS {
        return Err(LayoutError::TooManyCollections.into());
    }
    let mut collections = Vec::new();
    for (id, name, options, fields) in rows {
        let too_large = || LayoutError::BadOptions {
            collection: name.clone(),
            reason: format!("options or fields over {MAX_COLLECTION_JSON} bytes"),
        };
        let parsed = match (options, fields) {
            (Some(options), Some(fields)) => parse_collection(id, name.clone(), &options).and_then(|mut c| {
                read_fields(conn, &mut c, &fields)?;
                Ok(c)
            }),
            _ => Err(too_large().into()),
        };
        match parsed {
            Ok(c) => collections.push(c),
            Err(e) if name == schema::SUPERUSERS => return Err(e),
            Err(e) => tracing::warn!(collection = %name, error = %e, "auth collection left out"),
        }
    }
    if !collections.iter().any(AuthCollection::is_superusers) {
        return Err(LayoutError::NoSuperusersCollection.into());
    }
    Ok(collections)
}

pub(super) fn parse_collection(id: String, name: String, options: &str) -> Result<AuthCollection, AccountsError> {
    let bad = |reason: String| LayoutError::BadOptions { collection: name.clone(), reason };
    let options: Value = serde_json::from_str(options).map_err(|e| bad(e.to_string()))?;
    let token = |kind: &'static str| -> Result<TokenSettings, LayoutError> {
        let settings = &options[kind];
        let secret = settings["secret"].as_str().filter(|s| !s.is_empty());
        let secret = secret.ok_or_else(|| LayoutError::NoSecret { collection: name.clone(), kind })?;
        let duration_secs = settings["duration"].as_u64().filter(|d| *d > 0);
        let duration_secs = duration_secs.ok_or_else(|| bad(format!("{kind}.duration is not a positive number")))?;
        Ok(TokenSettings { secret: secret.to_string(), duration_secs })
    };
    let auth_token = token("authToken")?;
    let file_token = token("fileToken")?;
    // PocketBase's default when the section is absent is enabled.
    let password_auth = options["passwordAuth"]["enabled"].as_bool().unwrap_or(true);
    // Absent, null or not text: nobody may log in (fail closed).
    let auth_rule = options["authRule"].as_str().map(str::to_string);
    if auth_rule.is_none() && !options["authRule"].is_null() {
        tracing::warn!(collection = %name, "authRule is not text: nobody can log in to this collection");
    }
    let identity_fields: Vec<String> = match &options["passwordAuth"]["identityFields"] {
        Value::Array(names) => {
            names.iter().filter_map(Value::as_str).take(MAX_IDENTITY_FIELDS).map(str::to_string).collect()
        }
        _ => vec!["email".to_string()],
    };
    let (mfa, otp, auth_alert) = mfa::parse_options(&options)
        .map_err(|(section, reason)| LayoutError::BadAccessOptions { collection: name.clone(), section, reason })?;
    Ok(AuthCollection {
        id,
        name,
        auth_token,
        file_token,
        password_auth,
        auth_rule,
        identity_fields,
        identity_columns: Vec::new(),
        rule_columns: Vec::new(),
        record_columns: String::new(),
        mfa,
        otp,
        auth_alert,
    })
}

/// Most identity fields read from a collection's options.
const MAX_IDENTITY_FIELDS: usize = 16;

/// Field types whose values a rule compares as plain column values, as PocketBase does.
const PLAIN_FIELD_TYPES: &[&str] =
    &["text", "email", "url", "editor", "number", "bool", "date", "autodate", "select", "relation", "file", "password"];

/// Fills in what needs the table itself: the columns a record is read from, which fields are
/// real columns (for rules) and which identity fields have a single-column unique index (for
/// logins), with its collation.
pub(super) fn read_fields(conn: &Connection, c: &mut AuthCollection, fields_json: &str) -> Result<(), AccountsError> {
    let bad = |reason: String| LayoutError::BadOptions { collection: c.name.clone(), reason };
    if !plain_table(conn, &c.name)? {
        return Err(LayoutError::BadRecordsTable(c.name.clone()).into());
    }
    let fields: Value = serde_json::from_str(fields_json).map_err(|e| bad(format!("fields: {e}")))?;
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let table_columns: Vec<String> = stmt.query_map([&c.name], |r| r.get(0))?.collect::<Result<_, _>>()?;
    c.record_columns = record_columns(&table_columns);
    let check = format!("SELECT {}, password FROM {} LIMIT 0", c.record_columns, quoted(&c.name));
    conn.prepare(&check).map_err(|_| LayoutError::BadRecordsTable(c.name.clone()))?;
    c.rule_columns = fields
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            let name = table_columns.iter().find(|col| Some(col.as_str()) == f["name"].as_str())?;
            let opaque = !f["type"].as_str().is_some_and(|t| PLAIN_FIELD_TYPES.contains(&t));
            Some(RuleColumn { name: name.clone(), opaque })
        })
        .collect();
    let unique = unique_single_column_indexes(conn, &c.name)?;
    c.identity_columns = c
        .identity_fields
        .iter()
        .filter_map(|field| {
            let found = unique.iter().find(|(column, _)| column.eq_ignore_ascii_case(field));
            if found.is_none() {
                tracing::warn!(collection = %c.name, %field, "identity field without a unique index: not searched");
            }
            let (column, nocase) = found?;
            Some(IdentityColumn { name: column.clone(), nocase: *nocase })
        })
        .collect();
    Ok(())
}

/// The table's unique indexes on one column: (column, whether it compares ignoring case).
pub(super) fn unique_single_column_indexes(conn: &Connection, table: &str) -> Result<Vec<(String, bool)>, AccountsError> {
    let mut stmt = conn.prepare(
        "SELECT x.name, x.coll FROM pragma_index_list(?1) AS l JOIN pragma_index_xinfo(l.name) AS x
         WHERE l.\"unique\" = 1 AND x.key = 1 AND x.name IS NOT NULL
           AND (SELECT count(*) FROM pragma_index_info(l.name)) = 1",
    )?;
    let rows = stmt.query_map([table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
    rows.map(|r| r.map(|(name, coll)| (name, coll.is_some_and(|c| c.eq_ignore_ascii_case("NOCASE")))))
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}
