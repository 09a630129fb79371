//! The configured LLM models in MAG's shapes (`mag/app/api/model_routes.py`,
//! `model_service.py`), read-only: mag-server's models are the `[[models]]` of its settings,
//! not a collection its API edits. Never a key or the name of its variable.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{AppResult, Segment, St};
use crate::error::Error;
use crate::llm::Model;

/// What MAG's model list shows of a model: `{"name", "base_url", "model"}`.
fn listed(model: &Model) -> Value {
    json!({
        "name": model.name,
        "base_url": mag_common::secrets::redact(&model.base_url),
        "model": model.model,
    })
}

/// `GET /api/models`: `[{"name", "base_url", "model"}]` in the settings' order (the list
/// MAG's agent and MCP-generation pages pick from).
pub(super) async fn list(State(state): St) -> Json<Value> {
    Json(state.generator.models().iter().map(listed).collect())
}

/// `GET /api/models/{name}` (a name may hold `/`): `{"status": "success", "data": {"name",
/// "base_url", "model", "stream": false, "temperature", "max_tokens"}}` (the parameters
/// null when unset), 404 `unknown_model`.
pub(super) async fn one(State(state): St, path: Segment) -> AppResult {
    let Path(name) = path.map_err(|e| Error::BadRequest(e.body_text()))?;
    let model = state
        .generator
        .models()
        .iter()
        .find(|m| m.name == name)
        .ok_or(Error::UnknownModel(name))?;
    let mut data = listed(model);
    data["stream"] = json!(false);
    data["temperature"] = json!(model.temperature);
    data["max_tokens"] = json!(model.max_tokens);
    Ok(Json(json!({"status": "success", "data": data})))
}
