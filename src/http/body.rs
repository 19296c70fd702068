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

pub struct DeferredBody<P> {
    body: Body,
    _payload: PhantomData<P>,
}

impl<P> DeferredBody<P> {
    pub fn into_body(self) -> Body {
        self.body
    }
}

impl<'a, P: Payload + ParsePayload> ApiExtractor<'a> for DeferredBody<P> {
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
            required: P::IS_REQUIRED,
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
