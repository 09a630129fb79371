//! The notifications a gateway session sends on its own (SPEC §8): `*/list_changed` when a
//! server's lists change or it connects, drops, reconnects or is reloaded, the servers' log
//! messages (tagged with the server in the aggregate; from the level the session set with
//! `logging/setLevel` up) and `notifications/resources/updated` for the URIs the session
//! subscribed to.

// rmcp 3.9 marks logging deprecated for protocol 2026-07-28; the gateway serves 2025-11-25
// and older, where it is current.
#![allow(deprecated)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::RoleServer;
use rmcp::model::{
    LoggingLevel, LoggingMessageNotification, PromptListChangedNotification,
    ResourceListChangedNotification, ResourceUpdatedNotification, ResourceUpdatedNotificationParam,
    ServerNotification, ToolListChangedNotification,
};
use rmcp::service::Peer;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::session::Scope;
use crate::connection::ServerEvent;

/// What one session asked to hear.
#[derive(Default)]
pub(super) struct Wants {
    /// URIs it subscribed to, as (server, URI).
    pub(super) subscribed: Mutex<BTreeSet<(String, String)>>,
    /// The lowest log level it wants ([`severity`]); 0 until it sets one: everything the
    /// servers send.
    pub(super) log_level: AtomicU8,
}

/// The log levels from the most verbose up, as RFC 5424 orders them (MCP spec 2025-11-25,
/// Utilities § Logging).
const LEVELS: [LoggingLevel; 8] = [
    LoggingLevel::Debug,
    LoggingLevel::Info,
    LoggingLevel::Notice,
    LoggingLevel::Warning,
    LoggingLevel::Error,
    LoggingLevel::Critical,
    LoggingLevel::Alert,
    LoggingLevel::Emergency,
];

/// A log level's rank, 1 (debug) to 8 (emergency).
pub(super) fn severity(level: LoggingLevel) -> u8 {
    LEVELS
        .iter()
        .position(|l| *l == level)
        .map_or(0, |i| i as u8 + 1)
}

/// The level of a [`severity`]; `None` for 0 (no level set).
pub(super) fn level_of(severity: u8) -> Option<LoggingLevel> {
    LEVELS.get(usize::from(severity).checked_sub(1)?).copied()
}

/// Which lists a change touches.
#[derive(Clone, Copy, Default)]
struct Lists {
    tools: bool,
    prompts: bool,
    resources: bool,
}

const ALL: Lists = Lists {
    tools: true,
    prompts: true,
    resources: true,
};

/// Starts the notification task of one session; it ends with `stop` (the session ended) or
/// when the client can no longer be reached.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    scope: Scope,
    peer: Peer<RoleServer>,
    wants: Arc<Wants>,
    stop: CancellationToken,
) {
    let mut events = shared.supervisor.events();
    shared.supervisor.tasks().spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            let sent = match event {
                Ok(event) => {
                    let ours = match &scope {
                        Scope::All => true,
                        Scope::One(server) => event.server() == server,
                    };
                    if !ours {
                        continue;
                    }
                    send(&peer, &scope, event, &wants).await
                }
                // Fell behind: whatever was missed, every list may have changed.
                Err(RecvError::Lagged(_)) => send_lists(&peer, ALL).await,
                Err(RecvError::Closed) => return,
            };
            if !sent || peer.is_transport_closed() {
                return;
            }
        }
    });
}

/// Sends what `event` means to the client; `false` once the client is gone.
async fn send(peer: &Peer<RoleServer>, scope: &Scope, event: ServerEvent, wants: &Wants) -> bool {
    let lists = match event {
        ServerEvent::ToolsChanged(_) => Lists {
            tools: true,
            ..Lists::default()
        },
        ServerEvent::PromptsChanged(_) => Lists {
            prompts: true,
            ..Lists::default()
        },
        ServerEvent::ResourcesChanged(_) => Lists {
            resources: true,
            ..Lists::default()
        },
        ServerEvent::Lifecycle(_) => ALL,
        ServerEvent::ResourceUpdated { server, uri } => {
            let wanted = wants
                .subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&(server, uri.clone()));
            if !wanted {
                return true;
            }
            let notification = ServerNotification::ResourceUpdatedNotification(
                ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(uri)),
            );
            return peer.send_notification(notification).await.is_ok();
        }
        ServerEvent::Log { server, mut params } => {
            if severity(params.level) < wants.log_level.load(Ordering::Relaxed) {
                return true;
            }
            if let Scope::All = scope {
                params.logger = Some(match params.logger.take() {
                    Some(logger) => format!("{server}/{logger}"),
                    None => server,
                });
            }
            let notification = ServerNotification::LoggingMessageNotification(
                LoggingMessageNotification::new(params),
            );
            return peer.send_notification(notification).await.is_ok();
        }
    };
    send_lists(peer, lists).await
}

async fn send_lists(peer: &Peer<RoleServer>, lists: Lists) -> bool {
    let mut notifications = Vec::new();
    if lists.tools {
        notifications.push(ServerNotification::ToolListChangedNotification(
            ToolListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            },
        ));
    }
    if lists.prompts {
        notifications.push(ServerNotification::PromptListChangedNotification(
            PromptListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            },
        ));
    }
    if lists.resources {
        notifications.push(ServerNotification::ResourceListChangedNotification(
            ResourceListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            },
        ));
    }
    for notification in notifications {
        if peer.send_notification(notification).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_run_from_debug_to_emergency_and_back() {
        assert_eq!(severity(LoggingLevel::Debug), 1);
        assert_eq!(severity(LoggingLevel::Emergency), 8);
        for level in LEVELS {
            assert_eq!(level_of(severity(level)), Some(level));
        }
        assert_eq!(level_of(0), None);
        assert_eq!(level_of(9), None);
    }
}
