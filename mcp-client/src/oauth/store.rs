//! The OAuth token file (SPEC §10): `DATA_DIR/oauth-tokens.json`, readable by the daemon's
//! user only (mode 0600), written whole ([`mag_common::fs::write_atomic`]).
//!
//! ```json
//! {"servers": {"NAME": {"url": "https://…/mcp", "client_secret": "…",
//!                       "credentials": {"client_id": "…", "token_response": {…}, …}}}}
//! ```
//!
//! One record per server, bound to the server's URL: a record of another URL is not used
//! (the entry now points elsewhere). `credentials` is rmcp's [`StoredCredentials`] (client
//! id, tokens, granted scopes, issuer); `client_secret` is a secret the authorization server
//! gave at registration, which rmcp does not keep. Every token and secret held is
//! registered with the log redaction ([`mag_common::secrets`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmcp::transport::auth::{AuthError, CredentialStore, StoredCredentials};
use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub const TOKEN_FILE: &str = "oauth-tokens.json";

/// One server's record.
#[derive(Clone, Serialize, Deserialize)]
pub struct Record {
    /// The server's URL the record is for.
    pub url: String,
    /// The client secret from dynamic registration, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// rmcp's credentials: client id, tokens, scopes, issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<StoredCredentials>,
}

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    servers: BTreeMap<String, Record>,
}

/// The token file and its records in memory.
pub struct TokenFile {
    path: PathBuf,
    records: Mutex<BTreeMap<String, Record>>,
    /// Held while a write runs, so writes land in the order their contents were taken.
    write: tokio::sync::Mutex<()>,
}

impl TokenFile {
    /// Reads `DIR/oauth-tokens.json` (none yet: no records). A file that is not a token
    /// file is moved aside (`oauth-tokens.json.corrupt-SECS`, logged) and the daemon starts
    /// with no records: its servers ask for authorization again. Blocking: call it off the
    /// async threads.
    ///
    /// # Errors
    /// The file exists but cannot be read, or a corrupt one cannot be moved aside.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(TOKEN_FILE);
        let contents = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Contents>(&bytes) {
                Ok(contents) => contents,
                Err(e) => {
                    let secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let aside = dir.join(format!("{TOKEN_FILE}.corrupt-{secs}"));
                    std::fs::rename(&path, &aside)?;
                    tracing::error!(
                        "{} is not an OAuth token file ({e}); moved to {} and starting \
                         without stored tokens",
                        path.display(),
                        aside.display()
                    );
                    Contents::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(e),
        };
        let file = Self {
            path,
            records: Mutex::new(contents.servers),
            write: tokio::sync::Mutex::new(()),
        };
        file.redact();
        Ok(file)
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `server` for `url`, if there is one.
    pub fn get(&self, server: &str, url: &str) -> Option<Record> {
        self.records()
            .get(server)
            .filter(|record| record.url == url)
            .cloned()
    }

    /// Changes (or makes) the record of `server` for `url` with `change` and writes the file.
    ///
    /// # Errors
    /// The file cannot be written (the record stays changed in memory).
    pub async fn update(
        &self,
        server: &str,
        url: &str,
        change: impl FnOnce(&mut Record),
    ) -> std::io::Result<()> {
        let _turn = self.write.lock().await;
        {
            let mut records = self.records();
            let empty = || Record {
                url: url.to_string(),
                client_secret: None,
                credentials: None,
            };
            let record = records.entry(server.to_string()).or_insert_with(empty);
            if record.url != url {
                *record = empty();
            }
            change(record);
        }
        self.save().await
    }

    /// Forgets `server`'s record (the server was removed) and writes the file.
    ///
    /// # Errors
    /// The file cannot be written.
    pub async fn remove(&self, server: &str) -> std::io::Result<()> {
        let _turn = self.write.lock().await;
        if self.records().remove(server).is_none() {
            return Ok(());
        }
        self.save().await
    }

    async fn save(&self) -> std::io::Result<()> {
        self.redact();
        let contents = Contents {
            servers: self.records().clone(),
        };
        let bytes = serde_json::to_vec_pretty(&contents).map_err(std::io::Error::other)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            mag_common::fs::write_atomic(&path, &bytes, Some(0o600))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Registers every token and secret held with the log redaction.
    fn redact(&self) {
        let mut secrets = Vec::new();
        for record in self.records().values() {
            secrets.extend(record.client_secret.clone());
            if let Some(tokens) = record
                .credentials
                .as_ref()
                .and_then(|c| c.token_response.as_ref())
            {
                // The token response's JSON holds the access and refresh tokens as strings.
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(tokens) {
                    for key in ["access_token", "refresh_token", "id_token"] {
                        if let Some(value) = fields.get(key).and_then(|v| v.as_str()) {
                            secrets.push(value.to_string());
                        }
                    }
                }
            }
        }
        mag_common::secrets::global().set(
            "oauth",
            secrets
                .into_iter()
                .map(|s| (s, "[oauth token]".to_string())),
        );
    }
}

/// One server's credentials in the token file, as rmcp's [`CredentialStore`].
pub(super) struct ServerCredentials {
    /// The file.
    pub file: Arc<TokenFile>,
    /// The server's name.
    pub server: String,
    /// Its URL.
    pub url: String,
}

#[async_trait::async_trait]
impl CredentialStore for ServerCredentials {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        Ok(self
            .file
            .get(&self.server, &self.url)
            .and_then(|record| record.credentials))
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        self.file
            .update(&self.server, &self.url, |record| {
                record.credentials = Some(credentials)
            })
            .await
            .map_err(|e| {
                AuthError::CredentialStoreError(format!(
                    "cannot write {}: {e}",
                    self.file.path().display()
                ))
            })
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.file
            .update(&self.server, &self.url, |record| record.credentials = None)
            .await
            .map_err(|e| {
                AuthError::CredentialStoreError(format!(
                    "cannot write {}: {e}",
                    self.file.path().display()
                ))
            })
    }

    async fn on_refresh_token_rejected(
        &self,
        _credentials: &StoredCredentials,
    ) -> Result<(), AuthError> {
        self.clear().await
    }
}
