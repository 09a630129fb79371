//! The three ways to reach an MCP server (SPEC §4 Transports), each an rmcp
//! [`Transport`](rmcp::transport::Transport): stdio ([`stdio`], ours, for process groups and
//! stdout hygiene), legacy HTTP+SSE ([`sse`], ours: rmcp has no SSE client) and streamable
//! HTTP (rmcp's own client).

pub mod sse;
pub mod stdio;

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::config::{ServerEntry, TransportType, expand_vars};
use crate::connection::ConnectContext;
use crate::logs::ServerLog;

/// The largest single SSE event (one JSON-RPC message) accepted over HTTP, in bytes (256 MiB).
pub const MAX_HTTP_MESSAGE: usize = 256 * 1024 * 1024;

/// A transport opened to a server, ready for the MCP handshake.
pub enum Opened {
    /// A started child process.
    Stdio(stdio::Spawned),
    /// An open legacy SSE session.
    Sse(sse::SseTransport),
    /// A streamable HTTP client (it makes its first request during the handshake).
    StreamableHttp(StreamableHttpClientTransport<reqwest::Client>),
}

/// Opens the transport `entry` names. `log` receives a stdio server's stderr; `ctx` gives
/// the shared HTTP client for legacy SSE and the variables kept from child processes.
///
/// # Errors
/// A sentence naming the cause (see [`stdio::spawn`], [`sse::SseTransport::connect`], and
/// bad `url` or `headers` after `${VAR}` expansion). Never a header or variable value.
pub async fn open(
    entry: &ServerEntry,
    log: Arc<ServerLog>,
    ctx: &ConnectContext,
) -> Result<Opened, String> {
    match entry.transport {
        TransportType::Stdio => stdio::spawn(entry, log, ctx).map(Opened::Stdio),
        TransportType::Sse => {
            let url = expanded_url(entry)?;
            let headers = header_map(entry)?;
            sse::SseTransport::connect(ctx.http.clone(), &url, headers)
                .await
                .map(Opened::Sse)
        }
        TransportType::StreamableHttp => {
            let url = expanded_url(entry)?;
            let headers: HashMap<_, _> = header_map(entry)?
                .into_iter()
                .filter_map(|(name, value)| Some((name?, value)))
                .collect();
            let max_concurrent = entry.max_concurrency.unwrap_or(256);
            let config = StreamableHttpClientTransportConfig::with_uri(url)
                .custom_headers(headers)
                .max_sse_event_size(MAX_HTTP_MESSAGE)
                .max_concurrent_requests(max_concurrent);
            Ok(Opened::StreamableHttp(
                StreamableHttpClientTransport::from_config(config),
            ))
        }
    }
}

fn expanded_url(entry: &ServerEntry) -> Result<String, String> {
    let url = entry.url.as_deref().unwrap_or_default();
    let url =
        expand_vars(url, |name| std::env::var(name).ok()).map_err(|e| format!("in url: {e}"))?;
    reqwest::Url::parse(&url).map_err(|e| format!("invalid url: {e}"))?;
    Ok(url)
}

fn header_map(entry: &ServerEntry) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (key, value) in &entry.headers {
        let name = HeaderName::try_from(key.as_str())
            .map_err(|_| format!("invalid header name {key:?}"))?;
        let value = expand_vars(value, |name| std::env::var(name).ok())
            .map_err(|e| format!("in header {key}: {e}"))?;
        let value = HeaderValue::try_from(value)
            .map_err(|_| format!("header {key} has a value that is not a valid header value"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}
