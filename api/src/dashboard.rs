//! The web dashboard: three static files (`api/dashboard/`) built into the binary and served
//! by the API's own process at `/dashboard/`, so nothing needs a build tool, a CDN or an
//! external font. The page reads everything through the JSON API with the caller's bearer
//! token (pasted, or handed back by the identity provider's sign-in page), so it can do no
//! more than the token's roles allow: the server refuses the rest.
//!
//! Every response carries a Content-Security-Policy that allows only this origin's scripts,
//! styles and requests, and no framing.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

/// What a deployment tells the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DashboardConfig {
    /// The identity provider's sign-in page (Cognito's hosted UI with `response_type=token`);
    /// none: tokens are pasted.
    pub signin_url: Option<String>,
}

pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// The dashboard's routes (no token needed: the files hold no data).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(config: DashboardConfig) -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route(
            "/dashboard/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/config.json",
            get(move || {
                let config = config.clone();
                async move { axum::Json(config) }
            }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Always checked again, so a new binary's page is never mixed with an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Headers every response gets: the policy, no sniffing, no referrer, no framing.
pub(crate) async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
