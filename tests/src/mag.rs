//! Support for mag-server end-to-end tests: the real `mag-server` binary, which starts the
//! real `mcp-client` binary, in a temp folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Proc, free_port, listen_url, workspace_bin};

/// The `mag-server` binary (see [`workspace_bin`]).
pub fn mag_server_bin() -> PathBuf {
    workspace_bin("mag-server")
}

/// The environment variables mag-server reads (its `MAG_*` ones, and `MONGODB_URL` and
/// `MONGODB_DB`); cleared so the developer's own do not leak into a test, which passes
/// those it wants in [`MagOptions::env`].
const MAG_ENV: &[&str] = &[
    "MAG_CONFIG",
    "MAG_LISTEN",
    "MAG_MCP_CONFIG",
    "MAG_CLIENT_LISTEN",
    "MAG_CLIENT_BIN",
    "MAG_LOG_DIR",
    "MAG_DATA_DIR",
    "MAG_BODY_LIMIT",
    "MAG_API_TOKEN",
    "MAG_CLIENT_TOKEN",
    "MAG_RESTART_BACKOFF",
    "MAG_RESTART_BACKOFF_MAX",
    "MAG_CRASH_LOOP_EXITS",
    "MAG_CRASH_LOOP_WINDOW",
    "MAG_STOP_GRACE",
    "MAG_STARTUP_TIMEOUT",
    "MAG_POLL_INTERVAL",
    "MAG_STUCK_AFTER",
    "MAG_CONNECT_CONCURRENCY",
    "MAG_PYTHON",
    "MAG_OAUTH_REDIRECT_URI",
    "MONGODB_URL",
    "MONGODB_DB",
];

/// How to start mag-server; see [`MagServer::start_with`].
#[derive(Debug, Default, Clone)]
pub struct MagOptions {
    /// `mcpServers` of the `mcp.json` written into the temp folder (ignored when
    /// `mcp_config` is set).
    pub servers: Value,
    /// Another `mcp.json` to use (`--mcp-config`), e.g. an adopted client's.
    pub mcp_config: Option<PathBuf>,
    /// The client port (`--client-listen 127.0.0.1:PORT`); a free one when `None`.
    pub client_port: Option<u16>,
    /// Extra CLI arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `mag-server` in a temp folder (its working directory, holding `mcp.json`,
/// `logs/` and `data/`), ended when dropped.
pub struct MagServer {
    /// The process.
    pub proc: Proc,
    /// Base URL of its API, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its working directory.
    pub dir: tempfile::TempDir,
    /// The `mcp.json` it edits.
    pub config: PathBuf,
    /// mcp-client's port.
    pub client_port: u16,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
    options: MagOptions,
    http: reqwest::Client,
}

/// Starts `mag-server` in `dir` and reads the address it listens on.
fn launch(dir: &Path, config: &Path, client_port: u16, options: &MagOptions) -> (Proc, String) {
    let mut command = command(dir, config, client_port, options);
    let mut proc = Proc::spawn(&mut command);
    let base = listen_url(&mut proc, "mag-server");
    (proc, base)
}

/// The mag-server command line the harness runs in `dir` (its `logs/` and `data/`), with
/// `config`, mcp-client on 127.0.0.1:`client_port`, the API on a free port printed on
/// stdout (piped), and `options`' extra args and env.
pub fn command(dir: &Path, config: &Path, client_port: u16, options: &MagOptions) -> Command {
    workspace_bin("mcp-client");
    let mut command = Command::new(mag_server_bin());
    for name in MAG_ENV {
        command.env_remove(name);
    }
    command
        .current_dir(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--client-listen")
        .arg(format!("127.0.0.1:{client_port}"))
        .arg("--mcp-config")
        .arg(config)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(&options.args)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info,mag_server=debug")
        .stdout(Stdio::piped());
    command
}

impl MagServer {
    /// Starts mag-server with `{"mcpServers": servers}` and waits until it listens (not
    /// until mcp-client is up: see [`Self::wait_running`]).
    pub fn start(servers: Value) -> Self {
        Self::start_with(MagOptions {
            servers,
            ..MagOptions::default()
        })
    }

    /// Starts mag-server as `options` say and waits until it listens.
    pub fn start_with(options: MagOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = match options.mcp_config.clone() {
            Some(path) => path,
            None => {
                let path = dir.path().join("mcp.json");
                let text = serde_json::to_string_pretty(&json!({"mcpServers": options.servers}));
                std::fs::write(&path, text.unwrap()).unwrap();
                path
            }
        };
        let client_port = options.client_port.unwrap_or_else(free_port);
        let (proc, base) = launch(dir.path(), &config, client_port, &options);
        mag_common::install_tls_provider();
        Self {
            proc,
            base,
            dir,
            config,
            client_port,
            options,
            token: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    /// Stops it (SIGTERM) and starts a new mag-server with the same options on the same
    /// folder: same `mcp.json`, `logs/`, `data/` and client port.
    pub fn restart(&mut self) {
        self.terminate();
        let (proc, base) = launch(
            self.dir.path(),
            &self.config,
            self.client_port,
            &self.options,
        );
        self.proc = proc;
        self.base = base;
    }

    /// `DELETE path`: status and JSON body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request_within(
            reqwest::Method::DELETE,
            path,
            None,
            Duration::from_secs(120),
        )
        .await
        .unwrap_or_else(|| panic!("DELETE {path}: no answer"))
    }

    /// SIGKILL (a crash: it stops nothing), then waits up to 10 s for it to be gone.
    pub fn kill(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        self.proc
            .wait_timeout(Duration::from_secs(10))
            .expect("SIGKILL ends mag-server");
    }

    /// SIGTERM, then waits up to 30 s for it to exit; its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        let exit = self.proc.wait_timeout(Duration::from_secs(30));
        exit.expect("mag-server did not exit within 30 s of SIGTERM")
            .code()
    }

    /// `logs/NAME` in its folder.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    /// `METHOD path` with an optional JSON body, sent within `within`: status and JSON
    /// body, or `None` when no answer came in time.
    pub async fn request_within(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        within: Duration,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(within);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Some((status, body))
    }

    /// `GET path`: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request_within(reqwest::Method::GET, path, None, Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    /// `PUT path` with a JSON body: status and JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let body = Some(body.to_string());
        self.request_within(reqwest::Method::PUT, path, body, Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("PUT {path}: no answer"))
    }

    /// `POST path` with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// `POST path` with this text as the body.
    pub async fn post_raw(&self, path: &str, body: impl Into<String>) -> (u16, Value) {
        let body = Some(body.into());
        self.request_within(reqwest::Method::POST, path, body, Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("POST {path}: no answer"))
    }

    /// `/health`'s `mcp_client` object.
    pub async fn client_status(&self) -> Value {
        let (status, health) = self.get("/health").await;
        assert_eq!(status, 200, "{health}");
        health["mcp_client"].clone()
    }

    /// Polls `/health` until `done` holds for `mcp_client` (up to `within`); that object.
    pub async fn wait_client(&self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.client_status().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mcp-client not as expected after {within:?}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until mcp-client is `running` (spawned) or `adopted`; `/health`'s
    /// `mcp_client`.
    pub async fn wait_running(&self) -> Value {
        self.wait_client(Duration::from_secs(30), |s| {
            s["state"] == "running" || s["state"] == "adopted"
        })
        .await
    }

    /// `POST /api/mcp/config` with `{"config": config, "version": version}`.
    pub async fn post_config(&self, config: Value, version: &Value) -> (u16, Value) {
        self.post(
            "/api/mcp/config",
            json!({"config": config, "version": version}),
        )
        .await
    }

    /// `GET /api/mcp/config`'s `version`.
    pub async fn version(&self) -> String {
        let (status, config) = self.get("/api/mcp/config").await;
        assert_eq!(status, 200, "{config}");
        config["version"].as_str().expect("version").to_string()
    }

    /// Connects `server` through mag-server, panicking with the answer unless it is 200.
    pub async fn connect(&self, server: &str) -> Value {
        let (status, body) = self
            .post(&format!("/api/mcp/connect/{server}"), json!({}))
            .await;
        assert_eq!(status, 200, "connect {server}: {body}");
        body
    }

    /// `POST /api/mcp/test-tool`: status and answer.
    pub async fn test_tool(&self, server: &str, tool: &str, params: Value) -> (u16, Value) {
        self.post(
            "/api/mcp/test-tool",
            json!({"server_name": server, "tool_name": tool, "params": params}),
        )
        .await
    }

    /// The pids of the MCP server processes mcp-client reports.
    pub async fn server_pids(&self) -> Vec<u32> {
        let (status, servers) = self.get("/api/mcp/status").await;
        assert_eq!(status, 200, "{servers}");
        servers
            .as_object()
            .expect("servers")
            .values()
            .filter_map(|s| s["pid"].as_u64())
            .map(|p| p as u32)
            .collect()
    }
}

/// A MAG access or refresh token (`kind`: `"access"` | `"refresh"`), HS256 over `secret`:
/// claims `sub`, `type`, `role`, `exp` = now + `exp_in` seconds (negative: expired).
pub fn mag_jwt(secret: &str, sub: &str, kind: &str, role: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "type": kind, "role": role, "exp": now + exp_in}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("an HS256 token")
}

/// A shell script in `dir` that runs `body`, made executable; its path.
pub fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
