//! The drivers' live map: the files of `web/`, embedded in the binary at build time, so the
//! page works wherever the binary runs and needs no build step. `/` serves `index.html`,
//! `/static/{file}` the rest.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiState;
use crate::problem::Problem;

macro_rules! embedded {
    ($($name:literal => $mime:literal),* $(,)?) => {
        /// (name, content type, bytes) of every file under `/static/`.
        const FILES: &[(&str, &str, &[u8])] = &[
            $(($name, $mime, include_bytes!(concat!("../../web/", $name)))),*
        ];
    };
}

embedded! {
    "api.js" => "text/javascript; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "format.js" => "text/javascript; charset=utf-8",
    "live.js" => "text/javascript; charset=utf-8",
    "model.js" => "text/javascript; charset=utf-8",
    "plan.js" => "text/javascript; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
}

const INDEX: &[u8] = include_bytes!("../../web/index.html");

/// Scripts and styles only from this origin; WebSocket back to it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/static/{file}", get(file))
}

fn with_headers(content_type: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
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
    response
}

/// The drivers' live map page (not part of the API).
#[utoipa::path(
    get,
    path = "/",
    tag = "web",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
async fn index() -> Response {
    with_headers("text/html; charset=utf-8", "no-cache", INDEX)
}

/// A script or style of the live map (not part of the API).
#[utoipa::path(
    get,
    path = "/static/{file}",
    tag = "web",
    params(("file" = String, Path, description = "File name, e.g. `app.js`")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such file (`not-found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        // Revalidated on every load: the files change with the binary, not their names.
        Some((_, content_type, body)) => with_headers(content_type, "no-cache", body),
        None => Problem::not_found("no such file").into_response(),
    }
}
