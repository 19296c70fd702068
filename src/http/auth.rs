//! Who is calling: the two security schemes of the API, as typed handler arguments.
//!
//! `AuthToken` is the `Authorization` header (raw token or `Bearer TOKEN`), `FileToken` the
//! `token` query parameter of a download. Each verifies its token when extracted (401 when
//! anything is wrong with it) and, for a superuser's, that the client's address is among the
//! settings' `superuserIPs` (PocketBase's 403 otherwise, whatever the endpoint); handlers then
//! ask for a superuser, which is the documented 403.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{auth::ApiKey, SecurityScheme};

use super::error::ApiError;
use crate::accounts::Record;
use crate::auth::{AuthError, TokenKind};
use crate::i18n::Message;
use crate::service::{AccountError, Service};

/// An auth token from `POST /api/collections/{collection}/auth-with-password`, sent as
/// `Authorization: TOKEN` or `Authorization: Bearer TOKEN`.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "Authorization", key_in = "header", checker = "check_auth_token")]
pub struct AuthToken(pub Record);

/// A short-lived file token from `POST /api/files/token`, sent as the `token` query parameter.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "token", key_in = "query", checker = "check_file_token")]
pub struct FileToken(pub Record);

async fn check_auth_token(req: &Request, key: ApiKey) -> poem::Result<Record> {
    let raw = key.key.trim();
    let token = match raw.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => raw[7..].trim(),
        _ => raw,
    };
    verify(req, token, TokenKind::Auth).await
}

async fn check_file_token(req: &Request, key: ApiKey) -> poem::Result<Record> {
    verify(req, key.key.trim(), TokenKind::File).await
}

async fn verify(req: &Request, token: &str, kind: TokenKind) -> poem::Result<Record> {
    let service = req.data::<Arc<Service>>().ok_or_else(ApiError::unauthorized)?;
    match service.verify_token(token.to_string(), kind).await {
        Ok(record) if record.is_superuser() => {
            let (client, access) = super::client::client_of(req).await;
            if !access.allows_superuser(client) {
                tracing::warn!(?client, "superuser request from an address outside superuserIPs refused");
                return Err(ApiError::new(403, Message::AddressNotAllowed).into());
            }
            Ok(record)
        }
        Ok(record) => Ok(record),
        // The client's fault: routine, kept out of the log at the default level.
        Err(e @ AccountError::Auth(AuthError::Invalid { .. })) => {
            tracing::debug!(error = %e, "token refused");
            Err(ApiError::unauthorized().into())
        }
        // The server's (the accounts store failed): the client still gets the documented 401,
        // the operator has to hear of it.
        Err(e) => {
            tracing::error!(error = %e, "token could not be checked");
            Err(ApiError::unauthorized().into())
        }
    }
}

fn superuser(record: Record) -> Result<Record, ApiError> {
    if record.is_superuser() {
        Ok(record)
    } else {
        Err(ApiError::forbidden())
    }
}

/// The caller when the request carries a valid superuser auth token (from an address
/// `superuserIPs` allows), else `None`: for an endpoint open to everyone that tells superusers
/// more (health's `canBackup`).
pub async fn optional_superuser(req: &Request) -> Option<Record> {
    let raw = req.headers().get(poem::http::header::AUTHORIZATION)?.to_str().ok()?;
    let record = check_auth_token(req, ApiKey { key: raw.to_string() }).await.ok()?;
    record.is_superuser().then_some(record)
}

impl AuthToken {
    /// The caller, if a superuser; else the documented 403.
    pub fn superuser(self) -> Result<Record, ApiError> {
        superuser(self.0)
    }
}

impl FileToken {
    pub fn superuser(self) -> Result<Record, ApiError> {
        superuser(self.0)
    }
}
