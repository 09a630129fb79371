//! The control plane's core: every `/api/mcp` operation and `/health`, without HTTP and
//! without MAG's JSON shapes. Each operation answers a domain type; `api` turns them into
//! MAG's answers. Versions are opaque strings (the file's
//! [`revision`](mag_common::config::revision)), not MAG's counters.
//!
//! Forwarded operations wait up to [`READY_WAIT`] for the first mcp-client mag-server
//! starts, and fail at once with 503 when it is down otherwise (restarting, crash loop,
//! address held by another program).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mag_common::config::{McpConfig, ServerEntry, validate_server_name};
use mag_common::wire::{
    ApplyReport, ConnectAnswer, DisconnectAnswer, Servers, Status, ToolCall, ToolCallAnswer,
    ToolView,
};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::client::{DISCONNECT_TIMEOUT, GENERAL_TIMEOUT, McpClient, TIMEOUT_MARGIN};
use crate::config_store::{ConfigGuard, ConfigStore};
use crate::error::{Error, Result};
use crate::supervisor::now_rfc3339;
use crate::supervisor::{ClientStatus, Supervisor};

/// How long a forwarded request waits for the first mcp-client while it starts.
pub const READY_WAIT: Duration = Duration::from_secs(5);

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<ConfigStore>,
    client: McpClient,
    supervisor: Supervisor,
    connect_concurrency: usize,
    tools_dir: std::path::PathBuf,
}

/// A tool call for [`ControlPlane::test_tool`].
#[derive(Debug, Clone)]
pub struct ToolTest {
    /// The server.
    pub server_name: String,
    /// The tool.
    pub tool_name: String,
    /// Its arguments (an object).
    pub params: Map<String, Value>,
}

/// `mcp.json` as read: its servers, its other top-level fields and its revision.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// `mcpServers`, entries as written (empty when the file is missing).
    pub servers: Map<String, Value>,
    /// The file's other top-level fields, in file order (`version` left out: it is the
    /// answer's own).
    pub extra: Map<String, Value>,
    /// The file's revision.
    pub version: String,
}

/// How a config write went: the file's new revision, and what mcp-client made of it.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file's new revision.
    pub version: String,
    /// What mcp-client changed, or why it could not apply the file now (it reads the
    /// file when it starts).
    pub applied: std::result::Result<ApplyReport, String>,
}

/// A generated tool's folder that could not be removed with its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderLeft {
    /// The server.
    pub server: String,
    /// Why, naming the folder.
    pub error: String,
}

/// [`ControlPlane::set_config`]'s outcome.
#[derive(Debug, Clone)]
pub struct ConfigReplaced {
    /// The write.
    pub saved: Saved,
    /// Folders of the generated tools it dropped that stay.
    pub folders_left: Vec<FolderLeft>,
}

/// [`ControlPlane::add`]'s outcome.
#[derive(Debug, Clone)]
pub struct Added {
    /// Servers written, in the order sent.
    pub added: Vec<String>,
    /// Servers that exist already (not written).
    pub duplicates: Vec<String>,
    /// The write, when something was added; else the file's unchanged revision.
    pub saved: std::result::Result<Saved, String>,
}

/// [`ControlPlane::remove`]'s outcome.
#[derive(Debug, Clone)]
pub struct Removed {
    /// How many names were asked for.
    pub requested: usize,
    /// Servers removed.
    pub removed: Vec<String>,
    /// Of those, how many were `ai_generated`.
    pub ai_generated: usize,
    /// Names that were not in the file.
    pub not_found: Vec<String>,
    /// Servers another user owns (`provider_user_id`), which the caller may not remove.
    pub permission_denied: Vec<String>,
    /// Folders of removed generated tools that stay.
    pub folders_left: Vec<FolderLeft>,
    /// The write, when something was removed; else the file's unchanged revision.
    pub saved: std::result::Result<Saved, String>,
}

/// One server's outcome in [`ControlPlane::connect_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    /// Connected now; its tools.
    Now(Vec<String>),
    /// It was connected; its tools.
    Already(Vec<String>),
    /// The connect failed; why.
    Failed(String),
}

/// [`ControlPlane::test_tool`]'s outcome.
#[derive(Debug, Clone)]
pub struct ToolTested {
    /// The call as made.
    pub test: ToolTest,
    /// mcp-client's answer (a tool's failure is in its `error`).
    pub answer: ToolCallAnswer,
    /// How long it took.
    pub took: Duration,
}

impl ControlPlane {
    /// The core over the config file, mcp-client's API and its supervisor; `tools_dir`
    /// holds generated tools, whose folders go when their server is removed.
    pub fn new(
        store: Arc<ConfigStore>,
        client: McpClient,
        supervisor: Supervisor,
        connect_concurrency: usize,
        tools_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                client,
                supervisor,
                connect_concurrency,
                tools_dir,
            }),
        }
    }

    /// mcp-client's state, for `/health`.
    pub fn client_status(&self) -> ClientStatus {
        self.inner.supervisor.status()
    }

    /// `GET /api/mcp/config`: the file.
    ///
    /// # Errors
    /// [`Error::ConfigFileInvalid`] (with the revision, so the file can be replaced),
    /// [`Error::Io`].
    pub async fn config(&self) -> Result<ConfigFile> {
        let file = self.inner.store.read().await?;
        let servers = file.servers();
        let extra = file
            .document
            .into_iter()
            .filter(|(key, _)| key != "mcpServers" && key != "version")
            .collect();
        Ok(ConfigFile {
            servers,
            extra,
            version: file.version,
        })
    }

    /// `POST /api/mcp/config`: validates `config` (the JSON text of the new file's object:
    /// `mcpServers` required, no key twice), checks `version` (required: a whole-config
    /// write replaces every server), writes the file and loads it into mcp-client. The
    /// folders of `ai_generated` servers it drops are deleted, as `remove` does. For a JWT
    /// `caller`, MAG's ownership (`with_owners`: recorded owners kept, new servers the caller's).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (422), `version` missing (422), [`Error::StaleRevision`]
    /// (409), [`Error::Io`].
    pub async fn set_config(
        &self,
        config: &str,
        version: Option<Value>,
        caller: &Caller,
    ) -> Result<ConfigReplaced> {
        McpConfig::parse(config).map_err(|e| Error::InvalidConfig(e.message))?;
        let Ok(Value::Object(mut document)) = serde_json::from_str::<Value>(config) else {
            return Err(Error::invalid_body(
                "config must be an object like {\"mcpServers\": {...}}",
            ));
        };
        let Some(version) = version.filter(|v| !v.is_null()) else {
            return Err(Error::invalid_body(
                "\"version\" is required (from GET /api/mcp/config): a whole-config write \
                 replaces every server, so it must name the version it was made from",
            ));
        };
        let mut guard = self.inner.store.lock().await;
        check_version(Some(&version), &guard.version().await?)?;
        // (A broken file has no servers to tell.)
        let current = guard.read().await.map(|f| f.servers()).unwrap_or_default();
        if caller.from_token
            && let Some(Value::Object(servers)) = document.get_mut("mcpServers")
        {
            with_owners(servers, &current, caller);
        }
        // The generated tools this write drops: their folders go too.
        let kept = document["mcpServers"].as_object();
        let dropped: Vec<String> = current
            .into_iter()
            .filter(|(name, entry)| {
                entry["ai_generated"] == true && !kept.is_some_and(|k| k.contains_key(name))
            })
            .map(|(name, _)| name)
            .collect();
        let saved = self.write_and_load(&mut guard, &document).await?;
        drop(guard);
        for name in &dropped {
            self.inner.supervisor.note_connected(name, false);
        }
        let folders_left = self.remove_tool_folders(&dropped).await;
        Ok(ConfigReplaced {
            saved,
            folders_left,
        })
    }

    /// `POST /api/mcp/add`: adds the servers not yet in the file (entries written as sent);
    /// the others are duplicates. `version`, when given, must be the file's.
    ///
    /// # Errors
    /// [`Error::InvalidServerName`], [`Error::InvalidConfig`] (422, naming the server),
    /// [`Error::StaleRevision`], [`Error::ConfigFileInvalid`], [`Error::Io`].
    pub async fn add(&self, servers: Map<String, Value>, version: Option<Value>) -> Result<Added> {
        for (name, entry) in &servers {
            validate_server_name(name).map_err(Error::InvalidServerName)?;
            serde_json::from_value::<ServerEntry>(entry.clone())
                .map_err(|e| Error::InvalidConfig(format!("server {name:?}: {e}")))?;
        }
        let mut guard = self.inner.store.lock().await;
        let file = guard.read().await?;
        check_version(version.as_ref(), &file.version)?;
        let mut current = file.servers();
        let (duplicates, added): (Vec<String>, Vec<String>) = servers
            .keys()
            .cloned()
            .partition(|name| current.contains_key(name));
        if added.is_empty() {
            return Ok(Added {
                added,
                duplicates,
                saved: Err(file.version),
            });
        }
        for (name, entry) in servers {
            if added.contains(&name) {
                current.insert(name, entry);
            }
        }
        let mut document = file.document;
        document.insert("mcpServers".into(), Value::Object(current));
        let saved = self.write_and_load(&mut guard, &document).await?;
        Ok(Added {
            added,
            duplicates,
            saved: Ok(saved),
        })
    }

    /// `POST /api/mcp/remove`: removes the named servers from the file (mcp-client
    /// disconnects them). An `ai_generated` server's folder in the tools dir is deleted with
    /// it (as MAG does), after the file is written. A JWT `caller` who is not an admin
    /// keeps another user's servers (`provider_user_id`): [`Removed::permission_denied`].
    ///
    /// # Errors
    /// [`Error::StaleRevision`], [`Error::ConfigFileInvalid`], [`Error::Io`].
    pub async fn remove(
        &self,
        names: Vec<String>,
        version: Option<Value>,
        caller: &Caller,
    ) -> Result<Removed> {
        let mut guard = self.inner.store.lock().await;
        let file = guard.read().await?;
        check_version(version.as_ref(), &file.version)?;
        let mut current = file.servers();
        let mut removed = Vec::new();
        let mut not_found = Vec::new();
        let mut ai_generated = Vec::new();
        let mut permission_denied = Vec::new();
        for name in &names {
            let owner = current
                .get(name)
                .and_then(|entry| entry.get("provider_user_id"))
                .and_then(Value::as_str);
            if caller.from_token
                && !caller.admin
                && owner.is_some_and(|owner| owner != caller.user_id)
            {
                if !permission_denied.contains(name) {
                    permission_denied.push(name.clone());
                }
                continue;
            }
            match current.shift_remove(name) {
                Some(entry) => {
                    if entry["ai_generated"] == true {
                        ai_generated.push(name.clone());
                    }
                    removed.push(name.clone());
                }
                None if !not_found.contains(name) && !removed.contains(name) => {
                    not_found.push(name.clone())
                }
                None => {}
            }
        }
        let mut outcome = Removed {
            requested: names.len(),
            removed,
            ai_generated: ai_generated.len(),
            not_found,
            permission_denied,
            folders_left: Vec::new(),
            saved: Err(file.version),
        };
        if outcome.removed.is_empty() {
            return Ok(outcome);
        }
        let mut document = file.document;
        document.insert("mcpServers".into(), Value::Object(current));
        outcome.saved = Ok(self.write_and_load(&mut guard, &document).await?);
        drop(guard);
        for name in &outcome.removed {
            self.inner.supervisor.note_connected(name, false);
        }
        outcome.folders_left = self.remove_tool_folders(&ai_generated).await;
        Ok(outcome)
    }

    /// `GET /api/mcp/status`: mcp-client's `/servers`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] (503), [`Error::Timeout`] (504), [`Error::BadAnswer`] (502).
    pub async fn status(&self) -> Result<Servers> {
        self.ready().await?;
        self.inner.client.servers(GENERAL_TIMEOUT).await
    }

    /// `/mcp` and `/servers/{name}/mcp`: an MCP client's request forwarded to mcp-client's
    /// MCP gateway (SPEC §8), streams included ([`McpClient::forward_mcp`]).
    ///
    /// # Errors
    /// 503 when mcp-client is not ready or cannot be reached.
    pub async fn forward_mcp(
        &self,
        path_and_query: &str,
        request: axum::extract::Request,
    ) -> Result<axum::response::Response> {
        self.ready().await?;
        self.inner.client.forward_mcp(path_and_query, request).await
    }

    /// `GET /oauth/callback?QUERY` (SPEC §10): the browser's redirect from an
    /// authorization server, passed to mcp-client, which exchanges the code and connects
    /// the server; its page comes back as it is (bounded: 150 s, past any connect).
    ///
    /// # Errors
    /// 503 when mcp-client is not ready or cannot be reached.
    pub async fn oauth_callback(&self, query: &str) -> Result<axum::response::Response> {
        self.ready().await?;
        self.inner
            .client
            .oauth_callback(query, std::time::Duration::from_secs(150))
            .await
    }

    /// `POST /api/mcp/connect/{name}`: mcp-client's answer, bounded by the server's timeout
    /// plus a margin.
    ///
    /// # Errors
    /// 404 unknown, 409 disabled, 400 failed (mcp-client's), 503, 504.
    pub async fn connect(&self, name: &str) -> Result<ConnectAnswer> {
        let within = self.ready_for(name).await?;
        let answer = self.inner.client.connect(name, within).await?;
        self.inner.supervisor.note_connected(name, true);
        Ok(answer)
    }

    /// `POST /api/mcp/connect/all`: every enabled server that is not connected, at most
    /// `connect_concurrency` at once; each enabled server's outcome by name (disabled ones
    /// are left out).
    ///
    /// # Errors
    /// 503, 504 (reading `/servers`); a failed connect is reported per server.
    pub async fn connect_all(&self) -> Result<BTreeMap<String, Connected>> {
        self.ready().await?;
        let servers = self.inner.client.servers(GENERAL_TIMEOUT).await?;
        let timeouts = self.inner.store.timeouts().await;
        let mut results = BTreeMap::new();
        let mut todo = Vec::new();
        for (name, view) in servers {
            if view.status == Status::Disabled {
                continue;
            }
            if view.connected {
                results.insert(name, Connected::Already(view.tools));
            } else {
                todo.push((name.clone(), timeouts.of(&name) + TIMEOUT_MARGIN));
            }
        }
        let outcomes =
            crate::client::connect_many(&self.inner.client, todo, self.inner.connect_concurrency)
                .await;
        for (name, outcome) in outcomes {
            let connected = match outcome {
                Ok(answer) => {
                    self.inner.supervisor.note_connected(&name, true);
                    Connected::Now(answer.tools)
                }
                Err(e) => Connected::Failed(e.to_string()),
            };
            results.insert(name, connected);
        }
        Ok(results)
    }

    /// `POST /api/mcp/disconnect/{name}`: mcp-client's answer.
    ///
    /// # Errors
    /// 404 unknown (mcp-client's), 503, 504.
    pub async fn disconnect(&self, name: &str) -> Result<DisconnectAnswer> {
        validate_server_name(name).map_err(Error::InvalidServerName)?;
        self.ready().await?;
        let answer = self
            .inner
            .client
            .disconnect(name, DISCONNECT_TIMEOUT)
            .await?;
        self.inner.supervisor.note_connected(name, false);
        Ok(answer)
    }

    /// `GET /api/mcp/tools`: every tool of every connected server.
    ///
    /// # Errors
    /// 503, 504.
    pub async fn tools(&self) -> Result<Vec<ToolView>> {
        self.ready().await?;
        self.inner.client.tools(GENERAL_TIMEOUT).await
    }

    /// `POST /api/mcp/test-tool`: calls the tool; a server that is not connected is
    /// connected first, as MAG's executor does (`execution_time` counts the connect).
    ///
    /// # Errors
    /// 404 unknown server or tool, a failed connect, 409 disabled (mcp-client's), 503, 504.
    pub async fn test_tool(&self, test: ToolTest) -> Result<ToolTested> {
        let within = self.ready_for(&test.server_name).await?;
        let started = Instant::now();
        let call = ToolCall {
            server_name: test.server_name.clone(),
            tool_name: test.tool_name.clone(),
            params: Some(Value::Object(test.params.clone())),
        };
        let answer = match self.inner.client.tool_call(&call, within).await {
            Err(Error::Upstream { code, .. }) if code == "not_connected" => {
                self.connect(&test.server_name).await?;
                self.inner.client.tool_call(&call, within).await?
            }
            other => other?,
        };
        Ok(ToolTested {
            test,
            answer,
            took: started.elapsed(),
        })
    }

    /// `POST /api/mcp/client/restart`: leaves a crash loop or a held address and tries
    /// again now; a running spawned mcp-client is restarted (its connected servers are
    /// connected again). mcp-client's state when asked.
    ///
    /// # Errors
    /// [`Error::ClientState`] (409) for an adopted mcp-client or while shutting down.
    pub fn restart_client(&self) -> Result<ClientStatus> {
        self.inner.supervisor.request_restart()
    }

    async fn ready(&self) -> Result<()> {
        self.inner.supervisor.ready(READY_WAIT).await
    }

    /// Checks the server name, waits for mcp-client, and gives the bound for a request that
    /// waits for that server (its `timeout` plus a margin).
    async fn ready_for(&self, server: &str) -> Result<Duration> {
        validate_server_name(server).map_err(Error::InvalidServerName)?;
        self.ready().await?;
        Ok(self.inner.store.timeouts().await.of(server) + TIMEOUT_MARGIN)
    }

    /// Writes the document and, when mcp-client is up, loads it there.
    async fn write_and_load(
        &self,
        guard: &mut ConfigGuard<'_>,
        document: &Map<String, Value>,
    ) -> Result<Saved> {
        let version = guard.write(document).await?;
        tracing::info!(%version, "wrote {}", self.inner.store.path().display());
        let loaded = match self.inner.supervisor.ready(Duration::ZERO).await {
            Ok(()) => {
                self.inner
                    .client
                    .load_config(document, GENERAL_TIMEOUT)
                    .await
            }
            Err(e) => Err(e),
        };
        let applied = loaded.map(|answer| answer.report).map_err(|e| {
            tracing::warn!("config saved but not loaded into mcp-client: {e}");
            e.to_string()
        });
        Ok(Saved { version, applied })
    }

    /// Deletes the tools-dir folders of the generated tools `names` (off the async
    /// threads); the ones that stay, with why.
    async fn remove_tool_folders(&self, names: &[String]) -> Vec<FolderLeft> {
        if names.is_empty() {
            return Vec::new();
        }
        let dirs: Vec<(String, std::path::PathBuf)> = names
            .iter()
            .map(|name| (name.clone(), self.inner.tools_dir.join(name)))
            .collect();
        let removed = tokio::task::spawn_blocking(move || {
            let mut left = Vec::new();
            for (server, dir) in dirs {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        tracing::info!("removed the generated tool's folder {}", dir.display())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("cannot remove {}: {e}", dir.display());
                        let error = format!("its folder {} stays: {e}", dir.display());
                        left.push(FolderLeft { server, error });
                    }
                }
            }
            left
        })
        .await;
        removed.unwrap_or_else(|e| {
            names
                .iter()
                .map(|server| FolderLeft {
                    server: server.clone(),
                    error: format!("the removal task failed: {e}"),
                })
                .collect()
        })
    }
}

/// MAG's ownership on a whole-config write by a JWT `caller` (`update_mcp_config`): a server
/// of `current` keeps its recorded `provider_user_id` and `created_at` (an admin may set
/// others), a new one in `servers` gets the caller's and now.
fn with_owners(servers: &mut Map<String, Value>, current: &Map<String, Value>, caller: &Caller) {
    let now = now_rfc3339();
    for (name, entry) in servers.iter_mut() {
        let Value::Object(fields) = entry else {
            continue;
        };
        let Some(old) = current.get(name) else {
            if !caller.admin || !fields.contains_key("provider_user_id") {
                stamp_owner(fields, caller, &now);
            }
            continue;
        };
        for key in ["provider_user_id", "created_at"] {
            match old.get(key) {
                Some(value) if !caller.admin || !fields.contains_key(key) => {
                    fields.insert(key.into(), value.clone());
                }
                None if !caller.admin => {
                    fields.remove(key);
                }
                _ => {}
            }
        }
    }
}

/// MAG's ownership on servers a JWT `caller` adds (`add_servers`): each entry gets the
/// caller's `provider_user_id` and now as `created_at`.
pub fn owned_by(servers: &mut Map<String, Value>, caller: &Caller) {
    let now = now_rfc3339();
    for entry in servers.values_mut() {
        if let Value::Object(fields) = entry {
            stamp_owner(fields, caller, &now);
        }
    }
}

/// Records `caller` as the owner of one entry's `fields`, created at `now`.
fn stamp_owner(fields: &mut Map<String, Value>, caller: &Caller, now: &str) {
    fields.insert(
        "provider_user_id".into(),
        Value::from(caller.user_id.clone()),
    );
    fields.insert("created_at".into(), Value::from(now));
}

/// `None` or `null`: no check. A string equal to `current`: fine. Anything else: stale.
fn check_version(sent: Option<&Value>, current: &str) -> Result<()> {
    match sent {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(sent)) if sent == current => Ok(()),
        Some(other) => Err(Error::StaleRevision {
            expected: other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string),
            current: current.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_are_compared_as_opaque_strings() {
        assert!(check_version(None, "abc").is_ok());
        assert!(check_version(Some(&Value::Null), "abc").is_ok());
        assert!(check_version(Some(&json!("abc")), "abc").is_ok());
        match check_version(Some(&json!(3)), "abc").unwrap_err() {
            Error::StaleRevision { expected, current } => {
                assert_eq!((expected.as_str(), current.as_str()), ("3", "abc"));
            }
            other => panic!("{other:?}"),
        }
        assert!(check_version(Some(&json!("abd")), "abc").is_err());
    }
}
