//! stdio: a server as a child process in its own process group, speaking newline-delimited
//! JSON-RPC on stdin/stdout (MCP spec 2025-11-25, Transports § stdio).
//!
//! Our own [`rmcp::transport::Transport`] rather than rmcp's child-process one, for three
//! things rmcp does not do: the child leads a process group so stopping it ends its
//! grandchildren too (wrappers such as `sh -c` or `npx`), lines on stdout that are not JSON
//! are logged to the server's log and skipped instead of silently dropped, and a line may be
//! as long as [`MAX_LINE`] (rmcp's default stops at 16 MiB).
//!
//! A process that leaves the group (a daemon: fork, `setsid`, fork) is found through the
//! environment marker every server starts with and ended with its group (see
//! [`crate::subreaper`]).

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mag_common::process_group::{self, GroupLeader, is_base_env};
use nix::sys::signal::Signal;
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, watch};
use tokio_util::task::TaskTracker;

use crate::connection::ConnectContext;
use crate::error::ConnectError;
use crate::ledger::Ledger;
use crate::logs::ServerLog;
use crate::subreaper;
use crate::transport::{ServerMessage, read_server_message};
use mag_common::config::{ServerEntry, expand_vars};

/// The longest JSON-RPC line accepted from a server, in bytes (256 MiB); a longer line is
/// logged as too long and skipped.
pub const MAX_LINE: usize = 256 * 1024 * 1024;

/// A started server process: the transport over its pipes and the handle on its group.
pub struct Spawned {
    /// The JSON-RPC transport over the child's stdin/stdout.
    pub transport: StdioTransport,
    /// The process group the child leads.
    pub group: ProcessGroup,
}

/// Starts `entry` (a stdio entry) as the leader of a new process group
/// ([`process_group::spawn_leader`]), with `${VAR}` expanded in `args` and `env`, the
/// variables in `ctx.scrub_env` removed, and those of remote entries' keys
/// (`ctx.remote_secrets`) unless its own `args` or `env` reference them (an `ai_generated`
/// entry keeps only
/// [`is_base_env`] ones: it never inherits the operator's keys and tokens), stderr copied to
/// `log`.
/// The group is recorded in the daemon's [`Ledger`] until it has ended, and the child gets
/// SIGTERM if the daemon dies (`PR_SET_PDEATHSIG`). The child's environment gets
/// [`subreaper::MARKER_VAR`], so processes that escape its group are ended with it.
///
/// # Errors
/// The cause, of its kind: [`ConnectError::Config`] (a variable that is not set, a `cwd`
/// that is not a directory), [`ConnectError::CommandNotFound`],
/// [`ConnectError::CommandNotExecutable`], [`ConnectError::SpawnFailed`]. Never an
/// environment value.
pub async fn spawn(
    entry: &ServerEntry,
    log: Arc<ServerLog>,
    ctx: &ConnectContext,
) -> Result<Spawned, ConnectError> {
    let program = entry.command.as_deref().unwrap_or_default();
    let lookup = |name: &str| std::env::var(name).ok();
    let mut command = Command::new(program);
    if entry.ai_generated {
        command.env_clear();
        command
            .envs(std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(is_base_env)));
    }
    // After the base environment, so a scrubbed variable stays out whatever its name.
    for name in &ctx.scrub_env {
        command.env_remove(name);
    }
    let remote = ctx
        .remote_secrets
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // (A base variable such as HOME or USER in a remote URL is no secret to keep.)
    for name in remote
        .iter()
        .filter(|name| !entry.asks_for(name) && !is_base_env(name))
    {
        command.env_remove(name);
    }
    for arg in &entry.args {
        command.arg(
            expand_vars(arg, lookup).map_err(|e| ConnectError::Config(format!("in args: {e}")))?,
        );
    }
    for (key, value) in &entry.env {
        command.env(
            key,
            expand_vars(value, lookup)
                .map_err(|e| ConnectError::Config(format!("in env {key}: {e}")))?,
        );
    }
    if let Some(cwd) = &entry.cwd {
        // (A stat, on the blocking pool.)
        let is_dir = tokio::fs::metadata(cwd).await.is_ok_and(|m| m.is_dir());
        if !is_dir {
            return Err(ConnectError::Config(format!(
                "cwd {} is not a directory",
                cwd.display()
            )));
        }
        command.current_dir(cwd);
    }
    // (The new process group is process-wrap's `ProcessGroup::leader()`, in `spawn_leader`.)
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe. The "parent" of PDEATHSIG is the spawning thread: a tokio
    // worker, which lives as long as the runtime.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    // From here to the watcher's start, no `.await`: a connect cancelled by being dropped
    // cannot leave a started process unwatched (the child is killed on drop until then).
    // Recorded before the reaper can see it exit (see `subreaper::spawning`); set last, so
    // an entry's own `env` cannot take it away.
    let spawning = subreaper::spawning();
    command.env(subreaper::MARKER_VAR, spawning.marker());
    let (mut child, pid) = process_group::spawn_leader(command).map_err(|e| {
        let program = program.to_string();
        match e.kind() {
            std::io::ErrorKind::NotFound => ConnectError::CommandNotFound { program },
            std::io::ErrorKind::PermissionDenied => ConnectError::CommandNotExecutable { program },
            _ => ConnectError::SpawnFailed {
                program,
                reason: e.to_string(),
            },
        }
    })?;
    let marker = spawning.spawned(pid);
    // First in the log, before anything the server writes.
    log.note_now(&format!("started {program} (pid {pid})"));
    let (stdin, stdout, stderr) = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    );
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        return Err(ConnectError::SpawnFailed {
            program: program.to_string(),
            reason: "the child's pipes were not set up".into(),
        });
    };
    let stderr_log = log.clone();
    ctx.tasks.spawn(async move {
        let mut lines = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut lines)
                .take(64 * 1024)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    stderr_log
                        .stderr_line(line.strip_suffix(b"\n").unwrap_or(&line))
                        .await;
                }
            }
        }
        stderr_log.stderr_closed();
    });
    ctx.ledger.add(pid);
    let group = ProcessGroup::watch(
        child,
        pid,
        marker.into(),
        log.clone(),
        ctx.ledger.clone(),
        &ctx.tasks,
    );
    Ok(Spawned {
        transport: StdioTransport {
            reader: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::new(),
            writer: Arc::new(Mutex::new(Some(stdin))),
            log,
        },
        group,
    })
}

/// A child's process group: its exit status once it has exited, and the means to end it.
///
/// A task owns the child: when it exits (by itself or by a signal) the status is published
/// and whatever is left of its group (a wrapper's background children) gets SIGTERM, then
/// SIGKILL after the grace period; so do the processes that escaped the group
/// ([`subreaper::end_escaped`]).
#[derive(Debug, Clone)]
pub struct ProcessGroup {
    pid: u32,
    /// The value of [`subreaper::MARKER_VAR`] the leader started with.
    marker: Arc<str>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// How long a process group gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

impl ProcessGroup {
    fn watch(
        mut child: GroupLeader,
        pid: u32,
        marker: Arc<str>,
        log: Arc<ServerLog>,
        ledger: Arc<Ledger>,
        tasks: &TaskTracker,
    ) -> Self {
        let (tx, exit) = watch::channel(None);
        let escaped = marker.clone();
        tasks.spawn(async move {
            // The leader alone (tokio reaps it by its pid): what it leaves in its group is
            // ended below, and reaped by the subreaper's reaper once it is our child.
            let status = process_group::wait_leader(&mut child).await;
            subreaper::waited(pid);
            let status = match status {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(pid, "cannot wait for server process: {e}");
                    process_group::end(pid, Duration::ZERO).await;
                    end_escaped(&escaped, Duration::ZERO, &log).await;
                    ledger.remove(pid);
                    return;
                }
            };
            log.note(&format!(
                "process {pid} exited: {}",
                process_group::describe_exit(status)
            ))
            .await;
            let _ = tx.send(Some(status));
            // The leader is gone; end what it left in its group, and what left the group.
            process_group::end(pid, STOP_GRACE).await;
            end_escaped(&escaped, STOP_GRACE, &log).await;
            ledger.remove(pid);
        });
        Self { pid, marker, exit }
    }

    /// The group leader's pid (also the group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the leader has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits until the leader has exited and returns its status.
    pub async fn exited(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let status = exit.wait_for(Option::is_some).await.ok()?;
        *status
    }

    /// SIGKILL to the whole group, at once (for a connect abandoned half-way).
    pub fn kill_now(&self) {
        process_group::signal(self.pid, Signal::SIGKILL);
    }

    /// Ends the group: SIGTERM to every member, SIGKILL after `grace` to whatever is left;
    /// then the same to the processes that escaped the group. Returns once the leader has
    /// exited and the rest are gone or killed (each step at most `grace` plus a moment).
    pub async fn stop(&self, grace: Duration) {
        if self.exit_status().is_none() {
            process_group::signal(self.pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, self.exited()).await.is_err() {
                process_group::signal(self.pid, Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(1), self.exited()).await;
            }
        }
        // What is left of the group; `end` waits until it is gone (or a second after its
        // SIGKILL), so what those had started has been re-parented to mcp-client when
        // `end_escaped` looks.
        process_group::end(self.pid, grace).await;
        subreaper::end_escaped(&self.marker, grace).await;
    }
}

/// [`subreaper::end_escaped`], noted in the server's log when it found any.
async fn end_escaped(marker: &str, grace: Duration, log: &ServerLog) {
    let ended = subreaper::end_escaped(marker, grace).await;
    if !ended.is_empty() {
        log.note(&format!(
            "ended {} process(es) that had left the server's process group: {ended:?}",
            ended.len()
        ))
        .await;
        tracing::info!(
            count = ended.len(),
            "ended processes that had left a server's process group"
        );
    }
}

/// The JSON-RPC transport over a child's stdin and stdout.
pub struct StdioTransport {
    reader: BufReader<ChildStdout>,
    line: Vec<u8>,
    writer: Arc<Mutex<Option<ChildStdin>>>,
    log: Arc<ServerLog>,
}

impl StdioTransport {
    /// Reads the next line into `self.line` (without the newline); `false` at end of stream.
    /// A line longer than [`MAX_LINE`] is logged and skipped.
    async fn next_line(&mut self) -> bool {
        loop {
            self.line.clear();
            let limit = (MAX_LINE + 1) as u64;
            match (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.line)
                .await
            {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("server stdout closed: {e}");
                    return false;
                }
            }
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                return true;
            }
            if self.line.len() <= MAX_LINE {
                return true; // the last line, without a newline
            }
            self.log
                .note(&format!(
                    "skipped a stdout line longer than {MAX_LINE} bytes"
                ))
                .await;
            let mut sink = Vec::new();
            loop {
                sink.clear();
                match (&mut self.reader)
                    .take(1 << 20)
                    .read_until(b'\n', &mut sink)
                    .await
                {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if sink.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

impl Transport<RoleClient> for StdioTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item)?;
            bytes.push(b'\n');
            let mut writer = writer.lock().await;
            let stdin = writer.as_mut().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "stdin is closed")
            })?;
            stdin.write_all(&bytes).await?;
            stdin.flush().await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        while self.next_line().await {
            let line = self
                .line
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(&self.line);
            let start = line.iter().position(|b| !b.is_ascii_whitespace());
            let Some(start) = start else { continue };
            if line[start] != b'{' {
                self.log.stdout_noise(line).await;
                continue;
            }
            match read_server_message(line) {
                ServerMessage::Valid(message) => return Some(message),
                ServerMessage::Repaired { message, why } => {
                    self.log.stdout_noise(line).await;
                    self.log
                        .note(&format!(
                            "the line above is a malformed JSON-RPC response ({why}); its \
                             request fails with that"
                        ))
                        .await;
                    return Some(message);
                }
                ServerMessage::Invalid(e) => {
                    self.log.stdout_noise(line).await;
                    self.log
                        .note(&format!("the line above is not a JSON-RPC message: {e}"))
                        .await;
                }
            }
        }
        None
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // Closing stdin is the stdio transport's polite way to ask a server to exit.
        if let Some(mut stdin) = self.writer.lock().await.take() {
            let _ = stdin.shutdown().await;
        }
        Ok(())
    }
}
