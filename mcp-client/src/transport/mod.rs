//! The three ways to reach an MCP server (SPEC §4 Transports), each an rmcp
//! [`Transport`](rmcp::transport::Transport): stdio ([`stdio`], ours, for process groups and
//! stdout hygiene), legacy HTTP+SSE ([`sse`], ours: rmcp has no SSE client) and streamable
//! HTTP (rmcp's own client, on our HTTP backend [`http`]).
//!
//! All three fail a request at once when the server answers it with a malformed response
//! ([`read_server_message`]).

pub mod http;
pub mod sse;
pub mod stdio;

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::model::{
    ErrorCode, ErrorData, JsonRpcError, JsonRpcResponse, RequestId, ServerJsonRpcMessage,
    ServerResult,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

use crate::connection::ConnectContext;
use crate::error::ConnectError;
use crate::logs::ServerLog;
use mag_common::config::{ServerEntry, TransportType, expand_vars};

/// The largest single SSE event (one JSON-RPC message) accepted over HTTP, in bytes (256 MiB).
pub const MAX_HTTP_MESSAGE: usize = 256 * 1024 * 1024;

/// A transport opened to a server, ready for the MCP handshake.
pub enum Opened {
    /// A started child process.
    Stdio(stdio::Spawned),
    /// An open legacy SSE session.
    Sse(sse::SseTransport),
    /// A streamable HTTP client (it makes its first request during the handshake).
    StreamableHttp(StreamableHttpClientTransport<http::RepairingClient>),
    /// A streamable HTTP client whose requests carry an OAuth access token (SPEC §10).
    AuthorizedHttp(StreamableHttpClientTransport<crate::oauth::AuthorizedClient>),
}

/// Opens the transport the entry of server `name` names. `log` receives a stdio server's
/// stderr; `ctx` gives the shared HTTP clients, the variables kept from child processes and
/// the OAuth state (a streamable HTTP server authorized before gets its token).
///
/// # Errors
/// The cause, of its kind (see [`stdio::spawn`], [`sse::SseTransport::connect`]; a bad
/// `url` or `headers` after `${VAR}` expansion is [`ConnectError::Config`]; client
/// credentials refused are [`ConnectError::Unauthorized`]). Never a header or variable
/// value.
pub async fn open(
    name: &str,
    entry: &ServerEntry,
    log: Arc<ServerLog>,
    ctx: &ConnectContext,
) -> Result<Opened, ConnectError> {
    match entry.transport {
        TransportType::Stdio => stdio::spawn(entry, log, ctx).await.map(Opened::Stdio),
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
            let authorized = ctx.oauth.client(name, entry, &url).await?;
            let config = StreamableHttpClientTransportConfig::with_uri(url)
                .custom_headers(headers)
                .max_sse_event_size(MAX_HTTP_MESSAGE)
                .max_concurrent_requests(max_concurrent);
            Ok(match authorized {
                Some(client) => Opened::AuthorizedHttp(StreamableHttpClientTransport::with_client(
                    client, config,
                )),
                None => Opened::StreamableHttp(StreamableHttpClientTransport::with_client(
                    ctx.streamable_http.clone(),
                    config,
                )),
            })
        }
    }
}

/// The entry's `url`, `${VAR}`s expanded, checked to parse.
///
/// # Errors
/// [`ConnectError::Config`]: an unset variable, a URL that does not parse.
pub fn expanded_url(entry: &ServerEntry) -> Result<String, ConnectError> {
    let url = entry.url.as_deref().unwrap_or_default();
    let url = expand_vars(url, |name| std::env::var(name).ok())
        .map_err(|e| ConnectError::Config(format!("in url: {e}")))?;
    reqwest::Url::parse(&url).map_err(|e| ConnectError::Config(format!("invalid url: {e}")))?;
    Ok(url)
}

/// The entry's `headers`, `${VAR}`s expanded.
///
/// # Errors
/// [`ConnectError::Config`]: an invalid name, an unset variable, an invalid value (the
/// value is never quoted).
fn header_map(entry: &ServerEntry) -> Result<HeaderMap, ConnectError> {
    let mut headers = HeaderMap::new();
    for (key, value) in &entry.headers {
        let name = HeaderName::try_from(key.as_str())
            .map_err(|_| ConnectError::Config(format!("invalid header name {key:?}")))?;
        let value = expand_vars(value, |name| std::env::var(name).ok())
            .map_err(|e| ConnectError::Config(format!("in header {key}: {e}")))?;
        let value = HeaderValue::try_from(value).map_err(|_| {
            ConnectError::Config(format!(
                "header {key} has a value that is not a valid header value"
            ))
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// One message from a server as our transports read it (see [`read_server_message`]).
#[derive(Debug)]
pub enum ServerMessage {
    /// A valid JSON-RPC message.
    Valid(ServerJsonRpcMessage),
    /// A malformed response, replaced by a JSON-RPC error response for its request.
    Repaired {
        /// The error response that stands in for it.
        message: ServerJsonRpcMessage,
        /// What was malformed (for the log).
        why: String,
    },
    /// Not a JSON-RPC message, and not recognisably a response: skipped.
    Invalid(String),
}

/// The most of a server's own error message quoted in a repaired response, in bytes.
const QUOTED_MESSAGE_MAX: usize = 500;

/// Parses one message a server sent (one stdio line, one SSE `message` event's data).
///
/// A message that is not valid JSON-RPC 2.0 but is recognisably a response, a JSON object
/// with an `id` (integer or string), an `error` or a `result`, and no `method`, is not
/// skipped: that would leave its request waiting for its whole timeout. It becomes a
/// JSON-RPC error response for that id, code -32603 (Internal error, JSON-RPC 2.0 § 5.1),
/// whose message says what was malformed and quotes the server's own `error.message`, if it
/// has one. Example: `{"jsonrpc":"2.0","id":3,"error":{"code":"oops","message":"bad"}}`
/// (the code must be an integer, JSON-RPC 2.0 § 5.1) fails request 3 with "the server sent
/// a malformed JSON-RPC response: invalid type: string \"oops\", expected i32; its message:
/// bad". Anything else that does not parse is [`ServerMessage::Invalid`].
pub fn read_server_message(bytes: &[u8]) -> ServerMessage {
    let error = match serde_json::from_slice::<ServerJsonRpcMessage>(bytes) {
        Ok(message) => return ServerMessage::Valid(message),
        Err(e) => e,
    };
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(bytes) else {
        return ServerMessage::Invalid(error.to_string());
    };
    let is_response = !object.contains_key("method")
        && (object.contains_key("error") || object.contains_key("result"));
    let id = object
        .get("id")
        .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    let (true, Some(id)) = (is_response, id) else {
        return ServerMessage::Invalid(error.to_string());
    };
    let object = Value::Object(object);
    // serde's own reason, from the shape the message claims to have.
    let reason = if object.get("error").is_some() {
        serde_json::from_value::<JsonRpcError>(object.clone()).err()
    } else {
        serde_json::from_value::<JsonRpcResponse<ServerResult>>(object.clone()).err()
    };
    let why = reason.map_or_else(|| error.to_string(), |e| e.to_string());
    let mut text = format!("the server sent a malformed JSON-RPC response: {why}");
    if let Some(said) = object
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
    {
        text.push_str("; its message: ");
        text.push_str(cut(said, QUOTED_MESSAGE_MAX));
    }
    let message = ServerJsonRpcMessage::error(
        ErrorData::new(ErrorCode::INTERNAL_ERROR, text, None),
        Some(id),
    );
    ServerMessage::Repaired { message, why }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(message: ServerMessage) -> (RequestId, ErrorData) {
        match message {
            ServerMessage::Repaired {
                message: ServerJsonRpcMessage::Error(e),
                ..
            } => (e.id.expect("an id"), e.error),
            other => panic!("not repaired: {other:?}"),
        }
    }

    #[test]
    fn a_valid_message_passes() {
        let line = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
        assert!(matches!(read_server_message(line), ServerMessage::Valid(_)));
    }

    #[test]
    fn an_error_with_a_string_code_fails_its_request() {
        let line = br#"{"jsonrpc":"2.0","id":3,"error":{"code":"oops","message":"bad"}}"#;
        let (id, error) = error_of(read_server_message(line));
        assert_eq!(id, RequestId::Number(3));
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert!(error.message.contains("malformed"), "{}", error.message);
        assert!(error.message.contains("oops"), "{}", error.message);
        assert!(
            error.message.ends_with("its message: bad"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_result_of_the_wrong_version_fails_its_request() {
        let line = br#"{"jsonrpc":"1.0","id":"a","result":{}}"#;
        let (id, error) = error_of(read_server_message(line));
        assert_eq!(id, RequestId::String("a".into()));
        assert!(error.message.contains("malformed"), "{}", error.message);
    }

    #[test]
    fn what_is_not_a_response_is_skipped() {
        for line in [
            &br#"{"jsonrpc":"2.0","id":{},"error":{"code":"x"}}"#[..],
            br#"{"jsonrpc":"2.0","error":{"code":"x","message":"no id"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"id":1}"#,
            br#"[1,2]"#,
            b"not json",
        ] {
            assert!(
                matches!(read_server_message(line), ServerMessage::Invalid(_)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let said = "é".repeat(QUOTED_MESSAGE_MAX);
        let line = json_line(&said);
        let (_, error) = error_of(read_server_message(line.as_bytes()));
        assert!(error.message.len() < QUOTED_MESSAGE_MAX + 200);
    }

    fn json_line(said: &str) -> String {
        serde_json::json!({"jsonrpc": "2.0", "id": 9, "error": {"code": 1.5, "message": said}})
            .to_string()
    }
}
