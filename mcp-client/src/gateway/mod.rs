//! The MCP gateway (SPEC §8): mcp-client serves what it supervises as MCP over streamable
//! HTTP (MCP spec 2025-11-25, Transports § Streamable HTTP, negotiating down to 2025-03-26),
//! so that any MCP client reaches every server through one URL, with the daemon's
//! reconnects, process hygiene and hot reload behind it.
//!
//! - `/mcp`: the aggregate of every connected server; tools and prompts under public names
//!   ([`names`]), resources routed by URI.
//! - `/servers/NAME/mcp`, or `/mcp` with the header `x-mcp-server-id: NAME`: one server,
//!   transparent (its own names, capabilities and instructions).
//!
//! Built on rmcp's server side: a [`StreamableHttpService`] per scope (the aggregate, and one
//! per server, made on first use), a `session::Session` per client session. The REST API
//! and the gateway are two faces over the same [`Supervisor`]; the HTTP edge in front of both
//! checks `Host`, `Origin`, `Content-Type` and the bearer token.

pub mod names;
mod notify;
pub mod pages;
mod session;
mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::error::Error;
use crate::supervisor::Supervisor;
use mag_common::config::ServerEntry;
use names::Catalog;
use rmcp::model::Tool;
use session::{Scope, Session};

/// The header that picks one server on `/mcp`.
pub const SERVER_HEADER: &str = "x-mcp-server-id";

/// How the gateway serves.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Between server and name in the aggregate's public names (`__`, or `.`).
    pub separator: String,
    /// A client session with no request for this long ends (`--session-idle`, default
    /// 30 min).
    pub session_idle: Duration,
    /// The largest request body, in bytes (the API's body limit).
    pub body_limit: usize,
    /// At most this many client sessions at once, over all scopes (`--max-sessions`); an
    /// `initialize` beyond it is answered 503 `too_many_sessions`.
    pub max_sessions: usize,
}

/// What every session of the gateway shares.
pub(crate) struct Shared {
    supervisor: Supervisor,
    separator: String,
    /// The sessions' log levels and subscriptions, as asked of each server.
    upstream: Arc<upstream::Upstream>,
    /// Ends with the gateway (shutdown).
    stop: CancellationToken,
    /// The aggregate's tools under public names, as last made.
    aggregate_tools: Mutex<Option<Arc<AggregateTools>>>,
}

impl Shared {
    /// The aggregate's tools under their public names: the last ones made while every live
    /// server's tool list and filters are unchanged, else made anew.
    fn aggregate_tools(&self) -> Arc<AggregateTools> {
        let servers = self.supervisor.sessions();
        let mut cached = self
            .aggregate_tools
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(made) = cached.as_ref().filter(|made| made.made_from(&servers)) {
            return made.clone();
        }
        let made = Arc::new(AggregateTools::new(&servers, &self.separator));
        *cached = Some(made.clone());
        made
    }
}

/// The aggregate's tools under their public names ([`names`]), with what they were made
/// from, so that a call on `/mcp` does not name every tool again (measured: ~200 µs a call
/// with 320 tools over 20 servers).
struct AggregateTools {
    /// Per live server, in name order.
    from: Vec<MadeFrom>,
    /// Public name → (server, tool).
    catalog: Catalog,
    /// The exposed tools, under their public names, in listing order.
    tools: Vec<Tool>,
}

/// One server's part in [`AggregateTools`].
struct MadeFrom {
    server: String,
    /// Its tool list (the same `Arc` while unchanged).
    tools: Arc<Vec<Tool>>,
    /// Its `allowedTools` and `disabledTools`.
    filters: (Option<Vec<String>>, Vec<String>),
}

impl MadeFrom {
    fn is(&self, (server, connection, entry): &(String, Arc<Connection>, ServerEntry)) -> bool {
        self.server == *server
            && Arc::ptr_eq(&self.tools, &connection.tools())
            && self.filters.0 == entry.allowed_tools
            && self.filters.1 == entry.disabled_tools
    }
}

impl AggregateTools {
    fn new(servers: &[(String, Arc<Connection>, ServerEntry)], separator: &str) -> Self {
        let mut from = Vec::with_capacity(servers.len());
        let mut listed = Vec::new();
        for (server, connection, entry) in servers {
            let tools = connection.tools();
            for tool in tools.iter().filter(|t| entry.exposes(&t.name)) {
                listed.push((server.as_str(), tool.clone()));
            }
            let filters = (entry.allowed_tools.clone(), entry.disabled_tools.clone());
            from.push(MadeFrom {
                server: server.clone(),
                tools,
                filters,
            });
        }
        let (catalog, names) = Catalog::build(
            listed
                .iter()
                .map(|(server, tool)| (*server, tool.name.as_ref())),
            separator,
        );
        let tools = listed
            .into_iter()
            .zip(names)
            .map(|((_, mut tool), name)| {
                tool.name = name.into();
                tool
            })
            .collect();
        Self {
            from,
            catalog,
            tools,
        }
    }

    /// Whether `servers` are the servers, tool lists and filters these were made from.
    fn made_from(&self, servers: &[(String, Arc<Connection>, ServerEntry)]) -> bool {
        self.from.len() == servers.len()
            && self
                .from
                .iter()
                .zip(servers)
                .all(|(made, server)| made.is(server))
    }
}

type Service = StreamableHttpService<Session, LocalSessionManager>;

/// The gateway: the services of its scopes. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    options: GatewayOptions,
    stop: CancellationToken,
    aggregate: Service,
    single: Arc<Mutex<HashMap<String, Service>>>,
    /// The session managers of every scope, to count the sessions.
    managers: Arc<Mutex<Vec<Arc<LocalSessionManager>>>>,
}

impl Gateway {
    /// A gateway over `supervisor`; `stop` ends every session (shutdown).
    pub fn new(supervisor: Supervisor, options: GatewayOptions, stop: CancellationToken) -> Self {
        let shared = Arc::new(Shared {
            supervisor,
            separator: options.separator.clone(),
            upstream: Arc::default(),
            stop: stop.clone(),
            aggregate_tools: Mutex::default(),
        });
        upstream::spawn_watch(
            shared.supervisor.clone(),
            shared.upstream.clone(),
            stop.clone(),
        );
        let managers: Arc<Mutex<Vec<Arc<LocalSessionManager>>>> = Arc::default();
        let aggregate = service(&shared, &options, &stop, Scope::All, &managers);
        Self {
            shared,
            options,
            stop,
            aggregate,
            single: Arc::default(),
            managers,
        }
    }

    /// Refuses a new session (`new_session`: a request without `Mcp-Session-Id`) when the
    /// gateway has [`GatewayOptions::max_sessions`] of them.
    async fn admit(&self, new_session: bool) -> Result<(), Error> {
        if !new_session {
            return Ok(());
        }
        let managers = self
            .managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut open = 0;
        for manager in managers {
            open += manager.sessions.read().await.len();
        }
        if open >= self.options.max_sessions {
            return Err(Error::TooManySessions(open));
        }
        Ok(())
    }

    /// The service of one server, made on first use.
    fn single(&self, server: &str) -> Result<Service, Error> {
        if !self.shared.supervisor.knows(server) {
            return Err(Error::UnknownServer(server.to_string()));
        }
        let mut single = self.single.lock().unwrap_or_else(|p| p.into_inner());
        let made = single.entry(server.to_string()).or_insert_with(|| {
            service(
                &self.shared,
                &self.options,
                &self.stop,
                Scope::One(server.to_string()),
                &self.managers,
            )
        });
        Ok(made.clone())
    }

    /// The routes: `/mcp` and `/servers/{name}/mcp`, every method (POST, GET for the
    /// server's stream, DELETE to end a session).
    pub fn routes(self) -> Router {
        Router::new()
            .route("/mcp", any(aggregate))
            .route("/servers/{name}/mcp", any(one))
            .with_state(self)
    }
}

fn service(
    shared: &Arc<Shared>,
    options: &GatewayOptions,
    stop: &CancellationToken,
    scope: Scope,
    managers: &Mutex<Vec<Arc<LocalSessionManager>>>,
) -> Service {
    let mut sessions = LocalSessionManager::default();
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(options.session_idle);
    sessions.session_config = session_config;
    // The HTTP edge in front checks Host and Origin (with the daemon's own settings).
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(options.body_limit)
        .with_cancellation_token(stop.child_token());
    let shared = shared.clone();
    let sessions = Arc::new(sessions);
    managers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(sessions.clone());
    StreamableHttpService::new(
        move || Ok(Session::new(shared.clone(), scope.clone())),
        sessions,
        config,
    )
}

async fn aggregate(State(gateway): State<Gateway>, request: Request) -> Response {
    let server = request
        .headers()
        .get(SERVER_HEADER)
        .map(|v| v.to_str().map(str::to_string));
    let new_session = !request.headers().contains_key("mcp-session-id");
    if let Err(e) = gateway.admit(new_session).await {
        return e.into_response();
    }
    let service = match server {
        None => gateway.aggregate.clone(),
        Some(Ok(server)) => match gateway.single(&server) {
            Ok(service) => service,
            Err(e) => return e.into_response(),
        },
        Some(Err(_)) => {
            return Error::invalid_body(format!("the {SERVER_HEADER} header is not text"))
                .into_response();
        }
    };
    service
        .handle(request)
        .await
        .map(axum::body::Body::new)
        .into_response()
}

async fn one(
    State(gateway): State<Gateway>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    let new_session = !request.headers().contains_key("mcp-session-id");
    if let Err(e) = gateway.admit(new_session).await {
        return e.into_response();
    }
    match gateway.single(&server) {
        Ok(service) => service
            .handle(request)
            .await
            .map(axum::body::Body::new)
            .into_response(),
        Err(e) => e.into_response(),
    }
}
