//! Static assets of the console, compiled into the binary: nothing is
//! fetched from the internet. `htmx-2.0.11.min.js` is the unmodified htmx
//! 2.0.11 (BSD0) from the npm registry; its SHA-256 is checked by a test
//! against `assets/VENDORED.md`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");
const CSS: &str = include_str!("../../assets/console.css");
const SCRIPT: &str = include_str!("../../assets/console.js");

pub async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "htmx-2.0.11.min.js" => ("text/javascript; charset=utf-8", HTMX),
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn vendored_htmx_matches_its_recorded_checksum() {
        let recorded = include_str!("../../assets/VENDORED.md");
        let digest = hex::encode(Sha256::digest(super::HTMX.as_bytes()));
        assert!(
            recorded.contains(&digest),
            "htmx checksum {digest} is not recorded in assets/VENDORED.md"
        );
    }
}
