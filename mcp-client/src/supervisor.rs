//! The daemon's core: the servers of the live config, their connections and their state.
//!
//! Everything the HTTP API does is a method here, so it can be tested without HTTP. Each
//! server has its own lock for connect and disconnect, so a slow or hung server never delays
//! another, and calls take no lock at all: they share the server's [`Connection`].
//!
//! A disconnect (by the operator, a removal or change in the config, shutdown) does not wait
//! for a connect in flight to finish or time out: it cancels it (its process group is ended,
//! SIGTERM then SIGKILL after the grace period) and takes the server's lock as soon as the
//! connect has let go of it; a connect that would start while a disconnect waits gives way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{ArgumentError, CallError, ConnectContext, Connection, ServerEvent};
use crate::error::{CONNECTION_LOST, ConnectError, Error, Result};
use crate::metrics::Metrics;
use slot::{PendingDisconnect, Slot, SlotState};

mod authorize;
mod slot;
use mag_common::config::{
    CONFIG_READ_BOUND, ConfigError, McpConfig, ServerEntry, read_regular_file, revision,
};

/// At most this many connects of wanted servers (`autoConnect`, reconnects) run at once, as
/// mag-server's `connect/all` does; explicit `/connect_server` calls are not held back.
pub const WANTED_CONNECTS: usize = 8;

/// Longest wait between reconnect attempts (SPEC §4: 1 s doubling to 30 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before reconnect attempt `attempt` (1-based): 1 s doubling to [`MAX_BACKOFF`],
/// each drawn between half and all of that (jitter, so servers lost together do not all
/// come back at the same instant).
pub fn backoff(attempt: u32) -> Duration {
    let doubled = Duration::from_secs(1) * (1u32 << attempt.saturating_sub(1).min(5));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(rand::random_range(0.5..=1.0))
}

pub use mag_common::wire::{ApplyReport, ConfigStatus, ServerView, Status, ToolView};

/// The outcome of a tool call that reached the server.
pub type CallOutcome = std::result::Result<CallToolResult, CallError>;

/// The daemon's core. Cheap to clone; every clone is the same daemon.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    servers: RwLock<BTreeMap<String, Arc<Slot>>>,
    config: RwLock<ConfigStatus>,
    ctx: ConnectContext,
    shutting_down: CancellationToken,
    metrics: Metrics,
    /// Largest config file read, in bytes.
    config_limit: u64,
    /// Bounds the connects of wanted servers ([`WANTED_CONNECTS`]).
    wanted_connects: tokio::sync::Semaphore,
    /// Every expanded `${VAR}` value of the configs applied so far, with its reference.
    known_secrets: Mutex<std::collections::BTreeMap<String, String>>,
}

impl Supervisor {
    /// A daemon with no servers; `config_path` is what `GET /` reports as the config file,
    /// read up to `config_limit` bytes.
    pub fn new(ctx: ConnectContext, config_path: PathBuf, config_limit: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                servers: RwLock::new(BTreeMap::new()),
                config: RwLock::new(ConfigStatus {
                    path: config_path,
                    revision: None,
                    error: None,
                }),
                ctx,
                shutting_down: CancellationToken::new(),
                metrics: Metrics::default(),
                config_limit,
                wanted_connects: tokio::sync::Semaphore::new(WANTED_CONNECTS),
                known_secrets: Mutex::default(),
            }),
        }
    }

    /// Reads, validates and applies the config file. A file that cannot be read (not a
    /// regular file, over the size limit, not answering within [`CONFIG_READ_BOUND`]) or
    /// does not validate is not applied: the live config stays and the error is kept for
    /// `GET /`.
    ///
    /// # Errors
    /// The [`ConfigError`] (a read failure has line and column 0).
    pub async fn load_file(&self, path: &Path) -> std::result::Result<ApplyReport, ConfigError> {
        let (file, limit) = (path.to_path_buf(), self.inner.config_limit);
        let read = tokio::task::spawn_blocking(move || read_regular_file(&file, limit));
        let parsed = match tokio::time::timeout(CONFIG_READ_BOUND, read).await {
            Ok(Ok(Ok(bytes))) => std::str::from_utf8(&bytes)
                .map_err(|e| ConfigError::whole(format!("the file is not UTF-8: {e}")))
                .and_then(McpConfig::parse)
                .map(|config| (config, revision(&bytes))),
            Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(ConfigError::whole(e.to_string()))
            }
            Ok(Ok(Err(e))) => Err(ConfigError::whole(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
            Ok(Err(e)) => Err(ConfigError::whole(format!(
                "cannot read {}: the reading task failed: {e}",
                path.display()
            ))),
            Err(_) => Err(ConfigError::whole(format!(
                "cannot read {}: no answer within {CONFIG_READ_BOUND:?}",
                path.display()
            ))),
        };
        match parsed {
            Ok((config, revision)) => Ok(self.apply(config, revision).await),
            Err(error) => {
                tracing::warn!(path = %path.display(), "config not applied: {error}");
                self.config_mut().error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Makes `config` the live config: removed servers are disconnected (their processes
    /// ended) before this returns; changed ones that were connected are reconnected and added
    /// ones with `autoConnect` connected, in the background. Unchanged servers are untouched.
    pub async fn apply(&self, config: McpConfig, revision: String) -> ApplyReport {
        // Before anything connects and can fail with a value in its error. Values of earlier
        // configs stay: a removed server may still log while it is ended.
        {
            let mut known = self
                .inner
                .known_secrets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            known.extend(config.secret_values(|name| std::env::var(name).ok()));
            mag_common::secrets::global().set("config", known.clone());
            self.inner
                .ctx
                .remote_secrets
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(config.remote_secret_names());
        }
        let mut report = ApplyReport::default();
        let mut removed = Vec::new();
        let mut reconnect = Vec::new();
        let mut connect = Vec::new();
        let mut filters_changed = Vec::new();
        {
            let mut servers = self
                .inner
                .servers
                .write()
                .unwrap_or_else(|p| p.into_inner());
            servers.retain(|name, slot| {
                let keep = config.servers.contains_key(name);
                if !keep {
                    slot.state().removed = true;
                    report.removed.push(name.clone());
                    removed.push(slot.clone());
                }
                keep
            });
            for (name, entry) in config.servers {
                match servers.get(&name) {
                    None => {
                        if entry.auto_connect && !entry.disabled {
                            connect.push(name.clone());
                        }
                        servers.insert(name.clone(), Slot::new(&name, entry));
                        report.added.push(name);
                    }
                    Some(slot) => {
                        let mut state = slot.state();
                        if state.entry == entry {
                            continue;
                        }
                        if !state.entry.needs_reconnect(&entry) {
                            // Tool filters and the like: read at each call, no new session.
                            state.entry = entry;
                            drop(state);
                            filters_changed.push(name.clone());
                            report.updated.push(name);
                            continue;
                        }
                        let wanted = state.wanted;
                        // Its OAuth client and waiting authorizations were for the old entry.
                        self.inner.ctx.oauth.forget_client(&name);
                        state.status = match (entry.disabled, state.status) {
                            (true, _) => Status::Disabled,
                            (false, Status::Disabled) => Status::Disconnected,
                            (false, status) => status,
                        };
                        if wanted || state.connection.is_some() || entry.disabled {
                            reconnect.push((slot.clone(), wanted && !entry.disabled));
                        }
                        state.entry = entry;
                        drop(state);
                        report.updated.push(name);
                    }
                }
            }
        }
        {
            let mut status = self.config_mut();
            status.revision = Some(revision);
            status.error = None;
        }
        tracing::info!(
            added = ?report.added, updated = ?report.updated, removed = ?report.removed,
            "config applied"
        );
        for name in filters_changed {
            self.publish(ServerEvent::ToolsChanged(name));
        }
        futures::future::join_all(
            removed
                .iter()
                .map(|slot| self.disconnect_slot(slot, "the server was removed from the config")),
        )
        .await;
        for slot in &removed {
            self.inner.ctx.oauth.forget(&slot.name).await;
        }
        for (slot, connect_again) in reconnect {
            let this = self.clone();
            self.inner.ctx.tasks.spawn(async move {
                this.disconnect_slot(&slot, "the server's config changed")
                    .await;
                if connect_again {
                    this.connect_wanted(&slot).await;
                }
            });
        }
        for name in connect {
            self.spawn_connect(&name);
        }
        report
    }

    /// Connects `name` in the background as a wanted server (see [`Self::connect_wanted`]).
    fn spawn_connect(&self, name: &str) {
        let Ok(slot) = self.slot(name) else { return };
        let this = self.clone();
        self.inner
            .ctx
            .tasks
            .spawn(async move { this.connect_wanted(&slot).await });
    }

    /// Marks the server wanted and connects it; if that fails, keeps trying with backoff.
    ///
    /// It waits for its turn ([`WANTED_CONNECTS`]); a server the operator disconnected
    /// meanwhile is not connected after all.
    async fn connect_wanted(&self, slot: &Arc<Slot>) {
        slot.state().wanted = true;
        let Ok(_turn) = self.inner.wanted_connects.acquire().await else {
            return;
        };
        match self.connect_slot_if(slot, true).await {
            // Connected, or no longer to be: disconnected, removed, shut down meanwhile.
            Ok(_)
            | Err(Error::NotConnected { .. } | Error::UnknownServer(_) | Error::ShuttingDown) => {}
            Err(Error::Connect { cause, .. }) if cause.is_cancelled() || cause.needs_user() => {}
            Err(e) => {
                tracing::warn!(server = %slot.name, "connect failed, will retry: {e}");
                self.schedule_reconnect(slot);
            }
        }
    }

    /// Starts the reconnect loop of a wanted server, unless one runs: wait [`backoff`], try,
    /// repeat until connected, disconnected, removed or shut down.
    fn schedule_reconnect(&self, slot: &Arc<Slot>) {
        let token = {
            let mut state = slot.state();
            let running = state.retry.as_ref().is_some_and(|t| !t.is_cancelled());
            if !state.wanted || state.removed || running || self.inner.shutting_down.is_cancelled()
            {
                return;
            }
            state.status = Status::Reconnecting;
            let token = self.inner.shutting_down.child_token();
            state.retry = Some(token.clone());
            token
        };
        let this = self.clone();
        let slot = slot.clone();
        self.inner.ctx.tasks.spawn(async move {
            loop {
                let attempt = {
                    let mut state = slot.state();
                    state.attempts += 1;
                    state.status = Status::Reconnecting;
                    state.attempts
                };
                let delay = backoff(attempt);
                tracing::info!(server = %slot.name, attempt, ?delay, "reconnecting after a delay");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = token.cancelled() => return,
                }
                if slot.connection().is_some() {
                    break; // the operator connected it meanwhile
                }
                let turn = tokio::select! {
                    turn = this.inner.wanted_connects.acquire() => turn,
                    _ = token.cancelled() => return,
                };
                let Ok(_turn) = turn else { return };
                match this.connect_slot_if(&slot, true).await {
                    Ok(_) => {
                        slot.state().reconnects += 1;
                        this.inner.metrics.reconnect(&slot.name);
                        break;
                    }
                    Err(Error::Connect { cause, .. })
                        if !cause.is_cancelled()
                            && !cause.needs_user()
                            && !token.is_cancelled() =>
                    {
                        continue;
                    }
                    Err(_) => break,
                }
            }
            // This loop is over: let a later loss start a new one.
            token.cancel();
        });
    }

    /// The live config's path, revision and the error of the newest file, if it was refused.
    pub fn config_status(&self) -> ConfigStatus {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn config_mut(&self) -> std::sync::RwLockWriteGuard<'_, ConfigStatus> {
        self.inner.config.write().unwrap_or_else(|p| p.into_inner())
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        let servers = self.inner.servers.read().unwrap_or_else(|p| p.into_inner());
        servers.values().cloned().collect()
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>> {
        let servers = self.inner.servers.read().unwrap_or_else(|p| p.into_inner());
        servers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownServer(name.to_string()))
    }

    /// How many servers are connected now.
    pub fn connected_count(&self) -> usize {
        self.slots()
            .iter()
            .filter(|slot| slot.connection().is_some())
            .count()
    }

    /// Every server of the live config, by name.
    pub fn servers(&self) -> BTreeMap<String, ServerView> {
        self.slots()
            .iter()
            .map(|slot| {
                let state = slot.state();
                let connection = state.connection.as_ref().filter(|c| !c.is_closed());
                let view = ServerView {
                    connected: connection.is_some(),
                    init_attempted: state.init_attempted,
                    tools: connection
                        .map(|c| c.tools().iter().map(|t| t.name.to_string()).collect())
                        .unwrap_or_default(),
                    error: state.error.clone(),
                    error_kind: state.error_kind.map(str::to_string),
                    transport_type: state.entry.transport,
                    status: match (connection, state.status) {
                        (None, Status::Connected) => Status::Failed,
                        (_, status) => status,
                    },
                    attempts: state.attempts,
                    pid: connection.and_then(|c| c.pid()),
                    connected_since: connection.map(|c| {
                        humantime::format_rfc3339_seconds(c.connected_since()).to_string()
                    }),
                    reconnects: state.reconnects,
                    protocol_version: connection.map(|c| c.protocol_version().to_string()),
                    auto_approve: state.entry.auto_approve.clone(),
                    // Derived from the authorizations that wait: a step-up one while
                    // connected, any one while it needs authorization.
                    authorization_url: match (connection.is_some(), state.status) {
                        (true, _) => self.inner.ctx.oauth.waiting_url(&slot.name, true),
                        (false, Status::NeedsAuthorization) => {
                            self.inner.ctx.oauth.waiting_url(&slot.name, false)
                        }
                        _ => None,
                    },
                };
                (slot.name.clone(), view)
            })
            .collect()
    }

    /// Every tool of every connected server.
    pub fn tools(&self) -> Vec<ToolView> {
        let mut tools = Vec::new();
        for slot in self.slots() {
            let Some(connection) = slot.connection() else {
                continue;
            };
            let listed = connection.tools();
            let state = slot.state();
            for tool in listed.iter().filter(|t| state.entry.exposes(&t.name)) {
                tools.push(ToolView {
                    server_name: slot.name.clone(),
                    name: tool.name.to_string(),
                    description: tool.description.as_deref().map(str::to_string),
                    input_schema: Value::Object((*tool.input_schema).clone()),
                });
            }
        }
        tools
    }

    /// Connects a server (waiting for the handshake and the tool list) and returns its tool
    /// names. Connecting a connected server returns its tools at once.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], [`Error::Disabled`], [`Error::ShuttingDown`], or
    /// [`Error::Connect`] with the cause.
    pub async fn connect(&self, name: &str) -> Result<Vec<String>> {
        let slot = self.slot(name)?;
        self.connect_slot(&slot).await
    }

    async fn connect_slot(&self, slot: &Arc<Slot>) -> Result<Vec<String>> {
        self.connect_slot_if(slot, false).await
    }

    /// Connects; with `only_if_wanted`, gives up (NotConnected) if the server stopped being
    /// wanted while this waited for the server's lock (an operator disconnect won the race).
    /// A disconnect cancels it ([`ConnectError::Cancelled`], or [`Error::UnknownServer`]
    /// when the server was removed).
    async fn connect_slot_if(&self, slot: &Arc<Slot>, only_if_wanted: bool) -> Result<Vec<String>> {
        let _op = slot.op.lock().await;
        if let Some(connection) = slot.connection() {
            return Ok(tool_names(&connection));
        }
        if self.inner.shutting_down.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let (entry, cancel) = {
            let mut state = slot.state();
            if state.removed {
                return Err(Error::UnknownServer(slot.name.clone()));
            }
            if state.entry.disabled {
                return Err(Error::Disabled(slot.name.clone()));
            }
            if only_if_wanted && !state.wanted {
                return Err(Error::NotConnected {
                    server: slot.name.clone(),
                    reason: None,
                });
            }
            if state.disconnects > 0 {
                return Err(Error::Connect {
                    server: slot.name.clone(),
                    cause: ConnectError::Cancelled(self.cancel_reason(&state)),
                });
            }
            // Registered under the same lock a disconnect takes to cancel it.
            let cancel = self.inner.shutting_down.child_token();
            state.connecting = Some(cancel.clone());
            state.status = Status::Connecting;
            state.init_attempted = true;
            (state.entry.clone(), cancel)
        };
        tracing::info!(server = %slot.name, transport = entry.transport.as_str(), "connecting");
        let opened = Connection::open(&slot.name, &entry, &self.inner.ctx, &cancel).await;
        let opened = {
            let mut state = slot.state();
            state.connecting = None;
            match opened {
                Err(cause) if cause.is_cancelled() => {
                    if state.removed {
                        return Err(Error::UnknownServer(slot.name.clone()));
                    }
                    Err(ConnectError::Cancelled(self.cancel_reason(&state)))
                }
                other => other,
            }
        };
        let connection = match opened {
            Ok(connection) => connection,
            Err(cause) => {
                let kind = cause.code();
                tracing::warn!(server = %slot.name, kind, "connect failed: {cause}");
                if !cause.is_cancelled() {
                    self.inner.metrics.connect_failure(&slot.name, kind);
                }
                let mut state = slot.state();
                let retrying = state.retry.as_ref().is_some_and(|t| !t.is_cancelled());
                state.record_failure(&cause, retrying);
                return Err(Error::Connect {
                    server: slot.name.clone(),
                    cause,
                });
            }
        };
        // Removed, disconnected or shut down while the connect ended: not kept.
        let stale = {
            let mut state = slot.state();
            if state.removed {
                Some(Error::UnknownServer(slot.name.clone()))
            } else if self.inner.shutting_down.is_cancelled() || cancel.is_cancelled() {
                Some(Error::Connect {
                    server: slot.name.clone(),
                    cause: ConnectError::Cancelled(self.cancel_reason(&state)),
                })
            } else {
                state.connection = Some(connection.clone());
                state.status = Status::Connected;
                state.error = None;
                state.error_kind = None;
                state.wanted = true;
                state.attempts = 0;
                None
            }
        };
        if let Some(error) = stale {
            let reason = match &error {
                Error::UnknownServer(_) => "the server was removed while connecting".to_string(),
                other => other.to_string(),
            };
            connection.close(&reason).await;
            return Err(error);
        }
        tracing::info!(
            server = %slot.name, pid = ?connection.pid(), tools = connection.tools().len(),
            protocol = %connection.protocol_version(), "connected"
        );
        self.publish(ServerEvent::Lifecycle(slot.name.clone()));
        let this = self.clone();
        let watched = slot.clone();
        let watched_connection = connection.clone();
        self.inner.ctx.tasks.spawn(async move {
            let reason = watched_connection.closed().await;
            let lost = {
                let mut state = watched.state();
                let current = state
                    .connection
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &watched_connection));
                if current {
                    state.connection = None;
                    state.status = if state.wanted && !state.removed {
                        Status::Reconnecting
                    } else {
                        Status::Failed
                    };
                    state.error = Some(reason.clone());
                    state.error_kind = Some(CONNECTION_LOST);
                }
                current
            };
            if lost {
                tracing::warn!(server = %watched.name, "connection lost: {reason}");
                this.publish(ServerEvent::Lifecycle(watched.name.clone()));
                // Make sure the process is gone (a server that stopped answering pings).
                watched_connection.close(&reason).await;
                this.schedule_reconnect(&watched);
            }
        });
        Ok(tool_names(&connection))
    }

    /// Disconnects a server: closes its session and ends its process group. Returns whether
    /// it was connected.
    ///
    /// # Errors
    /// [`Error::UnknownServer`].
    pub async fn disconnect(&self, name: &str) -> Result<bool> {
        let slot = self.slot(name)?;
        Ok(self
            .disconnect_slot(&slot, "the server was disconnected by the operator")
            .await)
    }

    /// Disconnects: cancels a connect in flight and the reconnect loop (the server is no
    /// longer wanted) at once, then, holding the server's lock, closes the session and ends
    /// its processes. Returns whether it was connected.
    async fn disconnect_slot(&self, slot: &Arc<Slot>, reason: &str) -> bool {
        let waiting = PendingDisconnect::new(slot, reason);
        let _op = slot.op.lock().await;
        drop(waiting);
        let connection = {
            let mut state = slot.state();
            state.wanted = false;
            state.attempts = 0;
            if let Some(retry) = state.retry.take() {
                retry.cancel();
            }
            let connection = state.connection.take();
            if state.status != Status::Disabled && !state.entry.disabled {
                state.status = Status::Disconnected;
            } else {
                state.status = Status::Disabled;
            }
            state.error = None;
            state.error_kind = None;
            connection
        };
        match connection {
            Some(connection) => {
                let was_live = !connection.is_closed();
                connection.close(reason).await;
                tracing::info!(server = %slot.name, "disconnected: {reason}");
                self.publish(ServerEvent::Lifecycle(slot.name.clone()));
                was_live
            }
            None => false,
        }
    }

    /// Calls a tool on a connected server. A tool missing from the cached list is looked up
    /// once more (servers may add tools without saying so) before it is refused.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], [`Error::NotConnected`], [`Error::UnknownTool`]. Failures
    /// after the call was sent (timeout, lost connection, JSON-RPC error) are the
    /// `Err` of the [`CallOutcome`].
    pub async fn call_tool(
        &self,
        server: &str,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<CallOutcome> {
        let slot = self.slot(server)?;
        let Some(connection) = slot.connection() else {
            let reason = slot.state().error.clone();
            return Err(Error::NotConnected {
                server: server.to_string(),
                reason,
            });
        };
        if !slot.state().entry.exposes(tool) {
            return Err(Error::ToolNotAllowed {
                server: server.to_string(),
                tool: tool.to_string(),
            });
        }
        let arguments = connection
            .check_arguments(tool, arguments)
            .await
            .map_err(|e| match e {
                ArgumentError::UnknownTool => Error::UnknownTool {
                    server: server.to_string(),
                    tool: tool.to_string(),
                },
                ArgumentError::Invalid(reason) => Error::InvalidArguments {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    reason,
                },
            })?;
        let started = Instant::now();
        let outcome = connection.call_tool(tool, arguments).await;
        if let Err(CallError::Challenged(challenge)) = outcome {
            return Err(self.authorize(server, challenge).await);
        }
        let error = match &outcome {
            Ok(result) if result.is_error == Some(true) => Some("tool_error"),
            Ok(_) => None,
            Err(e) => Some(e.code()),
        };
        self.inner
            .metrics
            .call(server, tool, started.elapsed(), error);
        Ok(outcome)
    }

    /// Whether the server's entry has `cancelOnDisconnect` (a REST caller that goes away
    /// cancels its call); `false` for an unknown server.
    pub fn cancels_on_disconnect(&self, server: &str) -> bool {
        self.slot(server)
            .is_ok_and(|slot| slot.state().entry.cancel_on_disconnect)
    }

    /// The metrics, as OpenMetrics text (`GET /metrics`).
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render(self.connected_count())
    }

    /// Stops taking connects and disconnects every server at once, ending their processes;
    /// then waits for every task on [`Self::tasks`] to end (connection watchers, reconnect
    /// loops, background connects, detached tool calls, the config watcher, log writers).
    /// Not bounded here: the daemon bounds its whole shutdown ([`crate::SHUTDOWN_BOUND`]).
    pub async fn shutdown(&self) {
        self.inner.shutting_down.cancel();
        let slots = self.slots();
        futures::future::join_all(
            slots
                .iter()
                .map(|slot| self.disconnect_slot(slot, "mcp-client is shutting down")),
        )
        .await;
        let tasks = &self.inner.ctx.tasks;
        tasks.close();
        tasks.wait().await;
    }

    /// Publishes `event` to the gateway's sessions.
    pub fn publish(&self, event: ServerEvent) {
        let _ = self.inner.ctx.events.send(event);
    }

    /// What the servers tell the daemon from now on (list changes, log messages, connects
    /// and disconnects), for one gateway session; it may lag (see [`crate::connection::EVENT_BACKLOG`]).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ServerEvent> {
        self.inner.ctx.events.subscribe()
    }

    /// The live session with the server named `name` and its entry as now configured.
    ///
    /// # Errors
    /// [`Error::UnknownServer`]; [`Error::NotConnected`] with the last error.
    pub fn session(&self, name: &str) -> Result<(Arc<Connection>, ServerEntry)> {
        let slot = self.slot(name)?;
        let state = slot.state();
        match &state.connection {
            Some(connection) => Ok((connection.clone(), state.entry.clone())),
            None => Err(Error::NotConnected {
                server: name.to_string(),
                reason: state.error.clone(),
            }),
        }
    }

    /// Every live session, by server name (sorted), with its entry.
    pub fn sessions(&self) -> Vec<(String, Arc<Connection>, ServerEntry)> {
        self.slots()
            .into_iter()
            .filter_map(|slot| {
                let state = slot.state();
                let connection = state.connection.clone()?;
                Some((slot.name.clone(), connection, state.entry.clone()))
            })
            .collect()
    }

    /// Whether a server of that name is configured.
    pub fn knows(&self, name: &str) -> bool {
        self.slot(name).is_ok()
    }

    /// The tracker every long-lived task of the daemon is spawned on (the supervisor's own,
    /// its connections', the API's detached tool calls, the config watcher), so that
    /// [`Self::shutdown`] waits for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.ctx.tasks
    }
}

impl Supervisor {
    /// Why a connect of this server was cancelled: the reason of the disconnect waiting for
    /// its lock, or shutdown.
    fn cancel_reason(&self, state: &SlotState) -> String {
        match &state.cancelled_by {
            Some(reason) if state.disconnects > 0 => reason.clone(),
            _ if self.inner.shutting_down.is_cancelled() => "mcp-client is shutting down".into(),
            _ => "the connect was cancelled".into(),
        }
    }
}

fn tool_names(connection: &Connection) -> Vec<String> {
    connection
        .tools()
        .iter()
        .map(|t| t.name.to_string())
        .collect()
}
