//! MCP generation (SPEC §5, MAG's `ai_mcp_generator.py`): an operator describes a tool, an
//! LLM designs it over several rounds, and the finished design is installed and registered
//! as a new `ai_generated` MCP server.
//!
//! A round ([`Generator::prepare`], then [`Prepared::run`]):
//! 1. before anything streams, the request is checked (blank requirement 400, unknown model
//!    404, store down 503) and the conversation is locked, so two rounds of one
//!    conversation run one after the other;
//! 2. the history (every stored message; a new conversation starts with the system prompt,
//!    [`system_prompt`]) and the requirement go to the model's `/chat/completions`
//!    with `stream: true`; each chunk is passed on unchanged as it arrives;
//! 3. once the answer is complete, the round (user message, assistant message, model),
//!    the token usage and the merged `parsed_results` are stored in one save; then a
//!    `{"saved": {...}}` event acknowledges it. An LLM failure, a dropped stream or a failed
//!    save ends with `{"error": {"message", "type"}}` instead, and nothing of the round is
//!    stored.
//!
//! The requirement `<end>END</end>` ([`END_INSTRUCTION`]) finishes: it answers
//! `{"incomplete": {"message", "missing_fields"}}` when the design lacks parts, else installs
//! the tool ([`install`]) and answers `{"completion": {"tool_name", "message", ...}}`.
//!
//! Event types of `error` (MAG's): `api_error` (the LLM failed), `database_error` (the
//! store failed), `assembly_error` (the end could not install the tool), `parameter_error`
//! (the end without a `conversation_id`, streamed as MAG does; 400 unstreamed). The other
//! checks of step 1 answer HTTP errors before any event.

pub mod events;
pub mod install;
pub mod parse;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::mpsc::UnboundedSender;

pub use events::{ErrorKind, Event, Incomplete, Installed, Outcome, SavedRound, StoreHealth};

use crate::auth::Caller;
use crate::control::ControlPlane;
use crate::error::{Error, Result};
use crate::llm::{self, Model, TokenUsage};
use crate::store::{
    CONVERSATION_TYPE, Conversation, ConversationRecord, DEFAULT_USER, DateTime, ListQuery, McpGen,
    MetaChange, Round, RoundSave, Store, empty_parsed_results, new_conversation_id,
};
use install::{ToolFiles, Toolsmith};

/// The requirement that finishes a conversation (MAG's, compared after trimming).
pub const END_INSTRUCTION: &str = "<end>END</end>";

/// A new conversation's title before MAG's title generation (we keep the requirement's
/// start instead; this is used only for an empty one).
pub const DEFAULT_TITLE: &str = "AI生成MCP新对话";

/// Bound on the store's health check in `/health`.
pub const HEALTH_PING: Duration = Duration::from_secs(2);

/// The system prompt template, with `{EXISTING_TOOLS}` where the servers mcp-client knows
/// are listed.
pub const SYSTEM_PROMPT_TEMPLATE: &str = include_str!("system_prompt.md");

/// `POST /api/mcp/generate`'s body (MAG's `MCPGenerationRequest`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct GenerateRequest {
    /// What the operator wants, or [`END_INSTRUCTION`].
    pub requirement: String,
    /// A `[[models]]` name (not needed for [`END_INSTRUCTION`]).
    #[serde(default)]
    pub model_name: String,
    /// Continue this conversation; a new one when absent (or when no conversation has this
    /// id: it is created with it, as MAG does).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The owner of a new conversation ([`DEFAULT_USER`] when absent).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Stream server-sent events (default) or answer the conversation at the end.
    #[serde(default = "yes")]
    pub stream: bool,
}

fn yes() -> bool {
    true
}

/// The MCP-generation core. Cheap to clone.
#[derive(Clone)]
pub struct Generator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    models: Vec<Model>,
    http: reqwest::Client,
    plane: ControlPlane,
    smith: Toolsmith,
    /// The conversations a round, an end or a delete runs for (see [`Busy`]).
    busy: Mutex<HashSet<String>>,
    installing: AsyncMutex<()>,
}

/// The conversation round a generated tool comes from: an `<end>END</end>` after round
/// `round` of `conversation_id`, whose user owns the tool (`provider_user_id`, as MAG
/// records it: only they and admins may remove it). Kept in the tool's `mcp.json` entry
/// (`"conversation_id"`, `"conversation_round"`, `"conversation_created_at"`,
/// `"provider_user_id"`), so a retried end (a client that
/// timed out during pip, or a retry after a restart) answers the tool already installed
/// instead of a second copy. The creation time tells a conversation from a later one that
/// reuses its id after a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOrigin {
    /// The conversation (`mcp_…`).
    pub conversation_id: String,
    /// Its round count when the end came.
    pub round: i64,
    /// When it was created (RFC 3339, milliseconds, UTC).
    pub created_at: String,
    /// The conversation's user.
    pub owner: String,
}

impl ToolOrigin {
    /// The fields it adds to the tool's `mcp.json` entry: `{"conversation_id",
    /// "conversation_round", "conversation_created_at", "provider_user_id"}`.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("conversation_id".into(), json!(self.conversation_id));
        fields.insert("conversation_round".into(), json!(self.round));
        fields.insert("conversation_created_at".into(), json!(self.created_at));
        fields.insert("provider_user_id".into(), json!(self.owner));
        fields
    }

    /// Whether the `mcp.json` entry `entry` is an `ai_generated` server installed from it.
    pub fn made(&self, entry: &Value) -> bool {
        entry["ai_generated"] == true
            && self
                .fields()
                .iter()
                .filter(|(key, _)| *key != "provider_user_id")
                .all(|(key, value)| entry.get(key) == Some(value))
    }
}

/// A checked round, holding its conversation's lock; [`Prepared::run`] runs it.
pub struct Prepared {
    generator: Generator,
    conversation_id: String,
    step: Step,
    _lock: Busy,
}

/// One conversation's lock ([`Generator::lock`]): its id is in the busy set until this is
/// dropped.
struct Busy {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.id);
    }
}

enum Step {
    Llm {
        model: Box<Model>,
        record: Option<ConversationRecord>,
        user_id: String,
        requirement: String,
    },
    End {
        record: ConversationRecord,
    },
}

impl Generator {
    /// The configured `[[models]]`, in the settings' order.
    pub fn models(&self) -> &[Model] {
        &self.inner.models
    }

    /// The core over a store, the configured models, the control plane (to register
    /// tools) and the tools' installer.
    ///
    /// # Errors
    /// [`Error::Io`] when the HTTP client cannot be built.
    pub fn new(
        store: Store,
        models: Vec<Model>,
        plane: ControlPlane,
        smith: Toolsmith,
    ) -> Result<Self> {
        mag_common::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(llm::CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Error::Io {
                context: "cannot build the LLM HTTP client".into(),
                source: std::io::Error::other(e),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                models,
                http,
                plane,
                smith,
                busy: Mutex::new(HashSet::new()),
                installing: AsyncMutex::new(()),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The tools' installer.
    pub fn toolsmith(&self) -> &Toolsmith {
        &self.inner.smith
    }

    /// The store's health for `/health`, checked within [`HEALTH_PING`].
    pub async fn store_health(&self) -> StoreHealth {
        let store = &self.inner.store;
        let error = match tokio::time::timeout(HEALTH_PING, store.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", HEALTH_PING.as_secs())),
        };
        StoreHealth {
            backend: store.backend(),
            error,
        }
    }

    /// Checks a round and locks its conversation: everything that can fail before the
    /// answer starts to stream.
    ///
    /// # Errors
    /// [`Error::BadRequest`] (blank requirement or model name, a bad id, an end without a
    /// conversation), [`Error::UnknownModel`], [`Error::ConversationNotFound`] (end only),
    /// [`Error::ConversationBusy`] (a round of it is running), [`Error::Forbidden`] (another
    /// user's conversation, for `caller`), [`Error::Store`].
    pub async fn prepare(&self, request: GenerateRequest, caller: &Caller) -> Result<Prepared> {
        let requirement = request.requirement.trim();
        if requirement.is_empty() {
            return Err(Error::BadRequest("requirement is empty".into()));
        }
        if let Some(id) = &request.conversation_id {
            check_conversation_id(id)?;
        }
        if requirement == END_INSTRUCTION {
            let Some(id) = request.conversation_id else {
                return Err(Error::EndWithoutConversation);
            };
            let lock = self.lock(&id)?;
            let record = self
                .inner
                .store
                .get(&id)
                .await?
                .ok_or_else(|| Error::ConversationNotFound(id.clone()))?;
            check_owner(caller, &record)?;
            return Ok(Prepared {
                generator: self.clone(),
                conversation_id: id,
                step: Step::End { record },
                _lock: lock,
            });
        }
        if request.model_name.trim().is_empty() {
            return Err(Error::BadRequest("model_name is empty".into()));
        }
        let model = self
            .inner
            .models
            .iter()
            .find(|m| m.name == request.model_name)
            .cloned()
            .map(Box::new)
            .ok_or_else(|| Error::UnknownModel(request.model_name.clone()))?;
        let id = request.conversation_id.unwrap_or_else(new_conversation_id);
        let lock = self.lock(&id)?;
        let record = self.inner.store.get(&id).await?;
        if let Some(record) = &record {
            check_owner(caller, record)?;
        }
        Ok(Prepared {
            generator: self.clone(),
            conversation_id: id,
            step: Step::Llm {
                model,
                record,
                user_id: request.user_id.unwrap_or_else(|| DEFAULT_USER.into()),
                requirement: requirement.to_owned(),
            },
            _lock: lock,
        })
    }

    /// The lock of one conversation, held while a round, an end or a delete of it runs.
    /// Nothing waits for it: a second taker is told at once.
    ///
    /// # Errors
    /// [`Error::ConversationBusy`] when it is held.
    fn lock(&self, id: &str) -> Result<Busy> {
        let mut busy = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id.to_owned()) {
            return Err(Error::ConversationBusy(id.to_owned()));
        }
        Ok(Busy {
            inner: Arc::clone(&self.inner),
            id: id.to_owned(),
        })
    }

    /// `GET /api/mcp/conversations`: the conversations' metadata, newest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn conversations(&self, query: &ListQuery) -> Result<Vec<Conversation>> {
        Ok(self.inner.store.list(query).await?)
    }

    /// The conversation with its rounds and `parsed_results`, as `caller` may see it.
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`], [`Error::Forbidden`] (another user's),
    /// [`Error::Store`].
    pub async fn conversation(&self, caller: &Caller, id: &str) -> Result<ConversationRecord> {
        check_conversation_id(id)?;
        let record = self
            .inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::ConversationNotFound(id.to_owned()))?;
        check_owner(caller, &record)?;
        Ok(record)
    }

    /// Sets a conversation's title, tags or status (MAG's `/api/chat/conversations/{id}/…`)
    /// and its `updated_at`.
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`], [`Error::Forbidden`], [`Error::Store`].
    pub async fn update_conversation(
        &self,
        caller: &Caller,
        id: &str,
        change: MetaChange,
    ) -> Result<()> {
        check_conversation_id(id)?;
        if !caller.admin {
            self.conversation(caller, id).await?;
        }
        if self
            .inner
            .store
            .update(id, &change, DateTime::now())
            .await?
        {
            Ok(())
        } else {
            Err(Error::ConversationNotFound(id.to_owned()))
        }
    }

    /// Deletes a conversation for good (MAG's permanent delete).
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`], [`Error::ConversationBusy`] (a round of it is
    /// running), [`Error::Forbidden`], [`Error::Store`].
    pub async fn delete_conversation(&self, caller: &Caller, id: &str) -> Result<()> {
        check_conversation_id(id)?;
        let _lock = self.lock(id)?;
        if !caller.admin {
            self.conversation(caller, id).await?;
        }
        if self.inner.store.delete(id).await? {
            Ok(())
        } else {
            Err(Error::ConversationNotFound(id.to_owned()))
        }
    }

    /// Installs a tool and registers it (`POST /api/mcp/register-tool`, and the end of a
    /// generation): reserves its folder, writes it, creates its venv, installs its
    /// dependencies, adds it to `mcp.json` as an `ai_generated` server through the config
    /// API's writer and connects it. Installs run one at a time.
    ///
    /// With an `origin` (the end of a generation) the folder is the first free `NAME`,
    /// `NAME_1`, …, and a tool already registered from the same origin is answered again
    /// (connected, not reinstalled); without one (register-tool) a taken `NAME` is an error.
    ///
    /// # Errors
    /// [`Error::InvalidTool`], [`Error::ToolExists`] (without `origin`),
    /// [`Error::ToolInstall`], and the config writer's errors; on any of them, and when the
    /// install is dropped half-way, no folder and no entry is left.
    pub async fn install(&self, files: ToolFiles, origin: Option<ToolOrigin>) -> Result<Installed> {
        files.check()?;
        let plane = &self.inner.plane;
        let _one_at_a_time = self.inner.installing.lock().await;
        let config = plane.config().await?;
        let found = origin
            .as_ref()
            .and_then(|origin| config.servers.iter().find(|(_, entry)| origin.made(entry)));
        let (name, folder, config_version, already) = match found {
            Some((name, entry)) => (
                name.clone(),
                entry["cwd"].as_str().unwrap_or_default().to_owned(),
                config.version.clone(),
                true,
            ),
            None => {
                let taken: Vec<String> = config.servers.keys().cloned().collect();
                let (name, dir, version) = self.install_new(&files, origin, &taken).await?;
                (name, dir, version, false)
            }
        };
        let connected = plane
            .connect(&name)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        Ok(Installed {
            tool_name: name,
            folder,
            config_version,
            already,
            connected,
        })
    }

    /// [`Self::install`] of a tool not installed yet, `taken` being `mcp.json`'s server
    /// names: reserve, build, register. Answers `(name, folder, config version)`.
    async fn install_new(
        &self,
        files: &ToolFiles,
        origin: Option<ToolOrigin>,
        taken: &[String],
    ) -> Result<(String, String, String)> {
        let smith = &self.inner.smith;
        let mut reservation = smith.reserve(&files.folder_name, origin.is_some(), taken)?;
        let name = reservation.name.clone();
        let mut built = smith.build(&name, files).await?;
        if let (Some(origin), Some(entry)) = (origin, built.entry.as_object_mut()) {
            entry.extend(origin.fields());
        }
        let mut servers = Map::new();
        servers.insert(name.clone(), built.entry);
        reservation.registering();
        let added = self.inner.plane.add(servers, None).await;
        let registered = added.as_ref().is_ok_and(|added| !added.added.is_empty());
        reservation.settle(registered);
        let version = match added?.saved {
            Ok(saved) if registered => saved.version,
            _ => return Err(Error::ToolExists(name)),
        };
        tracing::info!(tool = %name, "generated tool installed and registered");
        Ok((name, built.dir.display().to_string(), version))
    }

    /// The system prompt: the template with the servers mcp-client knows (and their
    /// tools) in place of `{EXISTING_TOOLS}`; "none" when mcp-client cannot say (within
    /// 3 s). Also what `GET /api/mcp/ai-generator-template` answers.
    pub async fn system_prompt(&self) -> String {
        let tools = match tokio::time::timeout(Duration::from_secs(3), self.inner.plane.tools())
            .await
        {
            Ok(Ok(tools)) if !tools.is_empty() => {
                let mut by_server: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
                for tool in &tools {
                    by_server
                        .entry(&tool.server_name)
                        .or_default()
                        .push(&tool.name);
                }
                let mut text = String::new();
                for (server, names) in by_server {
                    text.push_str(&format!("- {server}:"));
                    for name in names {
                        text.push_str(&format!(" `{name}`"));
                    }
                    text.push('\n');
                }
                text
            }
            _ => "None are connected now.".to_owned(),
        };
        system_prompt(&tools)
    }
}

/// [`SYSTEM_PROMPT_TEMPLATE`] with `tools` (a Markdown list) in place.
pub fn system_prompt(tools: &str) -> String {
    SYSTEM_PROMPT_TEMPLATE.replace("{EXISTING_TOOLS}", tools.trim_end())
}

/// [`Error::Forbidden`] unless `caller` may reach `record` (MAG's ownership rule).
fn check_owner(caller: &Caller, record: &ConversationRecord) -> Result<()> {
    if caller.may_access(&record.conversation.user_id) {
        Ok(())
    } else {
        Err(Error::Forbidden(record.conversation.id.clone()))
    }
}

/// A conversation id: 1 to 128 ASCII letters, digits, `_` and `-`.
fn check_conversation_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "conversation_id {id:?} must be 1 to 128 letters, digits, '_' or '-'"
        )))
    }
}

/// A title from a requirement: its first line, at most 40 characters.
fn title_of(requirement: &str) -> String {
    let line = requirement.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return DEFAULT_TITLE.into();
    }
    let mut title: String = line.chars().take(40).collect();
    if line.chars().count() > 40 {
        title.push('…');
    }
    title
}

impl Prepared {
    /// The conversation's id (new or continued).
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// Runs the round, sending each event to `events` (a closed receiver is fine: the
    /// round still completes and is stored). The outcome, for a non-streaming request: the
    /// conversation after the round, or the end instruction's result.
    ///
    /// # Errors
    /// [`Error::Llm`], [`Error::Store`], an install's errors. The matching
    /// [`Event::Error`] was already sent to `events`.
    pub async fn run(self, events: UnboundedSender<Event>) -> Result<Outcome> {
        let ending = matches!(self.step, Step::End { .. });
        let outcome = match self.step {
            Step::Llm {
                model,
                record,
                user_id,
                requirement,
            } => {
                self.generator
                    .llm_round(
                        &self.conversation_id,
                        *model,
                        record,
                        user_id,
                        requirement,
                        &events,
                    )
                    .await
            }
            Step::End { record } => self.generator.end(record, &events).await,
        };
        if let Err(e) = &outcome {
            let kind = match e {
                Error::Store(_) => ErrorKind::Database,
                _ if ending => ErrorKind::Assembly,
                _ => ErrorKind::Api,
            };
            let _ = events.send(Event::Error {
                message: e.to_string(),
                kind,
            });
        }
        outcome
    }
}

impl Generator {
    async fn llm_round(
        &self,
        id: &str,
        model: Model,
        record: Option<ConversationRecord>,
        user_id: String,
        requirement: String,
        events: &UnboundedSender<Event>,
    ) -> Result<Outcome> {
        let mut history: Vec<Value> = record.as_ref().map(|r| r.messages()).unwrap_or_default();
        for message in &mut history {
            if let Some(m) = message.as_object_mut() {
                m.shift_remove("reasoning_content");
            }
        }
        let mut added = Vec::new();
        if record.is_none() {
            added.push(json!({"role": "system", "content": self.system_prompt().await}));
        }
        added.push(json!({"role": "user", "content": requirement}));
        history.extend(added.iter().cloned());

        let completion = llm::stream_chat(&self.inner.http, &model, &history, |chunk| {
            let _ = events.send(Event::Chunk(chunk.clone()));
        })
        .await?;
        // MAG's assistant message: the reasoning, when the model sent one, is kept with the
        // answer (and left out of the history sent back, above).
        let mut assistant = json!({"role": "assistant"});
        if !completion.reasoning.is_empty() {
            assistant["reasoning_content"] = json!(completion.reasoning);
        }
        assistant["content"] = json!(completion.content);
        added.push(assistant);
        let usage = completion.usage;
        if usage == TokenUsage::default() {
            tracing::warn!(model = %model.name, "the endpoint reported no token usage");
        }

        let now = DateTime::now();
        let (mut conversation, mut parsed, mut rounds) = match record {
            Some(r) => (
                r.conversation,
                r.generation.parsed_results,
                r.generation.rounds,
            ),
            None => (
                Conversation {
                    id: id.to_owned(),
                    user_id,
                    kind: CONVERSATION_TYPE.into(),
                    title: title_of(&requirement),
                    created_at: now,
                    updated_at: now,
                    round_count: 0,
                    total_token_usage: TokenUsage::default(),
                    status: "active".into(),
                    tags: Vec::new(),
                },
                empty_parsed_results(),
                Vec::new(),
            ),
        };
        parse::merge(&mut parsed, parse::sections(&completion.content));
        conversation.round_count = rounds.len() as i64 + 1;
        conversation.total_token_usage = conversation.total_token_usage.plus(usage);
        conversation.updated_at = now;
        let round = Round {
            round: conversation.round_count,
            messages: added,
            model: Some(model.name.clone()),
        };
        let save = RoundSave {
            conversation: conversation.clone(),
            round: round.clone(),
            parsed_results: parsed.clone(),
        };
        self.inner.store.save_round(&save).await?;
        rounds.push(round);
        let _ = events.send(Event::Saved(SavedRound {
            conversation_id: id.to_owned(),
            round: conversation.round_count,
            round_token_usage: usage,
            total_token_usage: conversation.total_token_usage,
        }));
        let record = ConversationRecord {
            generation: McpGen {
                id: id.to_owned(),
                conversation_id: id.to_owned(),
                rounds,
                parsed_results: parsed,
            },
            conversation,
        };
        Ok(Outcome::Round {
            record: Box::new(record),
            model: model.name,
        })
    }

    async fn end(
        &self,
        record: ConversationRecord,
        events: &UnboundedSender<Event>,
    ) -> Result<Outcome> {
        let parsed = &record.generation.parsed_results;
        let missing = parse::missing_parts(parsed);
        if !missing.is_empty() {
            let incomplete = Incomplete {
                message: format!(
                    "the MCP tool's design is not complete yet; missing: {}",
                    missing.join(", ")
                ),
                missing_fields: missing.iter().map(|m| m.to_string()).collect(),
            };
            let _ = events.send(Event::Incomplete(incomplete.clone()));
            return Ok(Outcome::Incomplete(incomplete));
        }
        let text = |field: &str| parsed[field].as_str().unwrap_or_default().to_owned();
        let files = ToolFiles {
            folder_name: text("folder_name"),
            script_files: parsed["script_files"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            readme: text("readme"),
            dependencies: text("dependencies"),
        };
        let origin = ToolOrigin {
            conversation_id: record.conversation.id.clone(),
            round: record.conversation.round_count,
            created_at: crate::store::rfc3339(record.conversation.created_at),
            owner: record.conversation.user_id.clone(),
        };
        let installed = self.install(files, Some(origin)).await?;
        let _ = events.send(Event::Completion {
            conversation_id: record.conversation.id.clone(),
            installed: installed.clone(),
        });
        Ok(Outcome::Installed(installed))
    }
}
