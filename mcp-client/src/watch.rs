//! Hot reload: the config file's folder is watched (`notify`: inotify on Linux), so a save
//! by rename, the way editors and `mv` do it, is seen like a write in place. When the file
//! is a symlink, the folder of the file it points to is watched too, so an edit of the
//! target is seen (the target is looked up again after every change: a link pointed
//! elsewhere is followed). Events for either file are debounced ([`DEBOUNCE`] of quiet),
//! then the file is loaded through [`Supervisor::load_file`], the same path `POST
//! /load_config` takes: a file that does not parse or validate, or is no regular file, is
//! never applied, and `GET /` reports why until a good one arrives.
//!
//! Looking at the file (is it a link, where does it point) and adding or removing watches
//! are filesystem calls: they run on the blocking pool, never on the async threads. The
//! watching task runs on the supervisor's task tracker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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
pub async fn watch_config(
    supervisor: Supervisor,
    path: PathBuf,
    stop: CancellationToken,
) -> Result<()> {
    let (changed, changes) = mpsc::channel::<()>(1);
    let setup_path = path.clone();
    let follower = tokio::task::spawn_blocking(move || Follower::start(&setup_path, changed))
        .await
        .map_err(|e| Error::Io {
            context: "cannot watch the config for changes".into(),
            source: std::io::Error::other(e),
        })??;
    tracing::info!(path = %path.display(), "watching the config for changes");
    let tasks = supervisor.tasks().clone();
    tasks.spawn(run(supervisor, path, stop, follower, changes));
    Ok(())
}

/// Reloads after each quiet change until `stop`.
async fn run(
    supervisor: Supervisor,
    path: PathBuf,
    stop: CancellationToken,
    mut follower: Follower,
    mut changes: mpsc::Receiver<()>,
) {
    loop {
        tokio::select! {
            change = changes.recv() => if change.is_none() { return },
            _ = stop.cancelled() => return,
        }
        if !quiet(&mut changes).await {
            return;
        }
        // The watcher travels to the blocking pool and back.
        follower = match tokio::task::spawn_blocking(move || {
            follower.follow();
            follower
        })
        .await
        {
            Ok(follower) => follower,
            Err(e) => {
                tracing::error!("hot reload is off: the config watcher failed: {e}");
                return;
            }
        };
        reload(&supervisor, &path).await;
    }
}

/// The watcher and what it follows: the config file and, for a link, its target.
struct Follower {
    watcher: notify::RecommendedWatcher,
    /// The config file's folder (absolute).
    dir: PathBuf,
    /// The config file's full path.
    own: PathBuf,
    /// The folder of the link's target, when watched besides `dir`.
    target_dir: Option<PathBuf>,
    /// The full paths whose events count (read by the watcher's callback).
    watched: Arc<RwLock<Vec<PathBuf>>>,
}

impl Follower {
    /// Watches `path`'s folder, sending on `changed` for the events that count (blocking:
    /// filesystem calls).
    fn start(path: &Path, changed: mpsc::Sender<()>) -> Result<Self> {
        // Absolute, so the target's folder (absolute too) is known to be the same or another.
        let dir = folder_of(path);
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let own = dir.join(path.file_name().unwrap_or_default());
        // The full paths whose events count: the file itself and, for a link, its target.
        let watched: Arc<RwLock<Vec<PathBuf>>> = Arc::new(RwLock::new(vec![own.clone()]));
        let io_error = |dir: &Path| {
            let dir = dir.display().to_string();
            move |e: notify::Error| Error::Io {
                context: format!("cannot watch {dir} for config changes"),
                source: std::io::Error::other(e),
            }
        };
        let paths = watched.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    Ok(event) => {
                        let paths = paths.read().unwrap_or_else(|p| p.into_inner());
                        let ours = event.paths.iter().any(|p| paths.contains(p));
                        // Events were lost (the kernel's queue overflowed): ours may be among them.
                        if event.need_rescan()
                            || (ours && !matches!(event.kind, EventKind::Access(_)))
                        {
                            // A full channel already holds a pending change: nothing is lost.
                            let _ = changed.try_send(());
                        }
                    }
                    Err(e) => tracing::warn!("config watcher: {e}"),
                }
            })
            .map_err(io_error(&dir))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(io_error(&dir))?;
        let mut follower = Self {
            watcher,
            dir,
            own,
            target_dir: None,
            watched,
        };
        follower.follow();
        Ok(follower)
    }

    /// Follows the config link's target anew (blocking: filesystem calls); see
    /// [`follow_target`].
    fn follow(&mut self) {
        follow_target(
            &mut self.watcher,
            &self.dir,
            &mut self.target_dir,
            &self.watched,
            &self.own,
        );
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// When `own` is a symlink to a regular file, makes its target's events count too and
/// watches the target's folder (`target_dir`, when it is not `own_dir`); the folder of an
/// earlier target is no longer watched. A link to anything but a regular file (a device, a
/// FIFO) is not followed: its folder (`/dev`) would flood the watcher. A folder that cannot
/// be watched is logged; the file itself stays watched.
fn follow_target(
    watcher: &mut impl Watcher,
    own_dir: &Path,
    target_dir: &mut Option<PathBuf>,
    watched: &RwLock<Vec<PathBuf>>,
    own: &Path,
) {
    let is_link = own
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    let target = is_link
        .then(|| std::fs::canonicalize(own).ok())
        .flatten()
        .filter(|target| target.is_file());
    let wanted_dir = target
        .as_deref()
        .map(folder_of)
        .filter(|dir| dir.as_path() != own_dir);
    if *target_dir != wanted_dir {
        if let Some(old) = target_dir.take() {
            let _ = watcher.unwatch(&old);
        }
        if let Some(dir) = wanted_dir {
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(folder = %dir.display(), "the config is a link: watching its target's folder too");
                    *target_dir = Some(dir);
                }
                Err(e) => tracing::warn!(
                    "cannot watch {} (the config link's target): {e}",
                    dir.display()
                ),
            }
        }
    }
    let mut paths = vec![own.to_path_buf()];
    paths.extend(target);
    *watched.write().unwrap_or_else(|p| p.into_inner()) = paths;
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
