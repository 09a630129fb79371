//! The token file, `DATA_DIR/mcp-client.token` (mode 0600): the token of the mcp-client
//! this mag-server spawned, so that a later mag-server on the same data dir can adopt it
//! (and, finding the same token, take it back). Removed when mag-server stops its client at
//! shutdown.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::Supervisor;
use crate::settings::Secret;

/// Writes `token` to `path` (mode 0600, its folder created when missing); a failure is
/// logged: the client still runs, only a later mag-server cannot adopt it.
pub(super) fn write(path: &Path, token: &Secret) {
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

/// The token in `path`; `None` when it is missing, unreadable or empty.
pub(super) fn read(path: &Path) -> Option<Secret> {
    let text = std::fs::read_to_string(path).ok()?;
    Secret::from_env_value(Some(text.trim().to_string()))
}

impl Supervisor {
    /// After mag-server stopped its client: at shutdown the token file goes, so no later
    /// mag-server takes back a client that is gone (a restart keeps it for the next one).
    pub(super) fn forget_token_at_shutdown(&self) {
        if self.inner.stop.is_cancelled() {
            let _ = std::fs::remove_file(&self.inner.token_file);
        }
    }
}
