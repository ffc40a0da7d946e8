//! The web console at `/ui`: a single page (HTML, CSS and plain JavaScript embedded in the
//! binary, no separate server, no build step) over the public REST API — the fleet table with
//! per-type sync state and NACK drill-down, configs with their history, a side-by-side revision
//! diff and one-click rollback, and the live event view (`/api/v1/events`).
//!
//! Owns only the static assets and their routes. Every piece of data the page shows comes from
//! the same REST operations (and the same authentication and RBAC) as any other client; with
//! authentication on, the page asks for a bearer token and sends it on each call.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The console's routes (`/ui`, `/ui/`, `/ui/app.js`, `/ui/app.css`).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads only its own scripts and styles and talks only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_references_only_embedded_assets() {
        for src in ["/ui/app.js", "/ui/app.css"] {
            assert!(super::INDEX.contains(src), "index.html must load {src}");
        }
        assert!(
            !super::INDEX.contains("http://") && !super::INDEX.contains("https://"),
            "no external assets"
        );
    }
}
