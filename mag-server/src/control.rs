//! The control plane's core: every `/api/mcp` operation and `/health`, without HTTP.
//!
//! Answers keep MAG's shapes (`mag/app/api/mcp_routes.py`): add and remove report
//! `added_servers`, `duplicate_servers`, `skipped_servers`, `removed_servers`,
//! `not_found_servers`, …; a config write answers `{"status": {"message"|"warning",
//! "version"}}`; test-tool answers `{"status", "server_name", "tool_name", "params",
//! "result", "error", "execution_time"}`. Versions are opaque strings (the file's
//! [`revision`](mag_common::config::revision)), not MAG's counters.
//!
//! Forwarded operations wait up to [`READY_WAIT`] for the first mcp-client mag-server
//! starts, and fail at once with 503 when it is down otherwise (restarting, crash loop,
//! address held by another program).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mag_common::config::{McpConfig, ServerEntry, validate_server_name};
use serde_json::{Map, Value, json};

use crate::client::{DISCONNECT_TIMEOUT, GENERAL_TIMEOUT, McpClient, TIMEOUT_MARGIN};
use crate::config_store::{ConfigGuard, ConfigStore};
use crate::error::{Error, Result};
use crate::supervisor::Supervisor;
use mag_common::wire::{ConnectAnswer, DisconnectAnswer, Servers, Status, ToolCall};

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

    /// `GET /health` without its `store` part: `{"status": "ok", "service": "mag-server",
    /// "version", "pid", "mcp_client": {"state", "address", "pid", "managed", "restarts",
    /// "since", "last_exit", "error", "last_reconnect"}}`. Without `detail` (a caller
    /// without the token), liveness only: `{"status", "service", "version", "mcp_client":
    /// {"state", "since"}}`, no pids, error texts or stderr.
    pub fn health(&self, detail: bool) -> Value {
        let client = self.inner.supervisor.status();
        if !detail {
            return json!({
                "status": "ok",
                "service": "mag-server",
                "version": env!("CARGO_PKG_VERSION"),
                "mcp_client": {"state": client.state, "since": client.since},
            });
        }
        json!({
            "status": "ok",
            "service": "mag-server",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "mcp_client": client,
        })
    }

    /// `GET /api/mcp/config`: the file's fields (`mcpServers` first, `{}` when absent) and
    /// `"version"`, its revision.
    ///
    /// # Errors
    /// [`Error::ConfigFileInvalid`] (with the revision, so the file can be replaced),
    /// [`Error::Io`].
    pub async fn config(&self) -> Result<Value> {
        let file = self.inner.store.read().await?;
        let mut answer = Map::new();
        answer.insert("mcpServers".into(), Value::Object(file.servers()));
        for (key, value) in file.document {
            if key != "mcpServers" && key != "version" {
                answer.insert(key, value);
            }
        }
        answer.insert("version".into(), json!(file.version));
        Ok(Value::Object(answer))
    }

    /// `POST /api/mcp/config`: validates `config` (the JSON text of the new file's object:
    /// `mcpServers` required, no key twice), checks `version` (required: a whole-config
    /// write replaces every server), writes the file and loads it into mcp-client. The
    /// folders of `ai_generated` servers it drops are deleted, as `remove` does. The answer:
    /// `{"status": {"message"|"warning", "version"}, "version", "applied": {"added",
    /// "updated", "removed"} | null, "failed_removals": [..]}`; a warning says mcp-client
    /// could not load it now (it reads the file when it starts).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (422), `version` missing (422), [`Error::StaleRevision`]
    /// (409), [`Error::Io`].
    pub async fn set_config(&self, config: &str, version: Option<Value>) -> Result<Value> {
        McpConfig::parse(config).map_err(|e| Error::InvalidConfig(e.message))?;
        let Ok(Value::Object(document)) = serde_json::from_str::<Value>(config) else {
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
        // The generated tools this write drops: their folders go too (a broken file has
        // none to tell).
        let dropped: Vec<String> = match guard.read().await {
            Ok(file) => file
                .servers()
                .into_iter()
                .filter(|(name, entry)| {
                    entry["ai_generated"] == true
                        && !document["mcpServers"]
                            .as_object()
                            .is_some_and(|servers| servers.contains_key(name))
                })
                .map(|(name, _)| name)
                .collect(),
            Err(_) => Vec::new(),
        };
        let (status, version, applied) = self.write_and_load(&mut guard, &document).await?;
        drop(guard);
        for name in &dropped {
            self.inner.supervisor.note_connected(name, false);
        }
        let failed = self.remove_tool_folders(&dropped).await;
        Ok(json!({
            "status": status,
            "version": version,
            "applied": applied,
            "failed_removals": failed,
        }))
    }

    /// Deletes the tools-dir folders of the generated tools `names` (off the async
    /// threads); each failure as `{"server", "error"}`.
    async fn remove_tool_folders(&self, names: &[String]) -> Vec<Value> {
        if names.is_empty() {
            return Vec::new();
        }
        let dirs: Vec<(String, std::path::PathBuf)> = names
            .iter()
            .map(|name| (name.clone(), self.inner.tools_dir.join(name)))
            .collect();
        let removed = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for (name, dir) in dirs {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::info!("removed the generated tool's folder {}", dir.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("cannot remove {}: {e}", dir.display());
                        failed.push(json!({"server": name, "error": format!("its folder {} stays: {e}", dir.display())}));
                    }
                }
            }
            failed
        })
        .await;
        removed.unwrap_or_else(|e| {
            vec![json!({"server": null, "error": format!("the removal task failed: {e}")})]
        })
    }

    /// `POST /api/mcp/add`: adds the servers not yet in the file (entries written as sent);
    /// the others are `duplicate_servers`. MAG's answer: `{"status": "success" |
    /// "partial_success" | "no_changes" | "error", "message", "added_servers",
    /// "duplicate_servers", "skipped_servers", "update_result", "new_version" |
    /// "current_version"}`.
    ///
    /// # Errors
    /// [`Error::InvalidServerName`], [`Error::InvalidConfig`] (422, naming the server),
    /// [`Error::StaleRevision`], [`Error::ConfigFileInvalid`], [`Error::Io`].
    pub async fn add(&self, servers: Map<String, Value>, version: Option<Value>) -> Result<Value> {
        if servers.is_empty() {
            return Ok(json!({
                "status": "error",
                "message": "no servers to add",
                "added_servers": [],
                "duplicate_servers": [],
                "skipped_servers": [],
            }));
        }
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
            return Ok(json!({
                "status": "no_changes",
                "message": format!("all {} servers already exist; nothing was added", duplicates.len()),
                "added_servers": [],
                "duplicate_servers": duplicates,
                "skipped_servers": duplicates,
                "update_result": null,
                "current_version": file.version,
            }));
        }
        for (name, entry) in servers {
            if added.contains(&name) {
                current.insert(name, entry);
            }
        }
        let mut document = file.document;
        document.insert("mcpServers".into(), Value::Object(current));
        let (status, version, _) = self.write_and_load(&mut guard, &document).await?;
        let (state, message) = if duplicates.is_empty() {
            ("success", format!("added {} servers", added.len()))
        } else {
            (
                "partial_success",
                format!(
                    "added {} servers, skipped {} that already exist",
                    added.len(),
                    duplicates.len()
                ),
            )
        };
        Ok(json!({
            "status": state,
            "message": message,
            "added_servers": added,
            "duplicate_servers": duplicates,
            "skipped_servers": duplicates,
            "update_result": {"status": status},
            "new_version": version,
        }))
    }

    /// `POST /api/mcp/remove`: removes the named servers from the file (mcp-client
    /// disconnects them). MAG's answer: `{"status": "success" | "partial_success" |
    /// "no_changes" | "error", "message", "removed_servers", "not_found_servers",
    /// "failed_removals", "ai_generated_count", "traditional_count", "total_requested",
    /// "update_result", "new_version" | "current_version"}`. An `ai_generated` server's
    /// folder in the tools dir is deleted with it (as MAG does), after the file is written.
    ///
    /// # Errors
    /// [`Error::StaleRevision`], [`Error::ConfigFileInvalid`], [`Error::Io`].
    pub async fn remove(&self, names: Vec<String>, version: Option<Value>) -> Result<Value> {
        if names.is_empty() {
            return Ok(json!({
                "status": "error",
                "message": "no servers named to remove",
                "removed_servers": [],
                "not_found_servers": [],
                "failed_removals": [],
                "total_requested": 0,
            }));
        }
        let mut guard = self.inner.store.lock().await;
        let file = guard.read().await?;
        check_version(version.as_ref(), &file.version)?;
        let mut current = file.servers();
        let mut removed = Vec::new();
        let mut not_found = Vec::new();
        let mut ai_generated = Vec::new();
        for name in &names {
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
        let counts = json!({
            "ai_generated_count": ai_generated.len(),
            "traditional_count": removed.len() - ai_generated.len(),
            "total_requested": names.len(),
        });
        if removed.is_empty() {
            let mut answer = json!({
                "status": "no_changes",
                "message": format!("none of the {} servers exist; nothing was removed", not_found.len()),
                "removed_servers": [],
                "not_found_servers": not_found,
                "failed_removals": [],
                "update_result": null,
                "current_version": file.version,
            });
            merge(&mut answer, counts);
            return Ok(answer);
        }
        let mut document = file.document;
        document.insert("mcpServers".into(), Value::Object(current));
        let (status, version, _) = self.write_and_load(&mut guard, &document).await?;
        drop(guard);
        for name in &removed {
            self.inner.supervisor.note_connected(name, false);
        }
        let failed = self.remove_tool_folders(&ai_generated).await;
        let (state, message) = if not_found.is_empty() {
            ("success", format!("removed {} servers", removed.len()))
        } else {
            (
                "partial_success",
                format!(
                    "removed {} servers; {} do not exist",
                    removed.len(),
                    not_found.len()
                ),
            )
        };
        let mut answer = json!({
            "status": state,
            "message": message,
            "removed_servers": removed,
            "not_found_servers": not_found,
            "failed_removals": failed,
            "update_result": {"status": status},
            "new_version": version,
        });
        merge(&mut answer, counts);
        Ok(answer)
    }

    /// `GET /api/mcp/status`: mcp-client's `/servers`, `{NAME: {"connected", "status",
    /// "tools", "error", "pid", …}}`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] (503), [`Error::Timeout`] (504).
    pub async fn status(&self) -> Result<Servers> {
        self.ready().await?;
        self.inner.client.servers(GENERAL_TIMEOUT).await
    }

    /// `POST /api/mcp/connect/{name}`: mcp-client's answer, `{"status": "connected",
    /// "server", "tools"}`, bounded by the server's timeout plus a margin.
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
    /// `connect_concurrency` at once. MAG's answer: `{"status": "completed", "summary":
    /// {"total_servers", "successful_connections", "failed_connections",
    /// "already_connected"}, "servers": {NAME: {"status": "connected" | "already_connected"
    /// | "failed", "tools", "error"?}}, "tools": {NAME: [names]}}`; disabled servers are
    /// left out.
    ///
    /// # Errors
    /// 503, 504 (reading `/servers`); a failed connect is reported per server.
    pub async fn connect_all(&self) -> Result<Value> {
        self.ready().await?;
        let servers = self.inner.client.servers(GENERAL_TIMEOUT).await?;
        let timeouts = self.inner.store.timeouts().await;
        let mut results = BTreeMap::new();
        let mut tools = BTreeMap::new();
        let mut todo = Vec::new();
        let (mut total, mut already) = (0, 0);
        for (name, view) in &servers {
            if view.status == Status::Disabled {
                continue;
            }
            total += 1;
            if view.connected {
                already += 1;
                results.insert(
                    name.clone(),
                    json!({"status": "already_connected", "tools": view.tools}),
                );
                tools.insert(name.clone(), json!(view.tools));
            } else {
                todo.push((name.clone(), timeouts.of(name) + TIMEOUT_MARGIN));
            }
        }
        let (mut connected, mut failed) = (0, 0);
        let outcomes =
            crate::client::connect_many(&self.inner.client, todo, self.inner.connect_concurrency)
                .await;
        for (name, outcome) in outcomes {
            match outcome {
                Ok(answer) => {
                    connected += 1;
                    self.inner.supervisor.note_connected(&name, true);
                    let names = json!(answer.tools);
                    results.insert(name.clone(), json!({"status": "connected", "tools": names}));
                    tools.insert(name, names);
                }
                Err(e) => {
                    failed += 1;
                    results.insert(
                        name,
                        json!({"status": "failed", "error": e.to_string(), "tools": []}),
                    );
                }
            }
        }
        Ok(json!({
            "status": "completed",
            "summary": {
                "total_servers": total,
                "successful_connections": connected,
                "failed_connections": failed,
                "already_connected": already,
            },
            "servers": results,
            "tools": tools,
        }))
    }

    /// `POST /api/mcp/disconnect/{name}`: mcp-client's answer, `{"status": "disconnected" |
    /// "not_connected", "server", "message"}`.
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

    /// `GET /api/mcp/tools`: `{SERVER: [{"name", "description", "input_schema"}]}` for the
    /// connected servers.
    ///
    /// # Errors
    /// 503, 504.
    pub async fn tools(&self) -> Result<Value> {
        self.ready().await?;
        let tools = self.inner.client.tools(GENERAL_TIMEOUT).await?;
        let mut by_server: Map<String, Value> = Map::new();
        for tool in tools {
            let entry = by_server
                .entry(tool.server_name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                }));
            }
        }
        Ok(Value::Object(by_server))
    }

    /// `POST /api/mcp/test-tool`: calls the tool. MAG's answer: `{"status": "success" |
    /// "error", "server_name", "tool_name", "params", "result" (the content blocks),
    /// "error", "execution_time" (seconds)}`; a tool error or timeout is `"status":
    /// "error"` with mcp-client's `code`.
    ///
    /// # Errors
    /// 404 unknown server or tool, 409 not connected (mcp-client's), 503, 504.
    pub async fn test_tool(&self, test: ToolTest) -> Result<Value> {
        let within = self.ready_for(&test.server_name).await?;
        let started = Instant::now();
        let call = ToolCall {
            server_name: test.server_name.clone(),
            tool_name: test.tool_name.clone(),
            params: Some(Value::Object(test.params.clone())),
        };
        let answer = self.inner.client.tool_call(&call, within).await?;
        let execution_time = started.elapsed().as_secs_f64();
        let mut result = json!({
            "server_name": test.server_name,
            "tool_name": test.tool_name,
            "params": test.params,
            "execution_time": execution_time,
        });
        match answer.error {
            Some(error) => {
                result["status"] = json!("error");
                result["result"] = Value::Null;
                result["error"] = json!(error);
                result["code"] = json!(answer.code);
            }
            None => {
                result["status"] = json!("success");
                result["result"] = json!(answer.content);
                result["error"] = Value::Null;
                if let Some(structured) = answer.structured_content {
                    result["structured_content"] = structured;
                }
            }
        }
        Ok(result)
    }

    /// `POST /api/mcp/client/restart`: leaves a crash loop or a held address and tries
    /// again now; a running spawned mcp-client is restarted (its connected servers are
    /// connected again). `{"status": "restart_requested", "mcp_client": {..}}`.
    ///
    /// # Errors
    /// [`Error::ClientState`] (409) for an adopted mcp-client or while shutting down.
    pub fn restart_client(&self) -> Result<Value> {
        let status = self.inner.supervisor.request_restart()?;
        Ok(json!({"status": "restart_requested", "mcp_client": status}))
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

    /// Writes the document and, when mcp-client is up, loads it there; MAG's `status`
    /// object, the new version and what mcp-client changed.
    async fn write_and_load(
        &self,
        guard: &mut ConfigGuard<'_>,
        document: &Map<String, Value>,
    ) -> Result<(Value, String, Value)> {
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
        Ok(match loaded {
            Ok(report) => (
                json!({"message": "config saved and applied by mcp-client", "version": version}),
                version,
                json!(report.report),
            ),
            Err(e) => {
                tracing::warn!("config saved but not loaded into mcp-client: {e}");
                (
                    json!({
                        "warning": format!(
                            "config saved, but mcp-client did not apply it now ({e}); it reads \
                             the file when it starts"
                        ),
                        "version": version,
                    }),
                    version,
                    Value::Null,
                )
            }
        })
    }
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

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
