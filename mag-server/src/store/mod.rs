//! The conversation store of MCP generation (SPEC §5 Storage): one trait,
//! [`ConversationStore`], with two backends, MongoDB ([`mongo::MongoStore::connect`], MAG's
//! schema and indexes) and an embedded SQLite file in the data dir
//! ([`embedded::EmbeddedStore::open`], when `MONGODB_URL` is unset). One test suite
//! (`tests/tests/store.rs`) runs against both.
//!
//! MAG's schema (`mag/app/services/mongodb_service.py`, `mcp_manager.py`), which both
//! backends keep:
//! - `conversations`: `{_id: "mcp_" + 16 hex, user_id, type: "agent", title, created_at,
//!   updated_at (dates), round_count, total_token_usage: {total_tokens, prompt_tokens,
//!   completion_tokens}, status: "active", tags: []}`; indexes `(user_id, type,
//!   created_at desc)`, `(status)`, `(updated_at desc)`;
//! - `mcp_gen`: `{_id: conversation_id, conversation_id, rounds: [{round, messages:
//!   [{role, content}], model?}], parsed_results: {analysis, todo, folder_name,
//!   script_files: {NAME: TEXT}, dependencies, readme}}`; index `(conversation_id)`.
//!
//! Where we differ from MAG: `round_count` is the number of rounds stored (MAG's is one
//! less, as its first round never counts), and a round is stored whole or not at all
//! ([`ConversationStore::save_round`]): the user's message, the assistant's answer and the
//! parsed results land together after the LLM has finished, so a failed or dropped stream
//! leaves the conversation as it was (MongoDB sets the conversation's counters in a second
//! write; see [`mongo`]).

pub mod embedded;
#[cfg(feature = "mongodb")]
pub mod mongo;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use bson::DateTime;

pub use crate::llm::TokenUsage;

/// The `type` MAG gives MCP-generation conversations (it tells them apart from graph
/// generation by the `mcp_gen` document).
pub const CONVERSATION_TYPE: &str = "agent";

/// A new conversation id, MAG's form: `mcp_` and 16 hex digits of a random UUID.
pub fn new_conversation_id() -> String {
    format!("mcp_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// `parsed_results` before any round: every field `null`, `script_files` empty.
pub fn empty_parsed_results() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "analysis": null, "todo": null, "folder_name": null,
        "script_files": {}, "dependencies": null, "readme": null,
    }) else {
        unreachable!()
    };
    map
}

/// MAG's owner when a request names none.
pub const DEFAULT_USER: &str = "default_user";

/// A `conversations` document: the metadata of one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `_id`: the conversation id (a UUID string).
    #[serde(rename = "_id")]
    pub id: String,
    /// The owner ([`DEFAULT_USER`] when a request names none).
    pub user_id: String,
    /// `type`: [`CONVERSATION_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// A title: the start of the first requirement.
    pub title: String,
    /// When the conversation was created.
    pub created_at: DateTime,
    /// When a round was last stored.
    pub updated_at: DateTime,
    /// How many rounds are stored.
    pub round_count: i64,
    /// Token usage summed over every round.
    pub total_token_usage: TokenUsage,
    /// `"active"` (MAG also knows `"deleted"` and `"favorite"`).
    pub status: String,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One round of an `mcp_gen` document: the messages it added (the system prompt and the
/// user's requirement on round 1, then the user's message and the assistant's answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// 1-based round number.
    pub round: i64,
    /// `[{"role", "content"}]`.
    pub messages: Vec<Value>,
    /// The model's name (`model_name`), when an LLM answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// An `mcp_gen` document: a conversation's rounds and what was parsed from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpGen {
    /// `_id`: the conversation id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The conversation id again (MAG keeps both).
    pub conversation_id: String,
    /// The rounds, in order.
    pub rounds: Vec<Round>,
    /// The parsed results, merged over all rounds (see `generation::parse`).
    pub parsed_results: Map<String, Value>,
}

/// A whole conversation: its metadata and its rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// The `conversations` document.
    pub conversation: Conversation,
    /// The `mcp_gen` document.
    pub generation: McpGen,
}

impl ConversationRecord {
    /// Every message of every round, in order: the history sent to the LLM.
    pub fn messages(&self) -> Vec<Value> {
        self.generation
            .rounds
            .iter()
            .flat_map(|r| r.messages.iter().cloned())
            .collect()
    }
}

/// A time as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: DateTime) -> String {
    t.try_to_rfc3339_string()
        .unwrap_or_else(|_| t.timestamp_millis().to_string())
}

/// One round to store: see [`ConversationStore::save_round`].
#[derive(Debug, Clone)]
pub struct RoundSave {
    /// The conversation's metadata after this round (`round_count`, `total_token_usage`,
    /// `updated_at` already advanced; on round 1, the new conversation).
    pub conversation: Conversation,
    /// The round (its `round` is `conversation.round_count`).
    pub round: Round,
    /// The parsed results after this round.
    pub parsed_results: Map<String, Value>,
}

impl RoundSave {
    /// Whether this round creates the conversation.
    pub fn creates(&self) -> bool {
        self.round.round == 1
    }
}

/// Which conversations [`ConversationStore::list`] returns: newest `updated_at` first.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this owner's, when set.
    pub user_id: Option<String>,
    /// At most this many (0 or less: none).
    pub limit: i64,
    /// After skipping this many.
    pub skip: u64,
}

/// Why the store failed an operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time (503); the text names the
    /// backend and the cause.
    #[error("the conversation store is unavailable: {0}")]
    Unavailable(String),
    /// The round does not follow the stored ones: another round was stored meanwhile, the
    /// conversation was deleted, or a new conversation's id is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// A stored document does not read back as MAG's schema (500).
    #[error("a stored document is malformed: {0}")]
    Corrupt(String),
}

/// The conversation store. Implementations are cheap to share (`Arc<dyn …>`), bound every
/// call (a down database answers [`StoreError::Unavailable`] within a few seconds) and
/// keep working once the database is back, without a restart.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// `"mongodb"` or `"embedded"`.
    fn backend(&self) -> &'static str;

    /// Where the data is: the database name, or the file's path (never a password).
    fn location(&self) -> String;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a round whole: on round 1 inserts both documents (`mcp_gen` first, so a
    /// listed conversation always has its rounds); on round N pushes the round only when
    /// exactly N-1 rounds are stored, sets `parsed_results`, then sets the conversation's
    /// `round_count`, `total_token_usage`, `updated_at` and `title` (values, not
    /// increments, so a retried save never counts twice).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stored rounds are not N-1 (or the id is taken on
    /// round 1); [`StoreError::Unavailable`].
    async fn save_round(&self, save: &RoundSave) -> Result<(), StoreError>;

    /// A conversation and its rounds; `None` when there is none with that id.
    async fn get(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError>;

    /// Conversations' metadata, newest `updated_at` first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError>;

    /// Deletes a conversation and its rounds; `false` when there was none.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;

    /// Sets one field of a conversation's metadata (MAG's title, tags and status
    /// endpoints) and its `updated_at` to `at`; `false` when there is none with that id.
    async fn update(&self, id: &str, change: &MetaChange, at: DateTime)
    -> Result<bool, StoreError>;
}

/// One change to a conversation's metadata ([`ConversationStore::update`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaChange {
    /// `title`.
    Title(String),
    /// `tags`, replaced whole.
    Tags(Vec<String>),
    /// `status`: MAG's `active`, `deleted` (soft) or `favorite`.
    Status(String),
}

/// A shared store.
pub type Store = Arc<dyn ConversationStore>;

/// The password of `url`'s user info, as written and percent-decoded (empty when none). A
/// MongoDB URL may list several hosts (`db1:27017,db2`), which no URL parser takes.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    if !password.is_empty() {
        secrets.push(password.to_owned());
        let decoded = percent_decode(password);
        if decoded != password {
            secrets.push(decoded);
        }
    }
    secrets
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
