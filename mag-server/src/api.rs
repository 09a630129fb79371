//! The HTTP API (SPEC §5, MAG's paths): thin handlers over [`ControlPlane`].
//!
//! | method path | answer |
//! |---|---|
//! | GET `/health` | liveness, mcp-client's state, `"store": null` (open even with a token) |
//! | GET `/api/mcp/config` | `{"mcpServers", "version"}` |
//! | POST `/api/mcp/config` | `{"config": {"mcpServers"}, "version"}` → `{"status", "version", "applied"}` |
//! | POST `/api/mcp/add` | `{"mcpServers", "version"?}` → MAG's add result |
//! | POST `/api/mcp/remove` | `{"server_names", "version"?}` or `[names]` → MAG's remove result |
//! | GET `/api/mcp/status` | mcp-client's `/servers` |
//! | POST `/api/mcp/connect/{name}` | one server, or every enabled one for `all` |
//! | POST `/api/mcp/disconnect/{name}` | |
//! | GET `/api/mcp/tools` | `{SERVER: [tool]}` |
//! | POST `/api/mcp/test-tool` | `{"server_name", "tool_name", "params"}` → `{"status", "result" \| "error", "execution_time"}` |
//! | POST `/api/mcp/client/restart` | retry a crash-looped mcp-client, or restart the spawned one |
//!
//! Every error is `{"detail", "code"}` ([`Error`]); bad bodies get 400 (not JSON), 422
//! (wrong shape) or 413 (over the limit).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use mcp_client::http_edge::read_json;

use crate::control::{ControlPlane, ToolTest};
use crate::error::{Error, Result};
use crate::settings::Secret;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The core.
    pub plane: ControlPlane,
    /// The body limit, in bytes.
    pub body_limit: usize,
    /// `MAG_API_TOKEN`: every endpoint but `/health` wants `Authorization: Bearer TOKEN`.
    pub token: Option<Secret>,
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    let token: Option<Arc<str>> = state.token.as_ref().map(|t| t.expose().into());
    let limit = state.body_limit;
    let routes = Router::new()
        .route("/health", get(health))
        .route("/api/mcp/config", get(get_config).post(set_config))
        .route("/api/mcp/add", post(add))
        .route("/api/mcp/remove", post(remove))
        .route("/api/mcp/status", get(status))
        .route("/api/mcp/connect/{name}", post(connect))
        .route("/api/mcp/disconnect/{name}", post(disconnect))
        .route("/api/mcp/tools", get(tools))
        .route("/api/mcp/test-tool", post(test_tool))
        .route("/api/mcp/client/restart", post(restart_client))
        .with_state(Arc::new(state));
    // `GET /health` stays open with a token, so supervisors can check liveness.
    mcp_client::http_edge::finish(routes, token, "/health", limit)
}

/// A JSON request body: read within the body limit, then parsed into `T`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self> {
        read_json(request, state, state.body_limit)
            .await
            .map(Body)
            .map_err(Error::from)
    }
}

/// A server name from the path.
fn name(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(name)| name)
        .map_err(|e| Error::InvalidServerName(e.body_text()))
}

type AppResult = Result<Json<Value>>;
type St = State<Arc<AppState>>;

async fn health(State(state): St) -> Json<Value> {
    Json(state.plane.health())
}

async fn get_config(State(state): St) -> AppResult {
    state.plane.config().await.map(Json)
}

/// `{"config": {...}, "version": REV}`, or MAG's older bare `{"mcpServers": {...}}`.
async fn set_config(State(state): St, Body(body): Body<Map<String, Value>>) -> AppResult {
    let mut body = body;
    let (config, version) = match body.remove("config") {
        Some(config) => (config, body.remove("version")),
        None if body.contains_key("mcpServers") => (Value::Object(body), None),
        None => {
            return Err(Error::invalid_body(
                "expected {\"config\": {\"mcpServers\": {...}}, \"version\": VERSION}",
            ));
        }
    };
    state.plane.set_config(config, version).await.map(Json)
}

#[derive(Deserialize)]
struct AddBody {
    #[serde(rename = "mcpServers")]
    servers: Map<String, Value>,
    #[serde(default)]
    version: Option<Value>,
}

async fn add(State(state): St, Body(body): Body<AddBody>) -> AppResult {
    state.plane.add(body.servers, body.version).await.map(Json)
}

/// MAG's two request shapes: `{"server_names": [..], "version": V}` and a bare `[..]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RemoveBody {
    Names(Vec<String>),
    Request {
        server_names: Vec<String>,
        #[serde(default)]
        version: Option<Value>,
    },
}

async fn remove(State(state): St, Body(body): Body<Value>) -> AppResult {
    let body: RemoveBody = serde_json::from_value(body).map_err(|_| {
        Error::invalid_body(
            "expected {\"server_names\": [NAME, ...], \"version\": VERSION} or [NAME, ...]",
        )
    })?;
    let (names, version) = match body {
        RemoveBody::Names(names) => (names, None),
        RemoveBody::Request {
            server_names,
            version,
        } => (server_names, version),
    };
    state.plane.remove(names, version).await.map(Json)
}

async fn status(State(state): St) -> AppResult {
    state.plane.status().await.map(Json)
}

async fn connect(
    State(state): St,
    path: std::result::Result<Path<String>, PathRejection>,
) -> AppResult {
    let name = name(path)?;
    if name.eq_ignore_ascii_case("all") {
        state.plane.connect_all().await.map(Json)
    } else {
        state.plane.connect(&name).await.map(Json)
    }
}

async fn disconnect(
    State(state): St,
    path: std::result::Result<Path<String>, PathRejection>,
) -> AppResult {
    state.plane.disconnect(&name(path)?).await.map(Json)
}

async fn tools(State(state): St) -> AppResult {
    state.plane.tools().await.map(Json)
}

#[derive(Deserialize)]
struct TestToolBody {
    server_name: String,
    tool_name: String,
    #[serde(default)]
    params: Option<Value>,
}

async fn test_tool(State(state): St, Body(body): Body<TestToolBody>) -> AppResult {
    let params = match body.params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => return Err(Error::invalid_body("params must be a JSON object")),
    };
    let test = ToolTest {
        server_name: body.server_name,
        tool_name: body.tool_name,
        params,
    };
    state.plane.test_tool(test).await.map(Json)
}

async fn restart_client(State(state): St) -> AppResult {
    state.plane.restart_client().map(Json)
}
