//! The HTTP API (SPEC §4): MAG's endpoint names and shapes, thin handlers over
//! [`Supervisor`]. Every error is `{"detail": TEXT, "code": SNAKE_ID}` with the status of
//! [`Error::status`]; bad bodies get 400 (not JSON), 422 (wrong shape) or 413 (too large).

use axum::extract::{FromRequest, Request, State};

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::supervisor::{CallOutcome, Supervisor};
use mag_common::config::{ConfigError, McpConfig, revision};
use mag_common::http_edge::{Edge, EdgeError, read_body, read_json};
use mag_common::secrets::redact;
use mag_common::wire::{
    ConnectAnswer, DisconnectAnswer, DisconnectStatus, ErrorBody, LoadConfigAnswer, RootAnswer,
    SERVICE, ServerName, Servers, ShutdownAnswer, ToolCall, ToolCallAnswer, ToolView,
};

/// Default limit on a request body, in bytes (4 MiB, SPEC §6).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The daemon's core.
    pub supervisor: Supervisor,
    /// Cancelled by `POST /shutdown`.
    pub shutdown: CancellationToken,
    /// The body limit, in bytes.
    pub body_limit: usize,
}

/// The API's routes over `state` and the MCP gateway's (`/mcp`, `/servers/{name}/mcp`), all
/// behind `edge`'s checks (its `open_paths` are `GET /`, which stays open with a token so
/// supervisors can check liveness, and `GET /oauth/callback`, where a browser comes back
/// from an authorization server: its one-time `state` guards it).
pub fn router(state: AppState, edge: Edge, gateway: crate::gateway::Gateway) -> Router {
    let routes = Router::new()
        .route("/", get(root))
        .route("/load_config", post(load_config))
        .route("/servers", get(servers))
        .route("/connect_server", post(connect_server))
        .route("/disconnect_server", post(disconnect_server))
        .route("/tools", get(tools))
        .route("/tool_call", post(tool_call))
        .route("/shutdown", post(shutdown))
        .route("/metrics", get(metrics))
        .route("/oauth/callback", get(oauth_callback))
        .with_state(state)
        .merge(mag_common::http_edge::body_timeout(gateway.routes()));
    mag_common::http_edge::finish(routes, edge)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let detail = redact(&self.to_string());
        let body = ErrorBody {
            detail,
            code: self.code().to_string(),
            kind: self.kind().map(str::to_string),
            authorization_url: self.authorization_url().map(str::to_string),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// A JSON request body: read within the body limit, then parsed into `T`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Error> {
        read_json(request, state.body_limit)
            .await
            .map(Body)
            .map_err(Error::from)
    }
}

async fn root(State(state): State<AppState>) -> Json<RootAnswer> {
    let supervisor = &state.supervisor;
    Json(RootAnswer {
        status: "running".into(),
        servers_connected: supervisor.connected_count(),
        service: SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        config: supervisor.config_status(),
    })
}

/// `{"config": {"mcpServers": {...}}}`, read from the text itself so that a key given twice
/// (last-wins in a JSON object) is refused, as in a file.
#[derive(Deserialize)]
struct LoadConfig<'a> {
    #[serde(borrow)]
    config: &'a serde_json::value::RawValue,
}

async fn load_config(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<LoadConfigAnswer>, Error> {
    let bytes = read_body(request, state.body_limit).await?;
    if bytes.trim_ascii_start().first() != Some(&b'{')
        && serde_json::from_slice::<Value>(&bytes).is_ok()
    {
        return Err(Error::invalid_body("the body must be a JSON object"));
    }
    let body: LoadConfig = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::invalid_body(e.to_string()),
        _ => Error::Edge(EdgeError::MalformedJson(e.to_string())),
    })?;
    let text = body.config.get();
    let revision = revision(text.as_bytes());
    let config = McpConfig::parse(text).map_err(|e| {
        // Positions are within the config object, not the body: say only what is wrong.
        Error::Config(ConfigError::whole(e.message))
    })?;
    let report = state.supervisor.apply(config, revision).await;
    Ok(Json(LoadConfigAnswer {
        status: "accepted".into(),
        report,
    }))
}

async fn servers(State(state): State<AppState>) -> Json<Servers> {
    let mut servers = state.supervisor.servers();
    for view in servers.values_mut() {
        view.error = view.error.as_deref().map(redact);
    }
    Json(servers)
}

async fn connect_server(
    State(state): State<AppState>,
    Body(body): Body<ServerName>,
) -> Result<Json<ConnectAnswer>, Error> {
    let tools = state.supervisor.connect(&body.server_name).await?;
    Ok(Json(ConnectAnswer {
        status: "connected".into(),
        server: body.server_name,
        tools,
    }))
}

async fn disconnect_server(
    State(state): State<AppState>,
    Body(body): Body<ServerName>,
) -> Result<Json<DisconnectAnswer>, Error> {
    let was_connected = state.supervisor.disconnect(&body.server_name).await?;
    let (status, message) = if was_connected {
        (
            DisconnectStatus::Disconnected,
            "the server was disconnected and its processes ended",
        )
    } else {
        (
            DisconnectStatus::NotConnected,
            "the server was not connected",
        )
    };
    Ok(Json(DisconnectAnswer {
        status,
        server: body.server_name,
        message: message.into(),
    }))
}

async fn tools(State(state): State<AppState>) -> Json<Vec<ToolView>> {
    Json(state.supervisor.tools())
}

async fn tool_call(
    State(state): State<AppState>,
    Body(body): Body<ToolCall>,
) -> Result<Json<ToolCallAnswer>, Error> {
    let arguments = match body.params {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(arguments)) => arguments,
        Some(_) => return Err(Error::invalid_body("params must be a JSON object")),
    };
    let outcome = if state.supervisor.cancels_on_disconnect(&body.server_name) {
        state
            .supervisor
            .call_tool(&body.server_name, &body.tool_name, arguments)
            .await?
    } else {
        detached_call(
            &state.supervisor,
            &body.server_name,
            &body.tool_name,
            arguments,
        )
        .await?
    };
    let mut answer = ToolCallAnswer {
        tool_name: body.tool_name,
        server_name: body.server_name,
        content: Vec::new(),
        structured_content: None,
        error: None,
        code: None,
    };
    match outcome {
        Ok(result) => {
            if result.is_error.unwrap_or(false) {
                answer.error = Some(tool_error_text(&result));
                answer.code = Some("tool_error".into());
            }
            answer.content = result
                .content
                .iter()
                .map(|block| serde_json::to_value(block).unwrap_or(Value::Null))
                .collect();
            answer.structured_content = result.structured_content;
        }
        Err(e) => {
            answer.error = Some(redact(&e.to_string()));
            answer.code = Some(e.code().into());
        }
    }
    Ok(Json(answer))
}

/// Runs a tool call so that a REST caller that goes away (a client timeout, a closed browser
/// tab) does not cancel it on the server: a disconnect is not a cancellation request, and
/// servers on older SDKs (Python `mcp` 1.9) crash on one. The call runs in the handler (no
/// task hop on the common path); only when the handler is dropped before the end does the
/// call move to a task of its own, where it runs to its end or its timeout and its result,
/// which nobody waits for, is logged and dropped.
async fn detached_call(
    supervisor: &Supervisor,
    server: &str,
    tool: &str,
    arguments: rmcp::model::JsonObject,
) -> Result<CallOutcome, Error> {
    let (owner, server, tool) = (supervisor.clone(), server.to_string(), tool.to_string());
    let call = Box::pin(async move {
        let outcome = owner.call_tool(&server, &tool, arguments).await;
        (server, tool, outcome)
    });
    let (_, _, outcome) = DetachOnDrop {
        call: Some(call),
        tasks: supervisor.tasks().clone(),
    }
    .await;
    outcome
}

type DetachedCall = std::pin::Pin<
    Box<dyn Future<Output = (String, String, Result<CallOutcome, Error>)> + Send + 'static>,
>;

/// A tool call that, when dropped unfinished, finishes on a task of `tasks` (see
/// [`detached_call`]).
struct DetachOnDrop {
    call: Option<DetachedCall>,
    tasks: tokio_util::task::TaskTracker,
}

impl Future for DetachOnDrop {
    type Output = (String, String, Result<CallOutcome, Error>);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(call) = self.call.as_mut() else {
            return std::task::Poll::Pending;
        };
        let done = std::task::ready!(call.as_mut().poll(cx));
        self.call = None;
        std::task::Poll::Ready(done)
    }
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        // Outside a runtime (it is being torn down) the call just ends with it.
        if let (Some(call), Ok(runtime)) = (self.call.take(), tokio::runtime::Handle::try_current())
        {
            self.tasks.spawn_on(
                async move {
                    let (server, tool, _) = call.await;
                    tracing::info!(
                        server,
                        tool,
                        "the caller went away before the tool call ended; its result was dropped \
                     (set \"cancelOnDisconnect\": true on the server to cancel such calls)"
                    );
                },
                &runtime,
            );
        }
    }
}

/// The text of a result with `isError`, for the `error` field (never empty).
fn tool_error_text(result: &rmcp::model::CallToolResult) -> String {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect();
    if text.is_empty() {
        "the tool reported an error without a message".into()
    } else {
        text.join("\n")
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.supervisor.render_metrics();
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn shutdown(State(state): State<AppState>) -> Json<ShutdownAnswer> {
    tracing::info!("shutdown requested over HTTP");
    state.shutdown.cancel();
    Json(ShutdownAnswer {
        status: "shutdown_initiated".into(),
    })
}

/// `GET /oauth/callback?code&state` (SPEC §10): where an authorization server sends the
/// user back. Exchanges the code, connects the server, and answers a short page for the
/// browser (200, or the error's status with its sentence). Not cached, no referrer: the
/// URL held a code.
async fn oauth_callback(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<crate::oauth::CallbackQuery>,
) -> Response {
    let (status, text) = match state.supervisor.oauth_callback(query).await {
        Ok((server, tools)) => (
            axum::http::StatusCode::OK,
            format!(
                "mcp-client: server {server:?} is authorized and connected ({} tools). You can \
                 close this page.",
                tools.len()
            ),
        ),
        Err(e) => (
            e.status(),
            format!("mcp-client: {}", redact(&e.to_string())),
        ),
    };
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>mcp-client</title><p>{escaped}</p>\n"
    );
    (
        status,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
        ],
        page,
    )
        .into_response()
}
