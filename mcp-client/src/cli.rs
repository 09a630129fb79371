//! The `mcp-client` program: its command line, the log, the runtime and the signals; the
//! binary only calls [`main`]. (Here rather than in `main.rs`, so the daemon is compiled
//! once, in the library, not again in the binary.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Keeps connections to MCP servers and serves their tools over a local HTTP API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The mcp.json listing the servers.
    #[arg(long, default_value = "config/mcp.json")]
    config: PathBuf,
    /// Address of the HTTP API (loopback unless you mean it; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// Folder for the daemon's log and servers/NAME.stderr.log.
    #[arg(long, default_value = "logs")]
    log_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = crate::api::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Largest config file read, in bytes; a larger one is a config error.
    #[arg(long, default_value_t = mag_common::config::DEFAULT_CONFIG_LIMIT, value_name = "BYTES")]
    config_limit: u64,
    /// Web origins (scheme://host[:port], comma-separated) whose requests are taken, besides
    /// loopback ones (their pages also get CORS answers); a request with any other Origin is
    /// refused (403).
    #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
    allowed_origins: Vec<String>,
    /// Host names (comma-separated) the API answers to besides its own address and loopback
    /// names, e.g. a reverse proxy's; any other Host is refused (403, DNS rebinding).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    allowed_hosts: Vec<String>,
    /// At most this many open connections; the next ones are answered 503 and closed.
    #[arg(long, default_value_t = mag_common::http_edge::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// Name of an environment variable holding an API token: every endpoint but GET / then
    /// wants `Authorization: Bearer TOKEN`. The variable is kept from server processes.
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,
    /// Seconds between health pings of each connected server (MCP ping); 0 turns them off.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    ping_interval: f64,
    /// Between server and name in the MCP gateway's public tool and prompt names (`/mcp`):
    /// `__` (SERVER__NAME, what LLM APIs accept) or `.` (the server.tool style).
    #[arg(long, default_value = crate::gateway::names::DEFAULT_SEPARATOR, value_parser = ["__", "."])]
    name_separator: String,
    /// An MCP client session of the gateway that sends nothing for this long ends (e.g.
    /// `30m`, `90s`).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    session_idle: std::time::Duration,
    /// At most this many MCP client sessions of the gateway at once; a new one beyond it is
    /// answered 503 (each costs ~60 KiB and lives until it ends or idles out).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_sessions: usize,
    /// Folder for what the daemon keeps across restarts: the OAuth tokens of remote servers
    /// (oauth-tokens.json, mode 0600).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Where authorization servers send the user back after approving mcp-client's access
    /// (default: this API's own /oauth/callback); set it when the browser reaches the daemon
    /// under another address (mag-server forwards its own /oauth/callback).
    #[arg(long, value_name = "URL")]
    oauth_redirect_uri: Option<String>,
    /// An https URL where mcp-client's OAuth client ID metadata document is published; used
    /// as the client id by authorization servers that take such documents (instead of
    /// registering).
    #[arg(long, value_name = "URL")]
    oauth_client_metadata_url: Option<String>,
}

/// Parses the command line and runs the daemon until a signal or `POST /shutdown`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let token = match &cli.token_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(token) if !token.is_empty() => Some(token),
            _ => {
                eprintln!("mcp-client: --token-env {name}: the variable is not set or empty");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = std::fs::create_dir_all(&cli.log_dir) {
        eprintln!(
            "mcp-client: cannot create the log dir {}: {e}",
            cli.log_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let _flush_on_exit =
        mag_common::logging::init_tracing(&cli.log_dir, "mcp-client.log", "info,rmcp=warn");

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mcp-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = crate::bind(cli.listen).await?;
        let addr = listener.local_addr().map_err(|source| crate::Error::Io {
            context: "cannot read the bound address".into(),
            source,
        })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the API listens beyond loopback");
        }
        let options = crate::Options {
            config: cli.config,
            log_dir: cli.log_dir,
            body_limit: cli.body_limit,
            config_limit: cli.config_limit,
            token,
            allowed_origins: cli.allowed_origins,
            allowed_hosts: cli.allowed_hosts,
            max_connections: cli.max_connections,
            scrub_env: cli.token_env.into_iter().collect(),
            ping_interval: (cli.ping_interval > 0.0)
                .then(|| std::time::Duration::try_from_secs_f64(cli.ping_interval).ok())
                .flatten(),
            name_separator: cli.name_separator,
            session_idle: cli.session_idle,
            max_sessions: cli.max_sessions,
            data_dir: cli.data_dir,
            oauth_redirect_uri: cli.oauth_redirect_uri,
            oauth_client_metadata_url: cli.oauth_client_metadata_url,
        };
        crate::run(options, listener, Box::pin(shutdown_signal())).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mcp-client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; use POST /shutdown");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
