//! The HTTP API (SPEC §5, MAG's paths): thin handlers over [`ControlPlane`].
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

use std::sync::Arc;

use std::convert::Infallible;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use mag_common::http_edge::{Authorized, Edge, EdgeError, read_body, read_json};

use crate::control::{ControlPlane, ToolTest};
use crate::error::{Error, Result};
use crate::generation::install::ToolFiles;
use crate::generation::{GenerateRequest, Generator};
use crate::store::ListQuery;
use mag_common::wire::Servers;

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

/// The API's routes over `state`, behind `edge`'s checks (its `open_path` is `GET
/// /health`, which stays open with a token so supervisors can check liveness).
pub fn router(state: AppState, edge: Edge) -> Router {
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
        .route("/api/mcp/generate", post(generate))
        .route("/api/mcp/conversations", get(conversations))
        .route(
            "/api/mcp/conversations/{id}",
            get(conversation).delete(delete_conversation),
        )
        .route("/api/mcp/register-tool", post(register_tool))
        .route("/api/mcp/ai-tools", get(ai_tools))
        .with_state(Arc::new(state));
    mag_common::http_edge::finish(routes, edge)
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

/// The whole health to a caller with the token (or when none is set); liveness only
/// (states, no error texts, no stderr) to one without it.
async fn health(State(state): St, Extension(authorized): Extension<Authorized>) -> Json<Value> {
    let mut health = state.plane.health(authorized.0);
    let store = state.generator.store_health().await;
    health["store"] = if authorized.0 {
        store
    } else {
        json!({"state": store["state"], "backend": store["backend"]})
    };
    Json(health)
}

async fn get_config(State(state): St) -> AppResult {
    state.plane.config().await.map(Json)
}

/// MAG's `{"config": {"mcpServers": {...}}, "version": REV}`; the config is read from the
/// text itself, so a key given twice (last-wins in a JSON object) is refused.
#[derive(Deserialize)]
struct SetConfigBody<'a> {
    #[serde(borrow)]
    config: Option<&'a RawValue>,
    #[serde(default)]
    version: Option<Value>,
}

async fn set_config(State(state): St, request: Request) -> AppResult {
    let bytes = read_body(request, &state, state.body_limit).await?;
    if bytes.trim_ascii_start().first() != Some(&b'{')
        && serde_json::from_slice::<Value>(&bytes).is_ok()
    {
        return Err(Error::invalid_body("the body must be a JSON object"));
    }
    let body: SetConfigBody = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::invalid_body(e.to_string()),
        _ => Error::Edge(EdgeError::MalformedJson(e.to_string())),
    })?;
    let Some(config) = body.config else {
        return Err(Error::invalid_body(
            "expected {\"config\": {\"mcpServers\": {...}}, \"version\": VERSION} (VERSION \
             from GET /api/mcp/config)",
        ));
    };
    state
        .plane
        .set_config(config.get(), body.version)
        .await
        .map(Json)
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

async fn status(State(state): St) -> Result<Json<Servers>> {
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
        state
            .plane
            .connect(&name)
            .await
            .map(|answer| Json(json!(answer)))
    }
}

async fn disconnect(
    State(state): St,
    path: std::result::Result<Path<String>, PathRejection>,
) -> AppResult {
    state
        .plane
        .disconnect(&name(path)?)
        .await
        .map(|answer| Json(json!(answer)))
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

/// One generation round: SSE when `stream` (the default), else the conversation after the
/// round (for the end instruction, the install's result). Errors found before the round
/// starts (bad request, unknown model, store down) are plain HTTP errors; later ones end
/// the stream with an error event, also a panic of the round's task.
async fn generate(State(state): St, Body(request): Body<GenerateRequest>) -> Response {
    let stream = request.stream;
    let prepared = match state.generator.prepare(request).await {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(),
    };
    let id = prepared.conversation_id().to_owned();
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    // The round runs on its own task: a caller that goes away does not cut it short.
    let round = tokio::spawn(async move {
        let on_panic = events.clone();
        let outcome = std::panic::AssertUnwindSafe(prepared.run(events))
            .catch_unwind()
            .await;
        outcome.unwrap_or_else(|_| {
            let message =
                "the generation round failed unexpectedly (mag-server's stderr has the panic)";
            let _ = on_panic.send(crate::generation::error_event(message, "api_error"));
            Err(Error::Io {
                context: message.into(),
                source: std::io::Error::other("the round's task panicked"),
            })
        })
    });
    if !stream {
        return match round.await {
            Ok(Ok(answer)) => Json(answer).into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(e) => Error::Io {
                context: "the generation task failed".into(),
                source: std::io::Error::other(e),
            }
            .into_response(),
        };
    }
    let body = futures::stream::unfold(received, |mut received| async move {
        let payload = received.recv().await?;
        Some((Event::default().data(payload.to_string()), received))
    })
    .chain(futures::stream::once(async {
        Event::default().data("[DONE]")
    }))
    .map(Ok::<_, Infallible>);
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-conversation-id", value);
    }
    response
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    skip: Option<u64>,
}

/// MAG's cap on a conversation list.
const LIST_LIMIT: i64 = 200;

async fn conversations(
    State(state): St,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> AppResult {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(LIST_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(Error::BadRequest("limit must be 1 to 1000".into()));
    }
    let skip = params.skip.unwrap_or(0);
    if i64::try_from(skip).is_err() {
        return Err(Error::BadRequest("skip is too large".into()));
    }
    let query = ListQuery {
        user_id: params.user_id.filter(|u| !u.is_empty()),
        limit,
        skip,
    };
    state.generator.conversations(&query).await.map(Json)
}

fn conversation_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

async fn conversation(
    State(state): St,
    path: std::result::Result<Path<String>, PathRejection>,
) -> AppResult {
    let id = conversation_id(path)?;
    state.generator.conversation(&id).await.map(Json)
}

async fn delete_conversation(
    State(state): St,
    path: std::result::Result<Path<String>, PathRejection>,
) -> AppResult {
    let id = conversation_id(path)?;
    state.generator.delete_conversation(&id).await.map(Json)
}

/// MAG's `MCPToolRegistration`.
#[derive(Deserialize)]
struct RegisterToolBody {
    folder_name: String,
    script_files: Map<String, Value>,
    #[serde(default)]
    readme: String,
    #[serde(default)]
    dependencies: String,
}

async fn register_tool(State(state): St, Body(body): Body<RegisterToolBody>) -> AppResult {
    let files = ToolFiles {
        folder_name: body.folder_name,
        script_files: body.script_files,
        readme: body.readme,
        dependencies: body.dependencies,
    };
    // On its own task: a caller that goes away does not cut an install short.
    let generator = state.generator.clone();
    match tokio::spawn(async move { generator.install(files, None).await }).await {
        Ok(answer) => answer.map(Json),
        Err(e) => Err(Error::Io {
            context: "the install task failed".into(),
            source: std::io::Error::other(e),
        }),
    }
}

async fn ai_tools(State(state): St) -> AppResult {
    let names = state.generator.toolsmith().list()?;
    Ok(Json(Value::from(names)))
}
