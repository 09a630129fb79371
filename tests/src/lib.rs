//! End-to-end test support: the real `mcp-client` binary, real MCP servers (SPEC §7), and
//! the means to install them.
//!
//! The peers (npm `@modelcontextprotocol/server-everything`, `server-filesystem`, the
//! conformance suite with the Node 22 it needs; PyPI `mcp`, `mcp-server-time` and the
//! MongoDB-wire server `secantusdb`, and in a second venv `mcp==1.9.4`, MAG's pin) are installed on first use into `$MAG_TEST_PEERS`
//! (default `~/.cache/mag-test-peers`) with npm and pip, once per machine, with a
//! wheelhouse of `mcp` and its dependencies for offline installs into fresh venvs: a stamp
//! file records the pinned versions, and a file lock makes concurrent test processes wait
//! for one installer.
//!
//! [`mongo`] runs SecantusDB; [`llm`] is a scripted OpenAI-compatible endpoint.

pub mod llm;
pub mod mag;
pub mod mongo;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The npm packages the tests use, pinned.
const NPM_PACKAGES: &[(&str, &str)] = &[
    ("@modelcontextprotocol/server-everything", "2026.8.31"),
    ("@modelcontextprotocol/server-filesystem", "2026.8.31"),
    ("@modelcontextprotocol/conformance", "0.1.16"),
    ("@modelcontextprotocol/sdk", "1.32.2"),
    ("node", "22.23.3"),
];
/// The PyPI packages the tests use, pinned.
const PIP_PACKAGES: &[&str] = &[
    "mcp==2.3.0",
    "mcp-server-time==2026.10.19",
    "prometheus-client==0.26.0",
    "secantusdb==0.7.0b3",
];
/// The PyPI packages of a second venv: `mcp==1.9.4`, the version MAG pins, with the
/// dependencies of its era (with today's pydantic its import fails).
const PIP_PACKAGES_MCP194: &[&str] = &[
    "mcp==1.9.4",
    "pydantic==2.11.10",
    "anyio==4.11.0",
    "starlette==0.49.3",
];
/// What the wheelhouse holds (with every dependency), for offline installs into fresh
/// venvs.
const WHEELHOUSE: &[&str] = &["mcp==2.3.0"];

/// Where the installed peers are.
#[derive(Debug)]
pub struct Peers {
    root: PathBuf,
}

impl Peers {
    /// `node_modules` of the npm peers.
    pub fn node_modules(&self) -> PathBuf {
        self.root.join("npm/node_modules")
    }

    /// The server-everything entry point (`node THIS stdio|sse|streamableHttp`).
    pub fn everything_js(&self) -> PathBuf {
        self.node_modules()
            .join("@modelcontextprotocol/server-everything/dist/index.js")
    }

    /// The server-filesystem entry point (`node THIS DIR`).
    pub fn filesystem_js(&self) -> PathBuf {
        self.node_modules()
            .join("@modelcontextprotocol/server-filesystem/dist/index.js")
    }

    /// The conformance suite's CLI (run it with [`Self::node22`]).
    pub fn typescript_sdk(&self) -> PathBuf {
        self.node_modules().join("@modelcontextprotocol/sdk")
    }

    /// The conformance suite's entry point (`node THIS client|server …`).
    pub fn conformance_js(&self) -> PathBuf {
        self.node_modules()
            .join("@modelcontextprotocol/conformance/dist/index.js")
    }

    /// Node 22, from the npm package `node` (the suite crashes on Node 20).
    pub fn node22(&self) -> PathBuf {
        self.node_modules().join("node/bin/node")
    }

    /// The venv's Python, with `mcp` 2.x installed.
    pub fn python(&self) -> PathBuf {
        self.root.join("venv/bin/python")
    }

    /// The second venv's Python, with `mcp==1.9.4` (see `py_server_mcp194.py`).
    pub fn python_mcp194(&self) -> PathBuf {
        self.root.join("venv-mcp194/bin/python")
    }

    /// `mcp-server-time`.
    pub fn mcp_server_time(&self) -> PathBuf {
        self.root.join("venv/bin/mcp-server-time")
    }

    /// SecantusDB's server, `secantusd-py` (see [`mongo::Secantus`]).
    pub fn secantusd(&self) -> PathBuf {
        self.root.join("venv/bin/secantusd-py")
    }

    /// A folder of wheels: `mcp==2.3.0` and all its dependencies, built for the system
    /// `python3`. Install from it without the network into any venv of that Python with
    /// `PIP_NO_INDEX=1 PIP_FIND_LINKS=THIS pip install mcp==2.3.0` (about 3 s).
    pub fn wheelhouse(&self) -> PathBuf {
        self.root.join("wheels")
    }
}

/// The peers, installed on first call (see the crate docs). Panics with the installer's
/// output when npm or pip fails.
pub fn peers() -> &'static Peers {
    static PEERS: OnceLock<Peers> = OnceLock::new();
    PEERS.get_or_init(|| {
        let root = std::env::var_os("MAG_TEST_PEERS")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/mag-test-peers"));
        install_peers(&root);
        Peers { root }
    })
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn install_peers(root: &Path) {
    std::fs::create_dir_all(root).expect("create the peers dir");
    let lock = std::fs::File::create(root.join(".lock")).expect("create the peers lock");
    lock.lock().expect("lock the peers dir");
    let wanted =
        format!("{NPM_PACKAGES:?} {PIP_PACKAGES:?} {PIP_PACKAGES_MCP194:?} wheels {WHEELHOUSE:?}");
    let stamp = root.join(".installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return;
    }
    let npm_dir = root.join("npm");
    std::fs::create_dir_all(&npm_dir).unwrap();
    let deps: serde_json::Map<String, Value> = NPM_PACKAGES
        .iter()
        .map(|(name, version)| (name.to_string(), Value::from(*version)))
        .collect();
    let manifest =
        serde_json::json!({"name": "mag-test-peers", "private": true, "dependencies": deps});
    std::fs::write(npm_dir.join("package.json"), manifest.to_string()).unwrap();
    run_installer(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&npm_dir),
    );
    let venv = root.join("venv");
    if !venv.join("bin/python").exists() {
        run_installer(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    }
    run_installer(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_PACKAGES),
    );
    let venv_mcp194 = root.join("venv-mcp194");
    if !venv_mcp194.join("bin/python").exists() {
        run_installer(
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv_mcp194),
        );
    }
    run_installer(
        Command::new(venv_mcp194.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_PACKAGES_MCP194),
    );
    run_installer(
        Command::new(venv.join("bin/pip"))
            .args(["download", "--quiet", "--disable-pip-version-check", "-d"])
            .arg(root.join("wheels"))
            .args(WHEELHOUSE),
    );
    std::fs::write(&stamp, wanted).unwrap();
}

fn run_installer(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A workspace binary (`mcp-client`, `mag-server`) of the profile the caller was built
/// with: the one next to the caller's executable (or its `deps/` folder). Under cargo
/// (`CARGO` set) the workspace's binaries are built once per process first, so
/// `cargo test -p mag-tests` never runs a stale binary; a no-op build takes about a second.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let exe = std::env::current_exe().expect("current exe");
    let mut profile_dir = exe.parent().expect("exe dir").to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if *built {
        return path;
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        assert!(path.exists(), "{} is not built", path.display());
        return path;
    };
    let mut command = Command::new(cargo);
    // Every binary of the workspace, so features unify as in `cargo test --workspace`
    // (building one package alone would resolve other features and rebuild half the tree).
    command.args(["build", "--quiet", "--workspace", "--bins"]);
    // What cargo set for this test process would make the build differ from the outer one
    // (and rebuild everything, twice per run).
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let keep = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&var.as_ref());
        if (var.starts_with("CARGO_") && !keep) || var == "LD_LIBRARY_PATH" {
            command.env_remove(var.as_ref());
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    run_installer(&mut command);
    *built = true;
    path
}

/// A free TCP port on 127.0.0.1, for a peer that binds it later.
///
/// Ports come from the 10 000 below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, read once; not below 1024), in turn from a
/// per-process start: the kernel never hands those out for `bind(0)` or outgoing
/// connections, and this process never hands one out twice, so a port stays free between
/// asking and binding (also across a peer's restart on the same port). Each is checked
/// free when handed out.
pub fn free_port() -> u16 {
    const SPAN: u32 = 10_000;
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768)
            .saturating_sub(SPAN)
            .max(1_024)
    });
    let start = (u64::from(std::process::id()) * 7_919 % u64::from(SPAN)) as u32;
    for _ in 0..SPAN {
        let port = (base + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    mag_common::procfs::running_since(pid).is_some()
}

/// The pids of every live process in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            nix::unistd::getpgid(Some(Pid::from_raw(*pid as i32))).ok()
                == Some(Pid::from_raw(pgid as i32))
        })
        .collect()
}

/// Waits up to `within` for `pid` to be gone; whether it is.
pub fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

/// Asserts that each of `pids` is gone, waiting up to `within` for each in turn; the panic
/// names the pid that `outlived` what (e.g. "mag-server").
pub fn assert_gone(pids: impl IntoIterator<Item = u32>, within: Duration, outlived: &str) {
    for pid in pids {
        assert!(wait_gone(pid, within), "{pid} outlived {outlived}");
    }
}

/// A child process that is ended (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Starts `command` with stdin closed.
    pub fn spawn(command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self { child: Some(child) }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The underlying child.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Waits up to `within` for it to exit by itself.
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(Duration::from_secs(10)) {
            return status;
        }
        self.signal(Signal::SIGKILL);
        self.child().wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            self.stop();
        }
    }
}

/// A Python MCP server of the fixtures (`py_server.py`) over an HTTP transport, on
/// 127.0.0.1; ended when dropped.
pub struct PyHttpServer {
    /// The process.
    pub proc: Proc,
    /// The port it listens on.
    pub port: u16,
}

impl PyHttpServer {
    /// Starts it with `transport` (`sse` or `streamable-http`) and waits until it listens.
    pub fn start(transport: &str) -> Self {
        Self::start_on(transport, free_port())
    }

    /// Like [`Self::start`], on a given port (to bring a killed server back).
    pub fn start_on(transport: &str, port: u16) -> Self {
        let proc = Proc::spawn(
            Command::new(peers().python())
                .arg(fixture("py_server.py"))
                .arg(transport)
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_port(port, Duration::from_secs(30));
        Self { proc, port }
    }

    /// The URL of its MCP endpoint for `transport`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A running `mcp-client` on a temp config and log dir, ended when dropped.
pub struct Daemon {
    /// The process.
    pub proc: Proc,
    /// Base URL of its API, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    /// Holds the config file and the log dir.
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

/// An MCP `initialize` request (JSON-RPC id 1, protocol 2025-11-25) of a client named
/// `client` declaring `capabilities`.
pub fn initialize_request(client: &str, capabilities: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities,
        "clientInfo": {"name": client, "version": "1"}}})
}

/// An `mcp.json` entry running `py_server.py` over stdio.
pub fn py_stdio_entry() -> Value {
    serde_json::json!({
        "command": peers().python(),
        "args": [fixture("py_server.py")],
    })
}

/// An `mcp.json` entry running server-everything over stdio.
pub fn everything_entry() -> Value {
    serde_json::json!({
        "command": "node",
        "args": [peers().everything_js(), "stdio"],
    })
}

impl Daemon {
    /// Starts mcp-client with `{"mcpServers": servers}` and waits until it listens.
    pub fn start(servers: Value) -> Self {
        Self::start_with(servers, &[], &[])
    }

    /// Like [`Self::start`], with extra CLI arguments and environment variables.
    pub fn start_with(servers: Value, args: &[&str], env: &[(&str, &str)]) -> Self {
        let text = serde_json::to_string_pretty(&serde_json::json!({"mcpServers": servers}));
        Self::start_text(&text.unwrap(), args, env)
    }

    /// Starts mcp-client with `text` as its `mcp.json`, whatever it holds.
    pub fn start_text(text: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("mcp.json"), text).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (proc, base) = launch(dir.path(), &args, &env);
        mag_common::install_tls_provider();
        // No pooled connections: a daemon closes a connection after refusing a body it did
        // not read (413), and a reused one would fail the next request.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");
        Self {
            proc,
            base,
            dir,
            args,
            env,
            http,
        }
    }

    /// The config file it watches.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mcp.json")
    }

    /// Starts mcp-client again on the same config and log dir (after the old one ended).
    pub fn respawn(&mut self) {
        let (proc, base) = launch(self.dir.path(), &self.args, &self.env);
        self.proc = proc;
        self.base = base;
    }

    /// `GET path`: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        decode(response).await
    }

    /// `POST path` with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// `POST path` with these bytes as the body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        decode(response).await
    }

    /// Connects `server`, panicking with the answer unless it is 200.
    pub async fn connect(&self, server: &str) -> Value {
        let (status, body) = self.try_connect(server).await;
        assert_eq!(status, 200, "connect {server}: {body}");
        body
    }

    /// `POST /connect_server` of `server`: status and answer, whatever they are.
    pub async fn try_connect(&self, server: &str) -> (u16, Value) {
        self.post(
            "/connect_server",
            serde_json::json!({"server_name": server}),
        )
        .await
    }

    /// Calls a tool; status and answer.
    pub async fn call(&self, server: &str, tool: &str, params: Value) -> (u16, Value) {
        self.post(
            "/tool_call",
            serde_json::json!({"server_name": server, "tool_name": tool, "params": params}),
        )
        .await
    }

    /// `/servers[server]`.
    pub async fn server(&self, server: &str) -> Value {
        self.get("/servers").await.1[server].clone()
    }

    /// Polls `/servers[server]` until `done` holds (at most `within`); the last state seen.
    pub async fn wait_server(
        &self,
        server: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let state = self.server(server).await;
            if done(&state) || Instant::now() > deadline {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts mcp-client on `dir/mcp.json` with logs in `dir/logs`; the process and its base URL.
fn launch(dir: &Path, args: &[String], env: &[(String, String)]) -> (Proc, String) {
    let mut proc = Proc::spawn(
        Command::new(workspace_bin("mcp-client"))
            .arg("--config")
            .arg(dir.join("mcp.json"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,mcp_client=debug")
            .stdout(Stdio::piped()),
    );
    let base = listen_url(&mut proc, "mcp-client");
    (proc, base)
}

/// Reads the first line a daemon prints on stdout, `PROGRAM listening on URL`, and returns
/// the URL (the rest of its stdout is drained). Panics after 30 s without it.
pub fn listen_url(proc: &mut Proc, program: &str) -> String {
    let stdout = proc.child().stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{program} did not say where it listens"));
    line.strip_prefix(&format!("{program} listening on "))
        .unwrap_or_else(|| panic!("unexpected first line of {program}: {line}"))
        .to_string()
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// The text of the first content block of a `/tool_call` answer.
pub fn text(answer: &Value) -> &str {
    answer["content"][0]["text"].as_str().unwrap_or_default()
}
