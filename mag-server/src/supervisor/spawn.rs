//! Spawning mcp-client and watching it: a fresh token, the log files, readiness (`GET /`
//! answered by it or a process of its group), reconnects, polls every `poll_interval`
//! (`stuck_after` failures in a row stop it), and stopping it (SIGTERM to its process
//! group, SIGKILL after `stop_grace`).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mag_common::process_group::{self, GroupLeader};
use nix::sys::signal::Signal;
use tokio::process::Command;

use super::{
    CLIENT_TOKEN_ENV, ClientState, Ended, Outcome, Supervisor, blocking, exit_info,
    exit_status_info, logs, now_rfc3339, token_file,
};
use crate::client::RootAnswer;
use crate::settings::Secret;

/// How long a stopped client gets to be reaped after SIGKILL; one stuck in the kernel longer
/// than that is left behind (its stop reports no exit status).
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Spawns mcp-client (see the module doc), waits until it answers, reconnects the wanted
    /// servers and watches it until it exits, gets stuck, is asked to restart or mag-server
    /// stops. `restarts`: how many starts came before this one.
    pub(super) async fn spawn_and_watch(&self, restarts: u64) -> Outcome {
        let inner = &self.inner;
        let token = random_token();
        inner.client.set_token(Some(token.clone()));
        token_file::write(&inner.token_file, &token).await;
        let header = format!(
            "[mag-server] {} starting {} --listen {}",
            now_rfc3339(),
            inner.client_bin.display(),
            inner.client.addr()
        );
        let log_dir = inner.log_dir.clone();
        let logs = match blocking(move || logs::open(&log_dir, &header)).await {
            Ok(logs) => logs,
            Err(e) => {
                let reason = format!(
                    "could not open mcp_client_std{{out,err}}.log in {}: {e}",
                    inner.log_dir.display()
                );
                return Outcome::Exited(Ended::new(reason, None, Duration::ZERO));
            }
        };
        let mut command = Command::new(&inner.client_bin);
        // mag-server's secrets (its API token, the store's URL with its password, the JWT
        // secret, the models' keys) are not for mcp-client, nor so for any MCP server
        // (generated code among them) to read.
        for name in &inner.secret_env {
            command.env_remove(name);
        }
        command
            .arg("--config")
            .arg(&inner.mcp_config)
            .arg("--config-limit")
            .arg(inner.config_limit.to_string())
            .arg("--listen")
            .arg(inner.client.addr().to_string())
            .arg("--log-dir")
            .arg(&inner.log_dir)
            // Its OAuth tokens live beside mag-server's own state.
            .arg("--data-dir")
            .arg(&inner.data_dir)
            .arg("--oauth-redirect-uri")
            .arg(&inner.oauth_redirect)
            .arg("--token-env")
            .arg(CLIENT_TOKEN_ENV)
            .env(CLIENT_TOKEN_ENV, token.expose())
            // Its stderr goes to a file: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logs.stdout)
            .stderr(logs.stderr);
        let started = Instant::now();
        // Its own process group, so that stopping it ends whatever it started in it.
        let (mut child, pid) = match process_group::spawn_leader(command) {
            Ok(spawned) => spawned,
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    " (build it with `cargo build --release -p mcp-client`, or point \
                     --client-bin at it)"
                } else {
                    ""
                };
                let reason = format!("could not start {}: {e}{hint}", inner.client_bin.display());
                return Outcome::Exited(Ended::new(reason, None, Duration::ZERO));
            }
        };
        tracing::info!(pid, bin = %inner.client_bin.display(), addr = %inner.client.addr(), "started mcp-client");
        self.set(|s| {
            s.state = if restarts == 0 {
                ClientState::Starting
            } else {
                ClientState::Restarting
            };
            s.pid = Some(pid);
            s.managed = true;
            s.restarts = restarts;
        });
        let run = Run {
            pid,
            started,
            stderr_log: inner.log_dir.join(logs::STDERR_LOG),
            stderr_start: logs.stderr_start,
        };

        // Readiness: GET / answers from it (or from a process in its group, when the binary
        // is a wrapper that did not exec).
        loop {
            let pause = tokio::time::sleep(Duration::from_millis(100));
            if let Err(outcome) = self.watched(&mut child, &run, pause).await {
                return outcome;
            }
            if let Ok(RootAnswer::McpClient(root)) = inner.client.root(Duration::from_secs(2)).await
                && root.pid.is_some_and(|p| p == pid || in_group(p, pid))
            {
                break;
            }
            if started.elapsed() > inner.cfg.startup_timeout {
                tracing::error!(pid, "mcp-client did not answer GET / in time; stopping it");
                let mut ended = run.ended(self.stop_child(&mut child, pid).await).await;
                ended.info.reason = format!(
                    "did not answer GET / within {}, so it was stopped: {}",
                    humantime::format_duration(inner.cfg.startup_timeout),
                    ended.info.reason
                );
                return Outcome::Exited(ended);
            }
        }
        tracing::info!(pid, "mcp-client is ready");

        let report = match self.watched(&mut child, &run, self.reconnect()).await {
            Ok(report) => report,
            Err(outcome) => return outcome,
        };
        self.set(|s| {
            s.state = ClientState::Running;
            s.error = None;
            if report.is_some() {
                s.last_reconnect = report;
            }
        });

        let mut failures = 0;
        let mut tick = tokio::time::interval(inner.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = child.wait() => return Outcome::Exited(run.ended(status.ok()).await),
                _ = inner.stop.cancelled() => {
                    self.stop_child(&mut child, pid).await;
                    return Outcome::Shutdown;
                }
                _ = inner.restart.notified() => {
                    tracing::info!(pid, "restarting mcp-client as asked");
                    self.set(|s| {
                        s.state = ClientState::Restarting;
                        s.error = Some("restart requested: stopping it".into());
                    });
                    self.stop_child(&mut child, pid).await;
                    return Outcome::RestartNow;
                }
                _ = tick.tick() => {}
            }
            match self.poll().await {
                Ok(()) => {
                    if failures > 0 {
                        self.set(|s| s.error = None);
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    self.set(|s| s.error = Some(format!("not answering: {e}")));
                    if failures >= inner.cfg.stuck_after {
                        tracing::error!(pid, "mcp-client stopped answering ({e}); stopping it");
                        let mut ended = run.ended(self.stop_child(&mut child, pid).await).await;
                        ended.info.reason = format!(
                            "stopped answering ({e}), so it was stopped: {}",
                            ended.info.reason
                        );
                        return Outcome::Exited(ended);
                    }
                }
            }
        }
    }

    /// Runs `work` while watching the child of `run`: `Err` with the outcome if the child
    /// exits first or mag-server is stopping (the child is then stopped).
    async fn watched<T>(
        &self,
        child: &mut GroupLeader,
        run: &Run,
        work: impl Future<Output = T>,
    ) -> Result<T, Outcome> {
        tokio::select! {
            value = work => Ok(value),
            status = child.wait() => Err(Outcome::Exited(run.ended(status.ok()).await)),
            _ = self.inner.stop.cancelled() => {
                self.stop_child(child, run.pid).await;
                Err(Outcome::Shutdown)
            }
        }
    }

    /// SIGTERM to the child's group, SIGKILL after the grace period; its exit status.
    async fn stop_child(&self, child: &mut GroupLeader, pid: u32) -> Option<ExitStatus> {
        process_group::signal(pid, Signal::SIGTERM);
        let grace = self.inner.cfg.stop_grace;
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!(
                    pid,
                    "mcp-client did not exit within {grace:?} of SIGTERM; SIGKILL"
                );
                process_group::signal(pid, Signal::SIGKILL);
                match tokio::time::timeout(KILL_WAIT, child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        tracing::error!(
                            pid,
                            "mcp-client did not exit within {KILL_WAIT:?} of SIGKILL"
                        );
                        None
                    }
                }
            }
        };
        // Whatever else was left in its group.
        process_group::signal(pid, Signal::SIGKILL);
        self.forget_token_at_shutdown().await;
        tracing::info!(pid, ?status, "mcp-client stopped");
        status
    }
}

/// One run of a spawned client, for describing its end.
struct Run {
    /// Its pid, also its process group's id.
    pid: u32,
    /// When it was started.
    started: Instant,
    /// `LOG_DIR/mcp_client_stderr.log`.
    stderr_log: PathBuf,
    /// Where this run's stderr starts in that file.
    stderr_start: u64,
}

impl Run {
    /// How the run ended, from its exit status (`None`: it could not be waited for): the
    /// reason, how long it ran and the end of its stderr. Anything it left in its process
    /// group is killed.
    async fn ended(&self, status: Option<ExitStatus>) -> Ended {
        let ran = self.started.elapsed();
        process_group::signal(self.pid, Signal::SIGKILL);
        let (log, from) = (self.stderr_log.clone(), self.stderr_start);
        let tail = blocking(move || Ok(logs::stderr_tail(&log, from)))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("cannot read the end of {}: {e}", self.stderr_log.display());
                None
            });
        let pid = Some(self.pid);
        let info = match status {
            Some(status) => exit_status_info(status, pid, ran, tail),
            None => exit_info("could not wait for it".into(), None, pid, ran, tail),
        };
        Ended { info, ran }
    }
}

/// Whether process `pid` is in process group `group`.
fn in_group(pid: u32, group: u32) -> bool {
    mag_common::procfs::stat(pid).is_some_and(|stat| stat.pgid == group)
}

/// 32 random bytes, hex.
fn random_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::from_env_value(Some(hex::encode(bytes))).expect("not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
    }
}
