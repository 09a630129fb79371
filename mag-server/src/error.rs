//! The crate's one error type and its HTTP mapping (SPEC §5, §6).
//!
//! Every error answers `{"detail": TEXT, "code": SNAKE_ID}` with the status of
//! [`Error::status`]; a few add fields a client can act on (a stale revision carries
//! `current_version`, an invalid file carries `version`, `line` and `column`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mag_common::config::ConfigError;
use mag_common::http_edge::EdgeError;
use serde_json::json;

use crate::llm::LlmError;
use crate::store::StoreError;

/// Everything an operation of mag-server can fail with.
///
/// The `Display` text is the `detail` an API client sees: it names the cause and never a
/// token or an environment value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// mcp-client cannot take the request now: it is starting, restarting, crash-looping,
    /// its address is held by another program, or it could not be reached (503).
    #[error("mcp-client is unavailable: {0}")]
    Unavailable(String),
    /// The mcp-client on the address wants a token other than mag-server's (503): it was
    /// started by someone else, or by a mag-server that is gone.
    #[error(
        "mcp-client is unavailable: the mcp-client at {0} refused mag-server's token (it was \
         started with another one: set MAG_CLIENT_TOKEN to it, or stop that mcp-client)"
    )]
    TokenRefused(std::net::SocketAddr),
    /// mcp-client took longer than the request's bound (504).
    #[error("mcp-client did not answer {what} within {secs:.0} s")]
    Timeout {
        /// The request, e.g. `POST /connect_server`.
        what: String,
        /// The bound, in seconds.
        secs: f64,
    },
    /// mcp-client answered 2xx with a body that is not what its API says (502): another
    /// program, or another version of mcp-client. Names the field (missing, or of the
    /// wrong type).
    #[error("mcp-client answered {what} with something mag-server cannot read: {detail}")]
    BadAnswer {
        /// The request, e.g. `GET /servers`.
        what: String,
        /// What is wrong with the answer, naming the field.
        detail: String,
    },
    /// mcp-client refused the request; its status, code and detail are passed on.
    #[error("{detail}")]
    Upstream {
        /// mcp-client's HTTP status.
        status: StatusCode,
        /// mcp-client's `code`.
        code: String,
        /// mcp-client's `detail`.
        detail: String,
        /// mcp-client's `kind` (of a failed connect), when it sent one.
        kind: Option<String>,
        /// With `authorization_required`: where the user approves access (SPEC §10).
        authorization_url: Option<String>,
    },
    /// The `version` sent is not the file's current revision (409).
    #[error(
        "the config changed since version {expected} was read (now {current}); read it again and retry"
    )]
    StaleRevision {
        /// The version the client sent.
        expected: String,
        /// The file's current revision.
        current: String,
    },
    /// A config sent to the API does not validate (422); nothing was written.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The config file on disk does not parse or validate, or is no regular file (409: the
    /// file's state, not the request, is wrong); `version` lets a client overwrite it on
    /// purpose, `line` and `column` say where it is wrong.
    #[error("the config file {path} is invalid: {error}")]
    ConfigFileInvalid {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        error: ConfigError,
        /// The file's current revision.
        version: String,
    },
    /// A server name that cannot be one (422): empty, too long, or with `/`, `\`, NUL, `..`.
    #[error("invalid server name: {0}")]
    InvalidServerName(String),
    /// Refused at the HTTP edge: bad body, no route, no token (400, 404, 405, 413, 422, 401).
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// The operation does not apply to mcp-client in its current state (409), e.g.
    /// restarting an adopted client.
    #[error("{0}")]
    ClientState(String),
    /// A request that cannot be served as asked (400), e.g. a blank `requirement`.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not see or change this conversation: another user's (403).
    #[error("conversation {0:?} belongs to another user")]
    Forbidden(String),
    /// The end instruction came without the conversation it finishes (400; in a stream,
    /// MAG's `parameter_error` event).
    #[error("the end instruction needs the conversation_id of the design to finish")]
    EndWithoutConversation,
    /// No `[[models]]` table has this name (404).
    #[error("no model named {0:?} is configured (see [[models]] in the settings file)")]
    UnknownModel(String),
    /// No conversation has this id (404).
    #[error("no conversation {0:?}")]
    ConversationNotFound(String),
    /// A round (or the end) of this conversation is running: answered at once rather than
    /// queued behind an LLM stream or a pip install (409).
    #[error("conversation {0:?} has a round in progress; try again when it has finished")]
    ConversationBusy(String),

    /// The conversation store failed: unavailable (503), a conflicting round (409), a
    /// malformed document (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The LLM endpoint failed (502).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A generated tool's files or names are not acceptable (422).
    #[error("invalid tool: {0}")]
    InvalidTool(String),
    /// A tool folder or server of this name exists already (409).
    #[error("a tool or server named {0:?} exists already")]
    ToolExists(String),
    /// Installing a generated tool failed at `step` (500); nothing of it is left behind.
    #[error("installing the tool failed: cannot {step}: {detail}")]
    ToolInstall {
        /// The step, e.g. `install the dependencies`.
        step: String,
        /// The cause, with the end of the installer's output.
        detail: String,
    },
    /// Another mag-server holds the data dir's lock (`DATA_DIR/mag-server.lock`): a
    /// start-up error.
    #[error(
        "another mag-server uses the data dir {0} (it holds mag-server.lock there); stop it or \
         give this one its own --data-dir"
    )]
    DataDirInUse(std::path::PathBuf),

    /// A local I/O failure (500): reading or writing the config file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// The stable machine-readable code sent as `code`.
    pub fn code(&self) -> &str {
        match self {
            Self::Unavailable(_) | Self::TokenRefused(_) => "mcp_client_unavailable",
            Self::Timeout { .. } => "mcp_client_timeout",
            Self::BadAnswer { .. } => "mcp_client_bad_answer",
            Self::Upstream { code, .. } => code,
            Self::StaleRevision { .. } => "stale_revision",
            Self::InvalidConfig(_) => "invalid_config",
            Self::ConfigFileInvalid { .. } => "config_file_invalid",
            Self::InvalidServerName(_) => "invalid_server_name",
            Self::ClientState(_) => "client_state",
            Self::Io { .. } => "io_error",
            Self::DataDirInUse(_) => "data_dir_in_use",
            Self::BadRequest(_) | Self::EndWithoutConversation => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::UnknownModel(_) => "unknown_model",
            Self::ConversationNotFound(_) => "conversation_not_found",
            Self::ConversationBusy(_) => "conversation_busy",
            Self::Store(StoreError::Unavailable(_)) => "store_unavailable",
            Self::Store(StoreError::Conflict(_)) => "conversation_conflict",
            Self::Store(StoreError::Corrupt(_)) => "store_corrupt",
            Self::Llm(_) => "llm_error",
            Self::InvalidTool(_) => "invalid_tool",
            Self::ToolExists(_) => "tool_exists",
            Self::ToolInstall { .. } => "tool_install_failed",
            Self::Edge(e) => e.code(),
        }
    }

    /// [`EdgeError::InvalidBody`]: JSON of the wrong shape (422).
    pub fn invalid_body(why: impl Into<String>) -> Self {
        Self::Edge(EdgeError::InvalidBody(why.into()))
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) | Self::TokenRefused(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
            // MAG's frontend reads any 401 as "log in again" (its axios interceptor): a
            // server that needs OAuth is a failed connect there, as MAG answers those.
            Self::Upstream { code, .. } if code == "authorization_required" => {
                StatusCode::BAD_REQUEST
            }
            Self::Upstream { status, .. } => *status,
            Self::StaleRevision { .. } | Self::ClientState(_) => StatusCode::CONFLICT,
            Self::InvalidConfig(_) | Self::InvalidServerName(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ConfigFileInvalid { .. } => StatusCode::CONFLICT,
            Self::Io { .. } | Self::ToolInstall { .. } | Self::DataDirInUse(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::BadRequest(_) | Self::EndWithoutConversation => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownModel(_) | Self::ConversationNotFound(_) => StatusCode::NOT_FOUND,
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(StoreError::Conflict(_))
            | Self::ToolExists(_)
            | Self::ConversationBusy(_) => StatusCode::CONFLICT,
            Self::Store(StoreError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Llm(_) => StatusCode::BAD_GATEWAY,
            Self::InvalidTool(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Edge(e) => e.status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let detail = mag_common::secrets::redact(&self.to_string());
        let mut body = json!({"detail": detail.clone(), "code": self.code()});
        match &self {
            Self::StaleRevision { expected, current } => {
                // MAG's 409 (mcp_routes.py): `detail` is an object its frontend reads.
                body["detail"] = json!({
                    "error": "version_conflict",
                    "message": detail,
                    "current_version": current,
                    "expected_version": expected,
                });
                body["current_version"] = json!(current);
                body["expected_version"] = json!(expected);
            }
            Self::ConfigFileInvalid { error, version, .. } => {
                body["version"] = json!(version);
                body["line"] = json!(error.line);
                body["column"] = json!(error.column);
            }
            Self::Upstream {
                kind,
                authorization_url,
                ..
            } => {
                if let Some(kind) = kind {
                    body["kind"] = json!(kind);
                }
                if let Some(url) = authorization_url {
                    body["authorization_url"] = json!(url);
                }
            }
            _ => {}
        }
        (self.status(), Json(body)).into_response()
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
