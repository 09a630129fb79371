//! Adopting an mcp-client that already answers on the client address, and taking back one
//! that an earlier mag-server on this data dir started (it requires a token and takes the
//! token file's): a taken-back client is mag-server's again (stopped with it, restarted on
//! request, replaced when stuck); any other adopted client is never stopped by mag-server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mag_common::process_group;
use nix::sys::signal::Signal;

use super::{ClientState, Ended, Outcome, Supervisor, blocking, token_file};
use crate::client::{ClientRoot, GENERAL_TIMEOUT, RootAnswer};
use crate::error::Error;

impl Supervisor {
    /// Adopts the mcp-client that answers on the client address (see the module doc) and
    /// watches it until it goes away or mag-server stops; one it took back is also
    /// restarted on request and replaced when stuck. `restarts`: how many starts came before.
    pub(super) async fn adopt_and_watch(&self, root: ClientRoot, restarts: u64) -> Outcome {
        let inner = &self.inner;
        let addr = inner.client.addr();
        let pid = root.pid;
        // Only the token file's token proves an earlier mag-server started it.
        let file_token = match inner.adopt_token {
            None => token_file::read(&inner.token_file).await,
            Some(_) => None,
        };
        let from_file = file_token.is_some();
        let token = inner.adopt_token.clone().or(file_token);
        inner.client.set_token(token);
        if let Err(e) = self.poll().await {
            let error = match e {
                Error::TokenRefused(_) => format!(
                    "an mcp-client (pid {}) runs on {addr} but refuses mag-server's token: set \
                     MAG_CLIENT_TOKEN to the token it was started with, or stop it",
                    pid.map_or("?".into(), |p| p.to_string())
                ),
                other => format!("an mcp-client runs on {addr} but cannot be used: {other}"),
            };
            tracing::error!("{error}");
            self.set(|s| {
                s.state = ClientState::AddressInUse;
                s.pid = pid;
                s.managed = false;
                s.error = Some(error);
            });
            return Outcome::Wait(inner.cfg.poll_interval);
        }
        // One that takes any request (no token) is someone else's, whatever the file says;
        // the data dir's lock (held for mag-server's life) says its mag-server has died.
        // Pid and start time name the process for the stop.
        let taken_back = if from_file && inner.client.requires_token(GENERAL_TIMEOUT).await {
            pid.and_then(|pid| Some((pid, mag_common::procfs::running_since(pid)?)))
        } else {
            None
        };
        if taken_back.is_some() {
            tracing::info!(
                pid,
                %addr,
                "took back the mcp-client an earlier mag-server started; it is stopped with \
                 this one"
            );
        } else {
            tracing::info!(
                pid,
                %addr,
                "adopted the mcp-client already running; it is left running when mag-server \
                 stops"
            );
        }
        let warning = self.check_adopted_config(&root).await;
        self.set(|s| {
            s.state = ClientState::Adopted;
            s.pid = pid;
            s.managed = taken_back.is_some();
            s.restarts = restarts;
            s.error = warning.clone();
        });
        let started = Instant::now();
        let mut failures = 0;
        let mut tick = tokio::time::interval(inner.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner.stop.cancelled() => {
                    match taken_back {
                        Some(process) => self.stop_taken_back(process).await,
                        None => tracing::info!(pid, "leaving the adopted mcp-client running"),
                    }
                    return Outcome::Shutdown;
                }
                // Only a taken-back client may be restarted (`request_restart` refuses others).
                _ = inner.restart.notified(), if taken_back.is_some() => {
                    self.set(|s| s.state = ClientState::Restarting);
                    if let Some(process) = taken_back {
                        self.stop_taken_back(process).await;
                    }
                    return Outcome::RestartNow;
                }
                _ = tick.tick() => {}
            }
            match self.poll().await {
                Ok(()) => {
                    failures = 0;
                    self.set(|s| s.error = warning.clone());
                }
                Err(e) => {
                    let gone = matches!(
                        tokio::net::TcpStream::connect(addr).await,
                        Err(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused
                    );
                    if gone {
                        let reason = format!("the adopted mcp-client stopped listening on {addr}");
                        return Outcome::Exited(Ended::new(reason, pid, started.elapsed()));
                    }
                    self.set(|s| s.error = Some(format!("not answering: {e}")));
                    failures += 1;
                    // A taken-back client is mag-server's: stuck, it is replaced like a
                    // spawned one.
                    if let Some(process) = taken_back
                        && failures >= inner.cfg.stuck_after
                    {
                        tracing::error!(pid, "mcp-client stopped answering ({e}); stopping it");
                        self.stop_taken_back(process).await;
                        let reason = format!("stopped answering ({e}), so it was stopped");
                        return Outcome::Exited(Ended::new(reason, pid, started.elapsed()));
                    }
                }
            }
        }
    }

    /// Warns when an adopted client serves another file than ours, and loads ours into it.
    async fn check_adopted_config(&self, root: &ClientRoot) -> Option<String> {
        let theirs = PathBuf::from(root.config_path.as_deref()?);
        let ours = &self.inner.mcp_config;
        let (a, b) = (theirs.clone(), ours.clone());
        let same = blocking(move || match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => Ok(a == b),
            _ => Ok(a == b),
        });
        if same.await.unwrap_or(theirs == *ours) {
            return None;
        }
        let warning = format!(
            "the adopted mcp-client serves {} while mag-server edits {}: mag-server's config \
             was loaded into it, but its own file wins when that file changes",
            theirs.display(),
            ours.display()
        );
        tracing::warn!("{warning}");
        if let Ok(file) = self.inner.store.read().await
            && let Err(e) = self
                .inner
                .client
                .load_config(&file.document, GENERAL_TIMEOUT)
                .await
        {
            tracing::warn!("could not load mag-server's config into the adopted mcp-client: {e}");
        }
        Some(warning)
    }

    /// Stops a client an earlier mag-server started (`(pid, start time)`; not our child,
    /// maybe not its group's leader): `POST /shutdown` (it ends its servers) if it is still
    /// the one on the client address, then, if that process still runs after the grace
    /// period, SIGKILL to it and its process group. Returns once it is gone (or after
    /// another grace period).
    async fn stop_taken_back(&self, (pid, start): (u32, u64)) {
        let grace = self.inner.cfg.stop_grace;
        let same = || mag_common::procfs::running_since(pid) == Some(start);
        match self.inner.client.root(grace).await {
            Ok(RootAnswer::McpClient(root)) if root.pid == Some(pid) => {
                if let Err(e) = self.inner.client.shutdown(grace).await {
                    tracing::warn!(pid, "mcp-client did not take POST /shutdown: {e}");
                }
            }
            Ok(_) => tracing::warn!(
                pid,
                "another program answers on the client address now; only the taken-back \
                 process is stopped"
            ),
            Err(_) => {}
        }
        let gone_within = |within: Duration| async move {
            let deadline = Instant::now() + within;
            while same() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            !same()
        };
        if !gone_within(grace).await {
            tracing::warn!(pid, "mcp-client did not exit within {grace:?}; SIGKILL");
            let group = mag_common::procfs::stat(pid).map(|stat| stat.pgid);
            kill_process(pid);
            // Its group too (a wrapper script leads it); never mag-server's own (`signal`
            // refuses it).
            if let Some(group) = group {
                process_group::signal(group, Signal::SIGKILL);
            }
            gone_within(grace).await;
        }
        self.forget_token_at_shutdown().await;
        tracing::info!(pid, "mcp-client stopped");
    }
}

/// SIGKILL to process `pid` alone: never to 0 or 1, nor to a pid past `i32::MAX`, which
/// `kill(2)` would take for a process group.
fn kill_process(pid: u32) {
    if let Some(raw) = i32::try_from(pid).ok().filter(|raw| *raw > 1) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL);
    }
}
