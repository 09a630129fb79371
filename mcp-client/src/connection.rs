//! One live MCP session with one server: the handshake, the tool list, tool calls, and
//! noticing the end of the session.
//!
//! Calls are pipelined over the one session (JSON-RPC ids): any number may be in flight,
//! capped by the entry's `maxConcurrency` when set. Each is bounded by the entry's `timeout`;
//! a call that runs out is abandoned, which makes rmcp send `notifications/cancelled`
//! (MCP spec 2025-11-25, Utilities § Cancellation). When the session ends, because the
//! process exited, the stream closed or the daemon closed it, every call in flight fails at
//! once with the reason.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use rmcp::RoleClient;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest, ErrorData, JsonObject,
    PingRequest, ProtocolVersion, ServerPeerInfo, ServerResult, Tool,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, Peer, PeerRequestOptions, RunningService,
    RunningServiceCancellationToken,
};
use rmcp::transport::Transport;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{
    ConnectError, HandshakeStage, describe_service_error, initialize_answer, initialize_failure,
    request_failure,
};
use crate::ledger::Ledger;
use crate::logs::ServerLog;
use crate::oauth::{Challenge, OAuth};
use crate::schema::ArgumentSchemas;
use crate::transport::stdio::{ProcessGroup, STOP_GRACE};
use crate::transport::{self, Opened};
use mag_common::config::ServerEntry;
use mag_common::process_group::describe_exit;

/// The protocol version mcp-client asks for in `initialize`: the newest revision that has an
/// `initialize` handshake (MCP spec 2025-11-25, Lifecycle § Version Negotiation).
pub const REQUESTED_PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The versions a server may answer `initialize` with; any other ends the connection.
pub const SUPPORTED_PROTOCOL_VERSIONS: [ProtocolVersion; 4] = [
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
];

/// How a tool call failed after it was sent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the server's `timeout`; `notifications/cancelled` was sent.
    #[error("tool call timed out after {0:?}; the server was sent notifications/cancelled")]
    Timeout(Duration),
    /// The session ended while the call was in flight.
    #[error("{0}")]
    Closed(String),
    /// The server answered a forwarded request with a JSON-RPC error (kept whole for the
    /// gateway's client).
    #[error("{}", .0.message)]
    Rpc(ErrorData),
    /// The gateway client that sent the request cancelled it or went away.
    #[error("the client cancelled the request")]
    Cancelled,
    /// The server answered with a JSON-RPC error.
    #[error("{0}")]
    Server(String),
    /// The server refused the request with a 401 or 403 (SPEC §10): the supervisor starts
    /// the authorization it asks for.
    #[error("the server refused the request; it needs authorization ({})", .0.header())]
    Challenged(Challenge),
}

impl CallError {
    /// The snake_case code reported next to the error text.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Closed(_) => "server_gone",
            Self::Cancelled => "cancelled",
            Self::Server(_) | Self::Rpc(_) => "server_error",
            Self::Challenged(_) => "authorization_required",
        }
    }
}

/// Why [`Connection::check_arguments`] refused a call before sending it.
#[derive(Debug)]
pub enum ArgumentError {
    /// The server has no tool of that name.
    UnknownTool,
    /// The arguments do not match the tool's `inputSchema`; the failures, each naming its
    /// field.
    Invalid(String),
}

/// One tools list and the argument schemas compiled from it (replaced together).
#[derive(Clone)]
struct ToolList {
    tools: Arc<Vec<Tool>>,
    schemas: Arc<ArgumentSchemas>,
}

impl ToolList {
    fn new(tools: Vec<Tool>) -> Self {
        Self {
            tools: Arc::new(tools),
            schemas: Default::default(),
        }
    }
}

/// What the daemon needs to open connections: where server logs go and the shared HTTP client.
#[derive(Clone)]
pub struct ConnectContext {
    /// The log dir; stdio servers log to `LOG_DIR/servers/NAME.stderr.log`.
    pub log_dir: std::path::PathBuf,
    /// The HTTP client for legacy SSE.
    pub http: reqwest::Client,
    /// The HTTP client for streamable HTTP (shared: it keeps no idle connections, and each
    /// server's headers go with each request).
    pub streamable_http: crate::transport::http::RepairingClient,
    /// Variables removed from stdio servers' environment (secrets of the daemon's own).
    pub scrub_env: Vec<String>,
    /// Variables the config's remote entries reference (their URLs' and headers' keys):
    /// removed from the environment of a stdio server that does not reference them itself.
    /// Grows with each config applied (a removed entry's may still be in a child's hands).
    pub remote_secrets: Arc<RwLock<std::collections::BTreeSet<String>>>,
    /// Where live process groups are recorded.
    pub ledger: Arc<Ledger>,
    /// How often a connected server is sent a `ping`; `None`: never.
    pub ping_interval: Option<Duration>,
    /// The supervisor's tracker: every long-lived task of a connection (its watcher, a stdio
    /// server's stderr reader and exit watcher, its log writer) is spawned on it, so
    /// shutdown can wait for them ([`crate::supervisor::Supervisor::shutdown`]).
    pub tasks: TaskTracker,
    /// Where each connection publishes what its server tells the daemon (for the gateway).
    pub events: tokio::sync::broadcast::Sender<ServerEvent>,
    /// OAuth to remote servers: authorized clients, authorizations waiting for a user.
    pub oauth: Arc<OAuth>,
}

/// A live session with one server. Cheap to share (`Arc`); [`Connection::close`] ends it.
pub struct Connection {
    /// The server's name in the config (for log lines).
    server: String,
    peer: Peer<RoleClient>,
    group: Option<ProcessGroup>,
    tools: RwLock<ToolList>,
    tools_changed: Arc<Notify>,
    closed: CancellationToken,
    close_reason: OnceLock<String>,
    stop: std::sync::Mutex<Option<RunningServiceCancellationToken>>,
    ended: CancellationToken,
    limit: Option<Semaphore>,
    timeout: Duration,
    ping_interval: Option<Duration>,
    protocol_version: ProtocolVersion,
    connected_since: SystemTime,
    relay: Arc<Relay>,
    /// The supervisor's tracker, for the short tasks a connection spawns.
    tasks: TaskTracker,
}

/// How long a stdio server's session end waits, once its stdout closed, for the process's
/// exit status to name the cause ("exited (SIGKILL)"). It comes within milliseconds; the
/// bound only matters on a starved machine, or for a server that closes stdout and lives on.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// The longest a health `ping` may take (or the server's `timeout`, if shorter).
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// Opens the transport, runs the `initialize` handshake and lists the tools (every page),
    /// all within the entry's `timeout`, unless `cancel` is cancelled first: then it gives up
    /// at once, ending a started process group (SIGTERM, SIGKILL after [`STOP_GRACE`]) before
    /// it returns.
    ///
    /// # Errors
    /// The cause, of its kind ([`ConnectError`]): the transport could not be opened, the
    /// process exited before answering (with its exit status and last stderr lines), the
    /// handshake failed or timed out, the server answered an unsupported protocol version;
    /// [`ConnectError::Cancelled`] (with a placeholder reason for the caller to replace)
    /// when `cancel` was cancelled.
    pub async fn open(
        name: &str,
        entry: &ServerEntry,
        ctx: &ConnectContext,
        cancel: &CancellationToken,
    ) -> Result<Arc<Self>, ConnectError> {
        let log = ServerLog::open(&ctx.log_dir, name, crate::logs::DEFAULT_LOG_CAP, &ctx.tasks)
            .await
            .map_err(|e| {
                ConnectError::Local(format!(
                    "cannot open the server log in {}: {e}",
                    ctx.log_dir.display()
                ))
            })?;
        let log = Arc::new(log);
        let timeout = entry.timeout;
        let tools_changed = Arc::new(Notify::new());
        let relay = Arc::new(Relay::new(name, ctx.events.clone()));
        let handler = Handler {
            tools_changed: tools_changed.clone(),
            relay: relay.clone(),
        };
        let opened = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(cancelled()),
            opened = tokio::time::timeout(timeout, transport::open(name, entry, log.clone(), ctx)) => opened,
        };
        let opened = opened.map_err(|_| ConnectError::HandshakeTimeout {
            stage: HandshakeStage::Transport,
            after: timeout,
            stderr: None,
        })??;
        // If this future is dropped before the end (its caller went away), the process group
        // dies with it.
        let mut abandoned = KillOnDrop(None);
        let (running, group) = match opened {
            Opened::Stdio(spawned) => {
                let group = spawned.group;
                abandoned.0 = Some(group.clone());
                let running = handshake(
                    handler,
                    Relayed::new(spawned.transport, relay.clone()),
                    timeout,
                    Some(&group),
                    &log,
                    cancel,
                )
                .await;
                if running.is_err() {
                    abandoned.0 = None;
                    group.stop(STOP_GRACE).await;
                }
                (running, Some(group))
            }
            Opened::Sse(t) => {
                let relayed = Relayed::new(t, relay.clone());
                (
                    handshake(handler, relayed, timeout, None, &log, cancel).await,
                    None,
                )
            }
            Opened::StreamableHttp(t) => {
                let relayed = Relayed::new(t, relay.clone());
                (
                    handshake(handler, relayed, timeout, None, &log, cancel).await,
                    None,
                )
            }
            Opened::AuthorizedHttp(t) => {
                let relayed = Relayed::new(t, relay.clone());
                (
                    handshake(handler, relayed, timeout, None, &log, cancel).await,
                    None,
                )
            }
        };
        let running = match running {
            Ok(running) => running,
            Err(refusal) => return Err(refusal.answer(name, entry, ctx).await),
        };
        let fail = |running: RunningService<RoleClient, Handler>,
                    group: Option<ProcessGroup>,
                    e| async move {
            running.cancellation_token().cancel();
            if let Some(group) = group {
                group.stop(STOP_GRACE).await;
            }
            Err(e)
        };
        let protocol_version = match running.peer().peer_info() {
            Some(info) => info.protocol_version.clone(),
            None => {
                let e = ConnectError::Protocol("the server sent no initialize result".into());
                return fail(running, abandoned.0.take(), e).await;
            }
        };
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&protocol_version) {
            let e = ConnectError::Protocol(format!(
                "the server answered protocolVersion {protocol_version}, which mcp-client does not \
                 support (it supports 2024-11-05 to 2025-11-25)"
            ));
            return fail(running, abandoned.0.take(), e).await;
        }
        let peer = running.peer().clone();
        let listed = tokio::select! {
            biased;
            _ = cancel.cancelled() => return fail(running, abandoned.0.take(), cancelled()).await,
            listed = tokio::time::timeout(timeout, list_all_tools(&peer, name)) => listed,
        };
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                let text = format!("tools/list failed: {}", describe_service_error(&e));
                let refusal = match Challenge::in_request(&e) {
                    Some(challenge) => Refusal::Challenged(challenge),
                    None => Refusal::Failed(request_failure(&e, text)),
                };
                let e = refusal.answer(name, entry, ctx).await;
                return fail(running, abandoned.0.take(), e).await;
            }
            Err(_) => {
                let e = ConnectError::HandshakeTimeout {
                    stage: HandshakeStage::ToolsList,
                    after: timeout,
                    stderr: None,
                };
                return fail(running, abandoned.0.take(), e).await;
            }
        };
        let connection = Arc::new(Self {
            server: name.to_string(),
            peer,
            group,
            tools: RwLock::new(ToolList::new(tools)),
            tools_changed,
            closed: CancellationToken::new(),
            close_reason: OnceLock::new(),
            stop: std::sync::Mutex::new(Some(running.cancellation_token())),
            ended: CancellationToken::new(),
            limit: entry.max_concurrency.map(Semaphore::new),
            timeout,
            ping_interval: ctx.ping_interval,
            protocol_version,
            connected_since: SystemTime::now(),
            relay,
            tasks: ctx.tasks.clone(),
        });
        abandoned.0 = None;
        ctx.tasks.spawn(watch(connection.clone(), running, log));
        Ok(connection)
    }

    /// The tools, as last listed.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tools
            .clone()
    }

    /// Checks `arguments` against the `inputSchema` of the tool named `tool` (listing the
    /// tools again first if it is not in the list) and gives them back.
    ///
    /// # Errors
    /// [`ArgumentError::UnknownTool`] when the server has no such tool even after listing
    /// again; [`ArgumentError::Invalid`] naming the fields that do not match.
    pub async fn check_arguments(
        &self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<JsonObject, ArgumentError> {
        let list = self.tools.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(found) = list.tools.iter().find(|t| t.name == tool) {
            return list
                .schemas
                .check(&self.server, found, arguments)
                .map_err(ArgumentError::Invalid);
        }
        if self.refresh_tools().await.is_err() {
            return Err(ArgumentError::UnknownTool);
        }
        let list = self.tools.read().unwrap_or_else(|p| p.into_inner()).clone();
        let found = list.tools.iter().find(|t| t.name == tool);
        let found = found.ok_or(ArgumentError::UnknownTool)?;
        list.schemas
            .check(&self.server, found, arguments)
            .map_err(ArgumentError::Invalid)
    }

    /// Lists the tools again (every page) and keeps the new list.
    ///
    /// # Errors
    /// The session ended, or the server did not answer within the timeout.
    pub async fn refresh_tools(&self) -> Result<Arc<Vec<Tool>>, CallError> {
        let tools = self
            .bounded(self.timeout, list_all_tools(&self.peer, &self.server))
            .await?;
        let tools = Arc::new(tools);
        *self.tools.write().unwrap_or_else(|p| p.into_inner()) = ToolList {
            tools: tools.clone(),
            schemas: Default::default(),
        };
        Ok(tools)
    }

    /// Calls a tool (`tools/call`) and waits for its result.
    ///
    /// # Errors
    /// [`CallError`]: timeout (cancelled), the session ended, or a JSON-RPC error. A tool
    /// that fails reports it in the result (`isError`), which is not an `Err` here.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<CallToolResult, CallError> {
        let _permit = match &self.limit {
            Some(limit) => Some(tokio::select! {
                permit = limit.acquire() => permit.map_err(|_| self.closed_error())?,
                _ = self.closed.cancelled() => return Err(self.closed_error()),
            }),
            None => None,
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        match self
            .bounded(self.timeout, self.peer.call_tool_once(params))
            .await?
        {
            CallToolResponse::Complete(result) => Ok(result),
            CallToolResponse::InputRequired(_) => Err(CallError::Server(
                "the server asked for more input (input_required), which mcp-client does not \
                 provide"
                    .into(),
            )),
            CallToolResponse::Task(_) => Err(CallError::Server(
                "the server answered with a task, which mcp-client does not poll".into(),
            )),
            _ => Err(CallError::Server(
                "the server sent an unknown kind of result".into(),
            )),
        }
    }

    /// Sends a `ping` (MCP spec 2025-11-25, Utilities § Ping) and waits for the answer, at
    /// most [`PING_TIMEOUT`] or the server's timeout if shorter.
    ///
    /// # Errors
    /// No answer in time, or the session ended.
    pub async fn ping(&self) -> Result<(), CallError> {
        let ping = ClientRequest::PingRequest(PingRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        let limit = self.timeout.min(PING_TIMEOUT);
        self.bounded(limit, self.peer.send_request(ping))
            .await
            .map(|_| ())
    }

    /// Sends a request of the daemon's own, not a client's (the gateway's `logging/setLevel`
    /// and `resources/subscribe` after a reconnect), and waits for the answer within the
    /// server's `timeout`.
    ///
    /// # Errors
    /// [`CallError`]: timeout, the session ended, or the server's JSON-RPC error
    /// ([`CallError::Rpc`], as the server sent it).
    pub async fn request(&self, request: ClientRequest) -> Result<ServerResult, CallError> {
        let answer = self
            .bounded(self.timeout, async {
                match self.peer.send_request(request).await {
                    Ok(result) => Ok(Ok(result)),
                    Err(rmcp::ServiceError::McpError(e)) => Ok(Err(e)),
                    Err(other) => Err(other),
                }
            })
            .await?;
        answer.map_err(CallError::Rpc)
    }

    /// What the server answered `initialize` with: its capabilities, identity and
    /// instructions (the gateway shows them as its own for this server).
    pub fn server_info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.peer.peer_info()
    }

    /// Sends one request of a gateway client to the server as it is (with the daemon's own
    /// request id and progress token) and waits for the answer, within the server's
    /// `timeout` and, for `tools/call`, its `maxConcurrency`. While it is in flight, the
    /// server's progress for it goes to `caller` with the caller's token, and its
    /// server-to-client requests may go to `caller` ([`Caller`]). When `cancel` fires (the
    /// client cancelled, or went away) or the timeout passes, the server is sent
    /// `notifications/cancelled` (MCP spec 2025-11-25, Utilities § Cancellation).
    ///
    /// # Errors
    /// [`CallError`]: timeout, cancelled, the session ended, or the server's JSON-RPC error.
    pub async fn forward(
        &self,
        request: ClientRequest,
        caller: &Caller,
        cancel: &CancellationToken,
    ) -> Result<ServerResult, CallError> {
        let _permit = match (&self.limit, &request) {
            (Some(limit), ClientRequest::CallToolRequest(_)) => Some(tokio::select! {
                permit = limit.acquire() => permit.map_err(|_| self.closed_error())?,
                _ = self.closed.cancelled() => return Err(self.closed_error()),
                _ = cancel.cancelled() => return Err(CallError::Cancelled),
            }),
            _ => None,
        };
        let mut in_flight = self.relay.register(caller);
        let handle = self
            .bounded(
                self.timeout,
                self.peer
                    .send_request_with_option(request, PeerRequestOptions::no_options()),
            )
            .await?;
        in_flight.sent(handle.id.clone());
        in_flight.track_progress(caller, handle.progress_token.clone());
        // Until an outcome is known, dropping this future (the client's session ended, or
        // the client went away) cancels the request on the server.
        let mut unanswered = CancelOnDrop {
            peer: Some(self.peer.clone()),
            id: handle.id.clone(),
            tasks: self.tasks.clone(),
        };
        // The server's own error goes back as it sent it (code, message, data).
        let answer = self.bounded(self.timeout, async {
            match handle.await_response().await {
                Ok(result) => Ok(Ok(result)),
                Err(rmcp::ServiceError::McpError(e)) => Ok(Err(e)),
                Err(other) => Err(other),
            }
        });
        let outcome = tokio::select! {
            answer = answer => match answer {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(rpc)) => Err(CallError::Rpc(rpc)),
                Err(e) => Err(e),
            },
            _ = cancel.cancelled() => Err(CallError::Cancelled),
        };
        let peer = unanswered.peer.take();
        if let (Some(peer), Err(CallError::Timeout(_) | CallError::Cancelled)) = (peer, &outcome) {
            let reason = match &outcome {
                Err(CallError::Timeout(_)) => "mcp-client's timeout for the server passed",
                _ => "the client cancelled the request",
            };
            let _ = peer
                .send_notification(cancelled_notification(unanswered.id.clone(), reason))
                .await;
        }
        outcome
    }

    /// Runs one request future within `limit`, failing at once if the session ends.
    async fn bounded<T>(
        &self,
        limit: Duration,
        request: impl Future<Output = Result<T, rmcp::ServiceError>>,
    ) -> Result<T, CallError> {
        tokio::select! {
            result = tokio::time::timeout(limit, request) => match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(self.request_error(e).await),
                Err(_) => Err(CallError::Timeout(limit)),
            },
            _ = self.closed.cancelled() => Err(self.closed_error()),
        }
    }

    /// What a request's failure means: a 401 or 403 fails this request only (the session
    /// stays, SPEC §10); a transport that closed or failed ends the session.
    async fn request_error(&self, e: rmcp::ServiceError) -> CallError {
        if let Some(challenge) = Challenge::in_request(&e) {
            return CallError::Challenged(challenge);
        }
        match e {
            rmcp::ServiceError::McpError(e) => CallError::Server(e.message.to_string()),
            rmcp::ServiceError::TransportClosed => {
                // A process that exited is reported by the watcher, with its exit status:
                // give it a moment (longer than the watcher waits for that status). A remote
                // server has no watcher: over now.
                if self.group.is_some() {
                    let _ = tokio::time::timeout(EXIT_STATUS_WAIT * 3 / 2, self.closed.cancelled())
                        .await;
                }
                self.end("the connection to the server closed");
                self.closed_error()
            }
            rmcp::ServiceError::TransportSend(_) => {
                self.end(&format!(
                    "lost the connection: {}",
                    describe_service_error(&e)
                ));
                self.closed_error()
            }
            e => CallError::Server(describe_service_error(&e)),
        }
    }

    /// Marks the session over (calls in flight fail with `reason`, unless a reason was
    /// already recorded) and stops the rmcp service; [`Self::close`] still ends the process.
    fn end(&self, reason: &str) {
        let _ = self.close_reason.set(reason.to_string());
        self.closed.cancel();
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop.cancel();
        }
    }

    fn closed_error(&self) -> CallError {
        CallError::Closed(
            self.close_reason
                .get()
                .cloned()
                .unwrap_or_else(|| "the connection to the server closed".into()),
        )
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Waits until the session has ended; returns why.
    pub async fn closed(&self) -> String {
        self.closed.cancelled().await;
        self.close_reason.get().cloned().unwrap_or_default()
    }

    /// The stdio server's pid (the leader of its process group); `None` for remote servers.
    pub fn pid(&self) -> Option<u32> {
        self.group.as_ref().map(ProcessGroup::pid)
    }

    /// The protocol version the server answered `initialize` with.
    pub fn protocol_version(&self) -> &ProtocolVersion {
        &self.protocol_version
    }

    /// When the handshake completed.
    pub fn connected_since(&self) -> SystemTime {
        self.connected_since
    }

    /// Ends the session: closes the transport, ends the process group (SIGTERM, SIGKILL after
    /// the grace period) and waits until both are done. Calls in flight fail with `reason`.
    pub async fn close(&self, reason: &str) {
        self.end(reason);
        if let Some(group) = &self.group {
            group.stop(STOP_GRACE).await;
        }
        // The transport's own close is bounded by rmcp; this only guards against a stuck one.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ended.cancelled()).await;
    }
}

/// What a cancelled connect returns; the supervisor, which cancelled it, gives the reason.
fn cancelled() -> ConnectError {
    ConnectError::Cancelled("the connect was cancelled".into())
}

/// Kills a process group when dropped while it holds one (see [`ProcessGroup::kill_now`]).
struct KillOnDrop(Option<ProcessGroup>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.kill_now();
        }
    }
}

async fn handshake<T>(
    handler: Handler,
    transport: T,
    timeout: Duration,
    group: Option<&ProcessGroup>,
    log: &ServerLog,
    cancel: &CancellationToken,
) -> Result<RunningService<RoleClient, Handler>, Refusal>
where
    T: Transport<RoleClient> + 'static,
{
    let serve = tokio::time::timeout(
        timeout,
        handler.serve_with_lifecycle(transport, ClientLifecycleMode::Initialize),
    );
    tokio::pin!(serve);
    let exited = async {
        match group {
            Some(group) => group.exited().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(cancelled().into()),
        result = &mut serve => result,
        Some(status) = exited => {
            // A server that refuses and exits at once may have its answer still in the
            // pipe: let the handshake read it, and report it if it is one.
            match tokio::time::timeout(EXIT_ANSWER_WAIT, &mut serve).await {
                Ok(Ok(Err(e))) if initialize_answer(&e).is_some() => Ok(Err(e)),
                _ => return Err(exit_message(status, log).await.into()),
            }
        }
    };
    if let Ok(Err(e)) = &result
        && let Some(challenge) = Challenge::in_initialize(e)
    {
        return Err(Refusal::Challenged(challenge));
    }
    match result {
        Ok(Ok(running)) => Ok(running),
        Ok(Err(e)) => {
            // A process that died makes the handshake fail with "connection closed": then
            // the exit is the cause. When the server did answer (an error, a malformed
            // result, another id), its words are the cause, with the exit if it exited.
            let status = match group {
                Some(group) => tokio::time::timeout(EXIT_ANSWER_WAIT, group.exited())
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            Err(Refusal::Failed(match (initialize_answer(&e), status) {
                (Some(answer), Some(status)) => ConnectError::Protocol(
                    with_stderr(
                        format!(
                            "initialize failed: {answer}; the process then exited ({})",
                            describe_exit(status)
                        ),
                        log,
                    )
                    .await,
                ),
                (Some(answer), None) => {
                    ConnectError::Protocol(format!("initialize failed: {answer}"))
                }
                (None, Some(status)) => exit_message(status, log).await,
                (None, None) => initialize_failure(&e),
            }))
        }
        Err(_) => Err(Refusal::Failed(ConnectError::HandshakeTimeout {
            stage: HandshakeStage::Initialize,
            after: timeout,
            stderr: Some(log.settled_tail().await),
        })),
    }
}

/// How long a failed handshake waits for the process's exit, or an exited process for its
/// last answer to be read, to tell which is the cause.
const EXIT_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// [`ConnectError::ExitedEarly`], with what the process last wrote on stderr.
async fn exit_message(status: std::process::ExitStatus, log: &ServerLog) -> ConnectError {
    ConnectError::ExitedEarly {
        exit: describe_exit(status),
        stderr: log.settled_tail().await,
    }
}

/// `message` and what the server last wrote on stderr.
async fn with_stderr(message: String, log: &ServerLog) -> String {
    let tail = log.settled_tail().await;
    if tail.is_empty() {
        format!("{message}; it wrote nothing on stderr")
    } else {
        format!("{message}; last stderr: {tail}")
    }
}

/// Owns the rmcp service for the life of the session: refreshes the tool list when the server
/// says it changed, and records why the session ended.
async fn watch(
    connection: Arc<Connection>,
    running: RunningService<RoleClient, Handler>,
    log: Arc<ServerLog>,
) {
    let waiting = running.waiting();
    tokio::pin!(waiting);
    let exited = async {
        match &connection.group {
            Some(group) => group.exited().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    let mut exit_seen = false;
    // (Without pings the timer still exists but its branch is disabled.)
    let period = connection
        .ping_interval
        .unwrap_or(Duration::from_secs(3600));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pings.tick(), if connection.ping_interval.is_some() => {
                if let Err(e) = connection.ping().await {
                    tracing::warn!("health ping failed: {e}");
                    connection.end(&format!("the server did not answer a health ping: {e}"));
                }
            }
            _ = &mut waiting => break,
            status = &mut exited, if !exit_seen => {
                exit_seen = true;
                if let Some(status) = status {
                    let reason = format!("the server process exited ({})", describe_exit(status));
                    let reason = with_stderr(reason, &log).await;
                    let _ = connection.close_reason.set(reason);
                }
                // Fail the calls in flight now, even if a grandchild still holds the pipe.
                connection.end("the server process exited");
            }
            _ = connection.tools_changed.notified() => {
                match connection.refresh_tools().await {
                    Ok(_) => connection.relay.publish(ServerEvent::ToolsChanged(connection.server.clone())),
                    Err(e) => tracing::warn!("refreshing the tool list after list_changed failed: {e}"),
                }
            }
        }
    }
    // stdout usually closes a moment before the exit status is known: the status is the
    // better reason, so wait a little for it.
    if let Some(group) = &connection.group
        && !exit_seen
        && let Ok(Some(status)) = tokio::time::timeout(EXIT_STATUS_WAIT, group.exited()).await
    {
        let reason = format!("the server process exited ({})", describe_exit(status));
        let _ = connection.close_reason.set(with_stderr(reason, &log).await);
    }
    let _ = connection
        .close_reason
        .set("the server closed the connection".into());
    connection.closed.cancel();
    connection.ended.cancel();
}

mod handler;
mod refusal;
mod relay;
mod tools;
use handler::Handler;
use refusal::Refusal;
pub use relay::{Caller, EVENT_BACKLOG, ServerEvent};
use relay::{CancelOnDrop, Relay, Relayed, cancelled_notification};
use tools::list_all_tools;
#[cfg(test)]
use tools::{ToolsPage, read_tools_page};

#[cfg(test)]
mod tests;
