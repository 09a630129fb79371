//! One server's place in the supervisor: its entry, its connection and its state, behind
//! the lock that serializes its connects and disconnects, and a disconnect waiting for that
//! lock.

use std::sync::{Arc, Mutex};

use mag_common::config::ServerEntry;
use mag_common::wire::Status;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::error::ConnectError;

pub(super) struct Slot {
    pub(super) name: String,
    /// Serializes connect and disconnect of this server.
    pub(super) op: tokio::sync::Mutex<()>,
    pub(super) state: Mutex<SlotState>,
}

pub(super) struct SlotState {
    pub(super) entry: ServerEntry,
    pub(super) connection: Option<Arc<Connection>>,
    pub(super) status: Status,
    pub(super) init_attempted: bool,
    pub(super) error: Option<String>,
    /// The kind of `error` (`ServerView::error_kind`).
    pub(super) error_kind: Option<&'static str>,
    pub(super) reconnects: u64,
    pub(super) removed: bool,
    /// The operator (or `autoConnect`) wants it connected: a lost connection is made again.
    pub(super) wanted: bool,
    /// Failed attempts in the current outage.
    pub(super) attempts: u32,
    /// Cancels the pending reconnect loop, if one runs.
    pub(super) retry: Option<CancellationToken>,
    /// Cancels the connect in flight, if one runs.
    pub(super) connecting: Option<CancellationToken>,
    /// Disconnects waiting for this server's lock: a connect that gets the lock meanwhile
    /// gives way ([`ConnectError::Cancelled`](crate::error::ConnectError::Cancelled)).
    pub(super) disconnects: u32,
    /// Why the latest disconnect was asked (the cause of a connect it cancelled).
    pub(super) cancelled_by: Option<String>,
}

impl SlotState {
    /// Records a failed connect (or a refused token) as the server's state: waiting for a
    /// user's authorization, reconnecting (`retrying`, and no user needed), else failed;
    /// `cause` as its error and error kind.
    pub(super) fn record_failure(&mut self, cause: &ConnectError, retrying: bool) {
        self.status = if let ConnectError::AuthorizationRequired(_) = cause {
            Status::NeedsAuthorization
        } else if retrying && !cause.needs_user() {
            Status::Reconnecting
        } else {
            Status::Failed
        };
        self.error = Some(cause.to_string());
        self.error_kind = Some(cause.code());
    }
}

impl Slot {
    pub(super) fn new(name: &str, entry: ServerEntry) -> Arc<Self> {
        let status = if entry.disabled {
            Status::Disabled
        } else {
            Status::Disconnected
        };
        Arc::new(Self {
            name: name.to_string(),
            op: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState {
                entry,
                connection: None,
                status,
                init_attempted: false,
                error: None,
                error_kind: None,
                reconnects: 0,
                removed: false,
                wanted: false,
                attempts: 0,
                retry: None,
                connecting: None,
                disconnects: 0,
                cancelled_by: None,
            }),
        })
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection, if any.
    pub(super) fn connection(&self) -> Option<Arc<Connection>> {
        self.state().connection.clone().filter(|c| !c.is_closed())
    }
}

/// A disconnect waiting for its server's lock: while it lives, the server is not wanted, its
/// reconnect loop and connect in flight are cancelled, and no new connect starts (see
/// [`SlotState::disconnects`]). Dropped once the lock is held, or with an abandoned
/// disconnect.
pub(super) struct PendingDisconnect<'a> {
    slot: &'a Slot,
}

impl<'a> PendingDisconnect<'a> {
    pub(super) fn new(slot: &'a Slot, reason: &str) -> Self {
        let mut state = slot.state();
        state.disconnects += 1;
        state.cancelled_by = Some(reason.to_string());
        state.wanted = false;
        if let Some(retry) = state.retry.take() {
            retry.cancel();
        }
        if let Some(connecting) = state.connecting.take() {
            connecting.cancel();
        }
        drop(state);
        Self { slot }
    }
}

impl Drop for PendingDisconnect<'_> {
    fn drop(&mut self) {
        let mut state = self.slot.state();
        state.disconnects = state.disconnects.saturating_sub(1);
    }
}
