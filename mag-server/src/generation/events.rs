//! What MCP generation tells its caller, as domain types: the events of a round as it runs
//! ([`Event`], streamed as SSE by `api`) and its outcome ([`Outcome`], the answer of a
//! request without `stream`). MAG's JSON shapes for them are made in `api`.

use serde_json::Value;

use crate::llm::TokenUsage;
use crate::store::ConversationRecord;

/// One event of a round, in the order they happen.
#[derive(Debug, Clone)]
pub enum Event {
    /// A chunk of the model's stream, passed on unchanged (OpenAI's
    /// `chat.completion.chunk`).
    Chunk(Value),
    /// The round is stored (after the model finished).
    Saved(SavedRound),
    /// The end instruction found the design lacking.
    Incomplete(Incomplete),
    /// The end instruction installed (or found installed) the tool.
    Completion {
        /// The conversation the tool comes from.
        conversation_id: String,
        /// The install.
        installed: Installed,
    },
    /// The round failed; nothing of it is stored.
    Error {
        /// What went wrong.
        message: String,
        /// What failed.
        kind: ErrorKind,
    },
}

/// What failed a round (MAG's `error.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The LLM failed (`api_error`).
    Api,
    /// The store failed (`database_error`).
    Database,
    /// The end could not install the tool (`assembly_error`).
    Assembly,
    /// The request lacks something the round needs (`parameter_error`), e.g. the end
    /// instruction without a conversation.
    Parameter,
}

impl ErrorKind {
    /// MAG's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api_error",
            Self::Database => "database_error",
            Self::Assembly => "assembly_error",
            Self::Parameter => "parameter_error",
        }
    }
}

/// A stored round.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedRound {
    /// The conversation.
    pub conversation_id: String,
    /// The round's number (also the conversation's round count now).
    pub round: i64,
    /// The round's tokens.
    pub round_token_usage: TokenUsage,
    /// The conversation's tokens so far.
    pub total_token_usage: TokenUsage,
}

/// A design the end instruction cannot install yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// A sentence naming what is missing.
    pub message: String,
    /// The `parsed_results` fields that are missing or empty.
    pub missing_fields: Vec<String>,
}

/// An installed (and registered) generated tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The server's name in `mcp.json` (also its folder's).
    pub tool_name: String,
    /// Its folder.
    pub folder: String,
    /// `mcp.json`'s revision with the tool in it.
    pub config_version: String,
    /// Whether it was installed before (a retried end), not now.
    pub already: bool,
    /// Whether it connected, or why not.
    pub connected: Result<(), String>,
}

/// How a round ended, for a request without `stream`.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An LLM round: the conversation after it, and the model that answered.
    Round {
        /// The conversation.
        record: Box<ConversationRecord>,
        /// The `[[models]]` name.
        model: String,
    },
    /// The end instruction found the design lacking.
    Incomplete(Incomplete),
    /// The end instruction installed the tool.
    Installed(Installed),
}

/// The conversation store's health, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// `mongodb` or `embedded`.
    pub backend: &'static str,
    /// Why it is unavailable; `None` when it answered.
    pub error: Option<String>,
}
