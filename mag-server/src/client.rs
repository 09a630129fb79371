//! A typed HTTP client for mcp-client's API (SPEC §4), with a bound on every request.
//!
//! Failures map onto [`Error`]: a refused or dropped connection is
//! [`Error::Unavailable`] (503) naming the address and the cause, a request over its bound
//! is [`Error::Timeout`] (504), a 401 means mcp-client holds another token (503), a 2xx
//! answer that is not the wire type ([`mag_common::wire`]) is [`Error::BadAnswer`] (502,
//! naming the request and the field), and any
//! other non-2xx answer is passed on as [`Error::Upstream`] with mcp-client's own status,
//! `code` and `detail`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use mag_common::error_chain;
use mag_common::wire::{
    ConnectAnswer, DisconnectAnswer, ErrorBody, LoadConfigAnswer, RootAnswer as WireRoot, SERVICE,
    ServerName, Servers, ShutdownAnswer, ToolCall, ToolCallAnswer, ToolView,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::settings::Secret;

/// Bound on requests that do not wait for an MCP server (`/servers`, `/tools`,
/// `/load_config`).
pub const GENERAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on `/disconnect_server`: mcp-client gives a server's process group a grace period.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Added to a server's own `timeout` for connects and tool calls, which mcp-client bounds by
/// that timeout itself: mag-server's bound only catches a stuck mcp-client.
pub const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// What `GET /` answered, when it came from an mcp-client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRoot {
    /// Its pid.
    pub pid: Option<u32>,
    /// The config file it serves (`config.path`).
    pub config_path: Option<String>,
}

/// What answers `GET /` on the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootAnswer {
    /// An mcp-client.
    McpClient(ClientRoot),
    /// Something else; the text says what it answered.
    Other(String),
}

/// mcp-client's API at one address. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct McpClient {
    http: reqwest::Client,
    addr: SocketAddr,
    base: String,
    token: Arc<RwLock<Option<Secret>>>,
}

impl McpClient {
    /// A client for the mcp-client at `addr`. Connections are not pooled, so a restarted
    /// mcp-client on the same port is never reached through a stale connection.
    ///
    /// # Errors
    /// [`Error::Io`] when the HTTP client cannot be built.
    pub fn new(addr: SocketAddr) -> Result<Self> {
        mag_common::install_tls_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| Error::Io {
                context: "cannot build the HTTP client".into(),
                source: std::io::Error::other(e),
            })?;
        Ok(Self {
            http,
            addr,
            base: format!("http://{addr}"),
            token: Arc::default(),
        })
    }

    /// The address it talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the bearer token sent from now on (`None`: no `Authorization` header); it is
    /// redacted from every log line and answer.
    pub fn set_token(&self, token: Option<Secret>) {
        let shown = token
            .iter()
            .map(|t| (t.expose().to_string(), "***".to_string()));
        mag_common::secrets::global().set("client-token", shown);
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// `GET /` without a token, to tell an mcp-client from another program.
    ///
    /// # Errors
    /// The request failed (refused, reset, not HTTP, over `within`): the error's text.
    pub async fn root(&self, within: Duration) -> std::result::Result<RootAnswer, String> {
        let response = self
            .http
            .get(format!("{}/", self.base))
            .timeout(within)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let body = read_capped(response, 64 * 1024, within).await;
        match serde_json::from_slice::<WireRoot>(&body) {
            Ok(root) if status.is_success() && root.service == SERVICE => {
                Ok(RootAnswer::McpClient(ClientRoot {
                    pid: Some(root.pid),
                    config_path: Some(root.config.path.display().to_string()),
                }))
            }
            _ => {
                let text: String = String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                Ok(RootAnswer::Other(format!(
                    "it answered GET / with HTTP {status}: {:?}",
                    text.trim()
                )))
            }
        }
    }

    /// Whether the mcp-client refuses a request without a token (`GET /servers` answers
    /// 401 within `within`), as every one that mag-server starts does. Any other outcome
    /// (another status, a refused connection, no answer in time) is `false`.
    pub async fn requires_token(&self, within: Duration) -> bool {
        self.http
            .get(format!("{}/servers", self.base))
            .timeout(within)
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED)
    }

    /// `GET /servers`: every server of mcp-client's live config.
    ///
    /// # Errors
    /// See the module docs.
    pub async fn servers(&self, within: Duration) -> Result<Servers> {
        self.send(self.http.get(self.url("/servers")), "GET /servers", within)
            .await
    }

    /// `GET /tools`: every tool of every connected server.
    ///
    /// # Errors
    /// See the module docs.
    pub async fn tools(&self, within: Duration) -> Result<Vec<ToolView>> {
        self.send(self.http.get(self.url("/tools")), "GET /tools", within)
            .await
    }

    /// `POST /connect_server`, bounded by `within`.
    ///
    /// # Errors
    /// See the module docs; mcp-client answers 404 (unknown), 409 (disabled), 400 (failed).
    pub async fn connect(&self, server: &str, within: Duration) -> Result<ConnectAnswer> {
        let body = ServerName {
            server_name: server.to_string(),
        };
        let request = self.http.post(self.url("/connect_server")).json(&body);
        self.send(request, "POST /connect_server", within).await
    }

    /// `POST /disconnect_server`, bounded by `within`.
    ///
    /// # Errors
    /// See the module docs; mcp-client answers 404 for an unknown server.
    pub async fn disconnect(&self, server: &str, within: Duration) -> Result<DisconnectAnswer> {
        let body = ServerName {
            server_name: server.to_string(),
        };
        let request = self.http.post(self.url("/disconnect_server")).json(&body);
        self.send(request, "POST /disconnect_server", within).await
    }

    /// `POST /tool_call`, bounded by `within`.
    ///
    /// # Errors
    /// See the module docs; a tool's own failure is in the answer's `error`, not an `Err`.
    pub async fn tool_call(&self, call: &ToolCall, within: Duration) -> Result<ToolCallAnswer> {
        let request = self.http.post(self.url("/tool_call")).json(call);
        self.send(request, "POST /tool_call", within).await
    }

    /// `POST /load_config` with `{"config": document}`.
    ///
    /// # Errors
    /// See the module docs; mcp-client answers 422 for a config it refuses.
    pub async fn load_config(
        &self,
        document: &Map<String, Value>,
        within: Duration,
    ) -> Result<LoadConfigAnswer> {
        let request = self
            .http
            .post(self.url("/load_config"))
            .json(&json!({"config": document}));
        self.send(request, "POST /load_config", within).await
    }

    /// `POST /shutdown`: mcp-client ends its servers and exits.
    ///
    /// # Errors
    /// See the module docs.
    pub async fn shutdown(&self, within: Duration) -> Result<ShutdownAnswer> {
        let request = self.http.post(self.url("/shutdown"));
        self.send(request, "POST /shutdown", within).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Forwards one request of an MCP client to mcp-client's MCP gateway (SPEC §8) at
    /// `path_and_query` (`/mcp…` or `/servers/NAME/mcp…`), with mag-server's token for
    /// mcp-client in place of the caller's, streaming the body both ways (a `text/event-stream`
    /// answer flows as mcp-client sends it). Only the MCP transport's own headers pass
    /// ([`MCP_REQUEST_HEADERS`], [`MCP_RESPONSE_HEADERS`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when mcp-client cannot be reached (connect bound 3 s).
    pub async fn forward_mcp(
        &self,
        path_and_query: &str,
        request: axum::extract::Request,
    ) -> Result<axum::response::Response> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .http
            .request(parts.method.clone(), self.url(path_and_query));
        for name in MCP_REQUEST_HEADERS {
            for value in parts.headers.get_all(*name) {
                outgoing = outgoing.header(*name, value);
            }
        }
        let token = self.token.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(token) = token {
            outgoing = outgoing.bearer_auth(token.expose());
        }
        let outgoing = outgoing.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        let answer = outgoing.send().await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot reach mcp-client at {} (MCP {} {path_and_query}): {}",
                self.addr,
                parts.method,
                error_chain(&e)
            ))
        })?;
        if answer.status() == StatusCode::UNAUTHORIZED {
            return Err(Error::TokenRefused(self.addr));
        }
        let mut response = axum::response::Response::builder().status(answer.status());
        for name in MCP_RESPONSE_HEADERS {
            for value in answer.headers().get_all(*name) {
                response = response.header(*name, value);
            }
        }
        response
            .body(axum::body::Body::from_stream(answer.bytes_stream()))
            .map_err(|e| Error::Unavailable(format!("cannot relay mcp-client's answer: {e}")))
    }

    /// `GET /oauth/callback?QUERY` on mcp-client (SPEC §10), within `within`: its status and
    /// page (at most 64 KiB), not cached, no referrer (the URL held a code).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when mcp-client cannot be reached or answer in time.
    pub async fn oauth_callback(
        &self,
        query: &str,
        within: Duration,
    ) -> Result<axum::response::Response> {
        let url = format!("{}?{query}", self.url("/oauth/callback"));
        let answer = self
            .http
            .get(url)
            .timeout(within)
            .send()
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot reach mcp-client at {} (GET /oauth/callback): {}",
                    self.addr,
                    error_chain(&e)
                ))
            })?;
        let status = answer.status();
        let content_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| reqwest::header::HeaderValue::from_static("text/plain"));
        let page = read_capped(answer, 64 * 1024, within).await;
        axum::response::Response::builder()
            .status(status)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CACHE_CONTROL, "no-store")
            .header(reqwest::header::REFERRER_POLICY, "no-referrer")
            .body(axum::body::Body::from(page))
            .map_err(|e| Error::Unavailable(format!("cannot relay mcp-client's answer: {e}")))
    }

    /// Sends `request` (`what`, e.g. `GET /servers`) with the token within `within`, and
    /// decodes a 2xx answer as `T`.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        within: Duration,
    ) -> Result<T> {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner()).clone();
        let request = match token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        };
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Timeout {
                    what: what.to_string(),
                    secs: within.as_secs_f64(),
                }
            } else {
                Error::Unavailable(format!(
                    "cannot reach mcp-client at {} ({what}): {}",
                    self.addr,
                    error_chain(&e)
                ))
            }
        };
        let response = request.timeout(within).send().await.map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
                what: what.to_string(),
                detail: e.to_string(),
            });
        }
        let answer = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        // A 401 is mcp-client refusing our token, unless a server needs OAuth (SPEC §10).
        let needs_user = answer
            .as_ref()
            .is_some_and(|a| a.code == "authorization_required");
        if status == StatusCode::UNAUTHORIZED && !needs_user {
            return Err(Error::TokenRefused(self.addr));
        }
        let body = answer.unwrap_or_else(|| ErrorBody {
            detail: format!(
                "mcp-client answered {what} with HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            ),
            code: "mcp_client_error".into(),
            kind: None,
            authorization_url: None,
        });
        Err(Error::Upstream {
            status,
            code: body.code,
            detail: body.detail,
            kind: body.kind,
            authorization_url: body.authorization_url,
        })
    }
}

/// The request headers of the MCP streamable HTTP transport that pass to mcp-client's
/// gateway (MCP spec 2025-11-25, Transports § Streamable HTTP), and `x-mcp-server-id`.
pub const MCP_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "x-mcp-server-id",
];

/// The answer headers that pass back from mcp-client's gateway.
pub const MCP_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "mcp-session-id",
    "mcp-protocol-version",
];

/// Connects `servers` (name and bound each), at most `concurrency` at once; each name with
/// its answer or error, in the order they finished.
pub async fn connect_many(
    client: &McpClient,
    servers: Vec<(String, Duration)>,
    concurrency: usize,
) -> Vec<(String, Result<ConnectAnswer>)> {
    futures::stream::iter(servers)
        .map(|(name, within)| async move {
            let result = client.connect(&name, within).await;
            (name, result)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// At most `cap` bytes of the body: what arrived before the body ended, failed or
/// `within` passed (an answer that stalls half-way gives its start).
pub(crate) async fn read_capped(
    response: reqwest::Response,
    cap: usize,
    within: Duration,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    body.truncate(cap);
    body
}
