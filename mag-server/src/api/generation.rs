//! MCP generation's endpoints in MAG's shapes (`mag/app/api/mcp_routes.py`,
//! `ai_mcp_generator.py`): the SSE events of a round (`data: CHUNK` …, `{"saved"}`,
//! `{"incomplete"}`, `{"completion"}`, `{"error": {"message", "type"}}`, then `[DONE]`),
//! conversations (their fields with `_id` as both `_id` and `conversation_id`, times as
//! RFC 3339 strings) and installed tools.

use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppResult, Body, Segment, St, Who};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::generation::install::ToolFiles;
use crate::generation::{ErrorKind, Event, GenerateRequest, Installed, Outcome};
use crate::store::{Conversation, ConversationRecord, ListQuery, rfc3339};

/// A conversation's metadata in MAG's shape.
pub(super) fn conversation_json(c: &Conversation) -> Value {
    json!({
        "_id": c.id,
        "conversation_id": c.id,
        "user_id": c.user_id,
        "type": c.kind,
        "title": c.title,
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
        "round_count": c.round_count,
        "total_token_usage": c.total_token_usage,
        "status": c.status,
        "tags": c.tags,
    })
}

/// A whole conversation in MAG's detail shape: its metadata plus `rounds`,
/// `parsed_results` and `"generation_type": "mcp"`.
pub(super) fn record_json(record: &ConversationRecord) -> Value {
    let mut answer = conversation_json(&record.conversation);
    answer["generation_type"] = json!("mcp");
    answer["rounds"] = json!(record.generation.rounds);
    answer["parsed_results"] = Value::Object(record.generation.parsed_results.clone());
    answer
}

/// An install's answer: `{"status": "success", "message", "tool_name", "folder",
/// "config_version", "connected", "connect_error"?}`.
fn installed_json(installed: &Installed) -> Value {
    let verb = if installed.already {
        "was installed already"
    } else {
        "was installed and registered"
    };
    let mut answer = json!({
        "status": "success",
        "message": format!("MCP tool {:?} {verb}", installed.tool_name),
        "tool_name": installed.tool_name,
        "folder": installed.folder,
        "config_version": installed.config_version,
        "connected": installed.connected.is_ok(),
    });
    if let Err(e) = &installed.connected {
        answer["connect_error"] = json!(e);
    }
    answer
}

/// An SSE error payload: `{"error": {"message", "type"}}`.
fn error_json(message: &str, kind: ErrorKind) -> Value {
    json!({"error": {"message": message, "type": kind.as_str()}})
}

/// One event's SSE payload.
fn event_json(event: Event) -> Value {
    match event {
        Event::Chunk(chunk) => chunk,
        Event::Saved(saved) => json!({"saved": {
            "conversation_id": saved.conversation_id,
            "round": saved.round,
            "round_count": saved.round,
            "round_token_usage": saved.round_token_usage,
            "total_token_usage": saved.total_token_usage,
        }}),
        Event::Incomplete(incomplete) => json!({"incomplete": {
            "message": incomplete.message,
            "missing_fields": incomplete.missing_fields,
        }}),
        Event::Completion {
            conversation_id,
            installed,
        } => {
            let mut completion = installed_json(&installed);
            if let Some(c) = completion.as_object_mut() {
                c.shift_remove("status");
                c.insert("conversation_id".into(), json!(conversation_id));
            }
            json!({"completion": completion})
        }
        Event::Error { message, kind } => error_json(&message, kind),
    }
}

/// A round's answer without `stream`: the conversation with `"model"`, or the end's.
fn outcome_json(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Round { record, model } => {
            let mut answer = record_json(&record);
            answer["model"] = json!(model);
            answer
        }
        Outcome::Incomplete(incomplete) => json!({
            "status": "incomplete",
            "incomplete": {"message": incomplete.message, "missing_fields": incomplete.missing_fields},
        }),
        Outcome::Installed(installed) => installed_json(&installed),
    }
}

/// One generation round: SSE when `stream` (the default), else the conversation after the
/// round (for the end instruction, the install's result). Errors found before the round
/// starts (bad request, unknown model, store down) are plain HTTP errors; later ones end
/// the stream with an error event, also a panic of the round's task.
pub(super) async fn generate(
    State(state): St,
    Who(caller): Who,
    Body(mut request): Body<GenerateRequest>,
) -> Response {
    // A JWT names the user; a `user_id` in the body does not override it (MAG's rule).
    if caller.from_token {
        request.user_id = Some(caller.user_id.clone());
    }
    let stream = request.stream;
    let caller = caller.on_operator_paths();
    let prepared = match state.generator.prepare(request, &caller).await {
        Ok(prepared) => prepared,
        // MAG answers this one in the stream (`ai_mcp_generator.py`).
        Err(e @ Error::EndWithoutConversation) if stream => {
            let error = error_json(&e.to_string(), ErrorKind::Parameter).to_string();
            let body = futures::stream::iter([
                SseEvent::default().data(error),
                SseEvent::default().data("[DONE]"),
            ])
            .map(Ok::<_, Infallible>);
            return Sse::new(body).into_response();
        }
        Err(e) => return e.into_response(),
    };
    let id = prepared.conversation_id().to_owned();
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    // The round runs on its own task: a caller that goes away does not cut it short.
    let round = tokio::spawn(async move {
        let on_panic = events.clone();
        let outcome = std::panic::AssertUnwindSafe(prepared.run(events))
            .catch_unwind()
            .await;
        outcome.unwrap_or_else(|_| {
            let message =
                "the generation round failed unexpectedly (mag-server's stderr has the panic)";
            let _ = on_panic.send(Event::Error {
                message: message.into(),
                kind: ErrorKind::Api,
            });
            Err(Error::Io {
                context: message.into(),
                source: std::io::Error::other("the round's task panicked"),
            })
        })
    });
    if !stream {
        return match round.await {
            Ok(Ok(outcome)) => Json(outcome_json(outcome)).into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(e) => Error::Io {
                context: "the generation task failed".into(),
                source: std::io::Error::other(e),
            }
            .into_response(),
        };
    }
    let body = futures::stream::unfold(received, |mut received| async move {
        let event = received.recv().await?;
        let payload = event_json(event).to_string();
        Some((SseEvent::default().data(payload), received))
    })
    .chain(futures::stream::once(async {
        SseEvent::default().data("[DONE]")
    }))
    .map(Ok::<_, Infallible>);
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-conversation-id", value);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct ListParams {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    skip: Option<u64>,
}

/// MAG's cap on a conversation list (`limit=200`).
pub(super) const LIST_LIMIT: i64 = 200;

/// The conversations `query` selects as MAG lists them: `{"conversations": [metadata],
/// "total_count"}`.
pub(super) async fn listed(state: &super::AppState, query: &ListQuery) -> AppResult {
    let list: Vec<Value> = state
        .generator
        .conversations(query)
        .await?
        .iter()
        .map(conversation_json)
        .collect();
    Ok(Json(
        json!({"conversations": list, "total_count": list.len()}),
    ))
}

/// `GET /api/mcp/conversations`: `{"conversations": [metadata], "total_count"}`, newest
/// first; a JWT user (not an admin) sees only their own.
pub(super) async fn conversations(
    State(state): St,
    Who(caller): Who,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> AppResult {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(LIST_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(Error::BadRequest("limit must be 1 to 1000".into()));
    }
    let skip = params.skip.unwrap_or(0);
    if i64::try_from(skip).is_err() {
        return Err(Error::BadRequest("skip is too large".into()));
    }
    let mut query = ListQuery {
        user_id: params.user_id.filter(|u| !u.is_empty()),
        limit,
        skip,
    };
    let caller = caller.on_operator_paths();
    if !caller.admin {
        query.user_id = Some(caller.user_id);
    }
    listed(&state, &query).await
}

pub(super) fn conversation_id(path: Segment) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

/// `GET /api/mcp/conversations/{id}`: the conversation with its rounds and
/// `parsed_results`; 403 for another user's (a JWT user's view).
pub(super) async fn conversation(State(state): St, Who(caller): Who, path: Segment) -> AppResult {
    let id = conversation_id(path)?;
    let record = state
        .generator
        .conversation(&caller.on_operator_paths(), &id)
        .await?;
    Ok(Json(record_json(&record)))
}

/// `DELETE /api/mcp/conversations/{id}`: `{"status": "success", "message",
/// "conversation_id"}` (MAG's permanent delete); 403 for another user's (a JWT user).
pub(super) async fn delete_conversation(
    State(state): St,
    Who(caller): Who,
    path: Segment,
) -> AppResult {
    delete(&state, &caller.on_operator_paths(), path).await
}

/// Deletes conversation `path` for `caller` for good: `{"status": "success", "message",
/// "conversation_id"}`; 404, 403, 409 while a round of it runs.
pub(super) async fn delete(state: &super::AppState, caller: &Caller, path: Segment) -> AppResult {
    let id = conversation_id(path)?;
    state.generator.delete_conversation(caller, &id).await?;
    Ok(Json(json!({
        "status": "success",
        "message": format!("conversation {id:?} was deleted"),
        "conversation_id": id,
    })))
}

/// MAG's `MCPToolRegistration`.
#[derive(Deserialize)]
pub(super) struct RegisterToolBody {
    folder_name: String,
    script_files: Map<String, Value>,
    #[serde(default)]
    readme: String,
    #[serde(default)]
    dependencies: String,
}

/// `POST /api/mcp/register-tool`: installs and registers the tool; the install's answer.
pub(super) async fn register_tool(
    State(state): St,
    Body(body): Body<RegisterToolBody>,
) -> AppResult {
    let files = ToolFiles {
        folder_name: body.folder_name,
        script_files: body.script_files,
        readme: body.readme,
        dependencies: body.dependencies,
    };
    // On its own task: a caller that goes away does not cut an install short.
    let generator = state.generator.clone();
    match tokio::spawn(async move { generator.install(files, None).await }).await {
        Ok(installed) => Ok(Json(installed_json(&installed?))),
        Err(e) => Err(Error::Io {
            context: "the install task failed".into(),
            source: std::io::Error::other(e),
        }),
    }
}

/// `GET /api/mcp/ai-generator-template`: MAG's `{"template", "note"}`, the template being
/// the system prompt a new conversation starts with (the current servers' tools in it).
pub(super) async fn ai_generator_template(State(state): St) -> AppResult {
    Ok(Json(json!({
        "template": state.generator.system_prompt().await,
        "note": "The template can be used as a system prompt, with your requirement as the user input.",
    })))
}

/// `GET /api/mcp/ai-tools`: the generated tools' folder names, sorted.
pub(super) async fn ai_tools(State(state): St) -> AppResult {
    let names = state.generator.toolsmith().list()?;
    Ok(Json(Value::from(names)))
}
