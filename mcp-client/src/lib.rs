//! mcp-client: the daemon that owns connections to MCP servers and serves them over a local
//! HTTP API (SPEC §4).
//!
//! The `mcp.json` types, the HTTP edge, secret redaction and the process-group helper are
//! in `mag_common`, shared with mag-server. Modules by concern: [`watch`] (hot reload), [`transport`] (stdio,
//! legacy SSE, streamable HTTP), [`connection`] (one MCP session), [`supervisor`] (the servers
//! and their state; the core), [`ledger`] (process groups that must not outlive us), [`api`]
//! (thin HTTP handlers), [`metrics`], [`logs`] (per-server log files),
//! [`error`].

pub mod api;
pub mod cli;
pub mod connection;
pub mod error;
pub mod gateway;
pub mod ledger;
pub mod logs;
pub mod metrics;
pub mod oauth;
pub mod schema;
pub mod subreaper;
pub mod supervisor;
pub mod transport;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

use mag_common::{http_edge, secrets};

use crate::api::AppState;
use crate::connection::ConnectContext;
use crate::supervisor::Supervisor;

/// How long shutdown may take before the daemon exits anyway: servers get their grace period,
/// HTTP requests in flight get to finish.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// What the daemon runs with (the CLI's flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The `mcp.json` to load.
    pub config: PathBuf,
    /// Where server logs go (`servers/NAME.stderr.log`).
    pub log_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest config file read, in bytes.
    pub config_limit: u64,
    /// The API token (`--token-env`): every endpoint but `GET /` wants
    /// `Authorization: Bearer TOKEN`. `None`: no token.
    pub token: Option<String>,
    /// Web origins allowed besides loopback ones (`--allowed-origins`).
    pub allowed_origins: Vec<String>,
    /// Host names allowed besides the listener's and loopback ones (`--allowed-hosts`).
    pub allowed_hosts: Vec<String>,
    /// At most this many open connections (`--max-connections`).
    pub max_connections: usize,
    /// Environment variables removed from every server's environment (the token's).
    pub scrub_env: Vec<String>,
    /// How often connected servers are pinged; `None`: never.
    pub ping_interval: Option<Duration>,
    /// Between server and name in the gateway's public names (`--name-separator`).
    pub name_separator: String,
    /// How long an idle MCP client session of the gateway lives (`--session-idle`).
    pub session_idle: Duration,
    /// At most this many MCP client sessions of the gateway at once (`--max-sessions`).
    pub max_sessions: usize,
    /// What the daemon keeps across restarts: the OAuth token file (`--data-dir`).
    pub data_dir: PathBuf,
    /// Where authorization servers redirect to (`--oauth-redirect-uri`); `None`: this
    /// listener's `/oauth/callback`.
    pub oauth_redirect_uri: Option<String>,
    /// mcp-client's OAuth client ID metadata document (`--oauth-client-metadata-url`).
    pub oauth_client_metadata_url: Option<String>,
}

/// Runs the daemon on `listener` until `shutdown` resolves or `POST /shutdown` is called;
/// then stops taking requests, ends every server process and returns.
///
/// Once the config is loaded and watched and the API is about to serve, it prints one line on
/// stdout, `mcp-client listening on http://ADDR`, for whoever started it (mag-server, tests):
/// from then on the config file's changes are seen.
///
/// A config file that is missing or invalid does not stop the daemon: it starts with no
/// servers and `GET /` reports the error. Before anything starts, the server processes a
/// SIGKILLed previous run left behind (per the [`ledger::Ledger`] in the log dir) are ended.
///
/// # Errors
/// Another daemon uses the log dir.
pub async fn run(
    options: Options,
    listener: TcpListener,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<()> {
    subreaper::start();
    // Ending a crashed run's leftovers waits for them: off the async threads.
    let log_dir = options.log_dir.clone();
    let (ledger, leftovers) = tokio::task::spawn_blocking(move || ledger::Ledger::open(&log_dir))
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened.map_err(std::io::Error::other))
        .map_err(|source| Error::Io {
            context: "cannot take the process ledger".into(),
            source,
        })?;
    if leftovers > 0 {
        tracing::warn!(
            leftovers,
            "ended server processes a previous run left behind"
        );
    }
    if let Some(token) = &options.token {
        secrets::global().set("token", [(token.clone(), "***".to_string())]);
    }
    mag_common::install_tls_provider();
    // Building a client reads the system's CA certificates: once, off the async threads.
    let clients = tokio::task::spawn_blocking(|| {
        let sse = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok::<_, reqwest::Error>((sse, transport::http::RepairingClient::new()?))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|built| built.map_err(std::io::Error::other));
    let (http, streamable_http) = clients.map_err(|source| Error::Io {
        context: "cannot build the HTTP client".into(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        context: "cannot read the bound address".into(),
        source,
    })?;
    let data_dir = options.data_dir.clone();
    let tokens = tokio::task::spawn_blocking(move || oauth::store::TokenFile::open(&data_dir))
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened)
        .map_err(|source| Error::Io {
            context: "cannot read the OAuth token file".into(),
            source,
        })?;
    let redirect_uri = options
        .oauth_redirect_uri
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/oauth/callback"));
    let oauth = std::sync::Arc::new(oauth::OAuth::new(
        tokens,
        redirect_uri,
        options.oauth_client_metadata_url.clone(),
        streamable_http.clone(),
    ));
    let ledger = std::sync::Arc::new(ledger);
    let supervisor = Supervisor::new(
        ConnectContext {
            log_dir: options.log_dir.clone(),
            http,
            streamable_http,
            scrub_env: options.scrub_env.clone(),
            remote_secrets: Default::default(),
            ledger: ledger.clone(),
            ping_interval: options.ping_interval,
            tasks: tokio_util::task::TaskTracker::new(),
            events: tokio::sync::broadcast::channel(connection::EVENT_BACKLOG).0,
            oauth,
        },
        options.config.clone(),
        options.config_limit,
    );
    // Applying the config also starts connecting its `autoConnect` servers.
    if let Err(e) = supervisor.load_file(&options.config).await {
        tracing::error!("starting without servers: the config was not applied: {e}");
    }

    let stop = CancellationToken::new();
    if let Err(e) =
        watch::watch_config(supervisor.clone(), options.config.clone(), stop.clone()).await
    {
        tracing::error!("hot reload is off: {e}");
    }
    let edge = http_edge::Edge {
        bearer: None,
        listen: addr,
        token: options.token.as_deref().map(Into::into),
        open_paths: &["/", "/oauth/callback"],
        allowed_origins: options.allowed_origins.clone(),
        allowed_hosts: options.allowed_hosts.clone(),
        body_limit: options.body_limit,
    };
    let gateway = gateway::Gateway::new(
        supervisor.clone(),
        gateway::GatewayOptions {
            separator: options.name_separator.clone(),
            session_idle: options.session_idle,
            body_limit: options.body_limit,
            max_sessions: options.max_sessions,
        },
        stop.clone(),
    );
    let app = api::router(
        AppState {
            supervisor: supervisor.clone(),
            shutdown: stop.clone(),
            body_limit: options.body_limit,
        },
        edge,
        gateway,
    );
    // The two tasks not on the supervisor's tracker: this one only waits for the signal
    // (and is dropped with the runtime), the HTTP server's is awaited below.
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal_stop.cancel();
    });
    println!("mcp-client listening on http://{addr}");
    tracing::info!(%addr, pid = std::process::id(), "mcp-client listening");
    let stopped = stop.clone();
    let max_connections = options.max_connections;
    let server = tokio::spawn(async move {
        http_edge::serve(listener, app, max_connections, stopped.cancelled_owned()).await;
    });
    stop.cancelled().await;
    tracing::info!("shutting down: ending every server");
    // Every server ended and every tracked task done (`Supervisor::shutdown`), requests in
    // flight answered: within the bound.
    let drained = tokio::time::timeout(SHUTDOWN_BOUND, async {
        supervisor.shutdown().await;
        server.await
    })
    .await;
    subreaper::end_all(transport::stdio::STOP_GRACE).await;
    // The ledger's writer records the groups' ends (the empty set) before we exit.
    let _ = tokio::task::spawn_blocking(move || ledger.flush(Duration::from_secs(1))).await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("the HTTP server task failed: {e}"),
        Err(_) => tracing::warn!("shutdown took longer than {SHUTDOWN_BOUND:?}; exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the API's listener, with a message that names the address on failure.
///
/// # Errors
/// [`Error::Io`]: the address is in use or not available.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("cannot listen on {addr}"),
        source,
    })
}
