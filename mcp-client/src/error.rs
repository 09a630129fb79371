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
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
