//! Pieces of the HTTP edge that mcp-client and mag-server share: the listener's socket
//! options, reading a JSON body within the body limit, checking a bearer token, and
//! setting up the daemon's log.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `listener` with `TCP_NODELAY` set on every connection it accepts. Without it a
/// response written in pieces (an SSE stream's headers, then its first event) waits for the
/// peer's delayed ACK, about 40 ms on Linux, before its second piece leaves (Nagle's
/// algorithm).
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    })
}

/// What the HTTP edge refuses, shared by both daemons' error types (SPEC §6).
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The request body is not JSON (400).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The request body is JSON of the wrong shape (422).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The request body is larger than the limit, in bytes (413).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// No such endpoint (404).
    #[error("no endpoint {0}")]
    NoRoute(String),
    /// The endpoint exists but not with that method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A token is configured and the request did not carry it (401).
    #[error("missing or wrong bearer token (send Authorization: Bearer TOKEN)")]
    Unauthorized,
}

impl EdgeError {
    /// The stable machine-readable code sent as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NoRoute(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
        }
    }

    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"detail": self.to_string(), "code": self.code()});
        (self.status(), Json(body)).into_response()
    }
}

/// Adds what both APIs share at the edge to `router`: a JSON 404 for unknown paths and 405
/// for wrong methods, the bearer `token` check on every request but `GET open_path` (401),
/// and the body limit (`limit` bytes; [`read_json`] turns a larger body into 413).
pub fn finish(
    router: Router,
    token: Option<Arc<str>>,
    open_path: &'static str,
    limit: usize,
) -> Router {
    router
        .fallback(|uri: Uri| async move { EdgeError::NoRoute(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { EdgeError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    let open = request.method() == Method::GET && request.uri().path() == open_path;
                    match token {
                        Some(token) if !open && !bearer_matches(request.headers(), &token) => {
                            EdgeError::Unauthorized.into_response()
                        }
                        _ => next.run(request).await,
                    }
                }
            },
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
}

/// Reads `request`'s body (within the router's `DefaultBodyLimit`, `limit` bytes) and parses
/// it as `T`.
///
/// # Errors
/// [`EdgeError::BodyTooLarge`], [`EdgeError::MalformedJson`], [`EdgeError::InvalidBody`].
pub async fn read_json<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
    limit: usize,
) -> Result<T, EdgeError> {
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                EdgeError::BodyTooLarge(limit)
            } else {
                EdgeError::MalformedJson(rejection.body_text())
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EdgeError::InvalidBody(e.to_string()),
        _ => EdgeError::MalformedJson(e.to_string()),
    })
}

/// Whether `headers` carry `Authorization: Bearer TOKEN`, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Logs to stderr and to `LOG_DIR/FILE_PREFIX.YYYY-MM-DD` (rolling daily), filtered by
/// `RUST_LOG` or else `default_filter`. Keep the returned guard alive: dropping it flushes.
pub fn init_tracing(
    log_dir: &Path,
    file_prefix: &str,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    let file = tracing_appender::rolling::daily(log_dir, file_prefix);
    let (file, guard) = tracing_appender::non_blocking(file);
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file),
        )
        .init();
    guard
}
