//! The HTTP API (SPEC §5, MAG's paths): thin handlers over [`ControlPlane`] and
//! [`Generator`], and the only place MAG's JSON shapes are made (`mcp`: the MCP
//! management endpoints, `generation`: MCP generation).
//!
//! | method path | answer |
//! |---|---|
//! | GET `/health` | liveness, mcp-client's and the store's state (open even with a token; without it, states only) |
//! | GET `/api/mcp/config` | `{"mcpServers", "version"}` |
//! | POST `/api/mcp/config` | `{"config": {"mcpServers"}, "version"}` (both required) → `{"status", "version", "applied"}` |
//! | POST `/api/mcp/add` | `{"mcpServers", "version"?}` → MAG's add result |
//! | POST `/api/mcp/remove` | `{"server_names", "version"?}` or `[names]` → MAG's remove result |
//! | GET `/api/mcp/status` | mcp-client's `/servers` |
//! | POST `/api/mcp/connect/{name}` | one server, or every enabled one for `all` |
//! | POST `/api/mcp/disconnect/{name}` | |
//! | GET `/api/mcp/tools` | `{SERVER: [tool]}` |
//! | POST `/api/mcp/test-tool` | `{"server_name", "tool_name", "params"}` → `{"status", "result" \| "error", "execution_time"}` |
//! | POST `/api/mcp/client/restart` | retry a crash-looped mcp-client, or restart the spawned one |
//! | POST `/api/mcp/generate` | `{"requirement", "model_name", "conversation_id"?, "user_id"?, "stream"?}` → SSE (`data: CHUNK` … `data: [DONE]`), or without `stream` the conversation (for `<end>END</end>`, the install's result) |
//! | GET `/api/mcp/conversations` | `?user_id=&limit=&skip=` → `{"conversations", "total_count"}` |
//! | GET · DELETE `/api/mcp/conversations/{id}` | the conversation with rounds and `parsed_results` · delete it |
//! | POST `/api/mcp/register-tool` | `{"folder_name", "script_files", "readme", "dependencies"}` → install and register |
//! | GET `/api/mcp/ai-tools` | the generated tools' folder names, sorted |
//!
//! Every error is `{"detail", "code"}` ([`Error`]); bad bodies get 400 (not JSON), 422
//! (wrong shape) or 413 (over the limit).

mod chat;
mod generation;
mod mcp;
mod models;

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, FromRequest, Path, Request, State};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::Caller;
use mag_common::http_edge::{Authorized, Edge, read_json};

use crate::control::ControlPlane;
use crate::error::{Error, Result};
use crate::generation::Generator;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The core.
    pub plane: ControlPlane,
    /// MCP generation.
    pub generator: Generator,
    /// The body limit, in bytes.
    pub body_limit: usize,
}

/// The API's routes over `state`, behind `edge`'s checks (its `open_paths` are `GET
/// /health`, which stays open with a token so supervisors can check liveness, and `GET
/// /oauth/callback`, where a browser comes back from an authorization server: its one-time
/// `state` guards it).
pub fn router(state: AppState, edge: Edge) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route(
            "/api/mcp/config",
            get(mcp::get_config).post(mcp::set_config),
        )
        .route("/oauth/callback", get(mcp::oauth_callback))
        .route("/api/mcp/add", post(mcp::add))
        .route("/api/mcp/remove", post(mcp::remove))
        .route("/api/mcp/status", get(mcp::status))
        .route("/api/mcp/connect/{name}", post(mcp::connect))
        .route("/api/mcp/disconnect/{name}", post(mcp::disconnect))
        .route("/api/mcp/tools", get(mcp::tools))
        .route("/api/mcp/test-tool", post(mcp::test_tool))
        .route("/api/mcp/client/restart", post(mcp::restart_client))
        .route("/api/mcp/generate", post(generation::generate))
        .route("/api/mcp/conversations", get(generation::conversations))
        .route(
            "/api/mcp/conversations/{id}",
            get(generation::conversation).delete(generation::delete_conversation),
        )
        .route("/api/mcp/register-tool", post(generation::register_tool))
        .route("/api/mcp/ai-tools", get(generation::ai_tools))
        .route("/api/chat/conversations", get(chat::list))
        .route("/api/chat/conversations/{id}", get(chat::one))
        .route(
            "/api/chat/conversations/{id}/permanent",
            axum::routing::delete(chat::delete_permanently),
        )
        .route(
            "/api/chat/conversations/{id}/title",
            axum::routing::put(chat::set_title),
        )
        .route(
            "/api/chat/conversations/{id}/tags",
            axum::routing::put(chat::set_tags),
        )
        .route(
            "/api/chat/conversations/{id}/status",
            axum::routing::put(chat::set_status),
        )
        .route("/api/models", get(models::list))
        .route("/api/models/{*name}", get(models::one))
        .route(
            "/api/mcp/ai-generator-template",
            get(generation::ai_generator_template),
        )
        .merge(mag_common::http_edge::body_timeout(
            Router::new()
                .route("/mcp", any(mcp::gateway))
                .route("/servers/{name}/mcp", any(mcp::gateway)),
        ))
        .with_state(Arc::new(state));
    mag_common::http_edge::finish(routes, edge)
}

/// A JSON request body: read within the body limit, then parsed into `T`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self> {
        read_json(request, state.body_limit)
            .await
            .map(Body)
            .map_err(Error::from)
    }
}

/// Who the request acts for: the JWT's user, else MAG's default user (see [`crate::auth`]).
pub struct Who(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Who {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Who(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::default_user)))
    }
}

/// A path segment (a server name, a conversation id), or why the path is malformed.
type Segment = std::result::Result<Path<String>, PathRejection>;

/// A JSON answer.
type AppResult = Result<Json<Value>>;

/// The handlers' state.
type St = State<Arc<AppState>>;

/// `GET /health`: `{"status": "ok", "service": "mag-server", "version", "pid",
/// "mcp_client": {"state", "address", "pid", "managed", "restarts", "since", "last_exit",
/// "error", "last_reconnect"}, "store": {"backend", "state": "ok" | "unavailable",
/// "error"?}}` to a caller with the token (or when none is set); liveness only to one
/// without it: `{"status", "service", "version", "mcp_client": {"state", "since"},
/// "store": {"backend", "state"}}`, no pids, error texts or stderr.
async fn health(State(state): St, Extension(authorized): Extension<Authorized>) -> Json<Value> {
    let client = state.plane.client_status();
    let store = state.generator.store_health().await;
    let store_state = if store.error.is_none() {
        "ok"
    } else {
        "unavailable"
    };
    if !authorized.0 {
        return Json(json!({
            "status": "ok",
            "service": "mag-server",
            "version": env!("CARGO_PKG_VERSION"),
            "mcp_client": {"state": client.state, "since": client.since},
            "store": {"backend": store.backend, "state": store_state},
        }));
    }
    let mut store_json = json!({"backend": store.backend, "state": store_state});
    if let Some(error) = store.error {
        store_json["error"] = json!(mag_common::secrets::redact(&error));
    }
    Json(json!({
        "status": "ok",
        "service": "mag-server",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "mcp_client": client,
        "store": store_json,
    }))
}
