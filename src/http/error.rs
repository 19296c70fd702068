//! The one error shape every client sees: `{"status": N, "message": "...", "data": {...}}`.
//!
//! Handlers and extractors build an [`ApiError`]; its text is rendered in the request's
//! language only when the body is made. Causes (paths, OS errors) go to the log, never
//! into a body. `response_errors!` gives each operation's response enum the conversions it
//! needs, so that an operation can only answer with the statuses it documents.

use std::cell::Cell;
use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem_openapi::Object;

use crate::i18n::Message;

/// The documented error body.
#[derive(Object, Clone, Debug, PartialEq)]
#[oai(rename = "Error")]
pub struct ErrorBody {
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong, in the request's language (`Accept-Language`: zh or en).
    pub message: String,
    /// Per-field validation errors, keyed by field name; empty otherwise.
    pub data: BTreeMap<String, FieldError>,
}

/// One field's validation error.
#[derive(Object, Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Stable machine-readable code, e.g. `validation_invalid_mime_type`.
    pub code: String,
    pub message: String,
}

/// An error on its way to the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: Message,
    pub fields: Vec<(&'static str, &'static str, Message)>,
}

impl ApiError {
    pub fn new(status: u16, message: Message) -> ApiError {
        ApiError { status, message, fields: Vec::new() }
    }

    /// Adds a validation error on `field` with a stable `code`.
    pub fn field(mut self, field: &'static str, code: &'static str, message: Message) -> ApiError {
        self.fields.push((field, code, message));
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, Message::Unauthorized)
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(403, Message::Forbidden)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(404, Message::NotFound)
    }

    /// The 400 of an operation refused because a create or restore runs; the request is
    /// counted as busy, not as an error, in the metrics (see [`noting_busy`]).
    pub fn busy(message: Message) -> ApiError {
        let _ = BUSY_REFUSAL.try_with(|busy| busy.set(true));
        ApiError::new(400, message)
    }

    /// The body in the language of the request being served.
    pub fn body(&self) -> ErrorBody {
        self.body_in(crate::i18n::Lang::current())
    }

    pub fn body_in(&self, lang: crate::i18n::Lang) -> ErrorBody {
        ErrorBody {
            status: self.status,
            message: self.message.text(lang).to_string(),
            data: self
                .fields
                .iter()
                .map(|(field, code, msg)| {
                    let e = FieldError { code: code.to_string(), message: msg.text(lang).to_string() };
                    (field.to_string(), e)
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message.text(crate::i18n::Lang::En))
    }
}

impl std::error::Error for ApiError {}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn as_response(&self) -> poem::Response {
        use poem::IntoResponse;
        let body = poem_openapi::types::ToJSON::to_json(&self.body());
        poem::web::Json(body).with_status(self.status()).into_response()
    }
}

tokio::task_local! {
    static BUSY_REFUSAL: Cell<bool>;
}

/// Runs a request's handling and tells whether it was refused as busy: the body alone does
/// not say, and a header would show the client what the API does not document.
pub async fn noting_busy<F: std::future::Future>(fut: F) -> (F::Output, bool) {
    BUSY_REFUSAL
        .scope(Cell::new(false), async move {
            let output = fut.await;
            (output, BUSY_REFUSAL.with(Cell::get))
        })
        .await
}

/// Any error poem or an extractor raised, in our shape. `parse_error` is what a request that
/// could not be parsed gets on this operation.
pub fn from_poem_error(err: poem::Error, parse_error: impl FnOnce() -> ApiError) -> ApiError {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.clone();
    }
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return ApiError::unauthorized();
    }
    // A path that does not even percent-decode to UTF-8 names nothing that exists.
    if err.is::<poem::error::ParsePathError>() {
        return ApiError::not_found();
    }
    tracing::debug!(error = %err, "request refused");
    match err.status() {
        StatusCode::NOT_FOUND => ApiError::not_found(),
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
        StatusCode::FORBIDDEN => ApiError::forbidden(),
        s if s.is_client_error() && s != StatusCode::BAD_REQUEST => {
            ApiError::new(s.as_u16(), Message::BadRequest)
        }
        _ => parse_error(),
    }
}

/// Implements `From<ApiError>` and the bad-request handler for an operation's response
/// enum: each documented error status maps to its variant (all `Json<ErrorBody>`); any
/// other status becomes the operation's 400 so nothing undocumented goes out.
macro_rules! response_errors {
    ($ty:ident, parse_error: $parse:expr, { $($status:literal => $variant:ident),+ $(,)? }) => {
        impl From<$crate::http::error::ApiError> for $ty {
            fn from(e: $crate::http::error::ApiError) -> Self {
                match e.status {
                    $($status => $ty::$variant(poem_openapi::payload::Json(e.body())),)+
                    _ => {
                        tracing::error!(error = %e, "undocumented status mapped to 400");
                        $ty::from($crate::http::error::ApiError::new(400, $crate::i18n::Message::BadRequest))
                    }
                }
            }
        }

        impl $ty {
            fn from_poem_error(err: poem::Error) -> Self {
                $crate::http::error::from_poem_error(err, $parse).into()
            }
        }
    };
}
pub(crate) use response_errors;
