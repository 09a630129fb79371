//! What mag-server runs with: CLI flags, `MAG_*` environment variables and the TOML file,
//! merged (SPEC §5).
//!
//! Precedence, per setting: CLI flag > `MAG_*` env var > TOML file > default. The TOML file
//! is `--config FILE` (`MAG_CONFIG`), else `config/mag-server.toml` when it exists. Its keys
//! are the flags' names with `_` for `-` (`client_listen = "127.0.0.1:8765"`); durations are
//! humantime strings (`"1s"`, `"500ms"`). Relative paths are relative to the working
//! directory, in the file as on the command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::llm::Model;

/// The TOML file read when `--config` is not given and the file exists.
pub const DEFAULT_SETTINGS_FILE: &str = "config/mag-server.toml";

/// Default body limit, in bytes (4 MiB, SPEC §6).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The control plane for MCP servers: supervises mcp-client and serves MAG's /api/mcp API.
///
/// Every flag can also be set by its MAG_* environment variable or in the TOML file
/// (config/mag-server.toml by default); a flag wins over the variable, which wins over the
/// file.
#[derive(Debug, Default, Parser)]
#[command(
    name = "mag-server",
    version,
    after_help = "Environment only:\n  \
        MAG_API_TOKEN     every endpoint but GET /health wants `Authorization: Bearer TOKEN`\n  \
        MAG_CLIENT_TOKEN  the token of an mcp-client started elsewhere, to adopt it\n  \
        MONGODB_URL       conversations in this MongoDB (unset or empty: the embedded store\n                    \
                          in the data dir)\n  \
        MONGODB_DB        the database [default: mag]\n  \
        JWT_SECRET_KEY    also accept MAG's access tokens signed with this key (per-user\n                    \
                          conversations; `role: admin` sees all)\n  \
        JWT_ALGORITHM     their algorithm: HS256, HS384 or HS512 [default: HS256]"
)]
pub struct Cli {
    /// The TOML settings file [default: config/mag-server.toml, when it exists].
    #[arg(long, env = "MAG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API (port 0 picks a free one, printed on stdout)
    /// [default: 127.0.0.1:9999].
    #[arg(long, env = "MAG_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The mcp.json that mcp-client serves and the config API edits [default: config/mcp.json].
    #[arg(long, env = "MAG_MCP_CONFIG", value_name = "PATH")]
    pub mcp_config: Option<PathBuf>,
    /// Address of mcp-client's API: adopted when an mcp-client answers there, else where the
    /// spawned one listens (a fixed port) [default: 127.0.0.1:8765].
    #[arg(long, env = "MAG_CLIENT_LISTEN", value_name = "ADDR")]
    pub client_listen: Option<SocketAddr>,
    /// The mcp-client binary [default: the mcp-client next to the mag-server binary].
    #[arg(long, env = "MAG_CLIENT_BIN", value_name = "PATH")]
    pub client_bin: Option<PathBuf>,
    /// Folder for mag-server's log, mcp-client's logs and mcp_client_std{out,err}.log
    /// [default: logs].
    #[arg(long, env = "MAG_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Folder for state: the embedded store, generated tools, the mcp-client token file
    /// [default: data].
    #[arg(long, env = "MAG_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes [default: 4194304].
    #[arg(long, env = "MAG_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,
    /// First wait before restarting an mcp-client that exited; doubles per exit
    /// [default: 1s].
    #[arg(long, env = "MAG_RESTART_BACKOFF", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub restart_backoff: Option<Duration>,
    /// Longest wait between restarts [default: 30s].
    #[arg(long, env = "MAG_RESTART_BACKOFF_MAX", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub restart_backoff_max: Option<Duration>,
    /// Crash-loop guard: this many exits within --crash-loop-window stop the restarts
    /// [default: 5].
    #[arg(long, env = "MAG_CRASH_LOOP_EXITS", value_name = "N")]
    pub crash_loop_exits: Option<u32>,
    /// Crash-loop guard: the window the exits are counted in [default: 60s].
    #[arg(long, env = "MAG_CRASH_LOOP_WINDOW", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub crash_loop_window: Option<Duration>,
    /// How long a stopped mcp-client gets after SIGTERM before SIGKILL [default: 10s].
    #[arg(long, env = "MAG_STOP_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stop_grace: Option<Duration>,
    /// How long a spawned mcp-client may take to answer GET / [default: 30s].
    #[arg(long, env = "MAG_STARTUP_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub startup_timeout: Option<Duration>,
    /// Between polls of a running mcp-client's /servers (and between probes of a client
    /// address another program holds) [default: 2s].
    #[arg(long, env = "MAG_POLL_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,
    /// This many failed polls in a row make a spawned (or taken-back) mcp-client count as
    /// stuck: it is stopped and started again [default: 3].
    #[arg(long, env = "MAG_STUCK_AFTER", value_name = "N")]
    pub stuck_after: Option<u32>,
    /// At most this many connects at once for POST /api/mcp/connect/all and reconnects
    /// after a restart [default: 8].
    #[arg(long, env = "MAG_CONNECT_CONCURRENCY", value_name = "N")]
    pub connect_concurrency: Option<usize>,
    /// The Python that creates generated tools' virtual environments [default: python3].
    #[arg(long, env = "MAG_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Web origins (`scheme://host[:port]`, comma-separated) whose requests are taken, besides
    /// loopback ones (their pages also get CORS answers, e.g. MAG's frontend); any other
    /// Origin is refused (403).
    #[arg(
        long,
        env = "MAG_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Host names (comma-separated) the API answers to besides its own address and loopback
    /// names, e.g. a reverse proxy's public name; any other Host is refused (403).
    #[arg(
        long,
        env = "MAG_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// At most this many open connections; the next ones are answered 503 [default: 512].
    #[arg(long, env = "MAG_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest mcp.json read or written, in bytes (also mcp-client's) [default: 4194304].
    #[arg(long, env = "MAG_CONFIG_LIMIT", value_name = "BYTES")]
    pub config_limit: Option<u64>,
    /// Where authorization servers send the browser back after a user approves a remote
    /// server's OAuth, when the browser reaches mag-server under another address (a reverse
    /// proxy) [default: http://LISTEN/oauth/callback].
    #[arg(long, env = "MAG_OAUTH_REDIRECT_URI", value_name = "URL")]
    pub oauth_redirect_uri: Option<String>,
}

/// The TOML file's keys (the flags' names with `_`); unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    mcp_config: Option<PathBuf>,
    client_listen: Option<SocketAddr>,
    client_bin: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    body_limit: Option<usize>,
    restart_backoff: Option<String>,
    restart_backoff_max: Option<String>,
    crash_loop_exits: Option<u32>,
    crash_loop_window: Option<String>,
    stop_grace: Option<String>,
    startup_timeout: Option<String>,
    poll_interval: Option<String>,
    stuck_after: Option<u32>,
    connect_concurrency: Option<usize>,
    python: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    max_connections: Option<usize>,
    config_limit: Option<u64>,
    oauth_redirect_uri: Option<String>,
    #[serde(default)]
    models: Vec<Model>,
}

/// A token: shown as `***` by `Debug`, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// `None` for an unset or empty value.
    pub fn from_env_value(value: Option<String>) -> Option<Self> {
        value.filter(|v| !v.is_empty()).map(|v| Self(v.into()))
    }

    /// The token itself, for a header or a child's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How mcp-client is supervised.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// First wait before a restart; doubles per exit up to [`Self::restart_backoff_max`].
    pub restart_backoff: Duration,
    /// Longest wait between restarts.
    pub restart_backoff_max: Duration,
    /// This many exits within [`Self::crash_loop_window`] stop the restarts (crash loop).
    pub crash_loop_exits: u32,
    /// The window exits are counted in.
    pub crash_loop_window: Duration,
    /// Between SIGTERM and SIGKILL when stopping the spawned mcp-client.
    pub stop_grace: Duration,
    /// How long a spawned mcp-client may take to answer `GET /`.
    pub startup_timeout: Duration,
    /// Between polls of a running mcp-client's `/servers`, and between probes of a client
    /// address another program holds.
    pub poll_interval: Duration,
    /// Failed polls in a row after which a spawned (or taken-back) mcp-client counts as
    /// stuck and is stopped and started again; at least 1.
    pub stuck_after: u32,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
            crash_loop_exits: 5,
            crash_loop_window: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            stuck_after: 3,
        }
    }
}

/// Everything mag-server runs with, merged and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The API's address.
    pub listen: SocketAddr,
    /// The `mcp.json` edited by the config API and served by mcp-client.
    pub mcp_config: PathBuf,
    /// mcp-client's address (a fixed port).
    pub client_listen: SocketAddr,
    /// The mcp-client binary.
    pub client_bin: PathBuf,
    /// The log folder.
    pub log_dir: PathBuf,
    /// The state folder.
    pub data_dir: PathBuf,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How mcp-client is supervised.
    pub supervision: Supervision,
    /// Bound on concurrent connects (`connect/all`, reconnects).
    pub connect_concurrency: usize,
    /// `MAG_API_TOKEN`: when set, every endpoint but `/health` wants it as a bearer token.
    pub api_token: Option<Secret>,
    /// `JWT_SECRET_KEY` and `JWT_ALGORITHM` (MAG's): when the key is set, MAG's access
    /// tokens are accepted besides `MAG_API_TOKEN`.
    pub jwt: Option<crate::auth::JwtSettings>,
    /// `MAG_CLIENT_TOKEN`: the token of an mcp-client that mag-server adopts rather than
    /// spawns (one it spawns gets a fresh random token).
    pub client_token: Option<Secret>,
    /// The TOML file that was read, if any.
    pub settings_file: Option<PathBuf>,
    /// The Python that creates generated tools' virtual environments.
    pub python: PathBuf,
    /// `MONGODB_URL`: the conversations' MongoDB (may hold a password); `None`: the
    /// embedded store.
    pub mongodb_url: Option<Secret>,
    /// `MONGODB_DB`: the database name.
    pub mongodb_db: String,
    /// The `[[models]]` tables: the LLMs MCP generation may use.
    pub models: Vec<Model>,
    /// Web origins allowed besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Host names allowed besides the listener's and loopback ones.
    pub allowed_hosts: Vec<String>,
    /// At most this many open connections.
    pub max_connections: usize,
    /// Largest `mcp.json` read or written, in bytes.
    pub config_limit: u64,
    /// The OAuth redirect URI mcp-client is started with; `None`: mag-server's own
    /// `/oauth/callback` on its bound address.
    pub oauth_redirect_uri: Option<String>,
}

/// The variables that hold mag-server's own secrets besides the models' keys: never passed
/// to mcp-client (nor so to any MCP server).
pub const SECRET_ENV: [&str; 4] = [
    "MAG_API_TOKEN",
    "MAG_CLIENT_TOKEN",
    "JWT_SECRET_KEY",
    "MONGODB_URL",
];

/// [`Settings::mongodb_db`] when `MONGODB_DB` is unset.
pub const DEFAULT_MONGODB_DB: &str = "mag";

/// Why the settings cannot be used: the message names the file or setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl Settings {
    /// Merges the CLI (with its env fallbacks) over the TOML file over the defaults, and
    /// reads `MAG_API_TOKEN`, `MAG_CLIENT_TOKEN`, `MONGODB_URL` and `MONGODB_DB` from the
    /// environment.
    ///
    /// # Errors
    /// The TOML file is missing (when named), unreadable or invalid; a value is out of range.
    pub fn resolve(cli: Cli) -> Result<Self, SettingsError> {
        let mut settings = Self::merge(cli, std::env::current_exe().ok())?;
        settings.api_token = token_from_env("MAG_API_TOKEN")?;
        settings.client_token = token_from_env("MAG_CLIENT_TOKEN")?;
        if let Some(key) = token_from_env("JWT_SECRET_KEY")? {
            let algorithm = std::env::var("JWT_ALGORITHM").unwrap_or_else(|_| "HS256".into());
            settings.jwt = Some(
                crate::auth::JwtSettings::new(key, &algorithm)
                    .map_err(|e| SettingsError(format!("JWT_ALGORITHM: {e}")))?,
            );
        }
        settings.mongodb_url = Secret::from_env_value(std::env::var("MONGODB_URL").ok());
        if let Some(db) = std::env::var("MONGODB_DB").ok().filter(|d| !d.is_empty()) {
            settings.mongodb_db = db;
        }
        Ok(settings)
    }

    /// The names of the variables holding mag-server's secrets: [`SECRET_ENV`] and each
    /// model's `api_key_env`.
    pub fn secret_env(&self) -> Vec<String> {
        SECRET_ENV
            .iter()
            .map(|name| name.to_string())
            .chain(self.models.iter().filter_map(|m| m.api_key_env.clone()))
            .collect()
    }

    /// [`Self::resolve`] without the environment-only values; `exe` is mag-server's own path
    /// (the default `client_bin` is its sibling `mcp-client`).
    ///
    /// # Errors
    /// As [`Self::resolve`].
    pub fn merge(cli: Cli, exe: Option<PathBuf>) -> Result<Self, SettingsError> {
        let (file, settings_file) = match &cli.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None if Path::new(DEFAULT_SETTINGS_FILE).is_file() => (
                read_file(Path::new(DEFAULT_SETTINGS_FILE))?,
                Some(DEFAULT_SETTINGS_FILE.into()),
            ),
            None => (FileSettings::default(), None),
        };
        let defaults = Supervision::default();
        let duration =
            |flag: Option<Duration>, text: Option<String>, key: &str, default| match (flag, text) {
                (Some(d), _) => Ok(d),
                (None, Some(text)) => humantime::parse_duration(&text)
                    .map_err(|e| SettingsError(format!("{key} = {text:?}: {e}"))),
                (None, None) => Ok(default),
            };
        let supervision = Supervision {
            restart_backoff: duration(
                cli.restart_backoff,
                file.restart_backoff,
                "restart_backoff",
                defaults.restart_backoff,
            )?,
            restart_backoff_max: duration(
                cli.restart_backoff_max,
                file.restart_backoff_max,
                "restart_backoff_max",
                defaults.restart_backoff_max,
            )?,
            crash_loop_exits: cli
                .crash_loop_exits
                .or(file.crash_loop_exits)
                .unwrap_or(defaults.crash_loop_exits),
            crash_loop_window: duration(
                cli.crash_loop_window,
                file.crash_loop_window,
                "crash_loop_window",
                defaults.crash_loop_window,
            )?,
            stop_grace: duration(
                cli.stop_grace,
                file.stop_grace,
                "stop_grace",
                defaults.stop_grace,
            )?,
            startup_timeout: duration(
                cli.startup_timeout,
                file.startup_timeout,
                "startup_timeout",
                defaults.startup_timeout,
            )?,
            poll_interval: duration(
                cli.poll_interval,
                file.poll_interval,
                "poll_interval",
                defaults.poll_interval,
            )?,
            stuck_after: cli
                .stuck_after
                .or(file.stuck_after)
                .unwrap_or(defaults.stuck_after),
        };
        let default_client_bin = exe
            .as_deref()
            .and_then(Path::parent)
            .map(|dir| dir.join("mcp-client"))
            .unwrap_or_else(|| PathBuf::from("mcp-client"));
        let settings = Self {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9999))),
            mcp_config: cli
                .mcp_config
                .or(file.mcp_config)
                .unwrap_or_else(|| "config/mcp.json".into()),
            client_listen: cli
                .client_listen
                .or(file.client_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8765))),
            client_bin: cli
                .client_bin
                .or(file.client_bin)
                .unwrap_or(default_client_bin),
            log_dir: cli
                .log_dir
                .or(file.log_dir)
                .unwrap_or_else(|| "logs".into()),
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "data".into()),
            body_limit: cli
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            supervision,
            connect_concurrency: cli
                .connect_concurrency
                .or(file.connect_concurrency)
                .unwrap_or(8),
            api_token: None,
            jwt: None,
            client_token: None,
            settings_file,
            python: cli
                .python
                .or(file.python)
                .unwrap_or_else(|| "python3".into()),
            mongodb_url: None,
            mongodb_db: DEFAULT_MONGODB_DB.into(),
            models: file.models,
            allowed_origins: cli
                .allowed_origins
                .or(file.allowed_origins)
                .unwrap_or_default(),
            allowed_hosts: cli.allowed_hosts.or(file.allowed_hosts).unwrap_or_default(),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(mag_common::http_edge::DEFAULT_MAX_CONNECTIONS),
            config_limit: cli
                .config_limit
                .or(file.config_limit)
                .unwrap_or(mag_common::config::DEFAULT_CONFIG_LIMIT),
            oauth_redirect_uri: cli.oauth_redirect_uri.or(file.oauth_redirect_uri),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), SettingsError> {
        let fail = |text: &str| Err(SettingsError(text.into()));
        if self.client_listen.port() == 0 {
            return fail(
                "client_listen needs a fixed port: mag-server adopts or starts mcp-client there",
            );
        }
        if self.body_limit == 0 {
            return fail("body_limit must be at least 1 byte");
        }
        if self.connect_concurrency == 0 {
            return fail("connect_concurrency must be at least 1");
        }
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1");
        }
        if self.config_limit == 0 {
            return fail("config_limit must be at least 1 byte");
        }
        let s = &self.supervision;
        if s.crash_loop_exits == 0 {
            return fail("crash_loop_exits must be at least 1");
        }
        if s.restart_backoff.is_zero() || s.restart_backoff > s.restart_backoff_max {
            return fail("restart_backoff must be above 0 and at most restart_backoff_max");
        }
        if s.startup_timeout.is_zero() {
            return fail("startup_timeout must be above 0");
        }
        if s.poll_interval.is_zero() {
            return fail("poll_interval must be above 0");
        }
        if s.stuck_after == 0 {
            return fail("stuck_after must be at least 1");
        }
        for (i, model) in self.models.iter().enumerate() {
            model.check().map_err(SettingsError)?;
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return fail(&format!("two [[models]] tables are named {:?}", model.name));
            }
        }
        Ok(())
    }
}

/// A token from the environment: `None` when unset.
///
/// # Errors
/// Set but empty (or blank): that would quietly turn authentication off.
fn token_from_env(name: &str) -> Result<Option<Secret>, SettingsError> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(value) if value.trim().is_empty() => Err(SettingsError(format!(
            "{name} is set but empty: unset it to run without a token, or give it a value"
        ))),
        Ok(value) => Ok(Secret::from_env_value(Some(value))),
    }
}

fn read_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| SettingsError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn cli_with(file: &tempfile::NamedTempFile) -> Cli {
        Cli {
            config: Some(file.path().into()),
            ..Cli::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = write(
            "listen = \"127.0.0.1:1\"\nlog_dir = \"/l\"\nrestart_backoff = \"250ms\"\n\
             [[models]]\nname = \"m\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"x\"\n",
        );
        let mut cli = cli_with(&file);
        cli.listen = Some("127.0.0.1:2".parse().unwrap());
        let settings = Settings::merge(cli, Some("/opt/mag/mag-server".into())).unwrap();
        assert_eq!(settings.listen.port(), 2);
        assert_eq!(settings.log_dir, Path::new("/l"));
        assert_eq!(
            settings.supervision.restart_backoff,
            Duration::from_millis(250)
        );
        assert_eq!(settings.data_dir, Path::new("data"));
        assert_eq!(settings.mcp_config, Path::new("config/mcp.json"));
        assert_eq!(settings.client_listen.port(), 8765);
        assert_eq!(settings.client_bin, Path::new("/opt/mag/mcp-client"));
        assert_eq!(settings.body_limit, DEFAULT_BODY_LIMIT);
        assert_eq!(settings.models.len(), 1);
    }

    #[test]
    fn bad_files_and_values_are_reported() {
        let typo = write("lisen = \"127.0.0.1:1\"\n");
        let err = Settings::merge(cli_with(&typo), None).unwrap_err();
        assert!(err.0.contains("lisen"), "{err}");
        let bad = write("restart_backoff = \"soon\"\n");
        let err = Settings::merge(cli_with(&bad), None).unwrap_err();
        assert!(err.0.contains("restart_backoff"), "{err}");
        let port0 = write("client_listen = \"127.0.0.1:0\"\n");
        let err = Settings::merge(cli_with(&port0), None).unwrap_err();
        assert!(err.0.contains("fixed port"), "{err}");
        let model = write("[[models]]\nname = \"m\"\nbase_url = \"ftp://x\"\nmodel = \"x\"\n");
        let err = Settings::merge(cli_with(&model), None).unwrap_err();
        assert!(err.0.contains("base_url"), "{err}");
        let missing = Cli {
            config: Some("/nonexistent/mag.toml".into()),
            ..Cli::default()
        };
        let err = Settings::merge(missing, None).unwrap_err();
        assert!(err.0.contains("/nonexistent/mag.toml"), "{err}");
    }

    #[test]
    fn stuck_detection_is_set_by_the_file_or_a_flag_and_checked() {
        let defaults = Settings::merge(Cli::default(), None).unwrap().supervision;
        assert_eq!(defaults.poll_interval, Duration::from_secs(2));
        assert_eq!(defaults.stuck_after, 3);
        let file = write("poll_interval = \"250ms\"\nstuck_after = 5\n");
        let mut cli = cli_with(&file);
        let settings = Settings::merge(cli_with(&file), None).unwrap().supervision;
        assert_eq!(settings.poll_interval, Duration::from_millis(250));
        assert_eq!(settings.stuck_after, 5);
        cli.stuck_after = Some(2);
        assert_eq!(
            Settings::merge(cli, None).unwrap().supervision.stuck_after,
            2
        );
        for (text, key) in [
            ("poll_interval = \"0s\"\n", "poll_interval"),
            ("poll_interval = \"often\"\n", "poll_interval"),
            ("stuck_after = 0\n", "stuck_after"),
        ] {
            let err = Settings::merge(cli_with(&write(text)), None).unwrap_err();
            assert!(err.0.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_shipped_settings_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mag-server.toml");
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        Settings::merge(cli, None).unwrap();
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::from_env_value(Some("hunter2".into())).unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(Secret::from_env_value(Some(String::new())).is_none());
    }
}
