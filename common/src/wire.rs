//! mcp-client's HTTP API on the wire (SPEC §4): every request and answer body, with both
//! `Serialize` (mcp-client answers with them) and `Deserialize` (mag-server reads them), so
//! a renamed or missing field is a compile error on one side and a clear decode error, naming
//! the field, on the other.
//!
//! | method path | request | answer |
//! |---|---|---|
//! | GET `/` | | [`RootAnswer`] |
//! | POST `/load_config` | `{"config": {"mcpServers": {..}}}` | [`LoadConfigAnswer`] |
//! | GET `/servers` | | [`Servers`] |
//! | POST `/connect_server` | [`ServerName`] | [`ConnectAnswer`] |
//! | POST `/disconnect_server` | [`ServerName`] | [`DisconnectAnswer`] |
//! | GET `/tools` | | `Vec<`[`ToolView`]`>` |
//! | POST `/tool_call` | [`ToolCall`] | [`ToolCallAnswer`] |
//! | POST `/shutdown` | | [`ShutdownAnswer`] |
//! | any error | | [`ErrorBody`] |

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, TransportType};

/// The `service` of [`RootAnswer`] that tells an mcp-client from another program.
pub const SERVICE: &str = "mcp-client";

/// `GET /`: the daemon, its config and its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootAnswer {
    /// Always `"running"`.
    pub status: String,
    /// How many servers are connected now.
    pub servers_connected: usize,
    /// Always [`SERVICE`].
    pub service: String,
    /// mcp-client's version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
    /// The live config's origin and health.
    pub config: ConfigStatus,
}

/// The live config's origin and health, in [`RootAnswer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file watched.
    pub path: PathBuf,
    /// Revision of the live config ([`crate::config::revision`]); `None` until one was
    /// applied.
    pub revision: Option<String>,
    /// Why the newest file was not applied; `None` when it was.
    pub error: Option<ConfigError>,
}

/// What applying a config changed, by server name (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Servers that were not in the live config.
    pub added: Vec<String>,
    /// Servers whose entry changed (reconnected if they were connected).
    pub updated: Vec<String>,
    /// Servers that are gone (disconnected, processes ended).
    pub removed: Vec<String>,
}

/// `POST /load_config`: `{"status": "accepted", "added", "updated", "removed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadConfigAnswer {
    /// Always `"accepted"`.
    pub status: String,
    /// What changed.
    #[serde(flatten)]
    pub report: ApplyReport,
}

/// A server's state, as `/servers` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not connected, and nothing went wrong (never tried, or disconnected on purpose).
    Disconnected,
    /// A connect is under way.
    Connecting,
    /// Connected: calls go through.
    Connected,
    /// The last connect failed or the connection was lost; `error` says why.
    Failed,
    /// The connection was lost (or an `autoConnect` failed) and a new attempt is scheduled
    /// with backoff; `attempts` counts them, `error` holds the last cause.
    Reconnecting,
    /// `disabled` in the config.
    Disabled,
    /// The server wants OAuth and a user must approve mcp-client's access at
    /// `authorization_url` (SPEC §10); the redirect back connects it.
    NeedsAuthorization,
}

/// `GET /servers`: every server of the live config, by name.
pub type Servers = BTreeMap<String, ServerView>;

/// One server in [`Servers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// Whether calls can go through now.
    pub connected: bool,
    /// Whether a connect was ever attempted.
    pub init_attempted: bool,
    /// Tool names, as last listed (empty when not connected).
    pub tools: Vec<String>,
    /// Why the last connect failed or the connection was lost.
    pub error: Option<String>,
    /// The kind of `error`, a stable snake_case code: `connection_lost` for a connection
    /// lost after it was made, else the kind of the failed connect (`command_not_found`,
    /// `command_not_executable`, `spawn_failed`, `exited_early`, `handshake_timeout`,
    /// `refused`, `tls`, `http_status`, `protocol`, `config`, `transport`, `local`,
    /// `cancelled`; mcp-client's `ConnectError` documents each). `None` with no `error`;
    /// absent from an mcp-client older than the field (read as `None`).
    #[serde(default)]
    pub error_kind: Option<String>,
    /// `stdio`, `sse` or `streamable_http`.
    pub transport_type: TransportType,
    /// The state.
    pub status: Status,
    /// The stdio server's pid (leader of its process group).
    pub pid: Option<u32>,
    /// When the current connection was made (RFC 3339, UTC).
    pub connected_since: Option<String>,
    /// How many times the connection was made again after being lost.
    pub reconnects: u64,
    /// Failed attempts in the current outage (0 when connected or not wanted).
    pub attempts: u32,
    /// The protocol version the server answered `initialize` with.
    pub protocol_version: Option<String>,
    /// `autoApprove` from the config.
    pub auto_approve: Vec<String>,
    /// With `needs_authorization`: the URL a user opens to approve mcp-client's access
    /// (SPEC §10). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
}

/// One tool in `GET /tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolView {
    /// The server it belongs to.
    pub server_name: String,
    /// The tool name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Its JSON Schema for arguments.
    pub input_schema: Value,
}

/// `{"server_name"}`: the body of `/connect_server` and `/disconnect_server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerName {
    /// The server.
    pub server_name: String,
}

/// `POST /connect_server`: `{"status": "connected", "server", "tools"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAnswer {
    /// Always `"connected"`.
    pub status: String,
    /// The server.
    pub server: String,
    /// Its tool names.
    pub tools: Vec<String>,
}

/// Whether a disconnect ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectStatus {
    /// It was connected; its processes are ended.
    Disconnected,
    /// It was not connected.
    NotConnected,
}

/// `POST /disconnect_server`: `{"status", "server", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectAnswer {
    /// What happened.
    pub status: DisconnectStatus,
    /// The server.
    pub server: String,
    /// A sentence saying it.
    pub message: String,
}

/// `POST /tool_call`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The server.
    pub server_name: String,
    /// The tool.
    pub tool_name: String,
    /// Its arguments: an object, or absent / `null` for none.
    #[serde(default)]
    pub params: Option<Value>,
}

/// `POST /tool_call`'s answer: the result's content blocks (MCP `CallToolResult.content`),
/// its structured content when there is one, and `error` and `code` when the tool failed
/// (`tool_error`), timed out (`timeout`), or the server went away or answered with an
/// error (`server_gone`, `server_error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallAnswer {
    /// The tool.
    pub tool_name: String,
    /// The server.
    pub server_name: String,
    /// The content blocks (MCP spec 2025-11-25, Server Features § Tools, Tool Result).
    pub content: Vec<Value>,
    /// `structuredContent`, when the result had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    /// What went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure, with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `POST /shutdown`: `{"status": "shutdown_initiated"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAnswer {
    /// Always `"shutdown_initiated"`.
    pub status: String,
}

/// Every error answer of both daemons: `{"detail": TEXT, "code": SNAKE_ID}` (SPEC §4), and
/// `"kind"` when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in a sentence.
    pub detail: String,
    /// A stable machine-readable code.
    pub code: String,
    /// With `"code": "connect_failed"`: the kind of failure, as [`ServerView::error_kind`]
    /// (`command_not_found`, `refused`, …). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// With `"code": "authorization_required"`: the URL a user opens to approve access
    /// (SPEC §10). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_name_a_missing_field() {
        let view = ServerView {
            connected: true,
            init_attempted: true,
            tools: vec!["echo".into()],
            error: None,
            error_kind: None,
            transport_type: TransportType::StreamableHttp,
            status: Status::Connected,
            pid: Some(7),
            connected_since: Some("2026-12-05T00:00:00Z".into()),
            reconnects: 1,
            attempts: 0,
            protocol_version: Some("2025-11-25".into()),
            auto_approve: vec![],
            authorization_url: None,
        };
        let text = serde_json::to_value(&view).unwrap();
        assert!(text.get("authorization_url").is_none(), "absent when none");
        assert_eq!(text["transport_type"], "streamable_http");
        assert_eq!(text["status"], "connected");
        let back: ServerView = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(back, view);
        let mut missing = text;
        missing.as_object_mut().unwrap().remove("status");
        let err = serde_json::from_value::<ServerView>(missing).unwrap_err();
        assert!(err.to_string().contains("missing field `status`"), "{err}");

        let load = LoadConfigAnswer {
            status: "accepted".into(),
            report: ApplyReport {
                added: vec!["a".into()],
                ..ApplyReport::default()
            },
        };
        let text = serde_json::to_value(&load).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"status": "accepted", "added": ["a"], "updated": [], "removed": []})
        );
        assert_eq!(
            serde_json::from_value::<LoadConfigAnswer>(text).unwrap(),
            load
        );
    }

    #[test]
    fn an_error_kind_is_optional_both_ways() {
        let failed = ErrorBody {
            detail: "cannot connect to server \"a\": command \"x\" not found".into(),
            code: "connect_failed".into(),
            kind: Some("command_not_found".into()),
            authorization_url: None,
        };
        let text = serde_json::to_value(&failed).unwrap();
        assert_eq!(text["kind"], "command_not_found");
        assert_eq!(serde_json::from_value::<ErrorBody>(text).unwrap(), failed);
        let plain = serde_json::json!({"detail": "unknown server \"a\"", "code": "unknown_server"});
        let read: ErrorBody = serde_json::from_value(plain.clone()).unwrap();
        assert_eq!(read.kind, None);
        assert_eq!(serde_json::to_value(&read).unwrap(), plain);
        // An older mcp-client's /servers entry has no error_kind.
        let older = serde_json::json!({
            "connected": false, "init_attempted": true, "tools": [], "error": "gone",
            "transport_type": "stdio", "status": "failed", "pid": null,
            "connected_since": null, "reconnects": 0, "attempts": 0,
            "protocol_version": null, "auto_approve": [],
        });
        let view: ServerView = serde_json::from_value(older).unwrap();
        assert_eq!(view.error_kind, None);
    }
}
