//! The account endpoints around the backups API: password login for superusers and regular
//! users, one-time passwords by mail (request, then log in with one), the MFA step that a
//! collection may add (a first step answers 401 `{mfaId}`, a second method finishes), short-
//! lived file tokens for downloads, and the health check.

use std::net::IpAddr;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::AuthToken;
use super::body::DeferredBody;
use super::ratelimit::RateLimiter;
use super::error::{response_errors, ApiError, ErrorBody};
use crate::i18n::Message;
use crate::logins::{Client, Login, LoginError, PasswordLogin};
use crate::settings::AccessSettings;
use crate::service::Service;

#[derive(Tags)]
enum ApiTags {
    /// Password login and file tokens.
    Auth,
    /// Server status.
    Health,
}

/// Credentials for password login.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AuthWithPasswordBody {
    /// The account's email, or the value of another of the collection's identity fields
    /// (`passwordAuth.identityFields`, e.g. a `username`).
    #[oai(validator(max_length = 320))]
    pub identity: String,
    #[oai(validator(max_length = 256))]
    pub password: String,
    /// Search `identity` in this identity field only; by default `email` first (for an
    /// identity that looks like one), then each identity field in order.
    #[oai(validator(max_length = 255))]
    pub identity_field: Option<String>,
    /// The `mfaId` of an MFA login begun with another method (may also be sent as a query
    /// parameter).
    #[oai(rename = "mfaId", validator(max_length = 255))]
    pub mfa_id: Option<String>,
}

/// The first step of a login to a collection with MFA passed: finish it with another method
/// (`auth-with-otp`, `auth-with-password`) and this id, within the collection's `mfa.duration`.
#[derive(Object, Debug)]
pub struct MfaRequired {
    #[oai(rename = "mfaId")]
    pub mfa_id: String,
}

/// Where to mail a one-time password.
#[derive(Object, Debug)]
pub struct RequestOtpBody {
    /// The account's email.
    #[oai(validator(max_length = 255))]
    pub email: String,
}

/// A one-time password was asked for.
#[derive(Object, Debug)]
pub struct OtpRequested {
    /// The id to log in with, together with the code from the mail. The same answer comes
    /// for an email without an account (and then no mail goes out).
    #[oai(rename = "otpId")]
    pub otp_id: String,
}

/// A one-time password to log in with.
#[derive(Object, Debug)]
pub struct AuthWithOtpBody {
    /// From `request-otp`.
    #[oai(rename = "otpId", validator(max_length = 255))]
    pub otp_id: String,
    /// The code from the mail.
    #[oai(validator(max_length = 71))]
    pub password: String,
    /// The `mfaId` of an MFA login begun with another method (may also be sent as a query
    /// parameter).
    #[oai(rename = "mfaId", validator(max_length = 255))]
    pub mfa_id: Option<String>,
}

/// An auth token and the account it belongs to.
#[derive(Object, Debug)]
pub struct AuthResult {
    /// JWT to send as `Authorization: TOKEN`.
    pub token: String,
    /// The authenticated record (`collectionName` is `_superusers` or `users`).
    pub record: serde_json::Value,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "AuthResponse::from_poem_error")]
pub enum AuthResponse {
    /// Logged in.
    #[oai(status = 200)]
    Ok(Json<AuthResult>),
    /// Wrong identity or password, a malformed body, or an `mfaId` that is unknown, expired,
    /// another account's or begun with a password too.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Right password, but the collection requires MFA: finish with another method and the
    /// `mfaId`.
    #[oai(status = 401)]
    MfaRequired(Json<MfaRequired>),
    /// Right password, but the record fails the collection's `authRule` (or the rule cannot
    /// be evaluated here), or a superuser logs in from an address outside the settings'
    /// `superuserIPs`: PocketBase's refusals, word for word.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such auth collection.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Too many login attempts from this address: wait a little.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>),
}
response_errors!(AuthResponse, parse_error: || ApiError::new(400, Message::AuthFailed), {
    400 => BadRequest, 403 => Forbidden, 404 => NotFound, 429 => TooManyRequests,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "RequestOtpResponse::from_poem_error")]
pub enum RequestOtpResponse {
    /// A code is on its way, if an account has that email.
    #[oai(status = 200)]
    Ok(Json<OtpRequested>),
    /// A malformed body or email.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The collection does not allow one-time passwords (`otp.enabled` is off).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such auth collection.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Too many login attempts from this address: wait a little.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>),
}
response_errors!(RequestOtpResponse, parse_error: || ApiError::new(400, Message::InvalidJson), {
    400 => BadRequest, 403 => Forbidden, 404 => NotFound, 429 => TooManyRequests,
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "AuthWithOtpResponse::from_poem_error")]
pub enum AuthWithOtpResponse {
    /// Logged in.
    #[oai(status = 200)]
    Ok(Json<AuthResult>),
    /// A malformed body, a code that is wrong, expired or used, or an `mfaId` that is unknown,
    /// expired, another account's or begun with a one-time password too.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Right code, but the collection requires MFA: finish with another method and the `mfaId`.
    #[oai(status = 401)]
    MfaRequired(Json<MfaRequired>),
    /// The collection does not allow one-time passwords (`otp.enabled` is off); or right
    /// code, but the record fails the collection's `authRule`, or a superuser logs in from an
    /// address outside the settings' `superuserIPs`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such auth collection.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Too many login attempts from this address, or five codes tried for the account within
    /// three minutes: ask for a new code later.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>),
}
response_errors!(AuthWithOtpResponse, parse_error: || ApiError::new(400, Message::InvalidJson), {
    400 => BadRequest, 403 => Forbidden, 404 => NotFound, 429 => TooManyRequests,
});

/// A refused login step, as PocketBase answers it.
fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::BadCredentials => ApiError::new(400, Message::AuthFailed),
        LoginError::NoSuchCollection => ApiError::not_found(),
        LoginError::OtpDisabled => ApiError::new(403, Message::OtpDisabled),
        LoginError::InvalidOtp => ApiError::new(400, Message::InvalidOtp),
        LoginError::TooManyOtpAttempts => ApiError::new(429, Message::TooManyOtpAttempts),
        LoginError::MfaInvalid => ApiError::new(400, Message::MfaInvalid),
        LoginError::MfaOtherRecord => ApiError::new(400, Message::MfaOtherRecord),
        LoginError::MfaSameMethod => ApiError::new(400, Message::MfaSameMethod),
        LoginError::UnknownIdentityField => ApiError::new(400, Message::ValidationFailed).field(
            "identityField",
            "validation_in_invalid",
            Message::InvalidValue,
        ),
        LoginError::AuthRuleRefused => ApiError::new(403, Message::AuthRuleRefused),
        LoginError::AddressNotAllowed => ApiError::new(403, Message::AddressNotAllowed),
        e @ (LoginError::Accounts(_) | LoginError::Auth(_) | LoginError::Join(_)) => {
            tracing::error!(error = %e, "login failed");
            ApiError::new(400, Message::AuthFailed)
        }
    }
}

/// The client as the login steps judge it: its address (resolved through trusted proxies,
/// see [`super::client`]), whether `superuserIPs` lets it in, and its user agent (bounded: it
/// goes into a hash and a mail, nowhere else).
fn client(req: &poem::Request, ip: Option<IpAddr>, access: &AccessSettings) -> Client {
    let agent = req.headers().get(poem::http::header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut user_agent = agent.unwrap_or_default();
    if user_agent.len() > 1024 {
        let cut = (0..=1024).rev().find(|i| user_agent.is_char_boundary(*i)).unwrap_or(0);
        user_agent.truncate(cut);
    }
    Client { ip, user_agent, superuser_allowed: access.allows_superuser(ip) }
}

/// Takes one login attempt for the client; the 429 when it has none left.
fn throttle(client: Option<IpAddr>, limiter: &RateLimiter) -> Result<(), ApiError> {
    if let Some(client) = client {
        if !limiter.try_acquire(client, std::time::Instant::now()) {
            tracing::warn!(%client, "login throttled");
            return Err(ApiError::new(429, Message::TooManyRequests));
        }
    }
    Ok(())
}

/// A string field of a JSON body: absent or null is empty; another type is `Err`.
fn text_field(body: &serde_json::Value, name: &str) -> Result<String, ()> {
    match body.get(name) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(()),
    }
}

/// The `mfaId` of a step: the query parameter, else the body's (PocketBase reads both).
fn mfa_id(query: Option<String>, body: Option<String>) -> Option<String> {
    query.filter(|id| !id.is_empty()).or(body).filter(|id| !id.is_empty())
}

/// A file token.
#[derive(Object, Debug)]
pub struct FileTokenResult {
    /// Short-lived JWT for the `token` query parameter of a download.
    pub token: String,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "FileTokenResponse::from_poem_error")]
pub enum FileTokenResponse {
    /// A new file token for the caller.
    #[oai(status = 200)]
    Ok(Json<FileTokenResult>),
    /// The token could not be issued.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid auth token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// A superuser's token from an address outside the settings' `superuserIPs`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
}
response_errors!(FileTokenResponse, parse_error: || ApiError::new(400, Message::BadRequest), {
    400 => BadRequest, 401 => Unauthorized, 403 => Forbidden,
});

/// The health check's answer.
#[derive(Object, Debug)]
pub struct Health {
    pub message: String,
    pub code: u16,
    pub data: super::extensions::HealthData,
}

pub struct AccountsApi;

#[OpenApi]
impl AccountsApi {
    /// Auth with password
    ///
    /// Logs a superuser (`_superusers`) or a regular user (`users`) in with an identity
    /// (email, or another identity field of the collection) and password, answering an auth
    /// token. As in PocketBase, the record must then satisfy the collection's `authRule`, and a
    /// superuser must call from an address the settings' `superuserIPs` allow.
    #[oai(
        path = "/collections/:collection/auth-with-password",
        method = "post",
        operation_id = "authWithPassword",
        tag = "ApiTags::Auth"
    )]
    async fn auth_with_password(
        &self,
        service: Data<&Arc<Service>>,
        limiter: Data<&Arc<RateLimiter>>,
        req: &poem::Request,
        /// `_superusers` or `users`.
        collection: Path<String>,
        /// The `mfaId` of an MFA login begun with another method (or in the body).
        #[oai(name = "mfaId", validator(max_length = 255))]
        mfa_id_query: Query<Option<String>>,
        body: DeferredBody<Json<AuthWithPasswordBody>>,
    ) -> AuthResponse {
        if !service.has_auth_collection(&collection.0) {
            return ApiError::not_found().into();
        }
        let (ip, access) = super::client::client_of(req).await;
        if let Err(e) = throttle(ip, &limiter) {
            return e.into();
        }
        let body = match body.read_json().await {
            Ok(Some(body)) => body,
            Ok(None) => AuthWithPasswordBody { identity: String::new(), password: String::new(), identity_field: None, mfa_id: None },
            Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
        };
        if body.identity.trim().is_empty() || body.password.is_empty() {
            let mut e = ApiError::new(400, Message::ValidationFailed);
            if body.identity.trim().is_empty() {
                e = e.field("identity", "validation_required", Message::Required);
            }
            if body.password.is_empty() {
                e = e.field("password", "validation_required", Message::Required);
            }
            return e.into();
        }
        let login = PasswordLogin {
            collection: collection.0,
            identity: body.identity,
            identity_field: body.identity_field.filter(|f| !f.is_empty()),
            password: body.password,
            mfa_id: mfa_id(mfa_id_query.0, body.mfa_id),
        };
        match service.login_with_password(login, client(req, ip, &access)).await {
            Ok(Login::Authenticated { token, record }) => AuthResponse::Ok(Json(AuthResult { token, record: record.to_json() })),
            Ok(Login::MfaRequired { mfa_id }) => AuthResponse::MfaRequired(Json(MfaRequired { mfa_id })),
            Err(e) => login_error(e).into(),
        }
    }

    /// Request OTP
    ///
    /// Mails a one-time password to the account with this email, when the collection allows
    /// one-time passwords (`otp.enabled`). The answer is the same whether or not an account
    /// has that email, so emails cannot be told apart; a code that cannot be mailed is
    /// dropped (the server log says why).
    #[oai(
        path = "/collections/:collection/request-otp",
        method = "post",
        operation_id = "requestOTP",
        tag = "ApiTags::Auth"
    )]
    async fn request_otp(
        &self,
        service: Data<&Arc<Service>>,
        limiter: Data<&Arc<RateLimiter>>,
        req: &poem::Request,
        /// `_superusers` or `users`.
        collection: Path<String>,
        body: DeferredBody<Json<RequestOtpBody>>,
    ) -> RequestOtpResponse {
        let Some(c) = service.auth_collection(&collection.0) else { return ApiError::not_found().into() };
        if !c.otp.enabled {
            return ApiError::new(403, Message::OtpDisabled).into();
        }
        let (ip, _) = super::client::client_of(req).await;
        if let Err(e) = throttle(ip, &limiter) {
            return e.into();
        }
        let email = match body.read_json_value().await.map(|b| b.unwrap_or_default()) {
            Ok(body) => match text_field(&body, "email") {
                Ok(email) => email,
                Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
            },
            Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
        };
        let invalid = |code, message| ApiError::new(400, Message::ValidationFailed).field("email", code, message);
        if email.is_empty() {
            return invalid("validation_required", Message::Required).into();
        }
        if email.chars().count() > 255 {
            return invalid("validation_length_out_of_range", Message::LengthUpTo255).into();
        }
        if !crate::mail::is_address(&email) {
            return invalid("validation_is_email", Message::InvalidEmail).into();
        }
        match service.request_otp(&c.id, email).await {
            Ok(otp_id) => RequestOtpResponse::Ok(Json(OtpRequested { otp_id })),
            Err(e) => login_error(e).into(),
        }
    }

    /// Auth with OTP
    ///
    /// Logs in with a one-time password from `request-otp`. As the second step of an MFA login
    /// it takes the first step's `mfaId`; as the first step on a collection with MFA it answers
    /// 401 with an `mfaId`. The code is used up once it matches, whatever the rest of the login
    /// says. An unverified account whose email the code went to becomes verified.
    #[oai(
        path = "/collections/:collection/auth-with-otp",
        method = "post",
        operation_id = "authWithOTP",
        tag = "ApiTags::Auth"
    )]
    async fn auth_with_otp(
        &self,
        service: Data<&Arc<Service>>,
        limiter: Data<&Arc<RateLimiter>>,
        req: &poem::Request,
        /// `_superusers` or `users`.
        collection: Path<String>,
        /// The `mfaId` of an MFA login begun with another method (or in the body).
        #[oai(name = "mfaId", validator(max_length = 255))]
        mfa_id_query: Query<Option<String>>,
        body: DeferredBody<Json<AuthWithOtpBody>>,
    ) -> AuthWithOtpResponse {
        let Some(c) = service.auth_collection(&collection.0) else { return ApiError::not_found().into() };
        if !c.otp.enabled {
            return ApiError::new(403, Message::OtpDisabled).into();
        }
        let (ip, access) = super::client::client_of(req).await;
        if let Err(e) = throttle(ip, &limiter) {
            return e.into();
        }
        let body = match body.read_json_value().await {
            Ok(body) => body.unwrap_or_default(),
            Err(()) => return ApiError::new(400, Message::InvalidJson).into(),
        };
        let (Ok(otp_id), Ok(password), Ok(body_mfa_id)) =
            (text_field(&body, "otpId"), text_field(&body, "password"), text_field(&body, "mfaId"))
        else {
            return ApiError::new(400, Message::InvalidJson).into();
        };
        let mut e = ApiError::new(400, Message::ValidationFailed);
        if otp_id.is_empty() {
            e = e.field("otpId", "validation_required", Message::Required);
        } else if otp_id.chars().count() > 255 {
            e = e.field("otpId", "validation_length_out_of_range", Message::LengthUpTo255);
        }
        if password.is_empty() {
            e = e.field("password", "validation_required", Message::Required);
        } else if password.chars().count() > 71 {
            e = e.field("password", "validation_length_out_of_range", Message::LengthUpTo71);
        }
        if !e.fields.is_empty() {
            return e.into();
        }
        let mfa_id = mfa_id(mfa_id_query.0, Some(body_mfa_id));
        match service.login_with_otp(&c.id, otp_id, password, mfa_id, client(req, ip, &access)).await {
            Ok(Login::Authenticated { token, record }) => {
                AuthWithOtpResponse::Ok(Json(AuthResult { token, record: record.to_json() }))
            }
            Ok(Login::MfaRequired { mfa_id }) => AuthWithOtpResponse::MfaRequired(Json(MfaRequired { mfa_id })),
            Err(e) => login_error(e).into(),
        }
    }

    /// File token
    ///
    /// Issues a short-lived file token for the authenticated record; downloads take it as
    /// their `token` query parameter.
    #[oai(path = "/files/token", method = "post", operation_id = "fileToken", tag = "ApiTags::Auth")]
    async fn file_token(&self, auth: AuthToken, service: Data<&Arc<Service>>) -> FileTokenResponse {
        match service.file_token(auth.0).await {
            Ok(token) => FileTokenResponse::Ok(Json(FileTokenResult { token })),
            Err(e) => {
                tracing::error!(error = %e, "file token failed");
                ApiError::new(400, Message::BadRequest).into()
            }
        }
    }

    /// Health check
    ///
    /// For a superuser's auth token, `data.canBackup` tells whether a backup could start now
    /// (false while a create or restore runs), as PocketBase does, and `data.progress` how far
    /// the running create or restore is (an extension beyond PocketBase).
    #[oai(path = "/health", method = "get", operation_id = "health", tag = "ApiTags::Health")]
    async fn health(&self, req: &poem::Request, service: Data<&Arc<Service>>) -> Json<Health> {
        let superuser = super::auth::optional_superuser(req).await.is_some();
        let data = super::extensions::HealthData::of(&service, superuser);
        Json(Health { message: Message::Healthy.current().to_string(), code: 200, data })
    }
}
