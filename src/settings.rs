//! The app settings PocketBase keeps in `data.db` (`_params` row `settings`), as far as this
//! server uses them: `backups.cron` / `backups.cronMaxKeep` (read and written) and
//! `meta.appName` (read). Every other key of the row is kept exactly as it is on update, so
//! a data dir's schedule is shared with PocketBase in both directions.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

use crate::layout::DATA_DB;
use crate::sqlite::{self, Access, ObjectKind};
use crate::schedule::{self, CronError};

/// `_params.id` of the settings row.
const SETTINGS_ROW: &str = "settings";

/// PocketBase's `cronMaxKeep` when the row has none.
pub const DEFAULT_CRON_MAX_KEEP: i64 = 3;

/// The settings this server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub app_name: String,
    pub backups: BackupsSettings,
}

/// The automatic backups: `cron` empty means off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupsSettings {
    pub cron: String,
    pub cron_max_keep: i64,
}

/// A change to the `backups` section: absent fields keep their stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupsPatch {
    pub cron: Option<String>,
    pub cron_max_keep: Option<i64>,
}

/// One refused field of the `backups` section, PocketBase's validation code first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// `validation_invalid_cron`.
    InvalidCron(CronError),
    /// `validation_required`: `cronMaxKeep` is needed while a cron is set.
    Required,
    /// `validation_min_greater_equal_than_required`.
    BelowOne,
}

impl FieldProblem {
    pub fn code(&self) -> &'static str {
        match self {
            FieldProblem::InvalidCron(_) => "validation_invalid_cron",
            FieldProblem::Required => "validation_required",
            FieldProblem::BelowOne => "validation_min_greater_equal_than_required",
        }
    }
}

/// Why the `backups` section was refused: per field (`cron`, `cronMaxKeep`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid {
    pub fields: Vec<(&'static str, FieldProblem)>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.fields.iter().map(|(name, p)| format!("backups.{name}: {}", p.code())).collect();
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid backups settings: {0}")]
    Invalid(Invalid),
    #[error("the settings row is not JSON (encrypted settings are not supported): {0}")]
    Unreadable(serde_json::Error),
    #[error("the settings row is over {MAX_SETTINGS_BYTES} bytes")]
    TooLarge,
    #[error("`_params` is a {0}, not a table")]
    NotATable(&'static str),
    #[error("a query on data.db did not finish within its time bound")]
    TooSlow,
    #[error("data.db: {0}")]
    Db(rusqlite::Error),
    #[error("worker thread: {0}")]
    Worker(String),
}

impl From<rusqlite::Error> for SettingsError {
    fn from(e: rusqlite::Error) -> Self {
        if sqlite::is_interrupted(&e) {
            SettingsError::TooSlow
        } else {
            SettingsError::Db(e)
        }
    }
}

/// Checks the section as PocketBase does: a cron that parses, and with it a `cronMaxKeep`
/// of at least 1 (0 counts as missing). Without a cron only a negative keep is refused.
pub fn validate(b: &BackupsSettings) -> Result<(), Invalid> {
    let mut invalid = Invalid::default();
    if !b.cron.is_empty() {
        if let Err(e) = schedule::parse_cron(&b.cron) {
            invalid.fields.push(("cron", FieldProblem::InvalidCron(e)));
        }
        if b.cron_max_keep == 0 {
            invalid.fields.push(("cronMaxKeep", FieldProblem::Required));
        }
    }
    if b.cron_max_keep < 0 {
        invalid.fields.push(("cronMaxKeep", FieldProblem::BelowOne));
    }
    if invalid.fields.is_empty() {
        Ok(())
    } else {
        Err(invalid)
    }
}

/// The settings row is a few KiB; larger is not PocketBase's, and its JSON is not parsed.
const MAX_SETTINGS_BYTES: i64 = 1 << 20;

/// One operation's connection: it shares the file with the accounts' connection (and, for
/// reading, with PocketBase), and like it is bounded in time ([`sqlite`]).
fn open(data_dir: &Path) -> Result<Connection, SettingsError> {
    let (conn, _deadline) = sqlite::open(&data_dir.join(DATA_DB), Access::ReadWrite, sqlite::QUERY_BUDGET)?;
    Ok(conn)
}

fn row(conn: &Connection) -> Result<Value, SettingsError> {
    if let Some(kind) = sqlite::object_kind(conn, "_params")?.filter(|k| *k != ObjectKind::Table) {
        return Err(SettingsError::NotATable(kind.as_str()));
    }
    // PocketBase writes the JSON as a BLOB, we (and its first migration) as TEXT.
    let raw: Option<(Option<i64>, Option<Vec<u8>>)> = conn
        .query_row(
            "SELECT octet_length(value), CASE WHEN octet_length(value) <= ?2 THEN value END FROM _params WHERE id = ?1",
            params![SETTINGS_ROW, MAX_SETTINGS_BYTES],
            |r| {
                let value = match r.get_ref(1)? {
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(bytes.to_vec()),
                    _ => None,
                };
                Ok((r.get(0)?, value))
            },
        )
        .optional()?;
    match raw {
        Some((Some(len), _)) if len > MAX_SETTINGS_BYTES => Err(SettingsError::TooLarge),
        Some((_, Some(bytes))) => serde_json::from_slice(&bytes).map_err(SettingsError::Unreadable),
        _ => Ok(json!({})),
    }
}

fn from_row(value: &Value) -> Settings {
    let backups = &value["backups"];
    Settings {
        app_name: value["meta"]["appName"].as_str().unwrap_or_default().to_string(),
        backups: BackupsSettings {
            cron: backups["cron"].as_str().unwrap_or_default().to_string(),
            cron_max_keep: backups["cronMaxKeep"].as_i64().unwrap_or(DEFAULT_CRON_MAX_KEEP),
        },
    }
}

/// The settings stored in the data dir's `data.db`.
pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
    Ok(from_row(&row(&open(data_dir)?)?))
}

/// Applies `patch` to the stored `backups` section if the result is valid; nothing is
/// stored otherwise. Every other key of the row stays as it was. Returns the new settings.
pub fn update_backups(data_dir: &Path, patch: &BackupsPatch) -> Result<Settings, SettingsError> {
    let mut conn = open(data_dir)?;
    // Immediate: two updates at once must not both read the old row.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut value = row(&tx)?;
    let current = from_row(&value).backups;
    let next = BackupsSettings {
        cron: patch.cron.clone().unwrap_or(current.cron).trim().to_string(),
        cron_max_keep: patch.cron_max_keep.unwrap_or(current.cron_max_keep),
    };
    validate(&next).map_err(SettingsError::Invalid)?;
    if !value.is_object() {
        value = json!({});
    }
    let root = value.as_object_mut().expect("an object");
    let section = root.entry("backups").or_insert_with(|| Value::Object(Map::new()));
    if !section.is_object() {
        *section = Value::Object(Map::new());
    }
    section["cron"] = json!(next.cron);
    section["cronMaxKeep"] = json!(next.cron_max_keep);
    // PocketBase's timestamp format, made by SQLite as in the table's defaults.
    tx.execute(
        "INSERT INTO _params (id, value) VALUES (?1, ?2)
         ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated = strftime('%Y-%m-%d %H:%M:%fZ')",
        params![SETTINGS_ROW, value.to_string()],
    )?;
    tx.commit()?;
    Ok(from_row(&value))
}

impl crate::service::Service {
    /// The served settings of this server's data dir.
    pub async fn settings(&self) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || load(&dir)).await.map_err(join_error)?
    }

    /// See [`update_backups`]; the schedule picks the change up at its next minute.
    pub async fn update_backups_settings(&self, patch: BackupsPatch) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        let settings = tokio::task::spawn_blocking(move || update_backups(&dir, &patch)).await.map_err(join_error)??;
        tracing::info!(cron = %settings.backups.cron, cron_max_keep = settings.backups.cron_max_keep, "backups settings updated");
        Ok(settings)
    }
}

fn join_error(e: tokio::task::JoinError) -> SettingsError {
    SettingsError::Worker(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::accounts::Accounts::open(dir.path()).unwrap();
        dir
    }

    fn patch(cron: &str, keep: i64) -> BackupsPatch {
        BackupsPatch { cron: Some(cron.into()), cron_max_keep: Some(keep) }
    }

    #[test]
    fn a_new_data_dir_has_backups_off() {
        let dir = data_dir();
        let s = load(dir.path()).unwrap();
        assert_eq!(s.backups, BackupsSettings { cron: String::new(), cron_max_keep: 3 });
        assert_eq!(s.app_name, "pb-backups");
    }

    #[test]
    fn an_update_keeps_every_other_key_of_the_row() {
        let dir = data_dir();
        let conn = open(dir.path()).unwrap();
        let mut before = row(&conn).unwrap();
        before["backups"]["s3"]["bucket"] = json!("kept");
        before["custom"] = json!({"x": [1, 2]});
        conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [before.to_string()]).unwrap();

        let s = update_backups(dir.path(), &patch("0 3 * * *", 7)).unwrap();
        assert_eq!(s.backups, BackupsSettings { cron: "0 3 * * *".into(), cron_max_keep: 7 });
        let mut after = row(&conn).unwrap();
        assert_eq!(after["backups"]["cron"], "0 3 * * *");
        assert_eq!(after["backups"]["cronMaxKeep"], 7);
        after["backups"]["cron"] = before["backups"]["cron"].clone();
        after["backups"]["cronMaxKeep"] = before["backups"]["cronMaxKeep"].clone();
        assert_eq!(after, before);
    }

    #[test]
    fn a_row_pocketbase_wrote_as_a_blob_is_read() {
        let dir = data_dir();
        let conn = open(dir.path()).unwrap();
        let mut value = row(&conn).unwrap();
        value["backups"]["cron"] = json!("@weekly");
        conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [value.to_string().into_bytes()]).unwrap();
        assert_eq!(load(dir.path()).unwrap().backups.cron, "@weekly");
        let s = update_backups(dir.path(), &BackupsPatch { cron: None, cron_max_keep: Some(4) }).unwrap();
        assert_eq!(s.backups, BackupsSettings { cron: "@weekly".into(), cron_max_keep: 4 });
    }

    #[test]
    fn a_partial_patch_keeps_the_other_field() {
        let dir = data_dir();
        update_backups(dir.path(), &patch("@daily", 5)).unwrap();
        let s = update_backups(dir.path(), &BackupsPatch { cron: Some("@hourly".into()), cron_max_keep: None }).unwrap();
        assert_eq!(s.backups, BackupsSettings { cron: "@hourly".into(), cron_max_keep: 5 });
    }

    #[test]
    fn invalid_sections_are_refused_and_nothing_is_stored() {
        let dir = data_dir();
        update_backups(dir.path(), &patch("@daily", 5)).unwrap();
        let codes = |p: &BackupsPatch| match update_backups(dir.path(), p) {
            Err(SettingsError::Invalid(i)) => i.fields.iter().map(|(f, p)| (*f, p.code())).collect::<Vec<_>>(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(codes(&patch("not a cron", 5)), [("cron", "validation_invalid_cron")]);
        assert_eq!(codes(&patch("0 3 * * *", 0)), [("cronMaxKeep", "validation_required")]);
        assert_eq!(
            codes(&patch("61 * * * *", -1)),
            [("cron", "validation_invalid_cron"), ("cronMaxKeep", "validation_min_greater_equal_than_required")]
        );
        assert_eq!(load(dir.path()).unwrap().backups, BackupsSettings { cron: "@daily".into(), cron_max_keep: 5 });
        // Off needs no keep.
        update_backups(dir.path(), &patch("", 0)).unwrap();
    }

    #[test]
    fn a_settings_row_behind_a_view_or_too_large_to_parse_is_refused() {
        // `_params` replaced by a view that never ends: refused by its kind, never run.
        let dir = data_dir();
        Connection::open(dir.path().join(DATA_DB))
            .unwrap()
            .execute_batch(
                "ALTER TABLE _params RENAME TO _params_old;
                 CREATE VIEW _params AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                 SELECT p.* FROM _params_old p, n;",
            )
            .unwrap();
        assert!(matches!(load(dir.path()), Err(SettingsError::NotATable("view"))));
        assert!(matches!(update_backups(dir.path(), &patch("@daily", 2)), Err(SettingsError::NotATable("view"))));

        let dir = data_dir();
        let huge = json!({"meta": {"appName": "x".repeat(MAX_SETTINGS_BYTES as usize)}}).to_string();
        Connection::open(dir.path().join(DATA_DB)).unwrap().execute("UPDATE _params SET value = ?1", [&huge]).unwrap();
        assert!(matches!(load(dir.path()), Err(SettingsError::TooLarge)));
        assert!(matches!(update_backups(dir.path(), &patch("@daily", 2)), Err(SettingsError::TooLarge)));
        assert_eq!(Connection::open(dir.path().join(DATA_DB)).unwrap().query_row("SELECT value FROM _params", [], |r| r.get::<_, String>(0)).unwrap(), huge);
    }
}
