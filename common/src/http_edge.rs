//! The HTTP edge that mcp-client and mag-server share (SPEC §6): serving with bounded
//! connections, the checks every request passes (Host, Origin, Content-Type, bearer token,
//! body size and time), and reading a JSON body.
//!
//! Loopback is no wall: any page the operator's browser opens can send requests to
//! 127.0.0.1. So, on every endpoint, before the token is looked at:
//! - `Host` must name the listener (its IP), a loopback name (`localhost`, `*.localhost`,
//!   `127.0.0.0/8`, `[::1]`) or a host allowed by setting (`--allowed-hosts`), else 403
//!   `forbidden_host`: a DNS-rebinding page reaches us under its own name;
//! - a request that carries `Origin` (every current browser sends one on a cross-site
//!   request, and on any POST) must come from a loopback origin (`http(s)://localhost`,
//!   `*.localhost`, a loopback IP; any port) or one allowed by setting (`--allowed-origins`),
//!   else 403 `forbidden_origin` (`Origin: null` is not loopback); and, unless it is a `GET`,
//!   `HEAD`, `OPTIONS` or `DELETE`, has no body, or comes from a page of the same origin
//!   (its `Origin` names the `Host` it calls), it must be `application/json`, else 415
//!   `unsupported_media_type` (a cross-site `text/plain` POST needs no CORS preflight).
//!
//! Pages of the origins taken get CORS answers ([`finish`]'s CORS layer answers their
//! preflights before these checks); any other origin gets none.
//!
//! Refusals are logged, at most one line every 10 s with a count, so a page that loops
//! cannot fill the disk.
//!
//! Requests without `Origin` (curl, the SDKs, MAG's backend) are not from a browser.
//! The same rule is the MCP spec's for its HTTP transport (2025-11-25, Transports §
//! Security Warning: validate `Origin`, bind to localhost).
//!
//! Limits, from hyper's and tower-http's own settings: [`HEADER_TIMEOUT`] for a request's
//! head (also the idle time a kept-alive connection may wait for its next request: hyper
//! starts the same timer then), [`BODY_TIMEOUT`] between two pieces of a request body,
//! the body limit checked against `Content-Length` before any of the body is read (413 at
//! once), and at most `max_connections` connections at a time: the next ones are answered
//! 503 `too_many_connections` and closed (logged at most every 10 s), or refused outright
//! when even that backlog is full.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

mod body;
pub use body::{body_timeout, read_body, read_json};

/// The longest a client may take to send a request's head, and the longest a kept-alive
/// connection may sit idle before its next request (10 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait for the next piece of a request body (30 s).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a whole request body may take to arrive (60 s), however steadily it
/// trickles.
pub const BODY_DEADLINE: Duration = Duration::from_secs(60);

/// Default cap on open connections (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Connections over the cap that are still answered 503 at one time; beyond these, a new
/// connection is closed at once.
const REFUSALS: usize = 64;

/// `listener` with `TCP_NODELAY` set on every connection it accepts (for `axum::serve`;
/// [`serve`] sets it itself). Without it a response written in pieces (an SSE stream's
/// headers, then its first event) waits for the peer's delayed ACK, about 40 ms on Linux,
/// before its second piece leaves (Nagle's algorithm).
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    })
}

/// What the HTTP edge refuses, shared by both daemons' error types (SPEC §6).
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The request body is not JSON (400).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The request body is JSON of the wrong shape (422).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The request body is larger than the limit, in bytes (413).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The request body paused longer than [`BODY_TIMEOUT`] or took longer than
    /// [`BODY_DEADLINE`] in all (408).
    #[error(
        "the request body did not arrive in time (a pause over {}s, or over {}s in all)",
        BODY_TIMEOUT.as_secs(),
        BODY_DEADLINE.as_secs()
    )]
    BodyTimeout,
    /// No such endpoint (404).
    #[error("no endpoint {0}")]
    NoRoute(String),
    /// The endpoint exists but not with that method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A token is configured and the request did not carry it (401).
    #[error("missing or wrong bearer token (send Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// `Host` names neither this listener nor loopback nor an allowed host (403).
    #[error(
        "Host {0:?} is not this daemon's address nor a loopback name (DNS rebinding?); \
         allow it with --allowed-hosts"
    )]
    ForbiddenHost(String),
    /// `Origin` is not a loopback origin nor an allowed one (403).
    #[error(
        "requests from the web origin {0:?} are refused (a page in a browser?); allow it with \
         --allowed-origins"
    )]
    ForbiddenOrigin(String),
    /// A browser request with a body that is not `application/json` (415).
    #[error("a request with an Origin must be Content-Type: application/json (got {0:?})")]
    UnsupportedMediaType(String),
    /// Every connection slot is taken (503).
    #[error("too many connections (at most {0}); try again later")]
    TooManyConnections(usize),
}

impl EdgeError {
    /// The stable machine-readable code sent as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::NoRoute(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenHost(_) => "forbidden_host",
            Self::ForbiddenOrigin(_) => "forbidden_origin",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyConnections(_) => "too_many_connections",
        }
    }

    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ForbiddenHost(_) | Self::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyConnections(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"detail": self.to_string(), "code": self.code()});
        (self.status(), Json(body)).into_response()
    }
}

/// What a daemon's HTTP edge accepts (see the module docs).
#[derive(Clone)]
pub struct Edge {
    /// The address the API listens on: `Host` may name its IP.
    pub listen: SocketAddr,
    /// When set, every request but a `GET` of `open_paths` wants `Authorization: Bearer
    /// TOKEN`.
    pub token: Option<Arc<str>>,
    /// A second credential a bearer may carry instead of the token (mag-server: MAG's
    /// JWTs); when set, requests without either are refused as with `token`.
    pub bearer: Option<Arc<dyn BearerScheme>>,
    /// The paths served with `GET` without the token (liveness; the OAuth redirect, which
    /// a browser follows and its one-time `state` guards); such a request gets an
    /// [`Authorized`]`(false)` extension.
    pub open_paths: &'static [&'static str],
    /// Web origins allowed besides loopback ones (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Host names allowed besides the listener's and loopback ones (e.g. a reverse proxy's
    /// public name), with or without a port.
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("bearer", &self.bearer.is_some())
            .field("open_paths", &self.open_paths)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

/// A daemon's own bearer credential, checked when the request's bearer is not the token.
pub trait BearerScheme: Send + Sync + 'static {
    /// Whether `credential` (what follows `Bearer `) is valid; when it is, whatever the
    /// handlers need to know of it (e.g. the user) goes into `extensions`.
    fn admit(&self, credential: &str, extensions: &mut axum::http::Extensions) -> bool;
}

/// The credential of `Authorization: Bearer CREDENTIAL` (the scheme in any case, RFC 7235
/// § 2.1), trimmed; empty when absent.
pub fn bearer_credential(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .unwrap_or_default()
}

/// Whether the request carried the token or the daemon's own credential (or neither is
/// configured); set on every request that reaches a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorized(pub bool);

impl Edge {
    /// The host part of a `Host` header value (`h`, `h:port`, `[v6]:port`), lowercase.
    fn host_name(value: &str) -> String {
        let value = value.trim().to_ascii_lowercase();
        if let Some(rest) = value.strip_prefix('[') {
            return rest.split(']').next().unwrap_or_default().to_string();
        }
        match value.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
            _ => value,
        }
    }

    /// Whether `name` (a bare host, lowercase) is loopback: `localhost`, `*.localhost`, or
    /// a loopback IP.
    fn is_loopback_name(name: &str) -> bool {
        name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Checks `Host` (see the module docs). A request without one (HTTP/1.0) is not from a
    /// browser and passes.
    ///
    /// # Errors
    /// [`EdgeError::ForbiddenHost`].
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), EdgeError> {
        let Some(value) = headers.get(header::HOST) else {
            return Ok(());
        };
        let text = value.to_str().unwrap_or_default();
        let name = Self::host_name(text);
        let ip = name.parse::<IpAddr>().ok();
        let listener = ip.is_some_and(|ip| {
            ip == self.listen.ip() || (self.listen.ip().is_unspecified() && !ip.is_multicast())
        });
        let allowed = self.allowed_hosts.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            allowed == text.trim().to_ascii_lowercase() || allowed == name
        });
        if Self::is_loopback_name(&name) || listener || allowed {
            Ok(())
        } else {
            Err(EdgeError::ForbiddenHost(text.chars().take(200).collect()))
        }
    }

    /// Whether a page of `origin` (an `Origin` header's value) may call the API: a
    /// loopback origin (`http(s)://localhost|127.x|[::1][:port]`; not `null`) or one of
    /// `allowed_origins`.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let loopback = url::Url::parse(origin).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|host| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Self::is_loopback_name(&host.to_ascii_lowercase())
                })
        });
        loopback
            || self
                .allowed_origins
                .iter()
                .any(|a| a.trim().trim_end_matches('/').to_ascii_lowercase() == normalized)
    }

    /// Checks `Origin` and, for a browser request with a body, `Content-Type` (see the
    /// module docs).
    ///
    /// # Errors
    /// [`EdgeError::ForbiddenOrigin`], [`EdgeError::UnsupportedMediaType`].
    pub fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), EdgeError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("(not text)").trim();
        if !self.origin_allowed(origin) {
            return Err(EdgeError::ForbiddenOrigin(
                origin.chars().take(200).collect(),
            ));
        }
        // A page served under the very name and port it calls (a frontend behind the same
        // proxy) is same-origin: no cross-site request, whatever its content type.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let same_origin = url::Url::parse(origin).is_ok_and(|url| {
            let authority = match (url.host_str(), url.port()) {
                (Some(name), Some(port)) => format!("{name}:{port}"),
                (Some(name), None) => name.to_string(),
                _ => return false,
            };
            host.is_some_and(|host| host.eq_ignore_ascii_case(&authority))
        });
        // No body, nothing to misread: MAG's frontend (axios) drops `Content-Type` from a
        // POST without data, such as `/api/mcp/connect/NAME`. The listeners speak HTTP/1
        // only, where a body needs `Content-Length` or `Transfer-Encoding`.
        let bodyless = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0");
        if same_origin
            || bodyless
            || [Method::GET, Method::HEAD, Method::OPTIONS, Method::DELETE].contains(method)
        {
            return Ok(());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json" {
            Ok(())
        } else {
            Err(EdgeError::UnsupportedMediaType(
                content_type.chars().take(100).collect(),
            ))
        }
    }
}

/// Adds what both APIs share at the edge to `router`: the checks of [`Edge`] on every
/// request (403, 415, then the token: 401), a JSON 404 for unknown paths and 405 for wrong
/// methods, the body limit (413 from `Content-Length` before reading, or once a body of
/// unknown length passes it). Bodies get their time limits where they are read: by
/// [`read_body`], or [`body_timeout`] for routes whose bodies another library reads.
pub fn finish(router: Router, edge: Edge) -> Router {
    let limit = edge.body_limit;
    let edge = Arc::new(edge);
    let cors = cors(edge.clone());
    let refusals = Arc::new(std::sync::Mutex::new(LogEvery::new(Duration::from_secs(
        10,
    ))));
    router
        .fallback(|uri: Uri| async move { EdgeError::NoRoute(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { EdgeError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Bodies of unknown length (chunked) are cut at the limit as they arrive.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| async move {
                refuse_overlong(request, next, limit).await
            },
        ))
        .layer(axum::middleware::from_fn(
            move |mut request: Request, next: axum::middleware::Next| {
                let (edge, refusals) = (edge.clone(), refusals.clone());
                async move {
                    let checked = edge
                        .check_host(request.headers())
                        .and_then(|()| edge.check_origin(request.method(), request.headers()));
                    if let Err(refused) = checked {
                        let mut log = refusals.lock().unwrap_or_else(|p| p.into_inner());
                        log.log(|n| {
                            tracing::warn!(
                                method = %request.method(), path = %request.uri().path(),
                                "refused at the edge ({n} in the last 10 s): {refused}"
                            )
                        });
                        drop(log);
                        return refused.into_response();
                    }
                    let authorized = match (edge.token.as_deref(), &edge.bearer) {
                        (None, None) => true,
                        (token, bearer) => {
                            token.is_some_and(|token| bearer_matches(request.headers(), token))
                                || bearer.as_ref().is_some_and(|scheme| {
                                    let credential =
                                        bearer_credential(request.headers()).to_owned();
                                    !credential.is_empty()
                                        && scheme.admit(&credential, request.extensions_mut())
                                })
                        }
                    };
                    let open = request.method() == Method::GET
                        && edge.open_paths.contains(&request.uri().path());
                    if !authorized && !open {
                        return EdgeError::Unauthorized.into_response();
                    }
                    request.extensions_mut().insert(Authorized(authorized));
                    next.run(request).await
                }
            },
        ))
        .layer(cors)
}

/// CORS for the pages [`Edge::origin_allowed`] admits (a frontend on another loopback port,
/// e.g. MAG's at `http://localhost:5173`, or an MCP client running in a browser):
/// preflights are answered here, before the token and `Content-Type` checks (a preflight
/// carries neither); a page of any other origin gets no CORS headers, so the browser keeps
/// every answer from it (and the edge refuses its requests anyway). Per the Fetch
/// standard's CORS protocol; MCP's session headers are allowed and exposed.
fn cors(edge: Arc<Edge>) -> tower_http::cors::CorsLayer {
    use axum::http::HeaderName;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let mcp = |name: &'static str| HeaderName::from_static(name);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| edge.origin_allowed(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        // Whatever the page of a taken origin sends (MAG's frontend adds `Cache-Control` to
        // its SSE requests; MAG itself allows every header): it is trusted already.
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers([mcp("mcp-session-id"), mcp("x-conversation-id")])
        .max_age(Duration::from_secs(600))
}

/// How long, and for how many bytes at most, the rest of a body refused as too large is
/// read and thrown away after the 413 is sent, so a client still sending it reads the 413
/// instead of a reset connection (a "lingering close", as nginx does).
const LINGER: (Duration, usize) = (Duration::from_secs(5), 64 * 1024 * 1024);

/// Answers 413 at once to a request whose `Content-Length` is over `limit`, before reading
/// any of its body (which is then drained in the background, see [`LINGER`]); passes the
/// others on.
async fn refuse_overlong(request: Request, next: axum::middleware::Next, limit: usize) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_none_or(|length| length <= limit as u64) {
        return next.run(request).await;
    }
    let mut body = request.into_body().into_data_stream();
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER.0, async {
            while let Some(Ok(chunk)) = body.next().await {
                drained += chunk.len();
                if drained > LINGER.1 {
                    break;
                }
            }
        })
        .await;
    });
    EdgeError::BodyTooLarge(limit).into_response()
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` (the scheme in any case, RFC 7235
/// § 2.1), compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = bearer_credential(headers);
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the open connections to finish their requests (callers bound that wait). HTTP/1.1
/// with hyper's [`HEADER_TIMEOUT`]; at most `max_connections` at a time (see the module
/// docs); `TCP_NODELAY` on each.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let mut over_cap = LogEvery::new(Duration::from_secs(10));
    let mut accept_errors = LogEvery::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        // EMFILE and the like: wait for connections to end.
                        accept_errors.log(|n| tracing::error!(
                            "cannot accept connections ({n} times in the last 10 s): {e}"
                        ));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
        let io = TokioIo::new(tcp);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let service = TowerToHyperService::new(router.clone());
                let connection = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                over_cap.log(|n| {
                    tracing::warn!(
                        max_connections,
                        "connection cap reached: {n} connections answered 503 or refused in \
                         the last 10 s"
                    )
                });
                let Ok(refusal) = refusals.clone().try_acquire_owned() else {
                    continue; // dropped: closed at once
                };
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(2))
                    .keep_alive(false);
                let refuse = hyper::service::service_fn(move |_| async move {
                    let mut response =
                        EdgeError::TooManyConnections(max_connections).into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok::<_, std::convert::Infallible>(response)
                });
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        http.serve_connection(io, refuse),
                    )
                    .await;
                    drop(refusal);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A log line at most once per period, counting what happened meanwhile.
struct LogEvery {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl LogEvery {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            count: 0,
        }
    }

    fn log(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        if self.last.is_none_or(|last| last.elapsed() >= self.period) {
            log(self.count);
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        Edge {
            bearer: None,
            listen: "127.0.0.1:8765".parse().unwrap(),
            token: None,
            open_paths: &["/"],
            allowed_origins: vec!["https://mag.example.com".into()],
            allowed_hosts: vec!["proxy.example.com".into()],
            body_limit: 10,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hosts_must_name_the_listener_or_loopback() {
        let edge = edge();
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:8765",
            "127.0.0.2",
            "proxy.example.com",
            "proxy.example.com:443",
        ] {
            assert!(edge.check_host(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8765",
            "localhost.evil.com",
            "10.0.0.1:8765",
        ] {
            assert!(
                matches!(
                    edge.check_host(&headers(&[("host", bad)])),
                    Err(EdgeError::ForbiddenHost(_))
                ),
                "{bad}"
            );
        }
        assert!(edge.check_host(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn browser_requests_need_a_loopback_or_allowed_origin_and_json() {
        let edge = edge();
        let post = Method::POST;
        let json = ("content-type", "application/json; charset=utf-8");
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1",
            "https://[::1]:3000",
            "http://app.localhost",
            "https://mag.example.com/",
        ] {
            assert!(
                edge.check_origin(&post, &headers(&[("origin", ok), json]))
                    .is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://evil.example",
            "null",
            "file://",
            "http://localhost.evil.com",
        ] {
            assert!(
                matches!(
                    edge.check_origin(&post, &headers(&[("origin", bad), json])),
                    Err(EdgeError::ForbiddenOrigin(_))
                ),
                "{bad}"
            );
        }
        let plain = headers(&[
            ("origin", "http://localhost"),
            ("content-type", "text/plain"),
            ("content-length", "12"),
        ]);
        assert!(matches!(
            edge.check_origin(&post, &plain),
            Err(EdgeError::UnsupportedMediaType(_))
        ));
        let chunked = headers(&[
            ("origin", "http://localhost"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(matches!(
            edge.check_origin(&post, &chunked),
            Err(EdgeError::UnsupportedMediaType(_))
        ));
        // A POST without a body (axios drops the type then) has nothing to misread.
        for empty in [&[("content-length", "0")][..], &[]] {
            let mut empty = headers(empty);
            empty.insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
            assert!(edge.check_origin(&post, &empty).is_ok(), "{empty:?}");
        }
        assert!(edge.check_origin(&Method::GET, &plain).is_ok());
        let same = headers(&[
            ("origin", "http://localhost:9999"),
            ("host", "localhost:9999"),
        ]);
        assert!(edge.check_origin(&post, &same).is_ok());
        assert!(
            edge.check_origin(&post, &headers(&[("content-type", "text/plain")]))
                .is_ok()
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let token = "t0ken";
        assert!(bearer_matches(
            &headers(&[("authorization", "Bearer t0ken")]),
            token
        ));
        assert!(bearer_matches(
            &headers(&[("authorization", "bearer t0ken")]),
            token
        ));
        assert!(bearer_matches(
            &headers(&[("authorization", "BEARER  t0ken")]),
            token
        ));
        assert!(!bearer_matches(
            &headers(&[("authorization", "Basic t0ken")]),
            token
        ));
        assert!(!bearer_matches(
            &headers(&[("authorization", "Bearer t0ke")]),
            token
        ));
        assert!(!bearer_matches(&HeaderMap::new(), token));
    }
}
