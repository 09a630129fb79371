//! MCP-generation conversations at MAG's own paths (`mag/app/api/chat_routes.py`), where
//! its frontend's conversation list and conversation page read them (SPEC §9): every
//! caller sees only their own (a JWT's user, else MAG's `default_user`), another owner's
//! is 403, `role: admin` reaches any.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::generation::{conversation_id, conversation_json, record_json};
use super::{AppResult, Segment, St, Who};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::{ConversationRecord, ListQuery};

/// MAG's cap on the list (`limit=200`).
const LIST_LIMIT: i64 = 200;

/// The conversation `id`, when `caller` may reach it: 404 when there is none, 403 when
/// it is another user's.
async fn owned(state: &super::AppState, caller: &Caller, id: &str) -> Result<ConversationRecord> {
    let record = state.generator.conversation(id).await?;
    if caller.may_access(&record.conversation.user_id) {
        Ok(record)
    } else {
        Err(Error::Forbidden(id.to_owned()))
    }
}

/// `GET /api/chat/conversations`: the caller's own, newest first, at most 200:
/// `{"conversations": [metadata], "total_count"}`.
pub(super) async fn list(State(state): St, Who(caller): Who) -> AppResult {
    let query = ListQuery {
        user_id: Some(caller.user_id),
        limit: LIST_LIMIT,
        skip: 0,
    };
    let list: Vec<Value> = state
        .generator
        .conversations(&query)
        .await?
        .iter()
        .map(conversation_json)
        .collect();
    Ok(Json(
        json!({"conversations": list, "total_count": list.len()}),
    ))
}

/// `GET /api/chat/conversations/{id}`: MAG's detail (`_id`, `title`, `rounds`,
/// `generation_type: "mcp"`, `parsed_results`, and the metadata); 404, 403.
pub(super) async fn one(State(state): St, Who(caller): Who, path: Segment) -> AppResult {
    let id = conversation_id(path)?;
    let record = owned(&state, &caller, &id).await?;
    Ok(Json(record_json(&record)))
}

/// `DELETE /api/chat/conversations/{id}/permanent`: `{"status": "success", "message",
/// "conversation_id"}`; 404, 403, 409 while a round of it runs.
pub(super) async fn delete_permanently(
    State(state): St,
    Who(caller): Who,
    path: Segment,
) -> AppResult {
    let id = conversation_id(path)?;
    owned(&state, &caller, &id).await?;
    state.generator.delete_conversation(&id).await?;
    Ok(Json(json!({
        "status": "success",
        "message": format!("conversation {id:?} was deleted permanently"),
        "conversation_id": id,
    })))
}
