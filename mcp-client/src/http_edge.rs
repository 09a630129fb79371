//! Pieces of the HTTP edge that mcp-client and mag-server share: reading a JSON body within
//! the body limit, checking a bearer token, and setting up the daemon's log.

use std::path::Path;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Why a request body was refused (each API maps it to its own error: 413, 400, 422).
#[derive(Debug)]
pub enum BodyError {
    /// Over the body limit (`DefaultBodyLimit`).
    TooLarge,
    /// Not readable or not JSON: the reason.
    Malformed(String),
    /// JSON of the wrong shape (types, missing fields): the reason.
    Invalid(String),
}

/// Reads `request`'s body (within the router's `DefaultBodyLimit`) and parses it as `T`.
///
/// # Errors
/// [`BodyError`]: too large, not JSON, or the wrong shape.
pub async fn read_json<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<T, BodyError> {
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::TooLarge
            } else {
                BodyError::Malformed(rejection.body_text())
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => BodyError::Invalid(e.to_string()),
        _ => BodyError::Malformed(e.to_string()),
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
