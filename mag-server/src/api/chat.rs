//! MCP-generation conversations at MAG's own paths (`mag/app/api/chat_routes.py`), where
//! its frontend's conversation list and conversation page read them (SPEC §9): every
//! caller sees only their own (a JWT's user, else MAG's `default_user`), another owner's
//! is 403, `role: admin` reaches any.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;

use super::generation::{LIST_LIMIT, conversation_id, delete, listed, record_json};
use super::{AppResult, Body, Segment, St, Who};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::{ListQuery, MetaChange};

/// `GET /api/chat/conversations`: the caller's own, newest first, at most 200:
/// `{"conversations": [metadata], "total_count"}`.
pub(super) async fn list(State(state): St, Who(caller): Who) -> AppResult {
    let query = ListQuery {
        user_id: Some(caller.user_id),
        limit: LIST_LIMIT,
        skip: 0,
    };
    listed(&state, &query).await
}

/// `GET /api/chat/conversations/{id}`: MAG's detail (`_id`, `title`, `rounds`,
/// `generation_type: "mcp"`, `parsed_results`, and the metadata); 404, 403.
pub(super) async fn one(State(state): St, Who(caller): Who, path: Segment) -> AppResult {
    let id = conversation_id(path)?;
    let record = state.generator.conversation(&caller, &id).await?;
    Ok(Json(record_json(&record)))
}

/// `DELETE /api/chat/conversations/{id}/permanent`: `{"status": "success", "message",
/// "conversation_id"}`; 404, 403, 409 while a round of it runs.
pub(super) async fn delete_permanently(
    State(state): St,
    Who(caller): Who,
    path: Segment,
) -> AppResult {
    delete(&state, &caller, path).await
}

/// MAG's `UpdateConversationTitleRequest` (its `user_id` is ignored: the caller counts).
#[derive(Deserialize)]
pub(super) struct TitleBody {
    title: String,
}

/// MAG's `UpdateConversationTagsRequest`.
#[derive(Deserialize)]
pub(super) struct TagsBody {
    tags: Vec<String>,
}

/// MAG's `UpdateConversationStatusRequest`.
#[derive(Deserialize)]
pub(super) struct StatusBody {
    status: String,
}

/// MAG's limits: a title of at most 100 characters; at most 10 tags of 1 to 20 each.
const TITLE_MAX: usize = 100;
const TAGS_MAX: usize = 10;
const TAG_MAX: usize = 20;

/// Applies `change` to conversation `id` for `caller` (404, 403 first).
async fn change(
    state: &super::AppState,
    caller: &Caller,
    path: Segment,
    change: MetaChange,
) -> Result<String> {
    let id = conversation_id(path)?;
    state
        .generator
        .update_conversation(caller, &id, change)
        .await?;
    Ok(id)
}

/// `PUT /api/chat/conversations/{id}/title` `{"title"}`: `{"status": "success",
/// "message", "conversation_id", "title"}` (trimmed); 400 blank, 422 over 100 characters
/// (as MAG).
pub(super) async fn set_title(
    State(state): St,
    Who(caller): Who,
    path: Segment,
    Body(body): Body<TitleBody>,
) -> AppResult {
    if body.title.chars().count() > TITLE_MAX {
        return Err(Error::invalid_body(format!(
            "title: at most {TITLE_MAX} characters"
        )));
    }
    let title = body.title.trim().to_owned();
    if title.is_empty() {
        return Err(Error::BadRequest("title is empty".into()));
    }
    let id = change(&state, &caller, path, MetaChange::Title(title.clone())).await?;
    Ok(Json(json!({
        "status": "success",
        "message": "the conversation's title was updated",
        "conversation_id": id,
        "title": title,
    })))
}

/// `PUT /api/chat/conversations/{id}/tags` `{"tags"}`: `{"status": "success", "message",
/// "conversation_id", "tags"}` (each trimmed); 422 over 10 tags, or one blank or over 20
/// characters (as MAG).
pub(super) async fn set_tags(
    State(state): St,
    Who(caller): Who,
    path: Segment,
    Body(body): Body<TagsBody>,
) -> AppResult {
    let tags: Vec<String> = body.tags.iter().map(|t| t.trim().to_owned()).collect();
    if tags.len() > TAGS_MAX
        || tags
            .iter()
            .any(|t| t.is_empty() || t.chars().count() > TAG_MAX)
    {
        return Err(Error::invalid_body(format!(
            "tags: at most {TAGS_MAX}, each 1 to {TAG_MAX} characters"
        )));
    }
    let id = change(&state, &caller, path, MetaChange::Tags(tags.clone())).await?;
    Ok(Json(json!({
        "status": "success",
        "message": "the conversation's tags were updated",
        "conversation_id": id,
        "tags": tags,
    })))
}

/// `PUT /api/chat/conversations/{id}/status` `{"status"}` (`active`, `deleted`: MAG's
/// soft delete, `favorite`): `{"status": "success", "message", "conversation_id",
/// "new_status"}`; 422 for another status (as MAG).
pub(super) async fn set_status(
    State(state): St,
    Who(caller): Who,
    path: Segment,
    Body(body): Body<StatusBody>,
) -> AppResult {
    let message = match body.status.as_str() {
        "active" => "the conversation is active again",
        "deleted" => "the conversation was deleted (it can be restored)",
        "favorite" => "the conversation is a favorite",
        _ => {
            return Err(Error::invalid_body(
                "status: one of active, deleted, favorite",
            ));
        }
    };
    let id = change(
        &state,
        &caller,
        path,
        MetaChange::Status(body.status.clone()),
    )
    .await?;
    Ok(Json(json!({
        "status": "success",
        "message": message,
        "conversation_id": id,
        "new_status": body.status,
    })))
}
