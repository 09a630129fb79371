//! The MCP management endpoints in MAG's shapes (`mag/app/api/mcp_routes.py`): add and
//! remove report `added_servers`, `duplicate_servers`, `skipped_servers`,
//! `removed_servers`, `not_found_servers`, …; a config write answers `{"status":
//! {"message"|"warning", "version"}}`; test-tool answers `{"status", "server_name",
//! "tool_name", "params", "result", "error", "execution_time"}`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use mag_common::http_edge::{EdgeError, read_body};
use mag_common::wire::Servers;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{AppResult, Body, Segment, St, Who};
use crate::auth::Caller;
use crate::control::{Connected, FolderLeft, Saved, ToolTest};
use crate::error::{Error, Result};

/// A server name from the path.
fn name(path: Segment) -> Result<String> {
    path.map(|Path(name)| name)
        .map_err(|e| Error::InvalidServerName(e.body_text()))
}

/// MAG's `status` object of a config write: `{"message", "version"}` when mcp-client
/// applied it, `{"warning", "version"}` when it could not now.
fn status_of(saved: &Saved) -> Value {
    match &saved.applied {
        Ok(_) => {
            json!({"message": "config saved and applied by mcp-client", "version": saved.version})
        }
        Err(e) => json!({
            "warning": format!(
                "config saved, but mcp-client did not apply it now ({e}); it reads the file \
                 when it starts"
            ),
            "version": saved.version,
        }),
    }
}

fn folders_left(left: &[FolderLeft]) -> Value {
    left.iter()
        .map(|f| json!({"server": f.server, "error": f.error}))
        .collect()
}

/// `GET /api/mcp/config`: the file's fields (`mcpServers` first) and `"version"`.
pub(super) async fn get_config(State(state): St) -> AppResult {
    let file = state.plane.config().await?;
    let servers = file
        .servers
        .into_iter()
        .map(|(name, entry)| (name, with_mags_fields(entry)))
        .collect();
    let mut answer = Map::new();
    answer.insert("mcpServers".into(), Value::Object(servers));
    answer.extend(file.extra);
    answer.insert("version".into(), json!(file.version));
    Ok(Json(Value::Object(answer)))
}

/// `entry` with the fields MAG fills on every entry it writes (`mcp_schema.py`) and its
/// MCP page shows, where absent: `transportType` (as mcp-client reads the entry: from
/// `type`, else `command` → `stdio`, `url` → `streamable_http`), `timeout` (60),
/// `autoApprove` (`[]`), `disabled` (`false`). The file keeps what was written; an entry
/// that does not validate is answered as it is.
fn with_mags_fields(entry: Value) -> Value {
    let Ok(parsed) = serde_json::from_value::<mag_common::config::ServerEntry>(entry.clone())
    else {
        return entry;
    };
    let Value::Object(mut fields) = entry else {
        return entry;
    };
    let defaults = [
        ("transportType", json!(parsed.transport.as_str())),
        (
            "timeout",
            json!(mag_common::config::DEFAULT_TIMEOUT.as_secs()),
        ),
        ("autoApprove", json!([])),
        ("disabled", json!(false)),
    ];
    for (field, value) in defaults {
        fields.entry(field).or_insert(value);
    }
    Value::Object(fields)
}

/// MAG's `{"config": {"mcpServers": {...}}, "version": REV}`; the config is read from the
/// text itself, so a key given twice (last-wins in a JSON object) is refused.
#[derive(Deserialize)]
pub(super) struct SetConfigBody<'a> {
    #[serde(borrow)]
    config: Option<&'a RawValue>,
    #[serde(default)]
    version: Option<Value>,
}

/// `POST /api/mcp/config`: `{"status": {"message"|"warning", "version"}, "version",
/// "applied": {"added", "updated", "removed"} | null, "failed_removals": [{"server",
/// "error"}]}`. For a JWT user, as MAG: existing servers keep their `provider_user_id` and
/// `created_at` (a user who is not an admin cannot change them), new ones are theirs.
pub(super) async fn set_config(State(state): St, Who(caller): Who, request: Request) -> AppResult {
    let bytes = read_body(request, state.body_limit).await?;
    if bytes.trim_ascii_start().first() != Some(&b'{')
        && serde_json::from_slice::<Value>(&bytes).is_ok()
    {
        return Err(Error::invalid_body("the body must be a JSON object"));
    }
    let body: SetConfigBody = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::invalid_body(e.to_string()),
        _ => Error::Edge(EdgeError::MalformedJson(e.to_string())),
    })?;
    let Some(config) = body.config else {
        return Err(Error::invalid_body(
            "expected {\"config\": {\"mcpServers\": {...}}, \"version\": VERSION} (VERSION \
             from GET /api/mcp/config)",
        ));
    };
    let replaced = state
        .plane
        .set_config(config.get(), body.version, &caller)
        .await?;
    let saved = &replaced.saved;
    Ok(Json(json!({
        "status": status_of(saved),
        "version": saved.version,
        "applied": saved.applied.as_ref().ok(),
        "failed_removals": folders_left(&replaced.folders_left),
    })))
}

#[derive(Deserialize)]
pub(super) struct AddBody {
    #[serde(rename = "mcpServers")]
    servers: Map<String, Value>,
    #[serde(default)]
    version: Option<Value>,
}

/// `POST /api/mcp/add`: MAG's answer, `{"status": "success" | "partial_success" |
/// "no_changes" | "error", "message", "added_servers", "duplicate_servers",
/// "skipped_servers", "update_result", "new_version" | "current_version"}`. A JWT user's
/// servers are recorded as theirs, as MAG does (`provider_user_id`, `created_at`): only
/// they and admins may remove them.
pub(super) async fn add(
    State(state): St,
    Who(caller): Who,
    Body(mut body): Body<AddBody>,
) -> AppResult {
    if caller.from_token {
        crate::control::owned_by(&mut body.servers, &caller);
    }
    if body.servers.is_empty() {
        return Ok(Json(json!({
            "status": "error",
            "message": "no servers to add",
            "added_servers": [],
            "duplicate_servers": [],
            "skipped_servers": [],
        })));
    }
    let added = state.plane.add(body.servers, body.version).await?;
    let (added_servers, duplicates) = (&added.added, &added.duplicates);
    let saved = match &added.saved {
        Err(current_version) => {
            return Ok(Json(json!({
                "status": "no_changes",
                "message": format!("all {} servers already exist; nothing was added", duplicates.len()),
                "added_servers": [],
                "duplicate_servers": duplicates,
                "skipped_servers": duplicates,
                "update_result": null,
                "current_version": current_version,
            })));
        }
        Ok(saved) => saved,
    };
    let (status, message) = if duplicates.is_empty() {
        ("success", format!("added {} servers", added_servers.len()))
    } else {
        (
            "partial_success",
            format!(
                "added {} servers, skipped {} that already exist",
                added_servers.len(),
                duplicates.len()
            ),
        )
    };
    Ok(Json(json!({
        "status": status,
        "message": message,
        "added_servers": added_servers,
        "duplicate_servers": duplicates,
        "skipped_servers": duplicates,
        "update_result": {"status": status_of(saved)},
        "new_version": saved.version,
    })))
}

/// MAG's two request shapes: `{"server_names": [..], "version": V}` and a bare `[..]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RemoveBody {
    Names(Vec<String>),
    Request {
        server_names: Vec<String>,
        #[serde(default)]
        version: Option<Value>,
    },
}

/// `POST /api/mcp/remove`: MAG's answer, `{"status": "success" | "partial_success" |
/// "permission_denied" | "no_changes" | "error", "message", "removed_servers",
/// "not_found_servers", "failed_removals", "permission_denied_servers",
/// "ai_generated_count", "traditional_count", "total_requested", "update_result",
/// "new_version" | "current_version"}`. A JWT user who is not an admin cannot remove
/// another user's server (its `provider_user_id`), as in MAG.
pub(super) async fn remove(
    State(state): St,
    Who(caller): Who,
    Body(body): Body<Value>,
) -> AppResult {
    let body: RemoveBody = serde_json::from_value(body).map_err(|_| {
        Error::invalid_body(
            "expected {\"server_names\": [NAME, ...], \"version\": VERSION} or [NAME, ...]",
        )
    })?;
    let (names, version) = match body {
        RemoveBody::Names(names) => (names, None),
        RemoveBody::Request {
            server_names,
            version,
        } => (server_names, version),
    };
    if names.is_empty() {
        return Ok(Json(json!({
            "status": "error",
            "message": "no servers named to remove",
            "removed_servers": [],
            "not_found_servers": [],
            "failed_removals": [],
            "total_requested": 0,
        })));
    }
    let removed = state.plane.remove(names, version, &caller).await?;
    let denied = &removed.permission_denied;
    let mut answer = match &removed.saved {
        Err(current_version) => json!({
            "status": "no_changes",
            "message": format!("none of the {} servers exist; nothing was removed", removed.not_found.len()),
            "removed_servers": [],
            "not_found_servers": removed.not_found,
            "failed_removals": [],
            "update_result": null,
            "current_version": current_version,
        }),
        Ok(saved) => {
            let (status, message) = if removed.not_found.is_empty() {
                (
                    "success",
                    format!("removed {} servers", removed.removed.len()),
                )
            } else {
                (
                    "partial_success",
                    format!(
                        "removed {} servers; {} do not exist",
                        removed.removed.len(),
                        removed.not_found.len()
                    ),
                )
            };
            json!({
                "status": status,
                "message": message,
                "removed_servers": removed.removed,
                "not_found_servers": removed.not_found,
                "failed_removals": folders_left(&removed.folders_left),
                "update_result": {"status": status_of(saved)},
                "new_version": saved.version,
            })
        }
    };
    answer["ai_generated_count"] = json!(removed.ai_generated);
    answer["traditional_count"] = json!(removed.removed.len() - removed.ai_generated);
    answer["total_requested"] = json!(removed.requested);
    answer["permission_denied_servers"] = json!(denied);
    if !denied.is_empty() && removed.removed.is_empty() {
        answer["status"] = json!("permission_denied");
        answer["message"] = json!(format!(
            "none of the servers was removed: {} belong to other users, {} do not exist",
            denied.len(),
            removed.not_found.len()
        ));
    } else if !denied.is_empty() && answer["status"] == "success" {
        answer["status"] = json!("partial_success");
        answer["message"] = json!(format!(
            "removed {} servers; {} belong to other users",
            removed.removed.len(),
            denied.len()
        ));
    }
    Ok(Json(answer))
}

/// `GET /api/mcp/status`: mcp-client's `/servers`, `{NAME: {"connected", "status",
/// "tools", "error", "pid", …}}`.
///
/// A JWT user who is not an admin sees an `authorization_url` only for their own servers
/// ([`may_authorize`]).
pub(super) async fn status(State(state): St, Who(caller): Who) -> Result<Json<Servers>> {
    let mut servers = state.plane.status().await?;
    if owner_matters(&caller)
        && servers
            .values()
            .any(|view| view.authorization_url.is_some())
    {
        let owners = owners(&state).await?;
        for (name, view) in &mut servers {
            if !may_authorize(&caller, owners.get(name)) {
                view.authorization_url = None;
            }
        }
    }
    Ok(Json(servers))
}

/// The `provider_user_id` of each server that has one.
async fn owners(state: &super::AppState) -> Result<BTreeMap<String, String>> {
    Ok(state
        .plane
        .config()
        .await?
        .servers
        .into_iter()
        .filter_map(|(name, entry)| {
            let owner = entry.get("provider_user_id")?.as_str()?.to_string();
            Some((name, owner))
        })
        .collect())
}

/// Whether `caller` may see where to authorize a server of `owner` (SPEC §10): whoever
/// approves decides whose account the server's calls use, for every user of the daemon.
/// So a JWT user may for their own servers; admins and the operator (no JWT) for all.
fn may_authorize(caller: &Caller, owner: Option<&String>) -> bool {
    !owner_matters(caller) || owner.is_some_and(|owner| *owner == caller.user_id)
}

/// Whether a server's owner decides what `caller` may see of its authorization: only for a
/// JWT user who is not an admin (so the others need no read of mcp.json for it).
fn owner_matters(caller: &Caller) -> bool {
    caller.from_token && !caller.admin
}

/// `POST /api/mcp/connect/{name}`: mcp-client's answer, `{"status": "connected", "server",
/// "tools"}`; for `all`, MAG's answer: `{"status": "completed", "summary":
/// {"total_servers", "successful_connections", "failed_connections", "already_connected"},
/// "servers": {NAME: {"status": "connected" | "already_connected" | "failed", "tools",
/// "error"?}}, "tools": {NAME: [names]}}` (disabled servers left out).
pub(super) async fn connect(State(state): St, Who(caller): Who, path: Segment) -> AppResult {
    let name = name(path)?;
    if !name.eq_ignore_ascii_case("all") {
        return match state.plane.connect(&name).await {
            Ok(answer) => Ok(Json(json!(answer))),
            Err(mut e) => {
                if let Error::Upstream {
                    authorization_url: url @ Some(_),
                    ..
                } = &mut e
                    && owner_matters(&caller)
                    && !may_authorize(&caller, owners(&state).await?.get(&name))
                {
                    *url = None;
                }
                Err(e)
            }
        };
    }
    let outcomes = state.plane.connect_all().await?;
    let mut servers = BTreeMap::new();
    let mut tools = BTreeMap::new();
    let (mut connected, mut failed, mut already) = (0, 0, 0);
    for (name, outcome) in &outcomes {
        let view = match outcome {
            Connected::Now(names) => {
                connected += 1;
                tools.insert(name, names);
                json!({"status": "connected", "tools": names})
            }
            Connected::Already(names) => {
                already += 1;
                tools.insert(name, names);
                json!({"status": "already_connected", "tools": names})
            }
            Connected::Failed(error) => {
                failed += 1;
                json!({"status": "failed", "error": error, "tools": []})
            }
        };
        servers.insert(name, view);
    }
    Ok(Json(json!({
        "status": "completed",
        "summary": {
            "total_servers": outcomes.len(),
            "successful_connections": connected,
            "failed_connections": failed,
            "already_connected": already,
        },
        "servers": servers,
        "tools": tools,
    })))
}

/// `POST /api/mcp/disconnect/{name}`: mcp-client's answer, `{"status": "disconnected" |
/// "not_connected", "server", "message"}`.
pub(super) async fn disconnect(State(state): St, path: Segment) -> AppResult {
    let answer = state.plane.disconnect(&name(path)?).await?;
    Ok(Json(json!(answer)))
}

/// `GET /api/mcp/tools`: `{SERVER: [{"name", "description", "input_schema"}]}` for the
/// connected servers.
pub(super) async fn tools(State(state): St) -> AppResult {
    let mut by_server: Map<String, Value> = Map::new();
    for tool in state.plane.tools().await? {
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
    Ok(Json(Value::Object(by_server)))
}

#[derive(Deserialize)]
pub(super) struct TestToolBody {
    server_name: String,
    tool_name: String,
    #[serde(default)]
    params: Option<Value>,
}

/// `POST /api/mcp/test-tool`: MAG's answer, always 200 once the body reads (MAG's
/// `mcp_routes.py` answers every failure so): `{"status": "success" | "error",
/// "server_name", "tool_name", "params", "result" (the content blocks), "error",
/// "execution_time" (seconds)}`; a tool error, an unknown server or tool, a failed connect
/// or a timeout is `"status": "error"` with its `code`.
pub(super) async fn test_tool(State(state): St, Body(body): Body<TestToolBody>) -> AppResult {
    let params = match body.params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => return Err(Error::invalid_body("params must be a JSON object")),
    };
    let test = ToolTest {
        server_name: body.server_name,
        tool_name: body.tool_name,
        params,
    };
    let started = std::time::Instant::now();
    let tested = match state.plane.test_tool(test.clone()).await {
        Ok(tested) => tested,
        Err(e) => {
            return Ok(Json(json!({
                "status": "error",
                "server_name": test.server_name,
                "tool_name": test.tool_name,
                "params": test.params,
                "result": null,
                "error": mag_common::secrets::redact(&e.to_string()),
                "code": e.code(),
                "execution_time": started.elapsed().as_secs_f64(),
            })));
        }
    };
    let mut result = json!({
        "server_name": tested.test.server_name,
        "tool_name": tested.test.tool_name,
        "params": tested.test.params,
        "execution_time": tested.took.as_secs_f64(),
    });
    let answer = tested.answer;
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
    Ok(Json(result))
}

/// `POST /api/mcp/client/restart`: `{"status": "restart_requested", "mcp_client": {..}}`.
pub(super) async fn restart_client(State(state): St) -> AppResult {
    let status = state.plane.restart_client()?;
    Ok(Json(
        json!({"status": "restart_requested", "mcp_client": status}),
    ))
}

/// `GET /oauth/callback` (SPEC §10): where authorization servers send the browser back
/// (mag-server starts mcp-client with this as its redirect URI); passed to mcp-client.
pub(super) async fn oauth_callback(
    State(state): St,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    match state
        .plane
        .oauth_callback(query.as_deref().unwrap_or_default())
        .await
    {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// `/mcp` and `/servers/{name}/mcp` (any method): the MCP gateway of the mcp-client
/// mag-server runs, under mag-server's own token (`MAG_API_TOKEN`), since that mcp-client
/// holds a token no outside client knows.
pub async fn gateway(State(state): St, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    match state.plane.forward_mcp(&path_and_query, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}
