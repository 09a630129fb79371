//! Reading a request body within the edge's limits: its size (the body limit of
//! [`finish`](super::finish)), the pause between two pieces ([`BODY_TIMEOUT`]) and the whole
//! ([`BODY_DEADLINE`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use serde::de::DeserializeOwned;

use super::{BODY_DEADLINE, BODY_TIMEOUT, EdgeError};

/// Reads `request`'s body (within the body limit of [`finish`](super::finish), `limit` bytes, and
/// [`BODY_TIMEOUT`], [`BODY_DEADLINE`]) and parses it as `T`.
///
/// # Errors
/// [`EdgeError::BodyTooLarge`], [`EdgeError::BodyTimeout`], [`EdgeError::MalformedJson`],
/// [`EdgeError::InvalidBody`].
pub async fn read_json<T: DeserializeOwned>(
    request: Request,
    limit: usize,
) -> Result<T, EdgeError> {
    let bytes = read_body(request, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EdgeError::InvalidBody(e.to_string()),
        _ => EdgeError::MalformedJson(e.to_string()),
    })
}

/// Reads `request`'s body as bytes: at most `limit` bytes, no pause over [`BODY_TIMEOUT`],
/// all of it within [`BODY_DEADLINE`]; errors as [`read_json`].
///
/// A piece of the body that has already arrived is taken without arming a timer (each
/// wait polls the body before its deadline), so the usual small body that comes with its
/// head costs no timer at all.
///
/// # Errors
/// [`EdgeError::BodyTooLarge`], [`EdgeError::BodyTimeout`], [`EdgeError::MalformedJson`]
/// (the connection failed mid-body).
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, EdgeError> {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let mut body = request.into_body();
    let mut first: Option<Bytes> = None;
    let mut more = Vec::new();
    loop {
        let pause_ends = (tokio::time::Instant::now() + BODY_TIMEOUT).min(deadline);
        let frame = match tokio::time::timeout_at(pause_ends, body.frame()).await {
            Err(_) => return Err(EdgeError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| body_error(&e, limit))?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let had = first.as_ref().map_or(0, Bytes::len) + more.len();
        if had + data.len() > limit {
            return Err(EdgeError::BodyTooLarge(limit));
        }
        match &first {
            None => first = Some(data),
            Some(_) => more.extend_from_slice(&data),
        }
    }
    Ok(match (first, more.is_empty()) {
        (None, _) => Bytes::new(),
        (Some(only), true) => only,
        (Some(first), false) => {
            let mut all = Vec::with_capacity(first.len() + more.len());
            all.extend_from_slice(&first);
            all.extend_from_slice(&more);
            Bytes::from(all)
        }
    })
}

/// What a failed body read means: over the limit of [`finish`](super::finish)'s length layer, or a
/// connection that failed mid-body.
fn body_error(error: &axum::Error, limit: usize) -> EdgeError {
    if crate::has_cause::<http_body_util::LengthLimitError>(error) {
        return EdgeError::BodyTooLarge(limit);
    }
    EdgeError::MalformedJson(format!("the request body could not be read: {error}"))
}

/// Gives the routes of `router` the pause limit of [`BODY_TIMEOUT`] on their request
/// bodies (408 past it), for routes whose bodies another library reads (the MCP gateway:
/// rmcp; mag-server's forwarding: reqwest). Routes that read with [`read_body`] have it
/// already, without a timer per piece of body.
pub fn body_timeout<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        BODY_TIMEOUT,
    ))
}
