//! The token file, `DATA_DIR/mcp-client.token` (mode 0600): the token of the mcp-client
//! this mag-server spawned, so that a later mag-server on the same data dir can adopt it
//! (and, finding the same token, take it back). Removed when mag-server stops its client at
//! shutdown. The file work runs on tokio's blocking pool, bounded (see [`super::blocking`]).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Supervisor, blocking};
use crate::settings::Secret;

/// The most of the file that is read, in bytes: a token mag-server wrote is 64.
const MAX_LEN: u64 = 4096;

/// Writes `token` to `path` (mode 0600, its folder created when missing); a failure is
/// logged: the client still runs, only a later mag-server cannot adopt it.
pub(super) async fn write(path: &Path, token: &Secret) {
    let (file, token) = (path.to_path_buf(), token.clone());
    let written = blocking(move || {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)?
            .write_all(token.expose().as_bytes())
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(
            "cannot write {}: {e}; a later mag-server will not be able to adopt this mcp-client",
            path.display()
        );
    }
}

/// The token in `path` (its first 4 KiB, trimmed); `None` when it is missing, unreadable,
/// not UTF-8 or empty.
pub(super) async fn read(path: &Path) -> Option<Secret> {
    let file = path.to_path_buf();
    let text = blocking(move || {
        let mut text = String::new();
        std::fs::File::open(&file)?
            .take(MAX_LEN)
            .read_to_string(&mut text)?;
        Ok(text)
    })
    .await
    .ok()?;
    Secret::from_env_value(Some(text.trim().to_string()))
}

/// Removes the file at `path`, if it is there.
async fn remove(path: &Path) {
    let file = path.to_path_buf();
    match blocking(move || std::fs::remove_file(file)).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
        _ => {}
    }
}

impl Supervisor {
    /// After mag-server stopped its client: at shutdown the token file goes, so no later
    /// mag-server takes back a client that is gone (a restart keeps it for the next one).
    pub(super) async fn forget_token_at_shutdown(&self) {
        if self.inner.stop.is_cancelled() {
            remove(&self.inner.token_file).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn the_token_is_written_for_its_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("mcp-client.token");
        assert_eq!(read(&path).await, None);
        let token = Secret::from_env_value(Some("abc123".into())).unwrap();
        write(&path, &token).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&path).await, Some(token));
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(read(&path).await, None, "a blank file holds no token");
        remove(&path).await;
        assert!(!path.exists());
        remove(&path).await;
    }
}
