//! Hot reload: the config file's folder is watched (`notify`: inotify on Linux), so a save
//! by rename, the way editors and `mv` do it, is seen like a write in place. Events for the
//! file are debounced ([`DEBOUNCE`] of quiet), then the file is loaded through
//! [`Supervisor::load_file`], the same path `POST /load_config` takes: a file that does not
//! parse or validate is never applied, and `GET /` reports why until a good one arrives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

/// How long the file must stay quiet after a change before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching `path` for `supervisor` until `stop` is cancelled.
///
/// # Errors
/// [`Error::Io`] when the folder cannot be watched (it does not exist, or inotify is out of
/// watches); the daemon then runs without hot reload.
pub fn watch_config(supervisor: Supervisor, path: PathBuf, stop: CancellationToken) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name: OsString = path.file_name().unwrap_or_default().to_owned();
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let io_error = |e: notify::Error| Error::Io {
        context: format!("cannot watch {} for config changes", dir.display()),
        source: std::io::Error::other(e),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()));
                if ours && !matches!(event.kind, EventKind::Access(_)) {
                    // A full channel already holds a pending change: nothing is lost.
                    let _ = changed.try_send(());
                }
            }
            Err(e) => tracing::warn!("config watcher: {e}"),
        }
    })
    .map_err(io_error)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(io_error)?;
    tracing::info!(path = %path.display(), "watching the config for changes");
    tokio::spawn(async move {
        let _watcher = watcher; // dropping it ends the watch
        loop {
            tokio::select! {
                change = changes.recv() => if change.is_none() { return },
                _ = stop.cancelled() => return,
            }
            if !quiet(&mut changes).await {
                return;
            }
            reload(&supervisor, &path).await;
        }
    });
    Ok(())
}

/// Waits until no change came for [`DEBOUNCE`]; `false` if the watcher is gone.
async fn quiet(changes: &mut mpsc::Receiver<()>) -> bool {
    loop {
        match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

async fn reload(supervisor: &Supervisor, path: &Path) {
    match supervisor.load_file(path).await {
        Ok(report) => tracing::info!(
            added = ?report.added, updated = ?report.updated, removed = ?report.removed,
            "config file reloaded"
        ),
        Err(e) => tracing::warn!("config file changed but was not applied: {e}"),
    }
}
