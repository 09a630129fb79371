//! `mcp.json` on disk: read, validate (with mcp-client's own types), revision, and atomic
//! writes under one lock (SPEC §3, §5).
//!
//! The revision of the file is [`revision`] of its bytes (a missing file reads as empty).
//! Writers take [`ConfigStore::lock`], compare the revision they were given with the file's,
//! and write while holding it, so two writers that read the same revision never both
//! succeed: no update is lost. A write goes to a temp file in the same folder, is fsynced,
//! renamed over the file, and the folder is fsynced: readers (mcp-client's watcher, people)
//! see the old file or the new one, never half of one. Fields are written as the client
//! sent them, unknown ones included, as 2-space indented JSON with a final newline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mag_common::config::{
    CONFIG_READ_BOUND, ConfigError, DEFAULT_TIMEOUT, McpConfig, read_regular_file, revision,
};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// The file as last read.
#[derive(Debug, Clone)]
pub struct FileState {
    /// Its revision.
    pub version: String,
    /// Its top-level object (empty for a missing file), fields in file order.
    pub document: Map<String, Value>,
}

impl FileState {
    /// `mcpServers` of the document (empty when absent).
    pub fn servers(&self) -> Map<String, Value> {
        match self.document.get("mcpServers") {
            Some(Value::Object(servers)) => servers.clone(),
            _ => Map::new(),
        }
    }
}

/// The `mcp.json` file and the lock its writers share.
#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
    lock: Mutex<()>,
    /// Largest file read or written, in bytes.
    limit: u64,
    /// Every expanded `${VAR}` value of the configs read so far (see [`note_secrets`]).
    secrets: std::sync::Mutex<BTreeMap<String, String>>,
}

/// Held by one writer at a time: read, check, write.
pub struct ConfigGuard<'a> {
    store: &'a ConfigStore,
    _held: MutexGuard<'a, ()>,
}

impl ConfigStore {
    /// The store for the file at `path` (which need not exist yet), of at most `limit`
    /// bytes (a larger file is invalid, a larger write refused).
    pub fn new(path: PathBuf, limit: u64) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
            limit,
            secrets: std::sync::Mutex::default(),
        }
    }

    /// Adds the values `config`'s `${VAR}` references expand to (in mag-server's
    /// environment, which its mcp-client shares) to the secrets redacted from mag-server's
    /// logs and answers (mcp-client's stderr tail among them).
    fn note_secrets(&self, config: &McpConfig) {
        let mut known = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let before = known.len();
        known.extend(config.secret_values(|name| std::env::var(name).ok()));
        if known.len() != before {
            mag_common::secrets::global().set("config", known.clone());
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the writers' lock.
    pub async fn lock(&self) -> ConfigGuard<'_> {
        ConfigGuard {
            store: self,
            _held: self.lock.lock().await,
        }
    }

    /// Reads and validates the file, without the lock.
    ///
    /// # Errors
    /// [`Error::ConfigFileInvalid`] (with line, column and the revision) when it does not
    /// parse or validate; [`Error::Io`] when it cannot be read.
    pub async fn read(&self) -> Result<FileState> {
        let (path, limit) = (self.path.clone(), self.limit);
        let (state, config) = blocking(move || read_file(&path, limit)).await?;
        if let Some(config) = config {
            self.note_secrets(&config);
        }
        Ok(state)
    }

    /// Each server's `timeout` (the connect and tool-call bound) from the file; servers
    /// that are not in it, or an unreadable file, get the default (60 s).
    pub async fn timeouts(&self) -> Timeouts {
        let (path, limit) = (self.path.clone(), self.limit);
        let servers = blocking(move || {
            let bytes = read_bytes(&path, limit)?;
            let text = String::from_utf8_lossy(&bytes);
            Ok(McpConfig::parse(&text)
                .map(|config| {
                    config
                        .servers
                        .into_iter()
                        .map(|(name, entry)| (name, entry.timeout))
                        .collect()
                })
                .unwrap_or_default())
        })
        .await
        .unwrap_or_default();
        Timeouts(servers)
    }
}

/// Servers' `timeout`s by name, see [`ConfigStore::timeouts`].
#[derive(Debug, Clone, Default)]
pub struct Timeouts(BTreeMap<String, Duration>);

impl Timeouts {
    /// The server's timeout, or the default (60 s).
    pub fn of(&self, server: &str) -> Duration {
        self.0.get(server).copied().unwrap_or(DEFAULT_TIMEOUT)
    }
}

impl ConfigGuard<'_> {
    /// The file's current revision, whether or not its content is valid.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read.
    pub async fn version(&self) -> Result<String> {
        let (path, limit) = (self.store.path.clone(), self.store.limit);
        blocking(move || read_bytes(&path, limit).map(|b| revision(&b))).await
    }

    /// Reads and validates the file (see [`ConfigStore::read`]).
    ///
    /// # Errors
    /// As [`ConfigStore::read`].
    pub async fn read(&self) -> Result<FileState> {
        self.store.read().await
    }

    /// Writes `document` atomically (see the module docs); its new revision.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]: the file would be over the size limit; [`Error::Io`]: the
    /// folder is not writable, the disk is full. The file is unchanged.
    pub async fn write(&mut self, document: &Map<String, Value>) -> Result<String> {
        let mut bytes = serde_json::to_vec_pretty(document).expect("a JSON map always serializes");
        bytes.push(b'\n');
        if bytes.len() as u64 > self.store.limit {
            return Err(Error::InvalidConfig(format!(
                "the config would be {} bytes, over the config size limit of {} bytes",
                bytes.len(),
                self.store.limit
            )));
        }
        if let Ok(config) = McpConfig::from_value(Value::Object(document.clone())) {
            self.store.note_secrets(&config);
        }
        let path = self.store.path.clone();
        let version = revision(&bytes);
        // Not bounded: a write answered as failed must not land later.
        tokio::task::spawn_blocking(move || {
            mag_common::fs::write_atomic(&path, &bytes, None).map_err(|source| Error::Io {
                context: format!("cannot write {}", path.display()),
                source,
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Io {
                context: "the config write task failed".into(),
                source: std::io::Error::other(e),
            })
        })?;
        Ok(version)
    }
}

/// Runs a file read off the async threads, within [`CONFIG_READ_BOUND`] (a file on a hung
/// network filesystem fails the request instead of holding it and the writers' lock).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::time::timeout(CONFIG_READ_BOUND, tokio::task::spawn_blocking(f)).await {
        Ok(done) => done.unwrap_or_else(|e| {
            Err(Error::Io {
                context: "a file task failed".into(),
                source: std::io::Error::other(e),
            })
        }),
        Err(_) => Err(Error::Io {
            context: format!("the config file did not answer within {CONFIG_READ_BOUND:?}"),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        }),
    }
}

/// The file's bytes (a regular file of at most `limit` bytes, see
/// [`read_regular_file`]); a missing file reads as empty.
///
/// # Errors
/// [`Error::ConfigFileInvalid`] for what is no regular file or is over the limit (its
/// revision is that of no bytes: such a file can be replaced by a write with it);
/// [`Error::Io`] for other read failures.
fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>> {
    match read_regular_file(path, limit) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::ConfigFileInvalid {
            path: path.display().to_string(),
            error: ConfigError::whole(e.to_string()),
            version: revision(b""),
        }),
        Err(source) => Err(Error::Io {
            context: format!("cannot read {}", path.display()),
            source,
        }),
    }
}

/// The file's state and, when it has content, its parsed config.
fn read_file(path: &Path, limit: u64) -> Result<(FileState, Option<McpConfig>)> {
    let bytes = read_bytes(path, limit)?;
    let version = revision(&bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let empty = FileState {
            version,
            document: Map::new(),
        };
        return Ok((empty, None));
    }
    let invalid = |error| Error::ConfigFileInvalid {
        path: path.display().to_string(),
        error,
        version: version.clone(),
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| invalid(ConfigError::whole(format!("not UTF-8: {e}"))))?;
    let config = McpConfig::parse(text).map_err(invalid)?;
    match serde_json::from_str(text) {
        Ok(Value::Object(document)) => Ok((FileState { version, document }, Some(config))),
        _ => Err(invalid(ConfigError {
            message: "the top level is not a JSON object".into(),
            line: 1,
            column: 1,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    const LIMIT: u64 = mag_common::config::DEFAULT_CONFIG_LIMIT;

    fn doc(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn a_missing_file_reads_empty_and_is_created_by_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path().join("sub/mcp.json"), LIMIT);
        let empty = store.read().await.unwrap();
        assert_eq!(empty.version, revision(b""));
        assert!(empty.document.is_empty());
        let document = doc(
            json!({"mcpServers": {"b": {"command": "x", "zz": 1}, "a": {"url": "http://h"}}, "note": true}),
        );
        let version = store.lock().await.write(&document).await.unwrap();
        let written = std::fs::read(store.path()).unwrap();
        assert_eq!(
            written,
            format!("{}\n", serde_json::to_string_pretty(&document).unwrap()).as_bytes()
        );
        assert_eq!(version, revision(&written));
        let read = store.read().await.unwrap();
        assert_eq!(read.version, version);
        assert_eq!(read.document, document);
        // Order as written, not sorted.
        assert_eq!(read.servers().keys().next().unwrap(), "b");
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn an_invalid_file_is_reported_with_its_position_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        std::fs::write(&path, "{\n  \"mcpServers\": {\"a\": {\"command\": 1}}\n}\n").unwrap();
        let store = ConfigStore::new(path.clone(), LIMIT);
        match store.read().await.unwrap_err() {
            Error::ConfigFileInvalid { error, version, .. } => {
                assert_eq!(error.line, 2);
                assert_eq!(version, revision(&std::fs::read(&path).unwrap()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.timeouts().await.of("a"), DEFAULT_TIMEOUT);
    }

    #[tokio::test]
    async fn writes_keep_the_mode_and_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, "{}").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("mcp.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let store = ConfigStore::new(link.clone(), LIMIT);
        let document = doc(json!({"mcpServers": {"a": {"command": "x", "timeout": 5}}}));
        store.lock().await.write(&document).await.unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.timeouts().await.of("a"), Duration::from_secs(5));
        assert_eq!(store.timeouts().await.of("b"), DEFAULT_TIMEOUT);
    }
}
