//! The operators' console at `/_/` (PocketBase's dashboard path): a static page, its assets
//! (`src/http/console/`) compiled into the binary, that runs the backups through
//! the public API only. Its responses carry a strict `Content-Security-Policy`: scripts,
//! styles and requests from this server alone, nothing inline, no frames.

use poem::http::{header, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use rust_embed::RustEmbed;

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/_/";

/// No inline script or style, nothing from another host; `img-src data:` for the icon, which
/// the page names inline so that the browser asks no one for a favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

#[derive(RustEmbed)]
#[folder = "src/http/console/"]
struct Assets;

/// Serves `/_/` (the page) and `/_/NAME` (its assets), mounted under [`CONSOLE_PATH`].
pub fn endpoint() -> impl Endpoint {
    poem::endpoint::make_sync(|req: Request| asset(&req))
}

fn asset(req: &Request) -> Response {
    // The page's relative asset names need the trailing slash.
    if req.original_uri().path() == CONSOLE_PATH.trim_end_matches('/') {
        return poem::web::Redirect::moved_permanent(CONSOLE_PATH).into_response();
    }
    let name = match req.uri().path().trim_start_matches('/') {
        "" => "index.html",
        name => name,
    };
    let Some(file) = Assets::get(name) else {
        return poem::error::ResponseError::as_response(&super::error::ApiError::not_found());
    };
    // The assets change only with the binary: the hash of each is its validator.
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let fresh = req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = file.metadata.mimetype();
        // Text assets are UTF-8: said, so that no browser guesses.
        let charset = if mime.starts_with("text/") || mime.ends_with("javascript") { "; charset=utf-8" } else { "" };
        Response::builder().content_type(format!("{mime}{charset}")).body(file.data.into_owned())
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY.to_string()),
        (header::ETAG, etag),
        // Asked again each time (answered 304 while unchanged): an upgraded binary serves
        // its own page at once.
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::REFERRER_POLICY, "no-referrer".to_string()),
    ] {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded_and_name_no_other_host() {
        for name in ["index.html", "console.js", "i18n.js", "console.css"] {
            let file = Assets::get(name).unwrap_or_else(|| panic!("{name} embedded"));
            let text = std::str::from_utf8(&file.data).unwrap();
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} names a host");
        }
        let page = Assets::get("index.html").unwrap();
        let page = std::str::from_utf8(&page.data).unwrap();
        // The CSP forbids inline code: the page must have none.
        assert!(!page.contains("<script>") && !page.contains("style="), "inline code in index.html");
    }
}
