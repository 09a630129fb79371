//! A scripted OpenAI-compatible chat endpoint (SPEC §7: no model can run here).
//!
//! [`ScriptedLlm`] serves `POST /v1/chat/completions` on 127.0.0.1 and answers each request
//! with the next [`Reply`] of its script, in the real wire format: with `"stream": true`,
//! `text/event-stream` events `data: {chat.completion.chunk}` + a blank line, the first
//! carrying `"role":"assistant"`, the text split into chunks of [`CHUNK_CHARS`] characters,
//! a last chunk with an empty delta and `"finish_reason":"stop"`, then (when the request
//! had `"stream_options":{"include_usage":true}`) a usage chunk with `"choices":[]`, then
//! `data: [DONE]`. Without `"stream": true` it answers one `chat.completion` object.
//!
//! It runs on its own thread with its own tokio runtime, so it serves sync tests and
//! `#[tokio::test]` ones alike; dropping it stops it and cuts open streams.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How many characters of the text one streamed chunk carries (the last one may carry
/// fewer).
pub const CHUNK_CHARS: usize = 40;

/// The pause before a [`Reply::Drop`] cuts the connection.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// One scripted answer; each request that passes the key and body checks takes the next.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Streams `text`, then finish_reason "stop", the usage chunk (if asked for) and
    /// `[DONE]`. The token counts are reported as they are (`total_tokens` is their sum).
    Text {
        /// The assistant's answer.
        text: String,
        /// Reported `usage.prompt_tokens`.
        prompt_tokens: u64,
        /// Reported `usage.completion_tokens`.
        completion_tokens: u64,
    },
    /// Streams the first `chunks` chunks of `text`, then drops the connection (no finish,
    /// no `[DONE]`): the headers and those chunks are flushed first (a 50 ms pause), then
    /// the connection closes mid-body, so the client gets them and then a body error.
    /// Without `"stream": true`, the headers then the cut.
    Drop {
        /// The text whose first chunks are sent.
        text: String,
        /// How many chunks are sent before the connection is cut (0: none, right after
        /// the headers).
        chunks: usize,
    },
    /// Answers `status` with an OpenAI error body `{"error":{"message","type","param",
    /// "code"}}` (a status that is not a valid HTTP status is answered as 500).
    Error {
        /// The HTTP status, e.g. 429 or 500.
        status: u16,
        /// `error.message`.
        message: String,
    },
    /// A reasoning model's answer (DeepSeek's wire format): `reasoning` streamed as
    /// `delta.reasoning_content` (with `"content": null`), then `text` as [`Reply::Text`]
    /// does (with `"reasoning_content": null`); 10 prompt tokens, one completion token per
    /// chunk of either.
    Reasoning {
        /// The reasoning.
        reasoning: String,
        /// The assistant's answer.
        text: String,
    },
    /// Streams `text` as [`Reply::text`] does, every event framed the way real providers
    /// and proxies frame theirs, all of which the WHATWG SSE rules say to take or ignore:
    /// CRLF line ends, a comment line, `event:` twice, `id:`, `retry:` twice (once not a
    /// number), a field no one knows and a line with no colon; and a comment-only
    /// keep-alive between events.
    Noisy {
        /// The assistant's answer.
        text: String,
    },
    /// Streams the first chunk of `text`, then waits `pause` before streaming the rest
    /// like [`Reply::Text`] (for tests that act mid-stream).
    Slow {
        /// The assistant's answer.
        text: String,
        /// The wait after the first chunk.
        pause: Duration,
        /// Reported `usage.prompt_tokens`.
        prompt_tokens: u64,
        /// Reported `usage.completion_tokens`.
        completion_tokens: u64,
    },
}

impl Reply {
    /// A [`Reply::Text`] with made-up token counts (10 prompt, 1 per chunk of text).
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        let completion_tokens = pieces(&text).len() as u64;
        Reply::Text {
            text,
            prompt_tokens: 10,
            completion_tokens,
        }
    }
}

/// What the server thread and the test share.
#[derive(Debug)]
struct Shared {
    api_key: String,
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Value>>,
    next_id: AtomicU64,
}

/// A running scripted OpenAI-compatible endpoint on 127.0.0.1 (see the module docs);
/// stopped when dropped.
#[derive(Debug)]
pub struct ScriptedLlm {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedLlm {
    /// Starts it on a free port of 127.0.0.1: requests must carry
    /// `Authorization: Bearer api_key`, and are answered with `replies` in order.
    pub fn start(api_key: &str, replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            replies: Mutex::new(replies.into()),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted LLM");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-llm-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("scripted LLM runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("scripted LLM listener");
                    // As a real endpoint's server would, it sends each chunk at once.
                    let listener = mag_common::http_edge::no_delay(listener);
                    let serve = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops the connection tasks, cutting open streams.
                drop(runtime);
            })
            .expect("spawn the scripted LLM thread");
        Self {
            shared,
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The base URL to configure as an OpenAI `base_url`: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queues `reply` after the ones not yet used.
    pub fn push(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    /// How many scripted replies are not used yet.
    pub fn remaining(&self) -> usize {
        self.shared.replies.lock().unwrap().len()
    }

    /// The JSON bodies received so far, in arrival order: every request whose body was
    /// JSON, including those refused (wrong key, no `messages`).
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (see [`Self::requests`]); panics after
    /// 30 s.
    pub async fn wait_requests(&self, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.shared.requests.lock().unwrap().len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} requests never reached the model"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = serde_json::from_slice::<Value>(&body).ok();
    if let Some(request) = &request {
        shared.requests.lock().unwrap().push(request.clone());
    }
    let expected = format!("Bearer {}", shared.api_key);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization != Some(expected.as_str()) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let Some(request) = request else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
        );
    }
    let Some(reply) = shared.replies.lock().unwrap().pop_front() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the scripted LLM ran out of replies (the test's script has no more)",
            "server_error",
            None,
        );
    };
    let meta = Meta {
        id: format!(
            "chatcmpl-scripted{}",
            shared.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("scripted")
            .to_string(),
        include_usage: request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    match reply {
        Reply::Error { status, message } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (kind, code) = match status.as_u16() {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                500.. => ("server_error", None),
                _ => ("invalid_request_error", None),
            };
            error_response(status, &message, kind, code)
        }
        reply if stream => streamed(steps(&meta, reply), "text/event-stream; charset=utf-8"),
        Reply::Text {
            text,
            prompt_tokens,
            completion_tokens,
        } => completion(&meta, &text, prompt_tokens, completion_tokens),
        Reply::Slow {
            text,
            pause,
            prompt_tokens,
            completion_tokens,
        } => {
            tokio::time::sleep(pause).await;
            completion(&meta, &text, prompt_tokens, completion_tokens)
        }
        Reply::Reasoning { reasoning, text } => {
            let tokens = (pieces(&reasoning).len() + pieces(&text).len()) as u64;
            completion(&meta, &text, 10, tokens)
        }
        Reply::Noisy { text } => {
            let tokens = pieces(&text).len() as u64;
            completion(&meta, &text, 10, tokens)
        }
        Reply::Drop { .. } => streamed(
            vec![Step::Pause(FLUSH_PAUSE), Step::Cut],
            "application/json",
        ),
    }
}

/// What every chunk of one answer shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

/// One step of a streamed answer.
enum Step {
    /// Sends this SSE event (already framed).
    Event(String),
    /// Waits.
    Pause(Duration),
    /// Cuts the connection.
    Cut,
}

/// The steps of a streamed `reply` (not an error).
fn steps(meta: &Meta, reply: Reply) -> Vec<Step> {
    let mut steps = Vec::new();
    let (text, send, pause, usage) = match reply {
        Reply::Text {
            text,
            prompt_tokens,
            completion_tokens,
        } => (
            text,
            usize::MAX,
            None,
            Some((prompt_tokens, completion_tokens)),
        ),
        Reply::Slow {
            text,
            pause,
            prompt_tokens,
            completion_tokens,
        } => (
            text,
            usize::MAX,
            Some(pause),
            Some((prompt_tokens, completion_tokens)),
        ),
        Reply::Reasoning { reasoning, text } => {
            let thoughts = pieces(&reasoning);
            let tokens = (thoughts.len() + pieces(&text).len()) as u64;
            for (i, piece) in thoughts.into_iter().enumerate() {
                let mut delta = json!({"content": null, "reasoning_content": piece});
                if i == 0 {
                    delta["role"] = json!("assistant");
                }
                steps.push(Step::Event(chunk_event(meta, delta, Value::Null)));
            }
            (text, usize::MAX, None, Some((10, tokens)))
        }
        Reply::Noisy { text } => {
            let tokens = pieces(&text).len() as u64;
            let mut steps = self::steps(
                meta,
                Reply::Text {
                    text,
                    prompt_tokens: 10,
                    completion_tokens: tokens,
                },
            );
            for (i, step) in steps.iter_mut().enumerate() {
                if let Step::Event(event) = step {
                    *event = noisy(event, i);
                }
            }
            return steps;
        }
        Reply::Drop { text, chunks } => (text, chunks, None, None),
        Reply::Error { .. } => unreachable!("errors are not streamed"),
    };
    let reasoned = !steps.is_empty();
    for (i, piece) in pieces(&text).into_iter().take(send).enumerate() {
        let delta = if reasoned {
            json!({"content": piece, "reasoning_content": null})
        } else if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        steps.push(Step::Event(chunk_event(meta, delta, Value::Null)));
        if i == 0
            && let Some(pause) = pause
        {
            steps.push(Step::Pause(pause));
        }
    }
    let Some((prompt_tokens, completion_tokens)) = usage else {
        // Let hyper flush the headers and chunks before the cut (without a pending poll
        // in between, it closes the connection with nothing sent, not even the headers).
        steps.push(Step::Pause(FLUSH_PAUSE));
        steps.push(Step::Cut);
        return steps;
    };
    steps.push(Step::Event(chunk_event(meta, json!({}), json!("stop"))));
    if meta.include_usage {
        let usage = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "usage": usage_json(prompt_tokens, completion_tokens),
        });
        steps.push(Step::Event(format!("data: {usage}\n\n")));
    }
    steps.push(Step::Event("data: [DONE]\n\n".to_string()));
    steps
}

/// `event` (`data: …` lines and a blank line), framed as [`Reply::Noisy`] says; the `i`th.
fn noisy(event: &str, i: usize) -> String {
    let data = event.trim_end_matches('\n').replace('\n', "\r\n");
    format!(
        ": keep-alive\r\n\r\n: OPENROUTER PROCESSING\r\nevent: message\r\nevent: message\r\n\
         id: {i}\r\nretry: 3000\r\nretry: soon\r\nx-vendor-trace: abc\r\nheartbeat\r\n{data}\r\n\r\n"
    )
}

/// One `chat.completion.chunk` event with one choice.
fn chunk_event(meta: &Meta, delta: Value, finish_reason: Value) -> String {
    let mut chunk = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    if meta.include_usage {
        // As OpenAI does: with include_usage, every other chunk has `"usage": null`.
        chunk["usage"] = Value::Null;
    }
    format!("data: {chunk}\n\n")
}

/// `{"prompt_tokens","completion_tokens","total_tokens"}`.
fn usage_json(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// A 200 response of `content_type` whose body plays `steps`.
fn streamed(steps: Vec<Step>, content_type: &'static str) -> Response {
    let body = futures::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Pause(pause) => tokio::time::sleep(pause).await,
                Step::Event(event) => return Some((Ok(Bytes::from(event)), steps)),
                Step::Cut => {
                    let cut = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "scripted connection drop",
                    );
                    return Some((Err(cut), steps));
                }
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A non-streamed `chat.completion`.
fn completion(meta: &Meta, text: &str, prompt_tokens: u64, completion_tokens: u64) -> Response {
    let body = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }],
        "usage": usage_json(prompt_tokens, completion_tokens),
    });
    axum::Json(body).into_response()
}

/// An OpenAI error answer.
fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code},
    });
    (status, axum::Json(body)).into_response()
}

/// `text` in pieces of [`CHUNK_CHARS`] characters; one empty piece for an empty text.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(CHUNK_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}
