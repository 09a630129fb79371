//! The crate's one error type and its HTTP mapping (SPEC §4, §6: `{"detail", "code"}`).

use axum::http::StatusCode;

use crate::config::ConfigError;

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
    /// The request body is not JSON (400).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The request body is JSON of the wrong shape (422).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The request body is larger than the limit (413).
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
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NoRoute(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::ShuttingDown => "shutting_down",
            Self::Io { .. } => "io_error",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownServer(_) | Self::UnknownTool { .. } | Self::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::NotConnected { .. } | Self::Disabled(_) => StatusCode::CONFLICT,
            Self::Connect { .. } | Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Config(_) | Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, joined by `: ` (reqwest's own text hides the cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A readable sentence for an rmcp request error: a transport error shows its cause chain,
/// not the transport's type name.
pub fn describe_service_error(error: &rmcp::ServiceError) -> String {
    match error {
        rmcp::ServiceError::TransportSend(e) => transport_cause(&*e.error),
        rmcp::ServiceError::McpError(e) => e.message.to_string(),
        other => other.to_string(),
    }
}

/// A readable sentence for a failed MCP handshake (see [`describe_service_error`]).
pub fn describe_initialize_error(error: &rmcp::service::ClientInitializeError) -> String {
    match error {
        rmcp::service::ClientInitializeError::TransportError { error, context } => {
            format!("{context}: {}", transport_cause(&*error.error))
        }
        other => error_chain(other),
    }
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
