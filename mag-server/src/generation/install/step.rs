//! One installer step (`python -m venv`, `pip install`): a child leading its own process
//! group (spawned and signalled through [`mag_common::process_group`]) that sees only the
//! base environment and `PIP_*`, its output appended to the tool's install log, bounded in
//! time.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mag_common::process_group::{self, is_base_env};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};

/// How long a killed installer step gets to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Bound on reading the end of an installer log.
const TAIL_BOUND: Duration = Duration::from_secs(5);

/// Kills an installer step's process group unless it finished (a dropped install, e.g. at
/// shutdown, leaves no pip behind).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            process_group::signal(pgid, Signal::SIGKILL);
        }
    }
}

/// Runs one installer step in `dir` in its own process group, with only the
/// [`is_base_env`] variables and `PIP_*` of mag-server's environment, its output
/// appended to `log`, within `bound`; the group is killed when the bound passes or the
/// step is dropped.
pub(super) async fn run(
    what: &str,
    mut command: Command,
    dir: &Path,
    log: &Path,
    bound: Duration,
) -> Result<()> {
    let fail = |detail: String| Error::ToolInstall {
        step: what.to_owned(),
        detail,
    };
    let mut header = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
        .map_err(|e| fail(format!("cannot open {}: {e}", log.display())))?;
    let line = format!("\n== {what}: {:?}\n", command.as_std());
    let _ = header.write_all(line.as_bytes()).await;
    let out = header
        .into_std()
        .await
        .try_clone()
        .map_err(|e| fail(format!("cannot share {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| fail(format!("cannot share {}: {e}", log.display())))?;
    // What every program may see, and pip's own settings: no API token, MONGODB_URL or
    // model key reaches pip.
    command.env_clear();
    command.envs(std::env::vars_os().filter(|(name, _)| {
        name.to_str()
            .is_some_and(|k| is_base_env(k) || k.starts_with("PIP_"))
    }));
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let program = command.as_std().get_program().to_owned();
    let (mut child, pgid) = process_group::spawn_leader(command)
        .map_err(|e| fail(format!("cannot start {program:?}: {e}")))?;
    let mut group = GroupGuard(Some(pgid));
    let status = match tokio::time::timeout(bound, child.wait()).await {
        Ok(Ok(status)) => {
            group.0 = None;
            status
        }
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => {
            drop(group);
            let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
            return Err(fail(format!(
                "did not finish within {} s; see {}",
                bound.as_secs(),
                log.display()
            )));
        }
    };
    if status.success() {
        return Ok(());
    }
    let path = log.to_path_buf();
    let tail = tokio::time::timeout(
        TAIL_BOUND,
        tokio::task::spawn_blocking(move || tail_of(&path, 2048)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    Err(fail(format!(
        "{status}; the end of {}:\n{tail}",
        log.display()
    )))
}

/// The last `max` bytes of a file, from a line start, lossily decoded.
fn tail_of(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    match text.find('\n') {
        Some(i) if len > max => text[i + 1..].to_owned(),
        _ => text.into_owned(),
    }
}
