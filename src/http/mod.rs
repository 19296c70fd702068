//! The HTTP adapter: poem-openapi operations, the error shape, languages, Swagger UI, and
//! the operators' console at `/_/`.
//!
//! Thin by design: handlers parse, call the [`Service`], and map results to documented
//! responses. Everything that is the same for all requests (language, security headers,
//! CORS, access log, turning stray poem errors into our error shape) happens once, here.

pub mod accounts;
pub mod auth;
pub mod backups;
pub mod body;
pub mod client;
pub mod console;
pub mod cors;
pub mod download;
pub mod error;
pub mod extensions;
pub mod fields;
pub mod openapi;
pub mod ratelimit;
pub mod settings;
pub mod upload;

use std::sync::Arc;
use std::time::Instant;

use poem::endpoint::make_sync;
use poem::middleware::SetHeader;
use poem::web::{Html, Redirect};
use poem::{get, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};

use crate::i18n::{with_request_lang, Lang, Message};
use crate::service::Service;
use error::{from_poem_error, noting_busy, ApiError};

/// Where Swagger UI and the OpenAPI document are served.
pub const DOCS_PATH: &str = "/docs";
pub const OPENAPI_JSON_PATH: &str = "/openapi.json";
pub const OPENAPI_YAML_PATH: &str = "/openapi.yaml";
/// Prometheus metrics, when the server runs with `--metrics` (404 otherwise).
pub const METRICS_PATH: &str = "/metrics";

/// The whole HTTP application over `service`; `default_lang` answers requests whose
/// `Accept-Language` names neither zh nor en; `login_rate` throttles password logins per
/// client, read from forwarding headers (the settings' `trustedProxy`) only when the peer is
/// one of `trusted_proxies`.
pub fn app(
    service: Arc<Service>,
    default_lang: Lang,
    login_rate: ratelimit::RateLimit,
    trusted_proxies: Vec<ipnet::IpNet>,
) -> impl Endpoint {
    // Built once: every form served is derived from the one document.
    let doc = openapi::document();
    let document = openapi::to_json(&doc);
    let yaml = openapi::to_yaml(&doc);
    let swagger = openapi::swagger_ui_html(&document);
    let allowed = Arc::new(openapi::allowed_methods(&doc));
    Route::new()
        .nest("/api", openapi::api_service())
        .at(OPENAPI_JSON_PATH, make_sync(move |_| {
            Response::builder().content_type("application/json").body(document.clone())
        }))
        .at(OPENAPI_YAML_PATH, make_sync(move |_| {
            Response::builder().content_type("application/yaml").body(yaml.clone())
        }))
        .at(DOCS_PATH, make_sync(move |_| Html(swagger.clone())))
        .nest(console::CONSOLE_PATH.trim_end_matches('/'), console::endpoint())
        .at("/", get(make_sync(|_| Redirect::see_other(DOCS_PATH))))
        .at(METRICS_PATH, get(poem::endpoint::make({
            let service = service.clone();
            move |_| {
                let service = service.clone();
                async move {
                    if !crate::metrics::enabled() {
                        return poem::error::ResponseError::as_response(&ApiError::not_found());
                    }
                    let listing = service.listing().await;
                    match crate::metrics::render(listing.as_ref().map(|l| l.items.iter().map(|b| b.size))) {
                        Some(text) => Response::builder()
                            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                            .body(text),
                        None => poem::error::ResponseError::as_response(&ApiError::not_found()),
                    }
                }
            }
        })))
        .with(
            SetHeader::new()
                .overriding("X-Content-Type-Options", "nosniff")
                .overriding("X-Frame-Options", "SAMEORIGIN")
                // The old XSS auditor is gone from browsers and could be abused: current guidance is
                // to switch it off explicitly.
                .overriding("X-XSS-Protection", "0")
                .overriding("Cross-Origin-Opener-Policy", "same-origin"),
        )
        .around({
            let service = service.clone();
            move |ep, req| per_request(ep, req, default_lang, allowed.clone(), service.clone())
        })
        .with(cors::Cors)
        .data(service)
        .data(Arc::new(backups::ListJsonCache::default()))
        .data(Arc::new(ratelimit::RateLimiter::new(login_rate)))
        .data(client::TrustedProxies(trusted_proxies))
}

/// Sets the request's language, logs the request, and turns any error that escaped the
/// operations (unknown route, wrong method) into the documented shape.
async fn per_request<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    default_lang: Lang,
    allowed: Arc<Vec<(Vec<String>, String)>>,
    service: Arc<Service>,
) -> poem::Result<Response> {
    let lang = req
        .headers()
        .get(poem::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(Lang::from_accept_language)
        .unwrap_or(default_lang);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let has_body = req.headers().contains_key(poem::http::header::TRANSFER_ENCODING)
        || req.headers().get(poem::http::header::CONTENT_LENGTH).is_some_and(|v| v != "0");
    let started = Instant::now();
    let (mut response, busy) = noting_busy(with_request_lang(lang, async move {
        match ep.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => {
                let api: ApiError = from_poem_error(e, || ApiError::new(400, Message::BadRequest));
                poem::error::ResponseError::as_response(&api)
            }
        }
    }))
    .await;
    // A refused request's body may be left unread (a 403 on upload, a failed write): the
    // connection cannot carry another request, so say so rather than let the client reuse it.
    if service.is_draining() || (has_body && response.status().as_u16() >= 400) {
        // Also while a restart is under way: the next request goes to a new connection.
        response.headers_mut().insert(poem::http::header::CONNECTION, poem::http::HeaderValue::from_static("close"));
    }
    if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        if let Some(methods) = allowed_for(&allowed, &path).and_then(|m| m.parse().ok()) {
            response.headers_mut().insert(poem::http::header::ALLOW, methods);
        }
    }
    crate::metrics::request(method.as_str(), &path, response.status().as_u16(), busy, started.elapsed());
    tracing::info!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// The `Allow` value for `path`: a literal segment match beats a `{param}` one.
fn allowed_for<'a>(allowed: &'a [(Vec<String>, String)], path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    allowed
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .min_by_key(|(template, _)| template.iter().filter(|t| t.starts_with('{')).count())
        .map(|(_, methods)| methods.as_str())
}
