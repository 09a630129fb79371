//! The mcp-client process: adopt or spawn, readiness, restart with backoff, crash-loop
//! guard, reconnects, stop (SPEC §5).
//!
//! One task runs the loop. Each round it probes the client address:
//! - nothing listens: spawn mcp-client (own process group; stdout and stderr appended to
//!   `LOG_DIR/mcp_client_stdout.log` and `mcp_client_stderr.log`; a fresh random token in
//!   `MAG_CLIENT_TOKEN`, also written to `DATA_DIR/mcp-client.token` with mode 0600 so a
//!   later mag-server can adopt it), wait until `GET /` answers with its pid, connect again
//!   the servers that were connected, then watch it: `/servers` every 2 s keeps the list of
//!   servers to reconnect current, and 3 failed polls in a row mean it is stuck: it is
//!   stopped and restarted;
//! - an mcp-client answers: adopt it (token: `MAG_CLIENT_TOKEN`, else the token file) and
//!   watch it. One that requires a token and takes the token file's was started by an
//!   earlier mag-server on this data dir (which then died): it is taken back, so it is
//!   stopped with mag-server, restarted on request and replaced when stuck; any other
//!   adopted client is never stopped by mag-server;
//! - something else answers: report it (`address_in_use`) and probe again every 2 s.
//!
//! An exit (or an adopted client going away) waits `restart_backoff`, doubling per exit up
//! to `restart_backoff_max` (back to the start after a run longer than the crash-loop
//! window). `crash_loop_exits` exits within `crash_loop_window` stop the restarts
//! (`crash_loop`) until [`Supervisor::request_restart`].
//!
//! Stopping sends SIGTERM to the spawned client's process group and SIGKILL after
//! `stop_grace`; a taken-back client gets `POST /shutdown` (it ends its servers), then
//! SIGKILL if it still runs after `stop_grace`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientRoot, GENERAL_TIMEOUT, McpClient, RootAnswer, TIMEOUT_MARGIN};
use crate::config_store::ConfigStore;
use crate::error::{Error, Result};
use crate::settings::{Secret, Settings, Supervision};
use mag_common::wire::{Servers, Status};

/// The environment variable that carries the token to mcp-client (`--token-env`).
pub const CLIENT_TOKEN_ENV: &str = "MAG_CLIENT_TOKEN";

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "mcp-client.token";

/// Between polls of a running client, and between probes of a held address.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Failed polls in a row after which a spawned (or taken-back) client counts as stuck.
const STUCK_AFTER: u32 = 3;

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

/// The servers to connect again after a restart: those connected through the API or seen
/// connected, minus those disconnected through the API or seen disconnected on purpose.
///
/// API changes are numbered, so a poll answered before a change cannot undo it.
#[derive(Debug, Default)]
pub struct Wanted {
    seq: u64,
    names: BTreeSet<String>,
    changed_at: BTreeMap<String, u64>,
}

impl Wanted {
    /// The API connected (`true`) or disconnected or removed (`false`) `name`.
    pub fn set(&mut self, name: &str, connected: bool) {
        self.seq += 1;
        self.changed_at.insert(name.to_string(), self.seq);
        if connected {
            self.names.insert(name.to_string());
        } else {
            self.names.remove(name);
        }
    }

    /// Call before asking `/servers`; pass the value to [`Self::apply_poll`].
    pub fn begin_poll(&self) -> u64 {
        self.seq
    }

    /// Applies a `/servers` answer asked for at `since`: connected servers are wanted;
    /// `disconnected` or `disabled` ones and those no longer listed are not; `failed` or
    /// `connecting` ones keep their place.
    pub fn apply_poll(&mut self, since: u64, servers: &Servers) {
        let newer: BTreeSet<String> = self
            .changed_at
            .iter()
            .filter(|(_, at)| **at > since)
            .map(|(name, _)| name.clone())
            .collect();
        for (name, view) in servers {
            if newer.contains(name) {
                continue;
            }
            if view.connected {
                self.names.insert(name.clone());
            } else if matches!(view.status, Status::Disconnected | Status::Disabled) {
                self.names.remove(name);
            }
        }
        self.names
            .retain(|name| servers.contains_key(name) || newer.contains(name));
        self.changed_at.retain(|_, at| *at > since);
    }

    /// The wanted servers.
    pub fn names(&self) -> BTreeSet<String> {
        self.names.clone()
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
    adopt_token: Option<Secret>,
    connect_concurrency: usize,
    /// Variables holding mag-server's secrets: kept out of mcp-client's environment.
    secret_env: Vec<String>,
    /// Passed on as `--config-limit`.
    config_limit: u64,
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
    pub fn new(settings: &Settings, client: McpClient, store: Arc<ConfigStore>) -> Self {
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
                adopt_token: settings.client_token.clone(),
                connect_concurrency: settings.connect_concurrency,
                secret_env: settings.secret_env(),
                config_limit: settings.config_limit,
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
                    Outcome::Wait(POLL_INTERVAL)
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

    async fn spawn_and_watch(&self, restarts: u64) -> Outcome {
        let inner = &self.inner;
        let token = random_token();
        inner.client.set_token(Some(token.clone()));
        self.write_token_file(&token);
        let (stdout, mut stderr) = match self.open_logs() {
            Ok(files) => files,
            Err(e) => {
                let reason = format!(
                    "could not open mcp_client_std{{out,err}}.log in {}: {e}",
                    inner.log_dir.display()
                );
                return Outcome::Exited(Ended::new(reason, None, Duration::ZERO));
            }
        };
        let _ = writeln!(
            stderr,
            "[mag-server] {} starting {} --listen {}",
            now_rfc3339(),
            inner.client_bin.display(),
            inner.client.addr()
        );
        let stderr_start = stderr.stream_position().unwrap_or(0);
        let stderr_log = inner.log_dir.join("mcp_client_stderr.log");
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
            .arg("--token-env")
            .arg(CLIENT_TOKEN_ENV)
            .env(CLIENT_TOKEN_ENV, token.expose())
            // Its stderr goes to a file: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let started = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
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
        let pid = child.id().unwrap_or_default();
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
        let exited = |status: Option<ExitStatus>| {
            let ran = started.elapsed();
            let tail = stderr_tail(&stderr_log, stderr_start);
            let info = match status {
                Some(status) => exit_status_info(status, Some(pid), ran, tail),
                None => exit_info("could not wait for it".into(), None, Some(pid), ran, tail),
            };
            // Anything it left in its process group goes with it.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Ended { info, ran }
        };

        // Readiness: GET / answers from it (or from a process in its group, when the binary
        // is a wrapper that did not exec).
        loop {
            let pause = tokio::time::sleep(Duration::from_millis(100));
            if let Err(outcome) = self.watched(&mut child, pid, &exited, pause).await {
                return outcome;
            }
            if let Ok(RootAnswer::McpClient(root)) = inner.client.root(Duration::from_secs(2)).await
                && root.pid.is_some_and(|p| p == pid || in_group(p, pid))
            {
                break;
            }
            if started.elapsed() > inner.cfg.startup_timeout {
                tracing::error!(pid, "mcp-client did not answer GET / in time; stopping it");
                let mut ended = exited(self.stop_child(&mut child, pid).await);
                ended.info.reason = format!(
                    "did not answer GET / within {}, so it was stopped: {}",
                    humantime::format_duration(inner.cfg.startup_timeout),
                    ended.info.reason
                );
                return Outcome::Exited(ended);
            }
        }
        tracing::info!(pid, "mcp-client is ready");

        let report = match self
            .watched(&mut child, pid, &exited, self.reconnect())
            .await
        {
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
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = child.wait() => return Outcome::Exited(exited(status.ok())),
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
                    if failures >= STUCK_AFTER {
                        tracing::error!(pid, "mcp-client stopped answering ({e}); stopping it");
                        let mut ended = exited(self.stop_child(&mut child, pid).await);
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

    async fn adopt_and_watch(&self, root: ClientRoot, restarts: u64) -> Outcome {
        let inner = &self.inner;
        let addr = inner.client.addr();
        let pid = root.pid;
        // Only the token file's token proves an earlier mag-server started it.
        let file_token = inner
            .adopt_token
            .is_none()
            .then(|| self.read_token_file())
            .flatten();
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
            return Outcome::Wait(POLL_INTERVAL);
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
        let mut tick = tokio::time::interval(POLL_INTERVAL);
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
                        && failures >= STUCK_AFTER
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
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(&theirs, ours) {
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

    /// SIGTERM to the child's group, SIGKILL after the grace period; its exit status.
    /// Runs `work` while watching the child: `Err` with the outcome if the child exits first
    /// (described by `exited`) or mag-server is stopping (the child is then stopped).
    async fn watched<T>(
        &self,
        child: &mut Child,
        pid: u32,
        exited: &impl Fn(Option<ExitStatus>) -> Ended,
        work: impl Future<Output = T>,
    ) -> Result<T, Outcome> {
        tokio::select! {
            value = work => Ok(value),
            status = child.wait() => Err(Outcome::Exited(exited(status.ok()))),
            _ = self.inner.stop.cancelled() => {
                self.stop_child(child, pid).await;
                Err(Outcome::Shutdown)
            }
        }
    }

    async fn stop_child(&self, child: &mut Child, pid: u32) -> Option<ExitStatus> {
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let grace = self.inner.cfg.stop_grace;
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!(
                    pid,
                    "mcp-client did not exit within {grace:?} of SIGTERM; SIGKILL"
                );
                let _ = killpg(group, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        // Whatever else was left in its group.
        let _ = killpg(group, Signal::SIGKILL);
        self.forget_token_at_shutdown();
        tracing::info!(pid, ?status, "mcp-client stopped");
        status
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
            let process = Pid::from_raw(pid as i32);
            let group = nix::unistd::getpgid(Some(process));
            let _ = nix::sys::signal::kill(process, Signal::SIGKILL);
            // Its group too (a wrapper script leads it), unless that is mag-server's own.
            if let Ok(group) = group
                && group != nix::unistd::getpgrp()
            {
                let _ = killpg(group, Signal::SIGKILL);
            }
            gone_within(grace).await;
        }
        self.forget_token_at_shutdown();
        tracing::info!(pid, "mcp-client stopped");
    }

    /// After mag-server stopped its client: at shutdown the token file goes, so no later
    /// mag-server takes back a client that is gone (a restart keeps it for the next one).
    fn forget_token_at_shutdown(&self) {
        if self.inner.stop.is_cancelled() {
            let _ = std::fs::remove_file(&self.inner.token_file);
        }
    }

    fn open_logs(&self) -> std::io::Result<(std::fs::File, std::fs::File)> {
        std::fs::create_dir_all(&self.inner.log_dir)?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.inner.log_dir.join(name))
        };
        Ok((
            open("mcp_client_stdout.log")?,
            open("mcp_client_stderr.log")?,
        ))
    }

    fn write_token_file(&self, token: &Secret) {
        let path = &self.inner.token_file;
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(token.expose().as_bytes())
            });
        if let Err(e) = written {
            tracing::warn!(
                "cannot write {}: {e}; a later mag-server will not be able to adopt this mcp-client",
                path.display()
            );
        }
    }

    fn read_token_file(&self) -> Option<Secret> {
        let text = std::fs::read_to_string(&self.inner.token_file).ok()?;
        Secret::from_env_value(Some(text.trim().to_string()))
    }
}

/// When to start an mcp-client again: backoff doubling per exit, and the crash-loop guard.
struct RestartPolicy {
    cfg: Supervision,
    exits: VecDeque<Instant>,
    backoff: Duration,
}

impl RestartPolicy {
    fn new(cfg: Supervision) -> Self {
        Self {
            backoff: cfg.restart_backoff,
            cfg,
            exits: VecDeque::new(),
        }
    }

    /// Back to the first backoff and no exits counted.
    fn reset(&mut self) {
        self.exits.clear();
        self.backoff = self.cfg.restart_backoff;
    }

    /// Records an exit at `now` of a run that lasted `ran`: how long to wait before starting
    /// again, or `Err(exits)` when that many exits within the window make a crash loop.
    /// A run longer than the window starts the backoff over.
    fn on_exit(&mut self, now: Instant, ran: Duration) -> Result<Duration, usize> {
        self.exits.push_back(now);
        let window = self.cfg.crash_loop_window;
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.exits.pop_front();
        }
        if ran > window {
            self.backoff = self.cfg.restart_backoff;
        }
        if self.exits.len() >= self.cfg.crash_loop_exits as usize {
            return Err(self.exits.len());
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.restart_backoff_max);
        Ok(wait)
    }
}

/// Whether process `pid` is in process group `group`.
fn in_group(pid: u32, group: u32) -> bool {
    nix::unistd::getpgid(Some(Pid::from_raw(pid as i32)))
        .is_ok_and(|g| g == Pid::from_raw(group as i32))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// 32 random bytes, hex.
fn random_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Secret::from_env_value(Some(hex)).expect("not empty")
}

fn now_rfc3339() -> String {
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

/// The last ~2 KiB written to `path` after `from`, whole lines.
fn stderr_tail(path: &Path, from: u64) -> Option<String> {
    const TAIL: u64 = 2048;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = from.max(len.saturating_sub(TAIL));
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = strip_ansi(&String::from_utf8_lossy(&bytes));
    let text = if start > from {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let text = mag_common::secrets::redact(text.trim());
    (!text.is_empty()).then_some(text)
}

/// `text` without ANSI escape sequences (`ESC [ … letter`), for logs of a program that
/// colours its output anyway.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    /// `/servers` with just `connected` and `status` given per server.
    fn servers(value: Value) -> Servers {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, view)| {
                let mut full = json!({
                    "init_attempted": true, "tools": [], "error": null,
                    "transport_type": "stdio", "pid": null, "connected_since": null,
                    "reconnects": 0, "attempts": 0, "protocol_version": null,
                    "auto_approve": [],
                });
                full["connected"] = view["connected"].clone();
                full["status"] = view["status"].clone();
                (name.clone(), serde_json::from_value(full).unwrap())
            })
            .collect()
    }

    #[test]
    fn polls_follow_the_client_but_never_undo_a_newer_api_change() {
        let mut wanted = Wanted::default();
        let since = wanted.begin_poll();
        wanted.apply_poll(
            since,
            &servers(json!({
                "a": {"connected": true, "status": "connected"},
                "b": {"connected": false, "status": "failed"},
                "c": {"connected": false, "status": "disconnected"},
            })),
        );
        assert_eq!(wanted.names(), BTreeSet::from(["a".to_string()]));

        // A poll asked before the API connected "c" does not undo it.
        let since = wanted.begin_poll();
        wanted.set("c", true);
        wanted.apply_poll(
            since,
            &servers(json!({
                "a": {"connected": false, "status": "failed"},
                "c": {"connected": false, "status": "disconnected"},
            })),
        );
        assert_eq!(
            wanted.names(),
            BTreeSet::from(["a".to_string(), "c".to_string()])
        );

        // A later poll applies; a server gone from the config is forgotten.
        let since = wanted.begin_poll();
        wanted.apply_poll(
            since,
            &servers(json!({"c": {"connected": false, "status": "disconnected"}})),
        );
        assert!(wanted.names().is_empty());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_fast_exits_make_a_crash_loop() {
        let mut policy = RestartPolicy::new(Supervision::default());
        let start = Instant::now();
        let quick = Duration::from_millis(10);
        let waits: Vec<_> = (0..4)
            .map(|i| policy.on_exit(start + Duration::from_secs(i), quick))
            .collect();
        let secs = |s| Ok(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8)]);
        assert_eq!(
            policy.on_exit(start + Duration::from_secs(5), quick),
            Err(5)
        );

        // Exits spread wider than the window never trip it; the wait stops at the cap.
        let mut policy = RestartPolicy::new(Supervision::default());
        let mut last = Ok(Duration::ZERO);
        for i in 0..20 {
            last = policy.on_exit(start + Duration::from_secs(i * 20), quick);
        }
        assert_eq!(last, secs(30));

        // A long healthy run starts the backoff over.
        assert_eq!(
            policy.on_exit(start + Duration::from_secs(1000), Duration::from_secs(600)),
            secs(1)
        );
    }

    #[test]
    fn exit_statuses_read_well() {
        let info = exit_status_info(ExitStatus::from_raw(9), Some(1), Duration::ZERO, None);
        assert_eq!(info.reason, "killed by SIGKILL");
        assert_eq!(info.signal.as_deref(), Some("SIGKILL"));
        let info = exit_status_info(ExitStatus::from_raw(1 << 8), None, Duration::ZERO, None);
        assert_eq!(info.reason, "exit code 1");
        assert_eq!(info.code, Some(1));
    }

    #[test]
    fn the_stderr_tail_is_what_this_run_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("err.log");
        std::fs::write(&path, "old run\n").unwrap();
        let from = std::fs::metadata(&path).unwrap().len();
        assert_eq!(stderr_tail(&path, from), None);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "cannot listen on 127.0.0.1:1: in use").unwrap();
        assert_eq!(
            stderr_tail(&path, from).as_deref(),
            Some("cannot listen on 127.0.0.1:1: in use")
        );
        writeln!(file, "\u{1b}[2mdim\u{1b}[0m plain").unwrap();
        assert!(stderr_tail(&path, from).unwrap().ends_with("\ndim plain"));
        let long = "x".repeat(5000);
        writeln!(file, "{long}\nlast line").unwrap();
        let tail = stderr_tail(&path, from).unwrap();
        assert!(tail.len() <= 2048 && tail.ends_with("last line"), "{tail}");
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
    }
}
