//! Request bodies read only after the caller is authorised.
//!
//! poem-openapi parses every argument before the handler runs, so a body parsed eagerly
//! would answer a regular user's malformed request with 400 instead of the documented 403,
//! and would let anyone with a token stream gigabytes to disk before being refused.
//! `DeferredBody<P>` is documented exactly like the payload `P` but takes the raw body; the
//! handler reads it once the caller has passed.

use std::marker::PhantomData;

use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

/// `REQUIRED = false` documents a body that may be left out (create: no body, no name).
pub struct DeferredBody<P, const REQUIRED: bool = true> {
    body: Body,
    _payload: PhantomData<P>,
}

impl<P, const R: bool> DeferredBody<P, R> {
    pub fn into_body(self) -> Body {
        self.body
    }
}

/// Small JSON bodies (login, create) are read within these bounds, so a stalled or huge
/// body costs the server neither a task forever nor memory.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
pub const JSON_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl<T: poem_openapi::types::ParseFromJSON, const R: bool> DeferredBody<poem_openapi::payload::Json<T>, R> {
    /// The parsed body; `None` when it is empty (or only white space). Any other problem
    /// (too large, too slow, not JSON, wrong shape) is `Err(())`: the caller picks the message.
    pub async fn read_json(self) -> Result<Option<T>, ()> {
        match self.read_json_value().await? {
            None => Ok(None),
            Some(value) => T::parse_from_json(Some(value)).map(Some).map_err(|_| ()),
        }
    }
}

impl<P, const R: bool> DeferredBody<P, R> {
    /// The body as a JSON value, within the same bounds; `None` when it is empty (or only
    /// white space). For handlers that check each field themselves, to answer PocketBase's
    /// per-field validation errors.
    pub async fn read_json_value(self) -> Result<Option<serde_json::Value>, ()> {
        let read = self.body.into_bytes_limit(JSON_BODY_LIMIT);
        let bytes = match tokio::time::timeout(JSON_BODY_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes,
            _ => return Err(()),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|_| ())
    }
}

impl<'a, P: Payload + ParsePayload, const R: bool> ApiExtractor<'a> for DeferredBody<P, R> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        P::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType { content_type: P::CONTENT_TYPE, schema: P::schema_ref() }],
            required: R && P::IS_REQUIRED,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(DeferredBody { body: body.take().unwrap_or_default(), _payload: PhantomData })
    }
}
