//! What passes between one server's session and the MCP gateway's client sessions (SPEC §8):
//! progress routed back to the caller by token, server-to-client requests (sampling,
//! elicitation, roots) sent to a client session that has a request in flight on this server,
//! and the server's notifications published as [`ServerEvent`]s.

// rmcp 3.9 marks logging, sampling and roots deprecated for protocol 2026-07-28; mcp-client
// speaks 2025-11-25 and older, where they are current.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientCapabilities, ClientNotification,
    ClientResult, ErrorCode, ErrorData, GetExtensions, JsonRpcMessage, JsonRpcNotification,
    LoggingMessageNotificationParam, ProgressNotification, ProgressNotificationParam,
    ProgressToken, RequestId, ServerNotification, ServerRequest,
};
use rmcp::service::{OriginatingRequestId, Peer, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::{RoleClient, RoleServer};
use tokio::sync::broadcast;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// Something a server told the daemon that the gateway's client sessions may need to hear.
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// The server's tool list changed (`notifications/tools/list_changed`, after the daemon
    /// listed the tools again), or its tool filters were changed by a reload.
    ToolsChanged(String),
    /// `notifications/prompts/list_changed` from the server.
    PromptsChanged(String),
    /// `notifications/resources/list_changed` from the server.
    ResourcesChanged(String),
    /// `notifications/resources/updated` from the server.
    ResourceUpdated {
        /// The server's name.
        server: String,
        /// The resource's URI, as the server gave it.
        uri: String,
    },
    /// `notifications/message` (a log message) from the server.
    Log {
        /// The server's name.
        server: String,
        /// The message as the server sent it.
        params: LoggingMessageNotificationParam,
    },
    /// The server connected, disconnected or was reconnected: every list may have changed.
    Lifecycle(String),
}

impl ServerEvent {
    /// The name of the server the event is about.
    pub fn server(&self) -> &str {
        match self {
            Self::ToolsChanged(server)
            | Self::PromptsChanged(server)
            | Self::ResourcesChanged(server)
            | Self::Lifecycle(server) => server,
            Self::ResourceUpdated { server, .. } | Self::Log { server, .. } => server,
        }
    }
}

/// How many events a gateway session may fall behind before it misses some (it then gets
/// every `list_changed` at once, see the gateway).
pub const EVENT_BACKLOG: usize = 256;

/// The longest the server's session waits to hand one progress notification to a gateway
/// client session (a slow client loses progress updates rather than stalling the server).
pub const PROGRESS_SEND_BOUND: Duration = Duration::from_millis(100);

/// A transport that relays the server's progress notifications for gateway callers as they
/// are read, so that each reaches the caller before the answer it precedes (rmcp hands
/// notifications to handlers on tasks of their own, which may run after the answer).
pub struct Relayed<T> {
    inner: T,
    relay: Arc<Relay>,
}

impl<T> Relayed<T> {
    /// `inner`, relaying through `relay`.
    pub fn new(inner: T, relay: Arc<Relay>) -> Self {
        Self { inner, relay }
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Relayed<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let message = self.inner.receive().await?;
            if let JsonRpcMessage::Notification(JsonRpcNotification {
                notification: ServerNotification::ProgressNotification(progress),
                ..
            }) = &message
                && self.relay.progress(&progress.params).await
            {
                continue;
            }
            return Some(message);
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// A client session of the gateway with a request in flight on this server.
#[derive(Clone)]
pub struct Caller {
    /// The client session, to send requests and notifications back on.
    pub peer: Peer<RoleServer>,
    /// The id of the client's request (server-to-client requests made for it go on that
    /// request's own stream, SEP-2260).
    pub request_id: RequestId,
    /// The progress token the client gave its request, if any.
    pub progress_token: Option<ProgressToken>,
}

/// The relay of one server session (see the module docs).
pub struct Relay {
    server: String,
    /// Progress tokens of requests sent to the server → the caller and its own token.
    progress: Mutex<HashMap<ProgressToken, (Peer<RoleServer>, ProgressToken)>>,
    /// Client sessions with a request in flight on the server, oldest first: key, the
    /// request's id on the server's session once sent, the caller.
    callers: Mutex<Vec<(u64, Option<RequestId>, Caller)>>,
    next_caller: AtomicU64,
    events: broadcast::Sender<ServerEvent>,
}

/// Registration of one forwarded request, undone when dropped.
pub struct InFlight<'a> {
    relay: &'a Relay,
    id: u64,
    progress: Option<ProgressToken>,
}

impl InFlight<'_> {
    /// Records the id the request was sent to the server with, so that a server-to-client
    /// request the server says is about it goes to this caller ([`Relay::ask_client`]).
    pub fn sent(&mut self, upstream: RequestId) {
        let mut callers = self.relay.callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = callers.iter_mut().find(|(key, _, _)| *key == self.id) {
            entry.1 = Some(upstream);
        }
    }

    /// Routes the server's progress for the request, sent with progress token `upstream`,
    /// to `caller` with the caller's own token (when it gave one).
    pub fn track_progress(&mut self, caller: &Caller, upstream: ProgressToken) {
        if let Some(token) = caller.progress_token.clone() {
            self.relay
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(upstream.clone(), (caller.peer.clone(), token));
            self.progress = Some(upstream);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.relay
            .callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(key, _, _)| *key != self.id);
        if let Some(token) = &self.progress {
            self.relay
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(token);
        }
    }
}

impl Relay {
    /// A relay for the server named `server`, publishing on `events`.
    pub fn new(server: &str, events: broadcast::Sender<ServerEvent>) -> Self {
        Self {
            server: server.to_string(),
            progress: Mutex::new(HashMap::new()),
            callers: Mutex::new(Vec::new()),
            next_caller: AtomicU64::new(0),
            events,
        }
    }

    /// Publishes `event` to every gateway session listening (none listening is fine).
    pub fn publish(&self, event: ServerEvent) {
        let _ = self.events.send(event);
    }

    /// The server's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Registers `caller` for a request about to be sent to the server, before it is sent,
    /// so that a server-to-client request it causes at once finds its caller.
    pub fn register(&self, caller: &Caller) -> InFlight<'_> {
        let id = self.next_caller.fetch_add(1, Ordering::Relaxed);
        self.callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, None, caller.clone()));
        InFlight {
            relay: self,
            id,
            progress: None,
        }
    }

    /// Sends a progress notification of the server on to the caller whose request it is
    /// about, with the caller's own token, within [`PROGRESS_SEND_BOUND`]. `false` when no
    /// caller waits for it (it is dropped).
    pub async fn progress(&self, params: &ProgressNotificationParam) -> bool {
        let route = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&params.progress_token)
            .cloned();
        let Some((peer, token)) = route else {
            return false;
        };
        let mut params = params.clone();
        params.progress_token = token;
        let notification =
            ServerNotification::ProgressNotification(ProgressNotification::new(params));
        let _ =
            tokio::time::timeout(PROGRESS_SEND_BOUND, peer.send_notification(notification)).await;
        true
    }

    /// Sends a server-to-client request of the server to the client session whose request
    /// it is about, and answers with that client's answer. `origin` is the id of the
    /// daemon's request to the server it came with (a streamable HTTP server sends it on that
    /// request's response stream, SEP-2260): the caller of that request takes it. Without an
    /// origin (stdio, or the server's standalone stream), or before the id of a request just
    /// sent is recorded, it goes to the newest client session with a request in flight on
    /// the server; either way only to one that declared the capability `wants` checks.
    ///
    /// # Errors
    /// No such client session (MCP error `-32601` naming what is missing, so the server
    /// sees a clear decline), or the client's own error.
    pub async fn ask_client(
        &self,
        request: ServerRequest,
        what: &str,
        wants: fn(&ClientCapabilities) -> bool,
        origin: Option<&RequestId>,
    ) -> Result<ClientResult, ErrorData> {
        let caller = {
            let callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            let about = |upstream: &Option<RequestId>| match (origin, upstream) {
                (Some(origin), Some(upstream)) => origin == upstream,
                (Some(_), None) => !callers.iter().any(|(_, u, _)| u.as_ref() == origin),
                (None, _) => true,
            };
            callers
                .iter()
                .rev()
                .filter(|(_, upstream, _)| about(upstream))
                .find(|(_, _, caller)| {
                    caller
                        .peer
                        .peer_info()
                        .is_some_and(|info| wants(&info.capabilities))
                })
                .map(|(_, _, caller)| caller.clone())
        };
        let Some(caller) = caller else {
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!(
                    "mcp-client has no client that can answer {what} for server {:?}: only an \
                     MCP client connected through the gateway that declared the capability and \
                     has a request in flight on this server can",
                    self.server
                ),
                None,
            ));
        };
        // Tagged with the caller's request, so that the gateway sends it on that request's
        // stream (SEP-2260); sent from a task of its own, since rmcp would tag a request sent
        // from this handler with the server's request instead.
        let mut request = request;
        request
            .extensions_mut()
            .insert(OriginatingRequestId(caller.request_id.clone()));
        let peer = caller.peer;
        let sent = AbortOnDropHandle::new(tokio::spawn(
            async move { peer.send_request(request).await },
        ));
        let answer = sent.await.map_err(|e| {
            ErrorData::internal_error(format!("asking the client for {what} failed: {e}"), None)
        })?;
        answer.map_err(|e| match e {
            rmcp::ServiceError::McpError(e) => e,
            other => ErrorData::internal_error(
                format!("the client did not answer {what}: {other}"),
                None,
            ),
        })
    }
}

/// `notifications/cancelled` for request `id` (MCP spec 2025-11-25, Utilities §
/// Cancellation).
pub(super) fn cancelled_notification(
    id: rmcp::model::RequestId,
    reason: &str,
) -> ClientNotification {
    ClientNotification::CancelledNotification(CancelledNotification::new(
        CancelledNotificationParam::new(Some(id), Some(reason.into())),
    ))
}

/// A forwarded request that, dropped while armed (`peer` set), sends the server
/// `notifications/cancelled` for it from a task of its own (see [`Connection::forward`]).
pub(super) struct CancelOnDrop {
    pub(super) peer: Option<Peer<RoleClient>>,
    pub(super) id: rmcp::model::RequestId,
    pub(super) tasks: TaskTracker,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // Outside a runtime (it is being torn down) the session ends with it anyway.
        if let (Some(peer), Ok(runtime)) = (self.peer.take(), tokio::runtime::Handle::try_current())
        {
            let notification =
                cancelled_notification(self.id.clone(), "the client's session ended");
            self.tasks.spawn_on(
                async move {
                    let _ = peer.send_notification(notification).await;
                },
                &runtime,
            );
        }
    }
}
