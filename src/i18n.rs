//! Every text the API sends to clients, in the spec's Chinese and its English edition.
//!
//! The documented messages are the spec's words, letter for letter; the others (validation,
//! auth, restore refusals) are ours, written in the same two languages. Which language a
//! request gets is decided once per request by the HTTP layer (`Accept-Language`, else the
//! server's default) and read back here through a task-local, so that error mapping deep in
//! the stack needs no request in hand.

use std::borrow::Cow;
use std::str::FromStr;

/// The two languages the spec exists in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Zh,
    En,
}

impl FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "zh" | "zh-cn" | "zh-hans" => Ok(Lang::Zh),
            "en" | "en-us" | "en-gb" => Ok(Lang::En),
            other => Err(format!("unknown language {other:?}: use zh or en")),
        }
    }
}

impl Lang {
    /// The language an `Accept-Language` header prefers among ours, if it names one of them.
    /// Tags are weighed by `q`; the first of equal weight wins, as RFC 9110 suggests.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "zh" => Lang::Zh,
                "en" => Lang::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }

    /// The language of the request being served (see [`with_request_lang`]), else Chinese.
    pub fn current() -> Lang {
        REQUEST_LANG.try_with(|l| *l).unwrap_or(Lang::Zh)
    }
}

tokio::task_local! {
    static REQUEST_LANG: Lang;
}

/// Runs `fut` with `lang` as the language of every message rendered inside it.
pub async fn with_request_lang<F: std::future::Future>(lang: Lang, fut: F) -> F::Output {
    REQUEST_LANG.scope(lang, fut).await
}

/// A client-facing text. `text(lang)` is the only way to turn one into words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    // The spec's documented messages.
    StorageFailure,
    Unauthorized,
    Forbidden,
    BusyCreate,
    Busy,
    UploadFailed,
    NotZip,
    NotFound,
    // Ours.
    ValidationFailed,
    BadRequest,
    CreateFailed,
    DeleteFailed,
    RestoreFailed,
    AuthFailed,
    Required,
    InvalidFormat,
    LengthOutOfRange,
    NameExists,
    InvalidJson,
    TooManyRequests,
    ArchiveUnsafe,
    ArchiveTooLarge,
    /// The entry cap, with the archive's count.
    ArchiveTooManyEntries { entries: u64, max: u64 },
    /// A create refused: its archive would have more entries than a restore accepts.
    BackupTooManyEntries { entries: u64, max: u64 },
    /// A create refused: its archive would be larger than a restore accepts.
    BackupTooLarge,
    ArchiveNoDataDb,
    ArchiveDataDbNotSqlite,
    ArchiveNoUsableAccounts,
    ArchiveCorrupt,
    Healthy,
    InvalidCron,
    MinOne,
    InvalidType,
    // Logins with one-time passwords and MFA (PocketBase's texts in English).
    InvalidEmail,
    LengthUpTo255,
    LengthUpTo71,
    OtpDisabled,
    InvalidOtp,
    TooManyOtpAttempts,
    MfaInvalid,
    MfaOtherRecord,
    MfaSameMethod,
    // Mail settings.
    NotAHost,
    MinZero,
    MaxPort,
    InvalidIpOrSubnet,
    InvalidValue,
    /// PocketBase's refusal of a login whose record fails the collection's `authRule`.
    AuthRuleRefused,
    /// PocketBase's refusal of a superuser outside the settings' `superuserIPs`.
    AddressNotAllowed,
    // S3 settings and their test (PocketBase's words, without its raw error).
    NotAUrl,
    S3TestFailed,
    S3NotEnabled,
    S3Unusable,
    S3Unreachable,
    S3Refused,
    S3NoBucket,
    S3Unexpected,
}

impl Message {
    pub fn text(self, lang: Lang) -> Cow<'static, str> {
        use Message::*;
        match (self, lang) {
            (ArchiveTooManyEntries { entries, max }, Lang::Zh) => {
                format!("压缩包有 {entries} 个条目，超过上限 {max} 个。").into()
            }
            (ArchiveTooManyEntries { entries, max }, Lang::En) => {
                format!("The archive has {entries} entries, more than the limit of {max}.").into()
            }
            (BackupTooManyEntries { entries, max }, Lang::Zh) => {
                format!("数据目录有 {entries} 个条目，超过恢复所接受的上限 {max} 个（--max-archive-entries），未创建备份。").into()
            }
            (BackupTooManyEntries { entries, max }, Lang::En) => format!(
                "The data dir has {entries} entries, more than the {max} a restore accepts (--max-archive-entries): no backup was made."
            )
            .into(),
            _ => self.static_text(lang).into(),
        }
    }

    /// The texts without parameters.
    fn static_text(self, lang: Lang) -> &'static str {
        use Message::*;
        match (self, lang) {
            (ArchiveTooManyEntries { .. } | BackupTooManyEntries { .. }, _) => unreachable!("rendered by text()"),
            (StorageFailure, Lang::Zh) => "加载备份文件系统失败。",
            (StorageFailure, Lang::En) => "Failed to load backups filesystem.",
            (Unauthorized, Lang::Zh) => "请求需要有效的记录授权令牌。",
            (Unauthorized, Lang::En) => "The request requires valid record authorization token.",
            (Forbidden, Lang::Zh) => "只有超级用户可以执行此操作。",
            (Forbidden, Lang::En) => "Only superusers can perform this action.",
            (BusyCreate, Lang::Zh) => "请稍后重试 - 另一个备份/恢复进程已经启动。",
            (Busy, Lang::Zh) => "请稍后重试 - 另一个备份/恢复进程已在运行。",
            (BusyCreate | Busy, Lang::En) => {
                "Try again later - another backup/restore process has already been started."
            }
            (UploadFailed, Lang::Zh) => "上传备份失败。",
            (UploadFailed, Lang::En) => "Failed to upload the backup.",
            (NotZip, Lang::Zh) => "文件必须是 zip 压缩包。",
            (NotZip, Lang::En) => "The file must be a zip archive.",
            (NotFound, Lang::Zh) => "请求的资源未找到。",
            (NotFound, Lang::En) => "The requested resource wasn't found.",
            (ValidationFailed, Lang::Zh) => "验证提交的数据时出错。",
            (ValidationFailed, Lang::En) => "An error occurred while validating the submitted data.",
            (BadRequest, Lang::Zh) => "处理请求时出错。",
            (BadRequest, Lang::En) => "Something went wrong while processing your request.",
            (CreateFailed, Lang::Zh) => "创建备份失败。",
            (CreateFailed, Lang::En) => "Failed to create the backup.",
            (DeleteFailed, Lang::Zh) => "删除备份失败。",
            (DeleteFailed, Lang::En) => "Failed to delete the backup.",
            (RestoreFailed, Lang::Zh) => "无法恢复该备份。",
            (RestoreFailed, Lang::En) => "The backup cannot be restored.",
            (AuthFailed, Lang::Zh) => "身份验证失败。",
            (AuthFailed, Lang::En) => "Failed to authenticate.",
            (Required, Lang::Zh) => "不能为空。",
            (Required, Lang::En) => "Cannot be blank.",
            (InvalidFormat, Lang::Zh) => "格式无效。",
            (InvalidFormat, Lang::En) => "Must be in a valid format.",
            (LengthOutOfRange, Lang::Zh) => "长度必须在 1 到 150 之间。",
            (LengthOutOfRange, Lang::En) => "The length must be between 1 and 150.",
            (NameExists, Lang::Zh) => "同名备份已存在。",
            (NameExists, Lang::En) => "A backup with the same name already exists.",
            (InvalidJson, Lang::Zh) => "请求体不是有效的 JSON。",
            (InvalidJson, Lang::En) => "The request body is not valid JSON.",
            (TooManyRequests, Lang::Zh) => "请求过多，请稍后再试。",
            (TooManyRequests, Lang::En) => "Too many requests, try again later.",
            (ArchiveUnsafe, Lang::Zh) => {
                "压缩包包含不安全的条目（绝对路径、.. 、链接、重复或数据重叠的条目、过长或过深的名称）。"
            }
            (ArchiveUnsafe, Lang::En) => {
                "The archive holds unsafe entries (absolute paths, .., links, duplicate or overlapping entries, names too long or too deep)."
            }
            (ArchiveTooLarge, Lang::Zh) => "压缩包解压后过大。",
            (ArchiveTooLarge, Lang::En) => "The archive is too large once extracted.",
            (BackupTooLarge, Lang::Zh) => "数据目录解压后的大小超过恢复所接受的上限（--max-archive-size），未创建备份。",
            (BackupTooLarge, Lang::En) => {
                "The data dir is larger than a restore accepts (--max-archive-size): no backup was made."
            }
            (ArchiveNoDataDb, Lang::Zh) => "压缩包中没有 data.db。",
            (ArchiveNoDataDb, Lang::En) => "The archive has no data.db.",
            (ArchiveDataDbNotSqlite, Lang::Zh) => "压缩包中的 data.db 不是 SQLite 数据库。",
            (ArchiveDataDbNotSqlite, Lang::En) => "The data.db in the archive is not an SQLite database.",
            (ArchiveNoUsableAccounts, Lang::Zh) => {
                "压缩包中的 data.db 没有可用的超级用户账户（需要 PocketBase 0.23 或更高版本的数据目录），恢复后将无人能够登录。"
            }
            (ArchiveNoUsableAccounts, Lang::En) => {
                "The data.db in the archive has no usable superuser account (a PocketBase 0.23+ data dir is needed): nobody could log in after the restore."
            }
            (ArchiveCorrupt, Lang::Zh) => "压缩包已损坏。",
            (ArchiveCorrupt, Lang::En) => "The archive is corrupt.",
            (Healthy, _) => "API is healthy.",
            (InvalidCron, Lang::Zh) => "必须是有效的 cron 表达式（五个字段，或 @daily 等宏）。",
            (InvalidCron, Lang::En) => "Must be a valid cron expression (five fields, or a macro such as @daily).",
            (MinOne, Lang::Zh) => "不能小于 1。",
            (MinOne, Lang::En) => "Must be no less than 1.",
            (InvalidType, Lang::Zh) => "值的类型无效。",
            (InvalidType, Lang::En) => "Invalid value type.",
            (InvalidEmail, Lang::Zh) => "必须是有效的电子邮件地址。",
            (InvalidEmail, Lang::En) => "Must be a valid email address.",
            (LengthUpTo255, Lang::Zh) => "长度必须在 1 到 255 之间。",
            (LengthUpTo255, Lang::En) => "The length must be between 1 and 255.",
            (LengthUpTo71, Lang::Zh) => "长度必须在 1 到 71 之间。",
            (LengthUpTo71, Lang::En) => "The length must be between 1 and 71.",
            (OtpDisabled, Lang::Zh) => "该集合未启用一次性密码（OTP）登录。",
            (OtpDisabled, Lang::En) => "The collection is not configured to allow OTP authentication.",
            (InvalidOtp, Lang::Zh) => "一次性密码无效或已过期。",
            (InvalidOtp, Lang::En) => "Invalid or expired OTP.",
            (TooManyOtpAttempts, Lang::Zh) => "尝试次数过多，请稍后使用新的一次性密码重试。",
            (TooManyOtpAttempts, Lang::En) => "Too many attempts, please try again later with a new OTP.",
            (MfaInvalid, Lang::Zh) => "多因素认证会话无效或已过期。",
            (MfaInvalid, Lang::En) => "Invalid or expired MFA session.",
            (MfaOtherRecord, Lang::Zh) => "多因素认证会话无效。",
            (MfaOtherRecord, Lang::En) => "Invalid MFA session.",
            (MfaSameMethod, Lang::Zh) => "需要使用另一种认证方式。",
            (MfaSameMethod, Lang::En) => "A different authentication method is required.",
            (NotAHost, Lang::Zh) => "必须是有效的 IP 地址或域名。",
            (NotAHost, Lang::En) => "Must be a valid IP address or DNS name.",
            (MinZero, Lang::Zh) => "不能小于 0。",
            (MinZero, Lang::En) => "Must be no less than 0.",
            (MaxPort, Lang::Zh) => "不能大于 65535。",
            (MaxPort, Lang::En) => "Must be no greater than 65535.",
            (InvalidIpOrSubnet, Lang::Zh) => "无效的 IP 地址或 CIDR 子网。",
            (InvalidIpOrSubnet, Lang::En) => "Invalid IP or CIDR subnet.",
            (InvalidValue, Lang::Zh) => "必须是有效的值。",
            (InvalidValue, Lang::En) => "Must be a valid value.",
            (AuthRuleRefused, Lang::Zh) => "请求不满足该集合的认证要求。",
            (AuthRuleRefused, Lang::En) => "The request doesn't satisfy the collection requirements to authenticate.",
            (AddressNotAllowed, Lang::Zh) => "你无权执行此请求。",
            (AddressNotAllowed, Lang::En) => "You are not allowed to perform this request.",
            (NotAUrl, Lang::Zh) => "必须是有效的 URL。",
            (NotAUrl, Lang::En) => "Must be a valid URL.",
            (S3TestFailed, Lang::Zh) => "测试 S3 文件系统失败。",
            (S3TestFailed, Lang::En) => "Failed to test the S3 filesystem.",
            (S3NotEnabled, Lang::Zh) => "测试 S3 文件系统失败。S3 存储文件系统未启用。",
            (S3NotEnabled, Lang::En) => "Failed to test the S3 filesystem. S3 storage filesystem is not enabled.",
            (S3Unusable, Lang::Zh) => "测试 S3 文件系统失败。无法使用已保存的设置（端点必须是 http:// 或 https:// URL）。",
            (S3Unusable, Lang::En) => {
                "Failed to test the S3 filesystem. The saved settings cannot be used (the endpoint must be an http:// or https:// URL)."
            }
            (S3Unreachable, Lang::Zh) => "测试 S3 文件系统失败。无法连接到端点。",
            (S3Unreachable, Lang::En) => "Failed to test the S3 filesystem. The endpoint cannot be reached.",
            (S3Refused, Lang::Zh) => "测试 S3 文件系统失败。存储拒绝了访问密钥和密钥，或它们无权写入该存储桶。",
            (S3Refused, Lang::En) => {
                "Failed to test the S3 filesystem. The store refused the access key and secret, or they may not write to the bucket."
            }
            (S3NoBucket, Lang::Zh) => "测试 S3 文件系统失败。存储桶不存在。",
            (S3NoBucket, Lang::En) => "Failed to test the S3 filesystem. The bucket does not exist.",
            (S3Unexpected, Lang::Zh) => "测试 S3 文件系统失败。存储返回了意外的响应。",
            (S3Unexpected, Lang::En) => "Failed to test the S3 filesystem. The store gave an unexpected answer.",
        }
    }

    /// The text in the language of the request being served.
    pub fn current(self) -> Cow<'static, str> {
        self.text(Lang::current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_of_ours() {
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Some(Lang::Zh));
        assert_eq!(Lang::from_accept_language("fr, en;q=0.5"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("en;q=0.2, zh;q=0.7"), Some(Lang::Zh));
        assert_eq!(Lang::from_accept_language("fr, de"), None);
        assert_eq!(Lang::from_accept_language("en;q=0"), None);
    }

    #[tokio::test]
    async fn the_request_language_reaches_rendering() {
        assert_eq!(Message::NotFound.current(), "请求的资源未找到。");
        let en = with_request_lang(Lang::En, async { Message::NotFound.current() }).await;
        assert_eq!(en, "The requested resource wasn't found.");
    }
}
