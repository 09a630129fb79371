//! The crate's one error type and its HTTP mapping (SPEC §4, §6: `{"detail", "code"}`).

use axum::http::StatusCode;

use mag_common::config::ConfigError;
use mag_common::error_chain;
use mag_common::http_edge::EdgeError;

/// Everything an operation of mcp-client can fail with.
///
/// Each variant has a stable snake_case [`code`](Error::code) and an HTTP
/// [`status`](Error::status); the `Display` text is the `detail` an API client sees, so it
/// names the server and the cause and never an environment value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server of that name in the live config (404).
    #[error("unknown server {0:?}")]
    UnknownServer(String),
    /// The server has no tool of that name, even after refreshing its list (404).
    #[error("server {server:?} has no tool {tool:?}")]
    UnknownTool {
        /// The server asked.
        server: String,
        /// The tool name that was not found.
        tool: String,
    },
    /// The server is not connected, so the operation cannot run (409).
    #[error("server {server:?} is not connected{}", reason_suffix(.reason))]
    NotConnected {
        /// The server asked.
        server: String,
        /// Why it is not connected, when known (its last error).
        reason: Option<String>,
    },
    /// The server is `disabled` in the config (409).
    #[error("server {0:?} is disabled in the config")]
    Disabled(String),
    /// Connecting failed: the process did not start, exited, the URL refused, the handshake
    /// failed or timed out (400, as MAG answers a failed connect).
    #[error("cannot connect to server {server:?}: {cause}")]
    Connect {
        /// The server asked.
        server: String,
        /// What went wrong, with the exit status and last stderr line when there are any.
        cause: String,
    },
    /// A config was refused (422); the live config is unchanged.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// Refused at the HTTP edge: bad body, no route, no token (400, 404, 405, 413, 422, 401).
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// The daemon is shutting down and takes no new work (503).
    #[error("mcp-client is shutting down")]
    ShuttingDown,
    /// A local I/O failure (500): reading the config, opening a log file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map(|r| format!(" (last error: {r})"))
        .unwrap_or_default()
}

impl Error {
    /// The stable machine-readable code sent as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownServer(_) => "unknown_server",
            Self::UnknownTool { .. } => "unknown_tool",
            Self::NotConnected { .. } => "not_connected",
            Self::Disabled(_) => "server_disabled",
            Self::Connect { .. } => "connect_failed",
            Self::Config(_) => "invalid_config",
            Self::Edge(e) => e.code(),
            Self::ShuttingDown => "shutting_down",
            Self::Io { .. } => "io_error",
        }
    }

    /// [`EdgeError::InvalidBody`]: JSON of the wrong shape (422).
    pub fn invalid_body(why: impl Into<String>) -> Self {
        Self::Edge(EdgeError::InvalidBody(why.into()))
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownServer(_) | Self::UnknownTool { .. } => StatusCode::NOT_FOUND,
            Self::NotConnected { .. } | Self::Disabled(_) => StatusCode::CONFLICT,
            Self::Connect { .. } => StatusCode::BAD_REQUEST,
            Self::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Edge(e) => e.status(),
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A readable sentence for an rmcp request error: a transport error shows its cause chain,
/// not the transport's type name.
pub fn describe_service_error(error: &rmcp::ServiceError) -> String {
    match error {
        rmcp::ServiceError::TransportSend(e) => transport_cause(&*e.error),
        rmcp::ServiceError::McpError(e) => e.message.to_string(),
        other => other.to_string(),
    }
}

/// A readable sentence for a failed MCP handshake (see [`describe_service_error`]): what
/// the server answered when the handshake failed on its answer ([`initialize_answer`]), else
/// the transport's cause.
pub fn describe_initialize_error(error: &rmcp::service::ClientInitializeError) -> String {
    if let Some(answer) = initialize_answer(error) {
        return answer;
    }
    match error {
        rmcp::service::ClientInitializeError::TransportError { error, context } => {
            format!("{context}: {}", transport_cause(&*error.error))
        }
        other => error_chain(other),
    }
}

/// What the server answered `initialize` with, when the handshake failed on that answer
/// rather than on the transport (MCP spec 2025-11-25, Lifecycle § Initialization): a
/// JSON-RPC error (its code and message), a result that is not an `InitializeResult` ("the
/// initialize result is malformed: …", naming the field when serde does not), or an answer
/// under another id. `None` when the handshake failed otherwise (the connection closed, a
/// send failed, it was cancelled): then the transport or the process holds the cause.
pub fn initialize_answer(error: &rmcp::service::ClientInitializeError) -> Option<String> {
    use rmcp::service::ClientInitializeError as Failed;
    Some(match error {
        Failed::JsonRpcError(e) => format!(
            "the server answered initialize with JSON-RPC error {}: {}",
            e.code.0, e.message
        ),
        Failed::ExpectedInitResult(Some(result)) => format!(
            "the initialize result is malformed: {}",
            why_not_initialize_result(result)
        ),
        Failed::ExpectedInitResult(None) => "the server answered initialize with no result".into(),
        Failed::ConflictInitResponseId(expected, got) => {
            format!("the server answered initialize under id {got}; the request's id is {expected}")
        }
        Failed::UncorrelatedErrorResponse { expected, received } => format!(
            "the server answered with an error for id {received}; the initialize request's \
             id is {expected}"
        ),
        Failed::ExpectedInitResponse(Some(_)) => {
            "the server sent another message where the initialize response belongs".into()
        }
        Failed::LegacyFallbackFailed { fallback, .. } => return initialize_answer(fallback),
        _ => return None,
    })
}

/// Why `result` is not an `InitializeResult`: serde's reason, prefixed with the field when
/// serde names none (a field of the wrong type).
fn why_not_initialize_result(result: &rmcp::model::ServerResult) -> String {
    use rmcp::model::{Implementation, InitializeResult, ProtocolVersion, ServerCapabilities};
    use serde_json::Value;
    type Check = fn(Value) -> Result<(), serde_json::Error>;
    let value = match serde_json::to_value(result) {
        Ok(value) => value,
        Err(e) => return e.to_string(),
    };
    let whole = match serde_json::from_value::<InitializeResult>(value.clone()) {
        Ok(_) => return "it is not an initialize result".into(),
        Err(e) => e,
    };
    if !value.is_object() {
        return "it is not a JSON object".into();
    }
    let fields: [(&str, Check); 3] = [
        ("protocolVersion", |v| {
            serde_json::from_value::<ProtocolVersion>(v).map(drop)
        }),
        ("capabilities", |v| {
            serde_json::from_value::<ServerCapabilities>(v).map(drop)
        }),
        ("serverInfo", |v| {
            serde_json::from_value::<Implementation>(v).map(drop)
        }),
    ];
    for (field, check) in fields {
        if let Some(v) = value.get(field)
            && let Err(e) = check(v.clone())
        {
            return format!("{field}: {e}");
        }
    }
    whole.to_string()
}

/// The cause of a transport error. rmcp's streamable HTTP errors do not chain to reqwest's
/// error, which holds the cause ("Connection refused"): reach it by downcasting. The URL is
/// left out (its query may hold a key).
fn transport_cause(error: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    use rmcp::transport::worker::WorkerQuitReason;
    type HttpError = StreamableHttpError<reqwest::Error>;
    let http = error.downcast_ref::<HttpError>().or_else(|| {
        match error.downcast_ref::<WorkerQuitReason<HttpError>>() {
            Some(WorkerQuitReason::Fatal { error, .. }) => Some(error),
            _ => None,
        }
    });
    match http {
        Some(StreamableHttpError::Client(e)) => match std::error::Error::source(e) {
            Some(cause) => format!("HTTP request failed: {}", error_chain(cause)),
            None => "HTTP request failed".to_string(),
        },
        _ => error_chain(error),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::ServerResult;
    use rmcp::service::ClientInitializeError;

    use super::*;

    fn malformed(json: serde_json::Value) -> String {
        let result = serde_json::from_value::<ServerResult>(json).unwrap();
        initialize_answer(&ClientInitializeError::ExpectedInitResult(Some(result))).unwrap()
    }

    #[test]
    fn a_malformed_initialize_result_names_the_field() {
        let why = malformed(serde_json::json!({
            "protocolVersion": 2025,
            "capabilities": {},
            "serverInfo": {"name": "s", "version": "1"},
        }));
        assert!(
            why.starts_with("the initialize result is malformed: protocolVersion: "),
            "{why}"
        );
        let why = malformed(serde_json::json!({"protocolVersion": "2025-11-25"}));
        assert!(why.contains("missing field `capabilities`"), "{why}");
    }

    #[test]
    fn an_initialize_error_keeps_code_and_message() {
        let error = rmcp::model::ErrorData::invalid_params("needs sampling", None);
        let said = initialize_answer(&ClientInitializeError::JsonRpcError(error)).unwrap();
        assert_eq!(
            said,
            "the server answered initialize with JSON-RPC error -32602: needs sampling"
        );
        let closed = ClientInitializeError::ConnectionClosed("initialize response".into());
        assert_eq!(initialize_answer(&closed), None);
    }
}
