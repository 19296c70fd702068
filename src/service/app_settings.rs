//! The service's side of the settings row: reading and changing it off the async threads,
//! and telling the storage choice and the access checks about a change. The row itself is
//! read and validated in [`crate::settings`], which knows nothing of the service.

use std::sync::Arc;

use super::Service;
use crate::settings::{self, AccessSettings, Settings, SettingsError, SettingsPatch};

impl Service {
    /// The served settings of this server's data dir.
    pub async fn settings(&self) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || settings::load(&dir)).await.map_err(join_error)?
    }

    /// See [`settings::update`]; the schedule picks a change up at its next minute, the
    /// access checks and the choice of the backups storage at once.
    pub async fn update_settings(&self, patch: SettingsPatch) -> Result<Settings, SettingsError> {
        let dir = self.data_dir().to_path_buf();
        let settings = tokio::task::spawn_blocking(move || settings::update(&dir, &patch)).await.map_err(join_error)??;
        self.access_cache().set(&settings);
        // The next backups operation uses the storage `backups.s3` names now.
        self.settings_changed();
        tracing::info!(
            cron = %settings.backups.cron,
            cron_max_keep = settings.backups.cron_max_keep,
            superuser_ips = ?settings.superuser_ips,
            trusted_proxy = ?settings.trusted_proxy,
            smtp = settings.smtp.enabled,
            smtp_host = %settings.smtp.host,
            backups_s3 = settings.backups_s3.enabled,
            backups_s3_bucket = %settings.backups_s3.bucket,
            "settings updated"
        );
        Ok(settings)
    }

    /// The settings the access checks use (see [`settings::AccessCache`]). When the row
    /// cannot be read, the last reading stands; with none, superusers are refused (fail closed).
    pub async fn access_settings(&self) -> Arc<AccessSettings> {
        if let Some(access) = self.access_cache().fresh() {
            return access;
        }
        match self.settings().await {
            Ok(settings) => self.access_cache().set(&settings),
            Err(e) => {
                tracing::error!(error = %e, "settings unreadable: access checks use the last reading");
                self.access_cache().last_or_refusing()
            }
        }
    }
}

/// A settings worker that panicked or was cancelled.
fn join_error(e: tokio::task::JoinError) -> SettingsError {
    SettingsError::Worker(e.to_string())
}
