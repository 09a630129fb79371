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
    /// The tool exists but the server's `allowedTools` / `disabledTools` hide it (403).
    #[error("tool {tool:?} of server {server:?} is not allowed by its allowedTools/disabledTools")]
    ToolNotAllowed {
        /// The server asked.
        server: String,
        /// The hidden tool.
        tool: String,
    },
    /// The arguments do not match the tool's `inputSchema` (422); the text names the field.
    #[error("invalid arguments for tool {tool:?} of server {server:?}: {reason}")]
    InvalidArguments {
        /// The server asked.
        server: String,
        /// The tool called.
        tool: String,
        /// What failed, with the JSON pointer of the field (e.g. `at /message: 5 is not of
        /// type "string"`).
        reason: String,
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
    /// failed or timed out (400, as MAG answers a failed connect). The answer's `code` is
    /// `connect_failed`; its `kind` is the cause's [`ConnectError::code`].
    #[error("cannot connect to server {server:?}: {cause}")]
    Connect {
        /// The server asked.
        server: String,
        /// What went wrong, with the exit status and last stderr line when there are any.
        cause: ConnectError,
    },
    /// A request to the server needs (more) authorization (SPEC §10): 401
    /// `authorization_required` with the URL a user opens, or 403 `unauthorized` when no
    /// authorization can start (the cause says why). A connect that needs it is
    /// [`Error::Connect`] with the same cause, answered the same way.
    #[error("server {server:?}: {cause}")]
    Authorization {
        /// The server asked.
        server: String,
        /// [`ConnectError::AuthorizationRequired`] or [`ConnectError::Unauthorized`].
        cause: ConnectError,
    },
    /// A redirect to `/oauth/callback` was not taken (400): an unknown or used `state`, the
    /// authorization server's error, a failed token request.
    #[error("{0}")]
    OAuthCallback(#[from] crate::oauth::CallbackError),
    /// A config was refused (422); the live config is unchanged.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// Refused at the HTTP edge: bad body, no route, no token (400, 404, 405, 413, 422, 401).
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// The daemon is shutting down and takes no new work (503).
    #[error("mcp-client is shutting down")]
    ShuttingDown,
    /// The MCP gateway has as many client sessions as `--max-sessions` allows (503).
    #[error(
        "the MCP gateway has {0} client sessions, its limit (--max-sessions): end one (DELETE) \
         or wait for idle ones to expire"
    )]
    TooManySessions(usize),
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
            Self::ToolNotAllowed { .. } => "tool_not_allowed",
            Self::InvalidArguments { .. } => "invalid_arguments",
            Self::NotConnected { .. } => "not_connected",
            Self::Disabled(_) => "server_disabled",
            _ if self.authorization_url().is_some() => "authorization_required",
            Self::Authorization { .. } => "unauthorized",
            Self::OAuthCallback(_) => "authorization_failed",
            Self::Connect { .. } => "connect_failed",
            Self::Config(_) => "invalid_config",
            Self::Edge(e) => e.code(),
            Self::ShuttingDown => "shutting_down",
            Self::TooManySessions(_) => "too_many_sessions",
            Self::Io { .. } => "io_error",
        }
    }

    /// The kind of a failed connect ([`ConnectError::code`]), sent as `kind` next to
    /// `code`; `None` for every other error.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Connect { cause, .. } => Some(cause.code()),
            _ => None,
        }
    }

    /// The URL a user opens to authorize, for `authorization_required`.
    pub fn authorization_url(&self) -> Option<&str> {
        match self {
            Self::Connect {
                cause: ConnectError::AuthorizationRequired(url),
                ..
            }
            | Self::Authorization {
                cause: ConnectError::AuthorizationRequired(url),
                ..
            } => Some(url),
            _ => None,
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
            Self::ToolNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::InvalidArguments { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotConnected { .. } | Self::Disabled(_) => StatusCode::CONFLICT,
            _ if self.authorization_url().is_some() => StatusCode::UNAUTHORIZED,
            Self::Authorization { .. } => StatusCode::FORBIDDEN,
            Self::OAuthCallback(_) => StatusCode::BAD_REQUEST,
            Self::Connect { .. } => StatusCode::BAD_REQUEST,
            Self::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Edge(e) => e.status(),
            Self::ShuttingDown | Self::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a connect failed, by the kinds an operator tells apart (SPEC §4: `/connect_server`
/// answers 400 with the cause; issue 13).
///
/// Each kind has a stable snake_case [`code`](Self::code), reported with the text: as `kind`
/// next to `"code": "connect_failed"` in `/connect_server`'s 400, as `error_kind` in
/// `/servers`, and as the `kind` label of `mcp_connect_failures_total` in `/metrics`. The
/// text (`Display`) is the cause in a sentence: it names the server's command, URL (without
/// its query) or variable, never a variable's value or a header's; API answers and logs are
/// redacted besides ([`mag_common::secrets`]).
///
/// | code | when |
/// |---|---|
/// | `command_not_found` | the stdio `command` does not exist or is not on `PATH` |
/// | `command_not_executable` | it exists but cannot be executed (no permission, not a program) |
/// | `spawn_failed` | the process could not be started otherwise (out of processes, its pipes) |
/// | `exited_early` | the process exited before it answered `initialize` (exit status, last stderr) |
/// | `handshake_timeout` | the transport did not open, `initialize` or `tools/list` was not answered within the entry's `timeout` |
/// | `refused` | the server's address refused the connection or could not be reached (no route, name not resolved, TCP connect timed out) |
/// | `tls` | the TLS handshake failed (a certificate not trusted, a peer that does not speak TLS) |
/// | `http_status` | the server answered HTTP with an error status (404, 401, 500, …) |
/// | `protocol` | the server answered, but not as an MCP server should: a JSON-RPC error to `initialize`, a malformed answer, an unsupported protocol version, the wrong content type, an SSE endpoint on another origin |
/// | `config` | the entry cannot be used as written: an unset `${VAR}`, a bad URL or header, a `cwd` that is not a directory |
/// | `transport` | the connection failed otherwise (reset, closed, an event stream that broke) |
/// | `local` | a failure of mcp-client's own (its log file for the server) |
/// | `cancelled` | the connect was given up: the server was removed, changed or disconnected meanwhile, or mcp-client is shutting down (not counted in the metrics) |
/// | `authorization_required` | the server wants OAuth and a user must approve: `/servers` shows the server `needs_authorization` with the `authorization_url` (SPEC §10) |
/// | `unauthorized` | the server answered 401 or 403 and no authorization could start or finish (no OAuth metadata, registration or client credentials refused, too many tries) |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// `command_not_found`.
    #[error("command {program:?} not found")]
    CommandNotFound {
        /// The command, as the entry names it.
        program: String,
    },
    /// `command_not_executable`.
    #[error("command {program:?} is not executable")]
    CommandNotExecutable {
        /// The command, as the entry names it.
        program: String,
    },
    /// `spawn_failed`.
    #[error("cannot start command {program:?}: {reason}")]
    SpawnFailed {
        /// The command, as the entry names it.
        program: String,
        /// The OS's reason.
        reason: String,
    },
    /// `exited_early`.
    #[error(
        "the process exited before answering initialize ({exit}); {}",
        stderr_note(.stderr)
    )]
    ExitedEarly {
        /// How it exited: "exit status 3", "killed by signal 9 (SIGKILL)".
        exit: String,
        /// Its last stderr lines (see `ServerLog::tail`); empty when it wrote none.
        stderr: String,
    },
    /// `handshake_timeout`.
    #[error("{}", timeout_text(*.stage, *.after, .stderr.as_deref()))]
    HandshakeTimeout {
        /// What was not answered in time.
        stage: HandshakeStage,
        /// The entry's `timeout`.
        after: std::time::Duration,
        /// The server's last stderr lines, for a stdio server asked `initialize`.
        stderr: Option<String>,
    },
    /// `refused`.
    #[error("{0}")]
    Refused(String),
    /// `tls`.
    #[error("{0}")]
    Tls(String),
    /// `http_status`.
    #[error("{message}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The sentence.
        message: String,
    },
    /// `protocol`.
    #[error("{0}")]
    Protocol(String),
    /// `config`.
    #[error("{0}")]
    Config(String),
    /// `transport`.
    #[error("{0}")]
    Transport(String),
    /// `local`.
    #[error("{0}")]
    Local(String),
    /// `cancelled`: why it was given up.
    #[error("{0}")]
    Cancelled(String),
    /// `unauthorized`: the server answered 401 or 403 and no authorization could be
    /// started or finished (SPEC §10); the sentence says why.
    #[error("{0}")]
    Unauthorized(String),
    /// `authorization_required`: a user must approve mcp-client's access at this URL
    /// (SPEC §10); the redirect to `/oauth/callback` then connects the server.
    // The URL is not in the text: it goes only where it is asked for (`authorization_url`).
    #[error(
        "the server needs authorization: a user must open its authorization_url to approve \
         mcp-client's access"
    )]
    AuthorizationRequired(String),
}

/// The step of a connect that ran out of time ([`ConnectError::HandshakeTimeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// Opening the transport (an SSE stream's `endpoint` event).
    Transport,
    /// The `initialize` request.
    Initialize,
    /// Listing the tools (`tools/list`, every page).
    ToolsList,
}

/// The `kind` of a server whose connection was lost after it was made (the process exited,
/// the stream closed, a health ping went unanswered): `error_kind` in `/servers` when
/// `error` is not a connect failure.
pub const CONNECTION_LOST: &str = "connection_lost";

impl ConnectError {
    /// The stable snake_case code of the kind (see the table above).
    pub fn code(&self) -> &'static str {
        match self {
            Self::CommandNotFound { .. } => "command_not_found",
            Self::CommandNotExecutable { .. } => "command_not_executable",
            Self::SpawnFailed { .. } => "spawn_failed",
            Self::ExitedEarly { .. } => "exited_early",
            Self::HandshakeTimeout { .. } => "handshake_timeout",
            Self::Refused(_) => "refused",
            Self::Tls(_) => "tls",
            Self::HttpStatus { .. } => "http_status",
            Self::Protocol(_) => "protocol",
            Self::Config(_) => "config",
            Self::Transport(_) => "transport",
            Self::Local(_) => "local",
            Self::Cancelled(_) => "cancelled",
            Self::Unauthorized(_) => "unauthorized",
            Self::AuthorizationRequired(_) => "authorization_required",
        }
    }

    /// Whether the connect was given up rather than failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled(_))
    }

    /// Whether trying again cannot help until a person acts (authorizes, or fixes the
    /// server's OAuth): no reconnect loop runs for it.
    pub fn needs_user(&self) -> bool {
        matches!(self, Self::AuthorizationRequired(_) | Self::Unauthorized(_))
    }

    /// A transport failure met while connecting, as `text`, of the kind its cause chain
    /// shows ([`failure_kind`]).
    pub fn from_transport(
        error: &(dyn std::error::Error + Send + Sync + 'static),
        text: String,
    ) -> Self {
        failure_kind(error).with_text(text)
    }
}

fn stderr_note(stderr: &str) -> String {
    if stderr.is_empty() {
        "it wrote nothing on stderr".into()
    } else {
        format!("last stderr: {stderr}")
    }
}

fn timeout_text(stage: HandshakeStage, after: std::time::Duration, stderr: Option<&str>) -> String {
    let text = match stage {
        HandshakeStage::Transport => format!("the transport did not open within {after:?}"),
        HandshakeStage::Initialize => {
            format!("the server did not answer initialize within {after:?}")
        }
        HandshakeStage::ToolsList => format!("tools/list was not answered within {after:?}"),
    };
    match stderr {
        Some(stderr) => format!("{text}; {}", stderr_note(stderr)),
        None => text,
    }
}

/// The kind of a transport failure, before its text is known (see [`failure_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// [`ConnectError::Refused`].
    Refused,
    /// [`ConnectError::Tls`].
    Tls,
    /// [`ConnectError::HttpStatus`] with this status.
    HttpStatus(u16),
    /// [`ConnectError::Protocol`].
    Protocol,
    /// [`ConnectError::Transport`].
    Transport,
    /// [`ConnectError::Local`].
    Local,
    /// [`ConnectError::Config`].
    Config,
}

impl FailureKind {
    /// The [`ConnectError`] of this kind with `text`.
    pub fn with_text(self, text: String) -> ConnectError {
        match self {
            Self::Refused => ConnectError::Refused(text),
            Self::Tls => ConnectError::Tls(text),
            Self::HttpStatus(status) => ConnectError::HttpStatus {
                status,
                message: text,
            },
            Self::Protocol => ConnectError::Protocol(text),
            Self::Transport => ConnectError::Transport(text),
            Self::Local => ConnectError::Local(text),
            Self::Config => ConnectError::Config(text),
        }
    }
}

/// The kind of a transport error, read from its type and cause chain: an HTTP status
/// (rmcp keeps a 4xx only in the text of `UnexpectedServerResponse`, "HTTP 404 Not Found:
/// …", which is read for it), a TLS failure (a `rustls::Error` in the chain), a refused or
/// unreachable address (reqwest's connect errors), an answer that is not MCP's (a wrong
/// content type, a body that does not parse); anything else is
/// [`FailureKind::Transport`].
pub fn failure_kind(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    use crate::transport::sse::SseError;
    use rmcp::transport::streamable_http_client::{HttpStatusError, StreamableHttpError};
    use rmcp::transport::worker::WorkerQuitReason;
    type HttpError = StreamableHttpError<reqwest::Error>;
    if let Some(WorkerQuitReason::Fatal { error, .. }) =
        error.downcast_ref::<WorkerQuitReason<HttpError>>()
    {
        return http_failure_kind(error);
    }
    if let Some(error) = error.downcast_ref::<HttpError>() {
        return http_failure_kind(error);
    }
    if let Some(error) = error.downcast_ref::<SseError>() {
        return match error {
            SseError::Status { status, .. } => FailureKind::HttpStatus(status.as_u16()),
            SseError::Http(error) => reqwest_failure_kind(error),
            SseError::Encode(_) => FailureKind::Local,
        };
    }
    if let Some(error) = error.downcast_ref::<reqwest::Error>() {
        return reqwest_failure_kind(error);
    }
    if let Some(error) = error.downcast_ref::<HttpStatusError>() {
        return FailureKind::HttpStatus(error.status);
    }
    if mag_common::has_cause::<rustls::Error>(error) {
        return FailureKind::Tls;
    }
    FailureKind::Transport
}

fn http_failure_kind(
    error: &rmcp::transport::streamable_http_client::StreamableHttpError<reqwest::Error>,
) -> FailureKind {
    use rmcp::transport::streamable_http_client::StreamableHttpError as E;
    match error {
        E::Client(error) => reqwest_failure_kind(error),
        E::HttpStatus(error) => FailureKind::HttpStatus(error.status),
        E::AuthRequired(_) => FailureKind::HttpStatus(401),
        E::InsufficientScope(_) => FailureKind::HttpStatus(403),
        E::UnexpectedServerResponse(text) => {
            status_of(text).map_or(FailureKind::Protocol, FailureKind::HttpStatus)
        }
        E::UnexpectedContentType(_)
        | E::Deserialize(_)
        | E::MissingSessionIdInResponse
        | E::ResponseBodyTooLarge { .. }
        | E::ServerDoesNotSupportSse
        | E::ReinitializationFailed(_) => FailureKind::Protocol,
        // The entry's `headers` name one the transport sets itself.
        E::ReservedHeaderConflict(_) => FailureKind::Config,
        _ => FailureKind::Transport,
    }
}

/// The status of rmcp's "HTTP 404 Not Found: BODY".
fn status_of(text: &str) -> Option<u16> {
    let code = text.strip_prefix("HTTP ")?.get(..3)?;
    code.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| code.parse().ok())
        .flatten()
}

fn reqwest_failure_kind(error: &reqwest::Error) -> FailureKind {
    if mag_common::has_cause::<rustls::Error>(error) {
        FailureKind::Tls
    } else if let Some(status) = error.status() {
        FailureKind::HttpStatus(status.as_u16())
    } else if error.is_connect() {
        FailureKind::Refused
    } else if error.is_decode() {
        FailureKind::Protocol
    } else {
        FailureKind::Transport
    }
}

/// What a failed `initialize` says: the server's answer when it answered (a
/// [`ConnectError::Protocol`], see [`initialize_answer`]), else the transport's cause, of
/// its kind ([`failure_kind`]); prefixed "initialize failed: ".
pub fn initialize_failure(error: &rmcp::service::ClientInitializeError) -> ConnectError {
    use rmcp::service::ClientInitializeError as Failed;
    let text = format!("initialize failed: {}", describe_initialize_error(error));
    if initialize_answer(error).is_some() {
        return ConnectError::Protocol(text);
    }
    let mut error = error;
    while let Failed::LegacyFallbackFailed { fallback, .. } = error {
        error = fallback;
    }
    match error {
        Failed::TransportError { error, .. } => ConnectError::from_transport(&*error.error, text),
        Failed::NoCompatibleProtocolVersion { .. } => ConnectError::Protocol(text),
        _ => ConnectError::Transport(text),
    }
}

/// What a failed request of the connect (`tools/list`) says, of its kind: the server's
/// JSON-RPC error is [`ConnectError::Protocol`], a transport failure of the kind its cause
/// shows ([`failure_kind`]).
pub fn request_failure(error: &rmcp::ServiceError, text: String) -> ConnectError {
    match error {
        rmcp::ServiceError::McpError(_) | rmcp::ServiceError::UnexpectedResponse => {
            ConnectError::Protocol(text)
        }
        rmcp::ServiceError::TransportSend(e) => ConnectError::from_transport(&*e.error, text),
        _ => ConnectError::Transport(text),
    }
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
    fn connect_errors_read_as_before_and_have_stable_codes() {
        let exited = ConnectError::ExitedEarly {
            exit: "exit status 3".into(),
            stderr: "fatal: bad token".into(),
        };
        assert_eq!(
            exited.to_string(),
            "the process exited before answering initialize (exit status 3); last stderr: \
             fatal: bad token"
        );
        assert_eq!(exited.code(), "exited_early");
        let silent = ConnectError::HandshakeTimeout {
            stage: HandshakeStage::Initialize,
            after: std::time::Duration::from_secs(1),
            stderr: Some(String::new()),
        };
        assert_eq!(
            silent.to_string(),
            "the server did not answer initialize within 1s; it wrote nothing on stderr"
        );
        assert_eq!(silent.code(), "handshake_timeout");
        let failed = Error::Connect {
            server: "a".into(),
            cause: ConnectError::CommandNotFound {
                program: "x".into(),
            },
        };
        assert_eq!(
            failed.to_string(),
            "cannot connect to server \"a\": command \"x\" not found"
        );
        assert_eq!(
            (failed.code(), failed.kind()),
            ("connect_failed", Some("command_not_found"))
        );
        assert_eq!(Error::UnknownServer("a".into()).kind(), None);
        assert!(ConnectError::Cancelled("removed".into()).is_cancelled());
    }

    #[test]
    fn the_kind_of_a_transport_error_is_read_from_its_chain() {
        use rmcp::transport::streamable_http_client::StreamableHttpError;
        use rmcp::transport::worker::WorkerQuitReason;
        type HttpError = StreamableHttpError<reqwest::Error>;
        // rustls's error reaches reqwest inside io::Errors, which `source` skips.
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::General("bad certificate".into()),
        );
        assert_eq!(failure_kind(&std::io::Error::other(tls)), FailureKind::Tls);
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(failure_kind(&broken), FailureKind::Transport);
        let not_found = HttpError::UnexpectedServerResponse("HTTP 404 Not Found: no".into());
        assert_eq!(failure_kind(&not_found), FailureKind::HttpStatus(404));
        let fatal = WorkerQuitReason::fatal(not_found, "send initialize request");
        assert_eq!(failure_kind(&fatal), FailureKind::HttpStatus(404));
        let garbage = HttpError::UnexpectedServerResponse("not JSON-RPC: <html>".into());
        assert_eq!(failure_kind(&garbage), FailureKind::Protocol);
        assert_eq!(
            failure_kind(&HttpError::UnexpectedContentType(Some("text/html".into()))),
            FailureKind::Protocol
        );
        let sse = crate::transport::sse::SseError::Status {
            status: reqwest::StatusCode::BAD_GATEWAY,
            url: "http://h/m".into(),
        };
        assert_eq!(failure_kind(&sse), FailureKind::HttpStatus(502));
        for (text, status) in [
            ("HTTP 500 Internal Server Error", Some(500)),
            ("HTTP 40", None),
            ("HTTP abc", None),
            ("http 404", None),
        ] {
            assert_eq!(status_of(text), status, "{text}");
        }
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
