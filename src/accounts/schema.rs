//! PocketBase's data-dir layout (0.23 and later), written by our own code: the system
//! tables, the six system collections with their field definitions, the applied-migrations
//! list and the `settings` row, so that PocketBase opens a data dir we initialised as its own.
//!
//! Facts from a fresh PocketBase 0.40.6 data dir; `tests/pocketbase/` checks them against
//! the real binary. The system collections get the ids PocketBase gives them (fixed ids, as
//! tokens carry them in `collectionId`); field ids follow PocketBase's rule, the field type
//! followed by the CRC-32 of the field name.

use rusqlite::{params, Transaction};
use serde_json::{json, Value};

use crate::mail::Template;

/// Migrations PocketBase 0.40.6 records for a fresh data dir. Marked applied so PocketBase
/// does not try to create tables that already exist (it refuses to start then).
pub const APPLIED_MIGRATIONS: [&str; 8] = [
    "1640988000_aux_init.go",
    "1640988000_init.go",
    "1717233556_v0.23_migrate.go",
    "1717233557_v0.23_migrate2.go",
    "1717233558_v0.23_migrate3.go",
    "1717233559_v0.23_migrate4.go",
    "1763020353_update_default_auth_alert_templates.go",
    "1778828400_normalize_indexes.go",
];

pub const SUPERUSERS: &str = "_superusers";
pub const USERS: &str = "users";

const SUPERUSER_AUTH_SECS: u64 = 24 * 60 * 60;
const USER_AUTH_SECS: u64 = 5 * 24 * 60 * 60;
const FILE_TOKEN_SECS: u64 = 3 * 60;

/// Our default `settings` row: the sections PocketBase reads at start. PocketBase fills any
/// key left out with its own default.
fn default_settings() -> Value {
    json!({
        "meta": {
            "appName": "pb-backups",
            "appURL": "http://127.0.0.1:8090",
            "senderName": "pb-backups",
            "senderAddress": "noreply@example.com",
            "hideControls": false
        },
        "backups": {"cron": "", "cronMaxKeep": 3, "s3": s3_off()},
        "s3": s3_off(),
        "logs": {"maxDays": 5, "minLevel": 0, "logIP": true, "logAuthId": false},
        "batch": {"enabled": false, "maxRequests": 50, "timeout": 3, "maxBodySize": 0},
        "rateLimits": {"enabled": false, "rules": [], "excludedIPs": []},
        "trustedProxy": {"headers": [], "useLeftmostIP": false},
        "superuserIPs": []
    })
}

fn s3_off() -> Value {
    json!({"enabled": false, "bucket": "", "region": "", "endpoint": "", "accessKey": "", "forcePathStyle": false})
}

/// The ids of PocketBase's system collections, the same in every data dir.
const SYSTEM_COLLECTION_IDS: [(&str, &str); 6] = [
    ("_mfas", "pbc_2279338944"),
    ("_otps", "pbc_1638494021"),
    ("_externalAuths", "pbc_2281828961"),
    ("_authOrigins", "pbc_4275539003"),
    (SUPERUSERS, "pbc_3142635823"),
    (USERS, "_pb_users_auth_"),
];

fn collection_id(name: &str) -> String {
    let found = SYSTEM_COLLECTION_IDS.iter().find(|(n, _)| *n == name);
    found.map(|(_, id)| id.to_string()).expect("a system collection")
}

/// `prefix` + CRC-32 of `name`: PocketBase's id for a field (the prefix is its type).
pub fn derived_id(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", crc32fast::hash(name.as_bytes()))
}

fn id_field() -> Value {
    json!({"autogeneratePattern": "[a-z0-9]{15}", "help": "", "hidden": false, "id": derived_id("text", "id"),
           "max": 15, "min": 15, "name": "id", "pattern": "^[a-z0-9]+$", "presentable": false,
           "primaryKey": true, "required": true, "system": true, "type": "text"})
}

fn text_field(name: &str, required: bool, hidden: bool, system: bool, max: u32) -> Value {
    json!({"autogeneratePattern": "", "help": "", "hidden": hidden, "id": derived_id("text", name), "max": max,
           "min": 0, "name": name, "pattern": "", "presentable": false, "primaryKey": false,
           "required": required, "system": system, "type": "text"})
}

fn autodate_fields(system: bool) -> [Value; 2] {
    let field = |name: &str, on_update: bool| {
        json!({"hidden": false, "id": derived_id("autodate", name), "name": name, "onCreate": true,
               "onUpdate": on_update, "presentable": false, "system": system, "type": "autodate"})
    };
    [field("created", false), field("updated", true)]
}

fn bool_field(name: &str) -> Value {
    json!({"help": "", "hidden": false, "id": derived_id("bool", name), "name": name, "presentable": false,
           "required": false, "system": true, "type": "bool"})
}

fn password_field(cost: u32, min: u32) -> Value {
    json!({"cost": cost, "help": "", "hidden": true, "id": derived_id("password", "password"), "max": 0, "min": min,
           "name": "password", "pattern": "", "presentable": false, "required": true, "system": true,
           "type": "password"})
}

/// The fields every auth collection starts with, in PocketBase's order.
fn auth_fields() -> Vec<Value> {
    vec![
        id_field(),
        password_field(0, 8),
        json!({"autogeneratePattern": "[a-zA-Z0-9]{50}", "help": "", "hidden": true,
               "id": derived_id("text", "tokenKey"), "max": 60, "min": 30, "name": "tokenKey", "pattern": "",
               "presentable": false, "primaryKey": false, "required": true, "system": true, "type": "text"}),
        json!({"exceptDomains": [], "help": "", "hidden": false, "id": derived_id("email", "email"), "name": "email",
               "onlyDomains": [], "presentable": false, "required": true, "system": true, "type": "email"}),
        bool_field("emailVisibility"),
        bool_field("verified"),
    ]
}

/// Our own short e-mail templates: PocketBase needs a subject and body for each kind.
fn template(subject: &str, body: &str) -> Value {
    json!({"subject": subject, "body": body})
}

fn json_template(t: Template) -> Value {
    template(&t.subject, &t.body)
}

/// Our one-time password mail: new collections get it, and it stands in for an empty one.
pub fn otp_template() -> Template {
    Template {
        subject: "{APP_NAME} one-time password".into(),
        body: "<p>Your {APP_NAME} one-time password: <strong>{OTP}</strong></p>\n\
               <p>It works once, for a few minutes. If you did not ask for it, ignore this mail.</p>"
            .into(),
    }
}

/// Our login alert: new collections get it, and it stands in for an empty one.
pub fn auth_alert_template() -> Template {
    Template {
        subject: "New sign-in to {APP_NAME}".into(),
        body: "<p>Your {APP_NAME} account was just used from a place it had not been used from before:</p>\n\
               <p><em>{ALERT_INFO}</em></p>\n\
               <p>If that was not you, change your password now: that ends every other session.</p>"
            .into(),
    }
}

fn auth_options(auth_secs: u64, mapped: Value) -> Value {
    let secret = |secs: u64| json!({"secret": super::random_secret(), "duration": secs});
    json!({
        "authRule": "",
        "manageRule": null,
        "authAlert": {"enabled": true, "emailTemplate": json_template(auth_alert_template())},
        "oauth2": {"providers": [], "mappedFields": mapped, "enabled": false},
        "passwordAuth": {"enabled": true, "identityFields": ["email"]},
        "mfa": {"enabled": false, "duration": 600, "rule": ""},
        "otp": {"enabled": false, "duration": 180, "length": 8, "emailTemplate": json_template(otp_template())},
        "authToken": secret(auth_secs),
        "passwordResetToken": secret(1800),
        "emailChangeToken": secret(1800),
        "verificationToken": secret(86400),
        "fileToken": secret(FILE_TOKEN_SECS),
        "verificationTemplate": template(
            "Verify your {APP_NAME} email", "<p>{APP_URL}/_/#/auth/confirm-verification/{TOKEN}</p>"),
        "resetPasswordTemplate": template(
            "Reset your {APP_NAME} password", "<p>{APP_URL}/_/#/auth/confirm-password-reset/{TOKEN}</p>"),
        "confirmEmailChangeTemplate": template(
            "Confirm your new {APP_NAME} email", "<p>{APP_URL}/_/#/auth/confirm-email-change/{TOKEN}</p>")
    })
}

/// One row of `_collections` plus the DDL of its records table.
struct SystemCollection {
    id: String,
    name: &'static str,
    kind: &'static str,
    system: bool,
    fields: Vec<Value>,
    indexes: Vec<String>,
    rules: [Option<&'static str>; 5],
    options: Value,
    table_sql: String,
}

const OWN_REFS: &str = "@request.auth.id != '' && recordRef = @request.auth.id && collectionRef = @request.auth.collectionId";
const REF_COLUMNS: &str = "`collectionRef` TEXT DEFAULT '' NOT NULL, `created` TEXT DEFAULT '' NOT NULL, \
     `id` TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL";

/// `_mfas`, `_otps`, `_externalAuths`, `_authOrigins`: per-record auth bookkeeping.
/// `extra` are its own text columns (name, required); `unique` its unique indexes (name, columns).
fn ref_collection(
    name: &'static str,
    extra: &[(&str, bool)],
    unique: &[(&str, &[&str])],
    delete_own: bool,
) -> SystemCollection {
    let mut fields = vec![id_field(), text_field("collectionRef", true, false, true, 0), text_field("recordRef", true, false, true, 0)];
    let mut columns: Vec<String> = vec!["recordRef".into(), "updated".into()];
    for (field, required) in extra {
        if *field == "password" {
            fields.push(password_field(8, 0));
        } else {
            fields.push(text_field(field, *required, !required, true, 0));
        }
        columns.push((*field).to_string());
    }
    fields.extend(autodate_fields(true));
    columns.sort();
    let rest: Vec<String> = columns.iter().map(|c| format!("`{c}` TEXT DEFAULT '' NOT NULL")).collect();
    let short = name.trim_start_matches('_');
    let indexes = if unique.is_empty() {
        vec![format!("CREATE INDEX `idx_{short}_collectionRef_recordRef` ON `{name}` (collectionRef, recordRef)")]
    } else {
        unique
            .iter()
            .map(|(index, cols)| format!("CREATE UNIQUE INDEX `idx_{short}_{index}` ON `{name}` ({})", cols.join(", ")))
            .collect()
    };
    SystemCollection {
        id: collection_id(name),
        name,
        kind: "base",
        system: true,
        fields,
        indexes,
        rules: [Some(OWN_REFS), Some(OWN_REFS), None, None, delete_own.then_some(OWN_REFS)],
        options: json!({}),
        table_sql: format!("CREATE TABLE `{name}` ({REF_COLUMNS}, {})", rest.join(", ")),
    }
}

const AUTH_COLUMNS: [&str; 8] = [
    "`created` TEXT DEFAULT '' NOT NULL",
    "`email` TEXT DEFAULT '' NOT NULL",
    "`emailVisibility` BOOLEAN DEFAULT FALSE NOT NULL",
    "`id` TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL",
    "`password` TEXT DEFAULT '' NOT NULL",
    "`tokenKey` TEXT DEFAULT '' NOT NULL",
    "`updated` TEXT DEFAULT '' NOT NULL",
    "`verified` BOOLEAN DEFAULT FALSE NOT NULL",
];

fn auth_indexes(id: &str, table: &str) -> Vec<String> {
    vec![
        format!("CREATE UNIQUE INDEX `idx_tokenKey_{id}` ON `{table}` (`tokenKey`)"),
        format!("CREATE UNIQUE INDEX `idx_email_{id}` ON `{table}` (`email`) WHERE `email` != ''"),
    ]
}

fn superusers() -> SystemCollection {
    let id = collection_id(SUPERUSERS);
    let mut fields = auth_fields();
    fields.extend(autodate_fields(true));
    SystemCollection {
        indexes: auth_indexes(&id, SUPERUSERS),
        id,
        name: SUPERUSERS,
        kind: "auth",
        system: true,
        fields,
        rules: [None; 5],
        options: auth_options(SUPERUSER_AUTH_SECS, json!({"id": "", "name": "", "username": "", "avatarURL": ""})),
        table_sql: format!("CREATE TABLE `{SUPERUSERS}` ({})", AUTH_COLUMNS.join(", ")),
    }
}

fn users() -> SystemCollection {
    let mut fields = auth_fields();
    fields.push(text_field("name", false, false, false, 255));
    fields.push(json!({"help": "", "hidden": false, "id": derived_id("file", "avatar"), "maxSelect": 1, "maxSize": 0,
        "mimeTypes": ["image/jpeg", "image/png", "image/svg+xml", "image/gif", "image/webp"], "name": "avatar",
        "presentable": false, "protected": false, "required": false, "system": false, "thumbs": [], "type": "file"}));
    fields.extend(autodate_fields(false));
    let mut columns = AUTH_COLUMNS.to_vec();
    columns.extend(["`avatar` TEXT DEFAULT '' NOT NULL", "`name` TEXT DEFAULT '' NOT NULL"]);
    columns.sort_by_key(|c| c.to_lowercase());
    let own = Some("id = @request.auth.id");
    SystemCollection {
        id: collection_id(USERS),
        name: USERS,
        kind: "auth",
        system: false,
        fields,
        indexes: auth_indexes(&collection_id(USERS), USERS),
        rules: [own, own, Some(""), own, own],
        options: auth_options(USER_AUTH_SECS, json!({"id": "", "name": "name", "username": "", "avatarURL": "avatar"})),
        table_sql: format!("CREATE TABLE `{USERS}` ({})", columns.join(", ")),
    }
}

fn system_collections() -> Vec<SystemCollection> {
    vec![
        ref_collection("_mfas", &[("method", true)], &[], false),
        ref_collection("_otps", &[("password", true), ("sentTo", false)], &[], false),
        ref_collection(
            "_externalAuths",
            &[("provider", true), ("providerId", true)],
            &[
                ("record_provider", &["collectionRef", "recordRef", "provider"]),
                ("collection_provider", &["collectionRef", "provider", "providerId"]),
            ],
            true,
        ),
        ref_collection(
            "_authOrigins",
            &[("fingerprint", true)],
            &[("unique_pairs", &["collectionRef", "recordRef", "fingerprint"])],
            true,
        ),
        superusers(),
        users(),
    ]
}

const CORE_TABLES: &str = "
CREATE TABLE `_migrations` (file VARCHAR(255) PRIMARY KEY NOT NULL, applied INTEGER NOT NULL);
CREATE TABLE `_params` (
    `id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `value`   JSON DEFAULT NULL,
    `created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
    `updated` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
);
CREATE TABLE `_collections` (
    `id`         TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `system`     BOOLEAN DEFAULT FALSE NOT NULL,
    `type`       TEXT DEFAULT 'base' NOT NULL,
    `name`       TEXT UNIQUE NOT NULL,
    `fields`     JSON DEFAULT '[]' NOT NULL,
    `indexes`    JSON DEFAULT '[]' NOT NULL,
    `listRule`   TEXT DEFAULT NULL,
    `viewRule`   TEXT DEFAULT NULL,
    `createRule` TEXT DEFAULT NULL,
    `updateRule` TEXT DEFAULT NULL,
    `deleteRule` TEXT DEFAULT NULL,
    `options`    JSON DEFAULT '{}' NOT NULL,
    `created`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
    `updated`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
);
CREATE INDEX idx__collections_type on `_collections` (`type`);
";

/// The logs table PocketBase keeps in `auxiliary.db` (its `aux_init` migration).
pub const AUX_TABLES: &str = "
CREATE TABLE IF NOT EXISTS `_logs` (
    `id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `level`   INTEGER DEFAULT 0 NOT NULL,
    `message` TEXT DEFAULT '' NOT NULL,
    `data`    JSON DEFAULT '{}' NOT NULL,
    `created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_logs_level on `_logs` (`level`);
CREATE INDEX IF NOT EXISTS idx_logs_message on `_logs` (`message`);
CREATE INDEX IF NOT EXISTS idx_logs_created_hour on `_logs` (strftime('%Y-%m-%d %H:00:00', `created`));
";

/// Creates PocketBase's tables, system collections, migration marks and settings in an
/// empty database. The caller commits.
pub fn initialize(tx: &Transaction<'_>, now: &str, now_micros: i64) -> rusqlite::Result<()> {
    tx.execute_batch(CORE_TABLES)?;
    for c in system_collections() {
        tx.execute_batch(&c.table_sql)?;
        for index in &c.indexes {
            tx.execute_batch(index)?;
        }
        let [list, view, create, update, delete] = c.rules;
        tx.execute(
            "INSERT INTO _collections (id, system, type, name, fields, indexes, listRule, viewRule, createRule,
                                       updateRule, deleteRule, options, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            params![
                c.id,
                c.system,
                c.kind,
                c.name,
                Value::Array(c.fields).to_string(),
                json!(c.indexes).to_string(),
                list,
                view,
                create,
                update,
                delete,
                c.options.to_string(),
                now
            ],
        )?;
    }
    for (i, file) in APPLIED_MIGRATIONS.iter().enumerate() {
        tx.execute("INSERT INTO _migrations (file, applied) VALUES (?1, ?2)", params![file, now_micros + i as i64])?;
    }
    tx.execute(
        "INSERT INTO _params (id, value, created, updated) VALUES ('settings', ?1, ?2, ?2)",
        params![default_settings().to_string(), now],
    )?;
    Ok(())
}
