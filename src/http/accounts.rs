//! The account endpoints around the backups API: password login for superusers and regular
//! users, short-lived file tokens for downloads, and the health check.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::AuthToken;
use super::body::DeferredBody;
use super::ratelimit::RateLimiter;
use super::error::{response_errors, ApiError, ErrorBody};
use crate::i18n::Message;
use crate::service::{AccountError, PasswordLogin, Service};

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
    /// Wrong identity or password, or a malformed body.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
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
    pub data: serde_json::Value,
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
        body: DeferredBody<Json<AuthWithPasswordBody>>,
    ) -> AuthResponse {
        if !service.has_auth_collection(&collection.0) {
            return ApiError::not_found().into();
        }
        let (client, access) = super::client::client_of(req).await;
        if let Some(client) = client {
            if !limiter.try_acquire(client, std::time::Instant::now()) {
                tracing::warn!(%client, peer = %req.remote_addr(), "password login throttled");
                return ApiError::new(429, Message::TooManyRequests).into();
            }
        }
        let body = match body.read_json().await {
            Ok(Some(body)) => body,
            Ok(None) => AuthWithPasswordBody { identity: String::new(), password: String::new(), identity_field: None },
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
            superuser_allowed: access.allows_superuser(client),
        };
        match service.auth_with_password(login).await {
            Ok((token, record)) => AuthResponse::Ok(Json(AuthResult { token, record: record.to_json() })),
            Err(AccountError::BadCredentials) => ApiError::new(400, Message::AuthFailed).into(),
            Err(AccountError::NoSuchCollection) => ApiError::not_found().into(),
            Err(AccountError::UnknownIdentityField) => ApiError::new(400, Message::ValidationFailed)
                .field("identityField", "validation_in_invalid", Message::InvalidValue)
                .into(),
            Err(AccountError::AuthRuleRefused) => ApiError::new(403, Message::AuthRuleRefused).into(),
            Err(AccountError::AddressNotAllowed) => {
                tracing::warn!(?client, "superuser login from an address outside superuserIPs refused");
                ApiError::new(403, Message::AddressNotAllowed).into()
            }
            Err(e) => {
                tracing::error!(error = %e, "password login failed");
                ApiError::new(400, Message::AuthFailed).into()
            }
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
    /// (false while a create or restore runs), as PocketBase does.
    #[oai(path = "/health", method = "get", operation_id = "health", tag = "ApiTags::Health")]
    async fn health(&self, req: &poem::Request, service: Data<&Arc<Service>>) -> Json<Health> {
        let data = match super::auth::optional_superuser(req).await {
            Some(_) => serde_json::json!({"canBackup": !service.is_busy()}),
            None => serde_json::json!({}),
        };
        Json(Health { message: Message::Healthy.current().to_string(), code: 200, data })
    }
}
