//! The mcp-client process: adopt or spawn, readiness, restart with backoff, crash-loop
//! guard, reconnects, stop (SPEC §5).
//!
//! One task runs the loop. Each round it probes the client address:
//! - nothing listens: spawn mcp-client (own process group; stdout and stderr appended to
//!   `LOG_DIR/mcp_client_stdout.log` and `mcp_client_stderr.log`; a fresh random token in
//!   `MAG_CLIENT_TOKEN`, also written to `DATA_DIR/mcp-client.token` with mode 0600 so a
//!   later mag-server can adopt it), wait until `GET /` answers with its pid, connect again
//!   the servers that were connected, then watch it: `/servers` every `poll_interval`
//!   (settings; 2 s by default) keeps the list of servers to reconnect current, and
//!   `stuck_after` (3) failed polls in a row (each waits at most 5 s) mean it is stuck: it
//!   is stopped and restarted;
//! - an mcp-client answers: adopt it (token: `MAG_CLIENT_TOKEN`, else the token file) and
//!   watch it. One that requires a token and takes the token file's was started by an
//!   earlier mag-server on this data dir (which then died): it is taken back, so it is
//!   stopped with mag-server, restarted on request and replaced when stuck; any other
//!   adopted client is never stopped by mag-server;
//! - something else answers: report it (`address_in_use`) and probe again every
//!   `poll_interval`.
//!
//! An exit (or an adopted client going away) waits `restart_backoff`, doubling per exit up
//! to `restart_backoff_max` (back to the start after a run longer than the crash-loop
//! window). `crash_loop_exits` exits within `crash_loop_window` stop the restarts
//! (`crash_loop`) until [`Supervisor::request_restart`].
//!
//! Stopping sends SIGTERM to the spawned client's process group and SIGKILL after
//! `stop_grace`; a taken-back client gets `POST /shutdown` (it ends its servers), then
//! SIGKILL if it still runs after `stop_grace`.
//!
//! Files by concern: this one holds the handle ([`Supervisor`]), the status `/health`
//! reports and the loop; `policy` the restart backoff and crash-loop guard; `wanted` the
//! servers to reconnect ([`Wanted`]); `spawn` spawning, readiness, watching and stopping a
//! spawned client; `adopt` adopting and taking back; `token_file` the token file; `logs`
//! the client's log files and the stderr tail of a run.

mod adopt;
mod logs;
mod policy;
mod spawn;
mod token_file;
mod wanted;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientRoot, GENERAL_TIMEOUT, McpClient, RootAnswer, TIMEOUT_MARGIN};
use crate::config_store::ConfigStore;
use crate::error::{Error, Result};
use crate::settings::{Secret, Settings, Supervision};
use policy::RestartPolicy;
pub use wanted::Wanted;

/// The environment variable that carries the token to mcp-client (`--token-env`).
pub const CLIENT_TOKEN_ENV: &str = "MAG_CLIENT_TOKEN";

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "mcp-client.token";

/// mcp-client's state, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// Being started for the first time, or probed.
    Starting,
    /// Spawned by mag-server and answering.
    Running,
    /// Started by someone else and answering; left running when mag-server stops.
    Adopted,
    /// It exited; waiting to start it again (or starting it again).
    Restarting,
    /// It exited too often too fast; not restarted until asked (`POST
    /// /api/mcp/client/restart`).
    CrashLoop,
    /// Another program holds the client address; `error` says what answered there.
    AddressInUse,
    /// mag-server is shutting down (and stopping it when it spawned it).
    Stopping,
    /// Stopped (mag-server is shutting down).
    Stopped,
}

/// How a client run ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    /// A sentence: `exit code 1`, `killed by SIGKILL`, `could not start …`, …
    pub reason: String,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal's name, when a signal ended it.
    pub signal: Option<String>,
    /// Its pid, when it had one.
    pub pid: Option<u32>,
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// How long it ran, in seconds.
    pub ran_secs: f64,
    /// The end of what it wrote on stderr during that run (at most ~2 KiB).
    pub stderr_tail: Option<String>,
}

/// What reconnecting after a (re)start did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconnectReport {
    /// Connected again.
    pub connected: Vec<String>,
    /// Not connected again, with the cause.
    pub failed: BTreeMap<String, String>,
}

/// mcp-client as `/health` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    /// The state.
    pub state: ClientState,
    /// Its address.
    pub address: SocketAddr,
    /// Its pid, while there is a process.
    pub pid: Option<u32>,
    /// Whether mag-server spawned it (and so stops it); `false` for an adopted one.
    pub managed: bool,
    /// How many times it was started again (or another was adopted) after the first.
    pub restarts: u64,
    /// When the state was entered (RFC 3339, UTC).
    pub since: String,
    /// How the last run ended.
    pub last_exit: Option<ExitInfo>,
    /// What is wrong now, if anything.
    pub error: Option<String>,
    /// What the last reconnect after a (re)start did.
    pub last_reconnect: Option<ReconnectReport>,
}

impl ClientStatus {
    /// Whether forwarded requests can go through.
    pub fn is_up(&self) -> bool {
        matches!(self.state, ClientState::Running | ClientState::Adopted)
    }

    /// Why forwarded requests cannot go through now.
    pub fn cause(&self) -> String {
        let detail = self
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let state = match self.state {
            ClientState::Starting => "mcp-client is starting",
            ClientState::Running | ClientState::Adopted => "mcp-client is running",
            ClientState::Restarting => "mcp-client is restarting",
            ClientState::CrashLoop => "mcp-client is in a crash loop",
            ClientState::AddressInUse => "the mcp-client address is held by another program",
            ClientState::Stopping | ClientState::Stopped => "mag-server is shutting down",
        };
        format!("{state}{detail}")
    }
}

/// Supervises mcp-client. Cheap to clone; every clone is the same supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Supervision,
    client_bin: PathBuf,
    mcp_config: PathBuf,
    log_dir: PathBuf,
    token_file: PathBuf,
    /// mag-server's data dir, where mcp-client keeps its OAuth tokens too.
    data_dir: PathBuf,
    adopt_token: Option<Secret>,
    connect_concurrency: usize,
    /// Variables holding mag-server's secrets: kept out of mcp-client's environment.
    secret_env: Vec<String>,
    /// Passed on as `--config-limit`.
    config_limit: u64,
    /// Passed on as `--oauth-redirect-uri`: mag-server's own `/oauth/callback`.
    oauth_redirect: String,
    client: McpClient,
    store: Arc<ConfigStore>,
    status: watch::Sender<ClientStatus>,
    wanted: Mutex<Wanted>,
    restart: Notify,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How one round of the loop ended.
enum Outcome {
    /// mag-server is stopping.
    Shutdown,
    /// Probe again after this long (or when a restart is asked).
    Wait(Duration),
    /// Start again now (a restart was asked).
    RestartNow,
    /// The client exited or went away.
    Exited(Ended),
}

/// How a run ended and how long it ran.
struct Ended {
    info: ExitInfo,
    ran: Duration,
}

impl Ended {
    fn new(reason: String, pid: Option<u32>, ran: Duration) -> Self {
        Self {
            info: exit_info(reason, None, pid, ran, None),
            ran,
        }
    }
}

enum Probe {
    Free,
    McpClient(ClientRoot),
    Foreign(String),
}

impl Supervisor {
    /// A supervisor for the mcp-client of `settings`, talking to it through `client`. Call
    /// [`Self::start`] to run it.
    pub fn new(
        settings: &Settings,
        client: McpClient,
        store: Arc<ConfigStore>,
        oauth_redirect: String,
    ) -> Self {
        let (status, _) = watch::channel(ClientStatus {
            state: ClientState::Starting,
            address: settings.client_listen,
            pid: None,
            managed: false,
            restarts: 0,
            since: now_rfc3339(),
            last_exit: None,
            error: None,
            last_reconnect: None,
        });
        Self {
            inner: Arc::new(Inner {
                cfg: settings.supervision.clone(),
                client_bin: settings.client_bin.clone(),
                mcp_config: settings.mcp_config.clone(),
                log_dir: settings.log_dir.clone(),
                token_file: settings.data_dir.join(TOKEN_FILE),
                data_dir: settings.data_dir.clone(),
                adopt_token: settings.client_token.clone(),
                connect_concurrency: settings.connect_concurrency,
                secret_env: settings.secret_env(),
                config_limit: settings.config_limit,
                oauth_redirect,
                client,
                store,
                status,
                wanted: Mutex::default(),
                restart: Notify::new(),
                stop: CancellationToken::new(),
                task: Mutex::default(),
            }),
        }
    }

    /// Starts the supervision loop on the current runtime.
    pub fn start(&self) {
        let this = self.clone();
        let task = tokio::spawn(async move { this.run().await });
        *lock(&self.inner.task) = Some(task);
    }

    /// Stops the loop: a spawned or taken-back client is stopped (see the module doc) and
    /// its token file removed; any other adopted one is left running. Returns when that is
    /// done.
    pub async fn shutdown(&self) {
        self.set(|s| s.state = ClientState::Stopping);
        self.inner.stop.cancel();
        let task = lock(&self.inner.task).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!("the supervision task failed: {e}");
        }
    }

    /// The current status.
    pub fn status(&self) -> ClientStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits up to `within` for the client to be up when mag-server is starting it for the
    /// first time.
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the cause when it is not up by then, and at once when it
    /// is down otherwise (restarting, crash loop, address held, shutting down): a caller
    /// is told now rather than held while mcp-client restarts.
    pub async fn ready(&self, within: Duration) -> Result<()> {
        let mut rx = self.inner.status.subscribe();
        let settled = |s: &ClientStatus| s.is_up() || s.state != ClientState::Starting;
        let status = match tokio::time::timeout(within, rx.wait_for(settled)).await {
            Ok(Ok(status)) => status.clone(),
            _ => self.status(),
        };
        if status.is_up() {
            Ok(())
        } else {
            Err(Error::Unavailable(status.cause()))
        }
    }

    /// Asks for a restart: leaves a crash loop or a held address and probes again; a
    /// running spawned client is stopped and started again (its servers reconnected).
    ///
    /// # Errors
    /// [`Error::ClientState`] for an adopted client that mag-server did not start (not
    /// mag-server's to stop) or while shutting down.
    pub fn request_restart(&self) -> Result<ClientStatus> {
        let status = self.status();
        match status.state {
            ClientState::Adopted if !status.managed => Err(Error::ClientState(format!(
                "the mcp-client on {} (pid {}) was adopted, not started by mag-server: \
                 restart it yourself, and mag-server takes it up again",
                status.address,
                status.pid.map_or("?".into(), |p| p.to_string())
            ))),
            ClientState::Stopping | ClientState::Stopped => {
                Err(Error::ClientState("mag-server is shutting down".into()))
            }
            // Being started already.
            ClientState::Starting => Ok(status),
            ClientState::Restarting if status.pid.is_some() => Ok(status),
            _ => {
                tracing::info!("restart of mcp-client requested");
                self.inner.restart.notify_one();
                Ok(status)
            }
        }
    }

    /// Records that the API connected (`true`) or disconnected or removed (`false`)
    /// `server`, for reconnects after a restart.
    pub fn note_connected(&self, server: &str, connected: bool) {
        lock(&self.inner.wanted).set(server, connected);
    }

    /// The servers that would be connected again after a restart.
    pub fn wanted(&self) -> BTreeSet<String> {
        lock(&self.inner.wanted).names()
    }

    fn set(&self, change: impl FnOnce(&mut ClientStatus)) {
        self.inner.status.send_modify(|status| {
            let before = status.state;
            change(status);
            if status.state != before {
                status.since = now_rfc3339();
            }
        });
    }

    async fn run(self) {
        let mut policy = RestartPolicy::new(self.inner.cfg.clone());
        let mut starts: u64 = 0;
        let mut last_foreign: Option<String> = None;
        loop {
            let probe = tokio::select! {
                probe = self.probe() => probe,
                _ = self.inner.stop.cancelled() => break,
            };
            let outcome = match probe {
                Probe::Free => {
                    last_foreign = None;
                    starts += 1;
                    self.spawn_and_watch(starts - 1).await
                }
                Probe::McpClient(root) => {
                    last_foreign = None;
                    starts += 1;
                    self.adopt_and_watch(root, starts - 1).await
                }
                Probe::Foreign(what) => {
                    let error = format!(
                        "{} is held by another program that is not mcp-client ({what}); \
                         mag-server does not start mcp-client there: free the address or set \
                         --client-listen",
                        self.inner.client.addr()
                    );
                    if last_foreign.as_deref() != Some(error.as_str()) {
                        tracing::error!("{error}");
                        last_foreign = Some(error.clone());
                    }
                    self.set(|s| {
                        s.state = ClientState::AddressInUse;
                        s.pid = None;
                        s.managed = false;
                        s.error = Some(error);
                    });
                    Outcome::Wait(self.inner.cfg.poll_interval)
                }
            };
            let go_on = match outcome {
                Outcome::Shutdown => false,
                Outcome::Wait(pause) => self.pause(pause).await,
                Outcome::RestartNow => {
                    policy.reset();
                    true
                }
                Outcome::Exited(Ended { info, ran }) => match policy.on_exit(Instant::now(), ran) {
                    Ok(backoff) => {
                        let error = format!(
                            "mcp-client ended ({}); starting it again in {}",
                            info.reason,
                            humantime::format_duration(backoff)
                        );
                        tracing::warn!("{error}");
                        self.ended(ClientState::Restarting, info, error);
                        self.pause(backoff).await
                    }
                    Err(exits) => {
                        let error = format!(
                            "mcp-client exited {exits} times within {}; not restarting it \
                             (last: {}). POST /api/mcp/client/restart to try again",
                            humantime::format_duration(self.inner.cfg.crash_loop_window),
                            info.reason
                        );
                        tracing::error!("{error}");
                        self.ended(ClientState::CrashLoop, info, error);
                        let retry = self.wait_for_restart().await;
                        policy.reset();
                        retry
                    }
                },
            };
            if !go_on {
                break;
            }
        }
        self.set(|s| {
            s.state = ClientState::Stopped;
            s.pid = None;
        });
    }

    /// Records how a run ended and the state it leads to.
    fn ended(&self, state: ClientState, info: ExitInfo, error: String) {
        self.set(|s| {
            s.state = state;
            s.pid = None;
            s.last_exit = Some(info);
            s.error = Some(error);
        });
    }

    /// Sleeps `pause`, cut short by a restart request; `false` when mag-server stops.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = self.inner.restart.notified() => true,
            _ = self.inner.stop.cancelled() => false,
        }
    }

    /// Waits for a restart request; `false` when mag-server stops.
    async fn wait_for_restart(&self) -> bool {
        tokio::select! {
            _ = self.inner.restart.notified() => true,
            _ = self.inner.stop.cancelled() => false,
        }
    }

    async fn probe(&self) -> Probe {
        let addr = self.inner.client.addr();
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::debug!("probing {addr}: {e}; starting mcp-client there");
                }
                return Probe::Free;
            }
            Err(_) => return Probe::Foreign("it accepted no connection within 3 s".into()),
            Ok(Ok(_)) => {}
        }
        match self.inner.client.root(Duration::from_secs(3)).await {
            Ok(RootAnswer::McpClient(root)) => Probe::McpClient(root),
            Ok(RootAnswer::Other(what)) => Probe::Foreign(what),
            Err(e) => Probe::Foreign(format!(
                "it accepts TCP connections but did not answer GET / over HTTP: {e}"
            )),
        }
    }

    /// Asks `/servers` and updates the wanted servers.
    async fn poll(&self) -> Result<()> {
        let since = lock(&self.inner.wanted).begin_poll();
        let servers = self.inner.client.servers(Duration::from_secs(5)).await?;
        lock(&self.inner.wanted).apply_poll(since, &servers);
        Ok(())
    }

    /// Connects again the wanted servers that the new client knows and has not connected.
    async fn reconnect(&self) -> Option<ReconnectReport> {
        let wanted = self.wanted();
        if wanted.is_empty() {
            return None;
        }
        let mut report = ReconnectReport::default();
        let servers = match self.inner.client.servers(GENERAL_TIMEOUT).await {
            Ok(servers) => servers,
            Err(e) => {
                for name in wanted {
                    report.failed.insert(name, e.to_string());
                }
                return Some(report);
            }
        };
        let timeouts = self.inner.store.timeouts().await;
        let mut todo = Vec::new();
        for name in wanted {
            match servers.get(&name) {
                None => self.note_connected(&name, false),
                Some(view) if view.connected => report.connected.push(name),
                Some(_) => {
                    let within = timeouts.of(&name) + TIMEOUT_MARGIN;
                    todo.push((name, within));
                }
            }
        }
        tracing::info!(servers = ?todo.iter().map(|(n, _)| n).collect::<Vec<_>>(), "reconnecting");
        let results =
            crate::client::connect_many(&self.inner.client, todo, self.inner.connect_concurrency)
                .await;
        for (name, result) in results {
            match result {
                Ok(_) => report.connected.push(name),
                Err(e) => {
                    tracing::warn!(server = %name, "could not reconnect: {e}");
                    report.failed.insert(name, e.to_string());
                }
            }
        }
        report.connected.sort();
        Some(report)
    }
}

/// Bound on one piece of the supervisor's filesystem work (the token file, opening the log
/// files, a stderr tail).
const FS_BOUND: Duration = Duration::from_secs(5);

/// Runs blocking filesystem `work` on tokio's blocking pool, for at most [`FS_BOUND`].
///
/// # Errors
/// What `work` returned; `TimedOut` when it took longer (it then finishes in the
/// background); `Other` when it panicked.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::time::timeout(FS_BOUND, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(done)) => done,
        Ok(Err(panicked)) => Err(std::io::Error::other(panicked)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("took longer than {}", humantime::format_duration(FS_BOUND)),
        )),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, as RFC 3339 in whole seconds, UTC (`2026-12-06T10:00:00Z`).
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn exit_info(
    reason: String,
    status: Option<ExitStatus>,
    pid: Option<u32>,
    ran: Duration,
    stderr_tail: Option<String>,
) -> ExitInfo {
    ExitInfo {
        reason,
        code: status.and_then(|s| s.code()),
        signal: status
            .and_then(|s| s.signal())
            .map(|n| Signal::try_from(n).map_or(n.to_string(), |s| s.as_str().to_string())),
        pid,
        at: now_rfc3339(),
        ran_secs: ran.as_secs_f64(),
        stderr_tail,
    }
}

fn exit_status_info(
    status: ExitStatus,
    pid: Option<u32>,
    ran: Duration,
    stderr_tail: Option<String>,
) -> ExitInfo {
    let mut info = exit_info(String::new(), Some(status), pid, ran, stderr_tail);
    info.reason = match (&info.code, &info.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by {signal}"),
        (None, None) => status.to_string(),
    };
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_well() {
        let info = exit_status_info(ExitStatus::from_raw(9), Some(1), Duration::ZERO, None);
        assert_eq!(info.reason, "killed by SIGKILL");
        assert_eq!(info.signal.as_deref(), Some("SIGKILL"));
        let info = exit_status_info(ExitStatus::from_raw(1 << 8), None, Duration::ZERO, None);
        assert_eq!(info.reason, "exit code 1");
        assert_eq!(info.code, Some(1));
    }
}
