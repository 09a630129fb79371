//! The LLM side of MCP generation: an OpenAI-compatible `POST {base_url}/chat/completions`
//! with `"stream": true`, read as server-sent events (SPEC §5).
//!
//! Wire format (OpenAI Chat Completions API, streaming): each event is `data: CHUNK` where
//! CHUNK is a `chat.completion.chunk` object whose `choices[0].delta.content` carries the
//! next piece of text; with `"stream_options": {"include_usage": true}` a last chunk with
//! `"choices": []` carries `usage` (`prompt_tokens`, `completion_tokens`, `total_tokens`);
//! the stream ends with `data: [DONE]`. A stream that ends without `[DONE]` and without a
//! `finish_reason` was dropped and is an error, so a cut-off answer is never stored as
//! complete. Reasoning models (DeepSeek and others) stream their reasoning as
//! `delta.reasoning_content`, which is kept apart from the answer (MAG stores it on the
//! assistant message and never sends it back).
//!
//! Every round is bounded: by the model's idle timeout between chunks, by its round timeout
//! in all, and by [`MAX_ANSWER_BYTES`] of text, so a model that never stops (no
//! `max_tokens`, a repetition loop) fails its round instead of holding its conversation
//! for good.

use std::fmt;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long the endpoint may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Model::idle_timeout`]: the longest silence between two chunks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default for [`Model::round_timeout`]: the longest a whole answer may take (20 min).
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The most text one answer may hold, its content and reasoning together (4 MiB): far
/// beyond any tool's design, well within a MongoDB document (16 MiB).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The most of an error answer's body that is read (64 KiB); the message shown is cut
/// shorter still.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// One `[[models]]` table of the settings file:
/// `name = "…" base_url = "https://…/v1" api_key_env = "…" model = "…"`, optionally
/// `temperature`, `max_tokens`, `idle_timeout` and `round_timeout` (durations such as
/// `"90s"`).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The name requests use (`model_name`).
    pub name: String,
    /// The API root; `/chat/completions` is appended (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// The environment variable holding the API key, sent as `Authorization: Bearer KEY`;
    /// none for endpoints without keys. The key itself is never logged or answered.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model id the endpoint knows (`"model"` of the request).
    pub model: String,
    /// Sampling temperature, passed on when set.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Completion token limit, passed on when set.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The longest silence between two chunks before the round fails, e.g. `"90s"`
    /// (default 120 s).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// The longest a whole answer may take, e.g. `"30m"` (default 20 min).
    #[serde(default)]
    pub round_timeout: Option<String>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Checks a table read from the settings file.
    ///
    /// # Errors
    /// A message naming the field: an empty `name` or `model`, a `base_url` that is not
    /// `http(s)://…`, an `idle_timeout` or `round_timeout` that does not parse.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a [[models]] table has an empty name".into());
        }
        if self.model.trim().is_empty() {
            return Err(format!("model {:?}: `model` is empty", self.name));
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "model {:?}: base_url must start with http:// or https://",
                self.name
            ));
        }
        self.idle_timeout()?;
        self.round_timeout()?;
        Ok(())
    }

    /// [`Self::idle_timeout`] parsed ([`DEFAULT_IDLE_TIMEOUT`] when unset).
    ///
    /// # Errors
    /// It does not parse as a duration.
    pub fn idle_timeout(&self) -> Result<Duration, String> {
        self.duration("idle_timeout", &self.idle_timeout, DEFAULT_IDLE_TIMEOUT)
    }

    /// [`Self::round_timeout`] parsed ([`DEFAULT_ROUND_TIMEOUT`] when unset).
    ///
    /// # Errors
    /// It does not parse as a duration.
    pub fn round_timeout(&self) -> Result<Duration, String> {
        self.duration("round_timeout", &self.round_timeout, DEFAULT_ROUND_TIMEOUT)
    }

    fn duration(
        &self,
        key: &str,
        text: &Option<String>,
        default: Duration,
    ) -> Result<Duration, String> {
        match text {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| format!("model {:?}: {key} = {text:?}: {e}", self.name)),
        }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Token counts of one answer (the usage chunk), or of a whole conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// `total_tokens`.
    #[serde(default)]
    pub total_tokens: i64,
    /// `prompt_tokens`.
    #[serde(default)]
    pub prompt_tokens: i64,
    /// `completion_tokens`.
    #[serde(default)]
    pub completion_tokens: i64,
}

impl TokenUsage {
    /// The sum of two counts (saturating: an endpoint's absurd count cannot overflow it).
    pub fn plus(self, other: Self) -> Self {
        Self {
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }

    /// A usage chunk's counts as they may be kept: a negative count is 0, and
    /// `total_tokens` is the sum of the other two.
    pub fn checked(self) -> Self {
        let (prompt_tokens, completion_tokens) =
            (self.prompt_tokens.max(0), self.completion_tokens.max(0));
        Self {
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens,
            completion_tokens,
        }
    }
}

/// Why a round's LLM call failed. The text names the model and the cause, never the key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// `api_key_env` names a variable that is unset or empty.
    #[error("model {model:?}: the API key variable {var} is not set")]
    MissingKey {
        /// The model's name.
        model: String,
        /// The variable.
        var: String,
    },
    /// The endpoint could not be reached, or the connection broke.
    #[error("model {model:?}: {cause}")]
    Transport {
        /// The model's name.
        model: String,
        /// What happened.
        cause: String,
    },
    /// The endpoint answered with an error status; `message` is its error text.
    #[error("model {model:?}: the endpoint answered {status}: {message}")]
    Status {
        /// The model's name.
        model: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's `error.message`, or the start of its body.
        message: String,
    },
    /// The stream ended before `[DONE]` or a `finish_reason`: the answer is incomplete.
    #[error("model {model:?}: the stream ended before the answer was complete")]
    Dropped {
        /// The model's name.
        model: String,
    },
    /// No chunk arrived within the model's idle timeout.
    #[error("model {model:?}: no data for {secs} s")]
    Idle {
        /// The model's name.
        model: String,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The answer was not complete within the model's round timeout.
    #[error("model {model:?}: the answer was not complete within {secs} s (round_timeout)")]
    RoundTimeout {
        /// The model's name.
        model: String,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The answer grew past [`MAX_ANSWER_BYTES`].
    #[error("model {model:?}: the answer passed {} MiB without ending", MAX_ANSWER_BYTES >> 20)]
    TooLong {
        /// The model's name.
        model: String,
    },
}

/// A finished answer.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// The text, every chunk's `delta.content` joined.
    pub content: String,
    /// The reasoning, every chunk's `delta.reasoning_content` joined (empty for models
    /// that send none).
    pub reasoning: String,
    /// The usage chunk's counts (zeros when the endpoint sent none).
    pub usage: TokenUsage,
    /// The last `finish_reason` seen (`"stop"`, `"length"`, …).
    pub finish_reason: Option<String>,
}

/// Streams one chat completion of `messages` (`[{"role", "content"}]`) from `model`,
/// handing every chunk (the endpoint's JSON, unchanged) to `on_chunk` as it arrives.
///
/// # Errors
/// [`LlmError`]: no key, no connection, an error status, a dropped stream, a silence
/// longer than the model's idle timeout, an answer longer than its round timeout or
/// [`MAX_ANSWER_BYTES`].
pub async fn stream_chat(
    http: &reqwest::Client,
    model: &Model,
    messages: &[Value],
    on_chunk: impl FnMut(&Value),
) -> Result<Completion, LlmError> {
    let limit = model.round_timeout().unwrap_or(DEFAULT_ROUND_TIMEOUT);
    tokio::time::timeout(limit, stream_answer(http, model, messages, on_chunk))
        .await
        .unwrap_or_else(|_| {
            Err(LlmError::RoundTimeout {
                model: model.name.clone(),
                secs: limit.as_secs(),
            })
        })
}

/// [`stream_chat`] without the round timeout.
async fn stream_answer(
    http: &reqwest::Client,
    model: &Model,
    messages: &[Value],
    mut on_chunk: impl FnMut(&Value),
) -> Result<Completion, LlmError> {
    let name = model.name.clone();
    let transport = |cause: String| LlmError::Transport {
        model: name.clone(),
        cause,
    };
    let mut body = json!({
        "model": model.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(t) = model.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = model.max_tokens {
        body["max_tokens"] = json!(m);
    }
    let mut request = http.post(model.url()).json(&body);
    let mut key = None;
    if let Some(var) = &model.api_key_env {
        match std::env::var(var) {
            Ok(value) if !value.is_empty() => {
                request = request.bearer_auth(&value);
                key = Some(value);
            }
            _ => {
                return Err(LlmError::MissingKey {
                    model: name,
                    var: var.clone(),
                });
            }
        }
    }
    let idle = model.idle_timeout().unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let idle_error = || LlmError::Idle {
        model: model.name.clone(),
        secs: idle.as_secs(),
    };
    let response = tokio::time::timeout(idle, request.send())
        .await
        .map_err(|_| idle_error())?
        .map_err(|e| transport(mag_common::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        // Bounded in time like a chunk (an endpoint that sends error headers and stalls
        // must not hold the round and its conversation's lock) and in size.
        let body = crate::client::read_capped(response, ERROR_BODY_LIMIT, idle).await;
        let text = String::from_utf8_lossy(&body);
        return Err(LlmError::Status {
            model: model.name.clone(),
            status: status.as_u16(),
            message: error_message(&text, key.as_deref()),
        });
    }
    // Parsed as the WHATWG SSE rules say (comments, unknown fields, repeated fields and CRLF
    // are taken or ignored, never an error), which real providers and proxies rely on.
    let mut events = response.bytes_stream().eventsource();
    let mut done = Completion::default();
    loop {
        let event = match tokio::time::timeout(idle, events.next()).await {
            Err(_) => return Err(idle_error()),
            Ok(None) if done.finish_reason.is_some() => return Ok(done),
            Ok(None) => {
                return Err(LlmError::Dropped {
                    model: model.name.clone(),
                });
            }
            Ok(Some(Err(e))) => return Err(transport(format!("the stream broke: {e}"))),
            Ok(Some(Ok(event))) => event,
        };
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            return Ok(done);
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            tracing::warn!(model = %model.name, "skipping an event that is not JSON");
            continue;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(LlmError::Status {
                model: model.name.clone(),
                status: status.as_u16(),
                message: error_message(&error.to_string(), key.as_deref()),
            });
        }
        if let Some(choice) = chunk["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                done.content.push_str(text);
            }
            if let Some(text) = delta["reasoning_content"].as_str() {
                done.reasoning.push_str(text);
            }
            if done.content.len() + done.reasoning.len() > MAX_ANSWER_BYTES {
                return Err(LlmError::TooLong {
                    model: model.name.clone(),
                });
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                done.finish_reason = Some(reason.to_owned());
            }
        }
        if let Ok(usage) = serde_json::from_value::<TokenUsage>(chunk["usage"].clone()) {
            done.usage = usage.checked();
        }
        on_chunk(&chunk);
    }
}

/// The error text of an endpoint's answer: its `error.message` (OpenAI), `message` or
/// `detail`, else the body's first 300 characters; the API key, should the endpoint echo
/// it, is replaced by `[redacted]` (SPEC §6).
fn error_message(body: &str, key: Option<&str>) -> String {
    // Before and after JSON decoding: an escaped key (`\/`, `\u002B`) shows only after.
    let redact = |text: &str| match key {
        Some(key) => text.replace(key, "[redacted]"),
        None => text.to_owned(),
    };
    let body = redact(body);
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .or_else(|| v["detail"].as_str())
            .map(redact)
    });
    message.unwrap_or_else(|| body.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_key_is_redacted_even_when_json_escaped() {
        let key = "sk-a/b+c";
        let plain = r#"{"error": {"message": "bad key sk-a/b+c"}}"#;
        let escaped = r#"{"error": {"message": "bad key sk-a\/b\u002Bc"}}"#;
        for body in [plain, escaped] {
            assert_eq!(
                error_message(body, Some(key)),
                "bad key [redacted]",
                "{body}"
            );
        }
        assert_eq!(
            error_message("upstream sk-a/b+c down", Some(key)),
            "upstream [redacted] down"
        );
        assert_eq!(error_message(plain, None), "bad key sk-a/b+c");
    }
}
