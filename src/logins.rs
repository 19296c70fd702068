//! Logins as PocketBase completes them, on the service: the password step, one-time passwords
//! (requested by mail, then used as a login step), the collection's `authRule`, the
//! settings' `superuserIPs`, the second factor a collection may require (`mfa`: the first
//! step answers an `mfaId` instead of a token, for the records `mfa.rule` selects), and the
//! alert mail on a login from a new origin (`authAlert`). Every auth token of a login is
//! issued by [`Service::finish_login`], after all of these have passed. Also the mail to
//! superusers when a scheduled backup fails.
//!
//! Mail goes out with the settings read at that moment (PocketBase's `smtp` and `meta`), so
//! a change through `PATCH /api/settings` or by PocketBase applies at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::accounts::mfa::{self, FoundOtp, IssuedOtp, Method, MfaCheck, Origin};
use crate::accounts::{schema, Accounts, AccountsError, AuthCollection, Record, RuleOutcome};
use crate::auth::{self, AuthError, TokenKind};
use crate::mail::{self, Message, Template};
use crate::model::names::BackupKey;
use crate::service::{BackupError, Service};
use crate::settings::{self, Settings};

/// Who is logging in: the address and user agent (login origins), and whether the
/// settings' `superuserIPs` let a superuser in from there (judged by the HTTP layer, which
/// knows the address).
#[derive(Clone, Debug)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub superuser_allowed: bool,
}

/// A password step, as the HTTP layer has read it.
#[derive(Debug)]
pub struct PasswordLogin {
    /// Name or id of the auth collection.
    pub collection: String,
    pub identity: String,
    /// Search `identity` in this identity field only.
    pub identity_field: Option<String>,
    pub password: String,
    /// Finishes an MFA login begun with another method.
    pub mfa_id: Option<String>,
}

/// How a login step ended.
#[derive(Debug)]
pub enum Login {
    Authenticated { token: String, record: Record },
    /// The collection wants a second method: finish with another step and this id.
    MfaRequired { mfa_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong identity or password")]
    BadCredentials,
    #[error("no such auth collection")]
    NoSuchCollection,
    #[error("the collection does not allow OTP logins")]
    OtpDisabled,
    #[error("invalid or expired OTP")]
    InvalidOtp,
    #[error("too many OTP attempts for the record")]
    TooManyOtpAttempts,
    #[error("invalid or expired MFA session")]
    MfaInvalid,
    #[error("MFA session of another record")]
    MfaOtherRecord,
    #[error("MFA needs a method other than the first step's")]
    MfaSameMethod,
    #[error("identityField is not one of the collection's identity fields")]
    UnknownIdentityField,
    #[error("the record does not satisfy the collection's authRule")]
    AuthRuleRefused,
    #[error("superusers may not log in from this address (superuserIPs)")]
    AddressNotAllowed,
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("worker thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The collection's template, or ours when it is empty.
fn or_default(t: &Template, default: fn() -> Template) -> Template {
    if t.subject.trim().is_empty() || t.body.trim().is_empty() {
        default()
    } else {
        t.clone()
    }
}

impl Service {
    /// The auth collection `name_or_id`, if one can log in to it here.
    pub fn auth_collection(&self, name_or_id: &str) -> Option<AuthCollection> {
        self.accounts().collection(name_or_id).cloned()
    }

    /// Password step of a login to `login.collection` (name or id).
    pub async fn login_with_password(&self, login: PasswordLogin, client: Client) -> Result<Login, LoginError> {
        let c = self.auth_collection(&login.collection).ok_or(LoginError::NoSuchCollection)?;
        if login.identity_field.as_ref().is_some_and(|f| !c.identity_fields.contains(f)) {
            return Err(LoginError::UnknownIdentityField);
        }
        let PasswordLogin { collection, identity, identity_field, password, mfa_id } = login;
        let record = self
            .hashing(move |a| a.authenticate(&collection, &identity, identity_field.as_deref(), &password))
            .await?
            .ok_or(LoginError::BadCredentials)?;
        self.finish_login(&c, record, Method::Password, mfa_id, client).await
    }

    /// Mails a one-time password to the account of `collection` with this email and answers
    /// the code's id. An unknown email gets a made-up id and no mail, after the same work, so
    /// emails cannot be told apart. The mail goes out in the background (its time says nothing
    /// either); if it cannot be sent the code is deleted and the log says why.
    pub async fn request_otp(&self, collection: &str, email: String) -> Result<String, LoginError> {
        let c = self.auth_collection(collection).ok_or(LoginError::NoSuchCollection)?;
        if !c.otp.enabled {
            return Err(LoginError::OtpDisabled);
        }
        let code = mfa::generate_code(c.otp.length);
        let (found, hash) = {
            let (c, code, email) = (c.clone(), code.clone(), email.clone());
            self.hashing(move |a| Ok((a.find_by_email(&c, &email)?, mfa::hash_code(&code)?))).await?
        };
        let Some(record) = found else {
            tracing::info!(collection = %c.name, "one-time password asked for an unknown email");
            return Ok(crate::accounts::random_record_id());
        };
        let issued = {
            let (c, record) = (c.clone(), record.clone());
            self.blocking(move |a| a.create_otp(&c, &record, &hash, now_ms())).await?
        };
        let id = match issued {
            IssuedOtp::Reused { id } => {
                tracing::warn!(collection = %c.name, record = %record.id, "too many one-time passwords asked: the newest handed out again");
                return Ok(id);
            }
            IssuedOtp::New { id } => id,
        };
        let mailer = self.mailer();
        let otp_id = id.clone();
        tokio::spawn(async move {
            let template = or_default(&c.otp.email_template, schema::otp_template);
            let extra = [("{OTP}".to_string(), code), ("{OTP_ID}".to_string(), otp_id.clone())];
            if let Err(e) = mailer.mail_record(&c, &record, &template, &extra).await {
                tracing::error!(collection = %c.name, record = %record.id, error = %e, "one-time password mail not sent; the code is deleted");
                let accounts = mailer.accounts.clone();
                let deleted = tokio::task::spawn_blocking(move || accounts.delete_otp(&otp_id)).await;
                if let Ok(Err(e)) = deleted {
                    tracing::error!(error = %e, "undelivered one-time password not deleted");
                }
            }
        });
        Ok(id)
    }

    /// A login step with a one-time password; `mfa_id` finishes an MFA login begun with
    /// another method.
    pub async fn login_with_otp(
        &self,
        collection: &str,
        otp_id: String,
        code: String,
        mfa_id: Option<String>,
        client: Client,
    ) -> Result<Login, LoginError> {
        let c = self.auth_collection(collection).ok_or(LoginError::NoSuchCollection)?;
        if !c.otp.enabled {
            return Err(LoginError::OtpDisabled);
        }
        let found: FoundOtp = {
            let c = c.clone();
            self.blocking(move |a| a.find_otp(&c, &otp_id, now_ms())).await?.ok_or(LoginError::InvalidOtp)?
        };
        // Codes are short digit strings: a record gets a few checks, then must ask for a new one.
        if !self.accounts().otp_attempt(&c, &found.record, Instant::now()) {
            return Err(LoginError::TooManyOtpAttempts);
        }
        let hash = found.hash.clone();
        if !self.hashing(move |_| Ok(mfa::code_matches(&code, &hash))).await? {
            return Err(LoginError::InvalidOtp);
        }
        let record = {
            let c = c.clone();
            // Used up now, whatever the rest of the login says (as PocketBase does).
            self.blocking(move |a| a.complete_otp(&c, &found, now_ms())).await?.ok_or(LoginError::InvalidOtp)?
        };
        self.finish_login(&c, record, Method::Otp, mfa_id, client).await
    }

    /// The end of every login step, in PocketBase's order: the collection's `authRule`, the
    /// settings' `superuserIPs`, the second factor if the collection wants one, then the
    /// token, then the alert on a new origin.
    async fn finish_login(
        &self,
        c: &AuthCollection,
        record: Record,
        method: Method,
        mfa_id: Option<String>,
        client: Client,
    ) -> Result<Login, LoginError> {
        let (c2, id) = (c.clone(), record.id.clone());
        match self.blocking(move |a| a.auth_rule_allows(&c2, &id)).await? {
            RuleOutcome::Allowed => {}
            RuleOutcome::Denied => return Err(LoginError::AuthRuleRefused),
            RuleOutcome::Unsupported(reason) => {
                tracing::warn!(collection = %c.name, rule = ?c.auth_rule, %reason, "authRule cannot be evaluated here: login refused");
                return Err(LoginError::AuthRuleRefused);
            }
        }
        if record.is_superuser() && !client.superuser_allowed {
            tracing::warn!(client = ?client.ip, "superuser login from an address outside superuserIPs refused");
            return Err(LoginError::AddressNotAllowed);
        }
        if c.mfa.enabled && self.wants_mfa(c, &record).await? {
            let (c2, r2) = (c.clone(), record.clone());
            match mfa_id.filter(|id| !id.is_empty()) {
                None => {
                    let mfa_id = self.blocking(move |a| a.begin_mfa(&c2, &r2, method, now_ms())).await?;
                    return Ok(Login::MfaRequired { mfa_id });
                }
                Some(id) => match self.blocking(move |a| a.check_mfa(&c2, &r2, &id, method, now_ms())).await? {
                    MfaCheck::Passed => {}
                    MfaCheck::InvalidOrExpired => return Err(LoginError::MfaInvalid),
                    MfaCheck::OtherRecord => return Err(LoginError::MfaOtherRecord),
                    MfaCheck::SameMethod => return Err(LoginError::MfaSameMethod),
                },
            }
        }
        let token = {
            let record = record.clone();
            let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
            let accounts = self.accounts().clone();
            tokio::task::spawn_blocking(move || auth::issue(&accounts, &record, TokenKind::Auth, now)).await??
        };
        if c.auth_alert.enabled && !record.email.is_empty() {
            self.note_origin(c, &record, &client).await;
        }
        Ok(Login::Authenticated { token, record })
    }

    /// Whether MFA applies to `record`: `mfa.rule` (a PocketBase filter) selects the records,
    /// an empty rule all of them. A rule this server cannot evaluate asks for the second factor
    /// (stricter than PocketBase, never looser), and says so in the log.
    async fn wants_mfa(&self, c: &AuthCollection, record: &Record) -> Result<bool, LoginError> {
        let (c2, id) = (c.clone(), record.id.clone());
        Ok(match self.blocking(move |a| a.record_matches(&c2, &id, &c2.mfa.rule)).await? {
            RuleOutcome::Allowed => true,
            RuleOutcome::Denied => false,
            RuleOutcome::Unsupported(reason) => {
                tracing::warn!(collection = %c.name, rule = %c.mfa.rule, %reason, "mfa.rule cannot be evaluated here: MFA required");
                true
            }
        })
    }

    /// Records the login's origin; one new for a record that had others is mailed about
    /// first, and recorded only once the mail is out (so the next login alerts again).
    async fn note_origin(&self, c: &AuthCollection, record: &Record, client: &Client) {
        let ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let fingerprint = mfa::fingerprint(&ip, &client.user_agent);
        let result: Result<(), String> = async {
            let origin = {
                let (c, r, f) = (c.clone(), record.clone(), fingerprint.clone());
                self.blocking(move |a| a.origin(&c, &r, &f)).await.map_err(|e| e.to_string())?
            };
            if origin == Origin::New {
                let info = mfa::alert_info(now_ms(), &ip, &client.user_agent);
                let extra = [("{ALERT_INFO}".to_string(), mail::escape_html(&info))];
                let template = or_default(&c.auth_alert.email_template, schema::auth_alert_template);
                let sent = self.mailer().mail_record(c, record, &template, &extra).await;
                sent.map_err(|e| format!("alert mail not sent: {e}"))?;
            }
            let (c, r) = (c.clone(), record.clone());
            self.blocking(move |a| a.save_origin(&c, &r, &fingerprint, &origin, now_ms())).await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(collection = %c.name, record = %record.id, error = %e, "login from a new origin: not recorded");
        }
    }

    /// Tells every superuser that the scheduled backup `key` failed, one mail each (as
    /// PocketBase 0.39+ does). Failures to send are logged. The reason given is a kind of
    /// failure, never a path or an OS message: those are in the log.
    pub async fn mail_backup_failure(&self, key: &BackupKey, error: &BackupError) {
        let settings = match self.mailer().settings().await {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "backup failure mail not sent"),
        };
        let emails = match self.blocking(|a| a.superuser_emails()).await {
            Ok(emails) => emails,
            Err(e) => return tracing::warn!(error = %e, "backup failure mail not sent: superusers unreadable"),
        };
        let app = mail::escape_html(&settings.app_name);
        let subject = format!("[{}] Scheduled backup failed", settings.app_name);
        let html = format!(
            "<p>{app}: the scheduled backup <strong>{}</strong> could not be made ({}).</p>\n\
             <p>The server log has the details. Scheduled backups go on at their next time.</p>",
            mail::escape_html(key.as_str()),
            failure_kind(error)
        );
        let config = settings.mail();
        for to in emails {
            let message = Message { to: vec![to.clone()], subject: subject.clone(), html: html.clone() };
            match mail::send(&config, &message).await {
                Ok(()) => tracing::info!(%key, to = %to, "backup failure mailed"),
                Err(e) => tracing::warn!(%key, to = %to, error = %e, "backup failure mail not sent"),
            }
        }
    }
}

impl Service {
    /// `f` on a blocking thread with the accounts.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountsError> + Send + 'static,
    ) -> Result<T, LoginError> {
        let accounts = self.accounts().clone();
        Ok(tokio::task::spawn_blocking(move || f(&accounts)).await??)
    }

    /// As [`Service::blocking`], for work that hashes: at most one per core at once.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountsError> + Send + 'static,
    ) -> Result<T, LoginError> {
        let _permit = self.hashing_permit().await;
        self.blocking(f).await
    }

    fn mailer(&self) -> Mailer {
        Mailer { accounts: self.accounts().clone(), data_dir: self.data_dir().to_path_buf() }
    }
}

/// What sending a mail to an account needs, owned, for a task of its own.
struct Mailer {
    accounts: Arc<Accounts>,
    data_dir: PathBuf,
}

impl Mailer {
    async fn settings(&self) -> Result<Settings, String> {
        let dir = self.data_dir.clone();
        match tokio::task::spawn_blocking(move || settings::load(&dir)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("settings unreadable: {e}")),
            Err(e) => Err(format!("settings unreadable: {e}")),
        }
    }

    /// Mails `record` from `template` with the usual placeholders (`{APP_NAME}`, `{APP_URL}`,
    /// `{RECORD:*}`) and `extra` ones.
    async fn mail_record(
        &self,
        c: &AuthCollection,
        record: &Record,
        template: &Template,
        extra: &[(String, String)],
    ) -> Result<(), String> {
        let settings = self.settings().await?;
        let mut placeholders = vec![
            ("{APP_NAME}".to_string(), settings.app_name.clone()),
            ("{APP_URL}".to_string(), settings.app_url.clone()),
        ];
        placeholders.extend_from_slice(extra);
        let (accounts, c2, r2) = (self.accounts.clone(), c.clone(), record.clone());
        let fields = tokio::task::spawn_blocking(move || accounts.record_placeholders(&c2, &r2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        placeholders.extend(fields);
        let (subject, html) = template.resolve(&placeholders);
        let message = Message { to: vec![record.email.clone()], subject, html };
        mail::send(&settings.mail(), &message).await.map_err(|e| e.to_string())
    }
}

/// What went wrong, in words fit for a mail.
fn failure_kind(error: &BackupError) -> &'static str {
    match error {
        BackupError::Storage(_) => "the backups storage failed",
        BackupError::NameExists => "a backup of that name exists",
        BackupError::Busy => "another backup or restore was running",
        _ => "the archive could not be written",
    }
}
