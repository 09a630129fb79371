//! What the gateway's client sessions asked of a server that outlasts a request (SPEC §8):
//! the log level (`logging/setLevel`) and resource subscriptions (`resources/subscribe`).
//!
//! A server session is asked for the union over the live client sessions: the most verbose
//! level any of them set (for the servers it serves), and every URI one of them holds. A new
//! server session (connect, reconnect, reload) has been asked nothing, so it is asked again; a
//! URI is unsubscribed when the last client session holding it unsubscribes or ends, and the
//! level is made less verbose when the session that wanted the most leaves.

// rmcp 3.9 marks logging and `resources/subscribe` deprecated for protocol 2026-07-28; the
// gateway serves 2025-11-25 and older, where they are current.
#![allow(deprecated)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rmcp::model::{
    ClientRequest, LoggingLevel, SetLevelRequest, SetLevelRequestParams, SubscribeRequest,
    SubscribeRequestParams, UnsubscribeRequest, UnsubscribeRequestParams,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::notify::{Wants, level_of};
use super::session::Scope;
use crate::connection::{CallError, Connection};
use crate::supervisor::Supervisor;

/// The live client sessions' lasting asks, and what each server's session was asked.
#[derive(Default)]
pub(super) struct Upstream {
    next: AtomicU64,
    /// Each live client session: what it serves, and what it asked.
    sessions: Mutex<HashMap<u64, (Scope, Arc<Wants>)>>,
    /// Per server, what its current session was asked; the lock keeps one change at a
    /// time in flight to it.
    applied: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Applied>>>>,
}

/// What one server session was asked.
#[derive(Default)]
struct Applied {
    /// The server session it was asked of (a new one has been asked nothing).
    connection: Weak<Connection>,
    level: Option<LoggingLevel>,
    subscribed: BTreeSet<String>,
}

impl Upstream {
    /// Registers a client session serving `scope`; returns its key for [`Self::leave`].
    pub(super) fn join(&self, scope: Scope, wants: Arc<Wants>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.sessions().insert(key, (scope, wants));
        key
    }

    /// Forgets the client session `key`; returns the servers whose asks may now be
    /// narrower (for [`Self::sync`]).
    pub(super) fn leave(&self, key: u64) -> Vec<String> {
        let Some((scope, wants)) = self.sessions().remove(&key) else {
            return Vec::new();
        };
        let mut servers: BTreeSet<String> = wants
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(server, _)| server.clone())
            .collect();
        if level_of(wants.log_level.load(Ordering::Relaxed)).is_some() {
            match scope {
                Scope::One(server) => {
                    servers.insert(server);
                }
                Scope::All => servers.extend(self.applied_servers()),
            }
        }
        servers.into_iter().collect()
    }

    /// Whether some client session asks anything of `server`.
    pub(super) fn asks_of(&self, server: &str) -> bool {
        let (level, subscribed) = self.wanted(server);
        level.is_some() || !subscribed.is_empty()
    }

    /// Brings what `connection` (the session with `server`) was asked in line with what the
    /// client sessions ask now: the level, then new subscriptions, then the ones no session
    /// holds any more. Changes to one server go one at a time.
    ///
    /// # Errors
    /// The first request that failed ([`CallError`]); what was asked before it stays
    /// recorded, the rest is asked at the next sync.
    pub(super) async fn sync(
        &self,
        server: &str,
        connection: &Arc<Connection>,
    ) -> Result<(), CallError> {
        let slot = self
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server.to_string())
            .or_default()
            .clone();
        let mut applied = slot.lock().await;
        if !Weak::ptr_eq(&applied.connection, &Arc::downgrade(connection)) {
            *applied = Applied {
                connection: Arc::downgrade(connection),
                ..Applied::default()
            };
        }
        let (level, subscribed) = self.wanted(server);
        let logs = connection
            .server_info()
            .is_some_and(|info| info.capabilities.logging.is_some());
        if let Some(level) = level
            && logs
            && applied.level != Some(level)
        {
            let params = SetLevelRequestParams::new(level);
            connection
                .request(ClientRequest::SetLevelRequest(SetLevelRequest::new(params)))
                .await?;
            applied.level = Some(level);
        }
        for uri in subscribed.difference(&applied.subscribed.clone()) {
            let params = SubscribeRequestParams::new(uri.clone());
            connection
                .request(ClientRequest::SubscribeRequest(SubscribeRequest::new(
                    params,
                )))
                .await?;
            applied.subscribed.insert(uri.clone());
        }
        for uri in applied.subscribed.clone().difference(&subscribed) {
            let params = UnsubscribeRequestParams::new(uri.clone());
            connection
                .request(ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(
                    params,
                )))
                .await?;
            applied.subscribed.remove(uri);
        }
        Ok(())
    }

    /// What the live client sessions ask of `server`: the most verbose level any of those
    /// serving it set, and the URIs they subscribed to.
    fn wanted(&self, server: &str) -> (Option<LoggingLevel>, BTreeSet<String>) {
        let sessions = self.sessions();
        let mut lowest = 0;
        let mut subscribed = BTreeSet::new();
        for (scope, wants) in sessions.values() {
            let serves = match scope {
                Scope::All => true,
                Scope::One(one) => one == server,
            };
            let level = wants.log_level.load(Ordering::Relaxed);
            if serves && level > 0 && (lowest == 0 || level < lowest) {
                lowest = level;
            }
            let held = wants.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            subscribed.extend(
                held.iter()
                    .filter(|(of, _)| of == server)
                    .map(|(_, uri)| uri.clone()),
            );
        }
        (level_of(lowest), subscribed)
    }

    /// Drops what `server`'s sessions were asked (it was removed).
    fn forget(&self, server: &str) {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server);
    }

    fn applied_servers(&self) -> Vec<String> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.keys().cloned().collect()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Scope, Arc<Wants>)>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Syncs each of `servers` that is connected, in a task of its own; failures are logged
/// (nobody waits for them: a session ended, or a server reconnected).
pub(super) fn resync(supervisor: &Supervisor, upstream: &Arc<Upstream>, servers: Vec<String>) {
    for server in servers {
        let Ok((connection, _)) = supervisor.session(&server) else {
            continue;
        };
        let upstream = upstream.clone();
        supervisor.tasks().spawn(async move {
            if let Err(e) = upstream.sync(&server, &connection).await {
                tracing::warn!(
                    server = %server,
                    "could not ask the server again for the gateway clients' log level and \
                     subscriptions: {e}"
                );
            }
        });
    }
}

/// Starts the task that asks each server session the gateway's clients depend on for their
/// level and subscriptions when it connects, reconnects or is reloaded. Ends with `stop`.
pub(super) fn spawn_watch(
    supervisor: Supervisor,
    upstream: Arc<Upstream>,
    stop: CancellationToken,
) {
    let mut events = supervisor.events();
    supervisor.tasks().clone().spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            let servers = match event {
                Ok(crate::connection::ServerEvent::Lifecycle(server))
                    if !supervisor.knows(&server) =>
                {
                    // Removed from mcp.json: nothing to keep for its sessions.
                    upstream.forget(&server);
                    continue;
                }
                Ok(crate::connection::ServerEvent::Lifecycle(server)) => vec![server],
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => upstream.applied_servers(),
                Err(RecvError::Closed) => return,
            };
            let servers = servers
                .into_iter()
                .filter(|server| upstream.asks_of(server))
                .collect();
            resync(&supervisor, &upstream, servers);
        }
    });
}
