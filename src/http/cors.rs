//! CORS as PocketBase answers it (measured on 0.40.6): every origin allowed (`*`), the
//! methods GET, HEAD, PUT, PATCH, POST and DELETE, the request's headers echoed, and `Vary`
//! on what the answer depends on.
//!
//! Ours rather than poem's `Cors`: that one sends no `Vary` on a preflight, allows
//! `CONNECT` and `TRACE` by default, and refuses a preflight for another method with a 403
//! that our error shape would word as the superusers-only message.

use poem::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

/// What a browser may send cross-origin.
pub const ALLOWED_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE";

/// The middleware, outermost: preflights are answered here (before the access log and the
/// security headers, as PocketBase answers them); every other answer, errors included once
/// they are in our shape, gets the headers added.
pub struct Cors;

impl<E: Endpoint> Middleware<E> for Cors {
    type Output = CorsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        CorsEndpoint(ep)
    }
}

pub struct CorsEndpoint<E>(E);

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let cross_origin = req.headers().contains_key(ORIGIN);
        if cross_origin && req.method() == Method::OPTIONS {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            // A preflight's answer also depends on what it asks for.
            for vary in ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"] {
                headers.append(VARY, HeaderValue::from_static(vary));
            }
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
            if let Some(asked) = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS) {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            return Ok(response);
        }
        let mut response = self.0.call(req).await?.into_response();
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        if cross_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        Ok(response)
    }
}
