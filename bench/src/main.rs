//! `mag-bench`: what mcp-client costs over a direct MCP session, and how it scales.
//!
//! Starts the real (`dist` profile) `mcp-client` and, in the same run, direct rmcp sessions to the
//! same servers, and prints a Markdown report: each figure as min / median / max over
//! `--runs` repetitions. Servers: `bench-echo-server` (a tiny rmcp server, "fast") and the
//! Python `mcp` SDK server of the test fixtures ("python"). See BENCHMARKS.md.
//!
//! Usage: `mag-bench [--runs N] [--rest] [--gateway] [--generation]` (default 5 runs), from a
//! `dist` build next to `mcp-client` and `mag-server`; each flag picks a part (none: all):
//! `--rest` mcp-client's REST API, `--gateway` the MCP gateway ([`gateway`]), `--generation`
//! MCP generation ([`generation`]).

mod gateway;
mod generation;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mag_tests::{Daemon, fixture, peers};
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

type Session = RunningService<RoleClient, ClientConfig>;

/// Calls per sequential latency sample.
const LATENCY_CALLS: usize = 2000;
/// Calls before measuring, to warm caches and connections.
const WARMUP_CALLS: usize = 200;

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.with_file_name(name)
}

fn echo_server_entry() -> Value {
    json!({"command": sibling("bench-echo-server")})
}

fn python_entry() -> Value {
    json!({"command": peers().python(), "args": [fixture("py_server.py")]})
}

/// A direct rmcp session to the server of `entry`, with the same protocol version
/// mcp-client asks for.
async fn direct_session(entry: &Value) -> Session {
    let mut command = tokio::process::Command::new(entry["command"].as_str().unwrap());
    for arg in entry["args"].as_array().into_iter().flatten() {
        command.arg(arg.as_str().unwrap());
    }
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .expect("direct handshake")
}

async fn direct_call(peer: &Peer<RoleClient>, tool: &str, args: Value) {
    let params = CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    peer.call_tool_once(params).await.expect("direct call");
}

/// Calls through mcp-client's HTTP API on a kept-alive connection.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(daemon: &Daemon) -> Self {
        mag_common::install_tls_provider();
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(256)
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap(),
            base: daemon.base.clone(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn call(&self, server: &str, tool: &str, params: Value) {
        let answer = self
            .post(
                "/tool_call",
                json!({"server_name": server, "tool_name": tool, "params": params}),
            )
            .await;
        assert!(answer.get("error").is_none(), "{answer}");
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }
}

/// min / median / max of `values`, formatted with `unit`.
fn spread(values: &[f64], unit: &str) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    format!(
        "{} / {} / {} {unit}",
        fmt(sorted[0]),
        fmt(median),
        fmt(sorted[sorted.len() - 1])
    )
}

fn fmt(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// p50 and p99 of `samples` in µs.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

async fn timed<F: Future>(f: F) -> Duration {
    let start = Instant::now();
    f.await;
    start.elapsed()
}

/// Sequential latency of `echo`: (direct p50, p99, via p50, p99) in µs.
async fn latency(session: &Session, api: &Api, server: &str) -> [f64; 4] {
    let peer = session.peer();
    let args = json!({"message": "ping"});
    for _ in 0..WARMUP_CALLS {
        direct_call(peer, "echo", args.clone()).await;
        api.call(server, "echo", args.clone()).await;
    }
    let mut direct = Vec::with_capacity(LATENCY_CALLS);
    let mut via = Vec::with_capacity(LATENCY_CALLS);
    // Interleaved, so both see the same machine load.
    for _ in 0..LATENCY_CALLS {
        direct.push(timed(direct_call(peer, "echo", args.clone())).await);
        via.push(timed(api.call(server, "echo", args.clone())).await);
    }
    let (d50, d99) = percentiles(&mut direct);
    let (v50, v99) = percentiles(&mut via);
    [d50, d99, v50, v99]
}

/// Calls per second with `concurrency` workers making `total` calls; `call(i)` makes call `i`.
async fn throughput<F, Fut>(concurrency: usize, total: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let call = call.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    call(i).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A process's resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A process's CPU time (user + system, all its threads, also those that have ended) in
/// seconds, to the nanosecond: its CPU-time clock (`clock_getcpuclockid(3)`), not the
/// 10 ms ticks of `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let clock = nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32))
        .expect("the CPU-time clock of a child process");
    let time = nix::time::clock_gettime(clock).expect("read the CPU-time clock");
    time.tv_sec() as f64 + time.tv_nsec() as f64 * 1e-9
}

/// The report's rows, each printed to stderr as it comes and all as a Markdown table at
/// the end.
struct Report {
    rows: Vec<(String, String)>,
}

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        eprintln!("{what}: {value}");
        self.rows.push((what, value));
    }

    fn print(&self) {
        println!("| measure | min / median / max |\n|---|---|");
        for (what, value) in &self.rows {
            println!("| {what} | {value} |");
        }
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map(|n| n.parse().expect("--runs N"))
        .unwrap_or(5);
    assert!(
        sibling("mcp-client").exists() && sibling("mag-server").exists(),
        "build the binaries first: cargo build --profile dist --workspace --bins"
    );
    let _ = peers();
    let mut report = Report { rows: Vec::new() };
    let parts = ["--rest", "--gateway", "--generation"];
    let chosen: Vec<String> = std::env::args()
        .filter(|a| parts.contains(&a.as_str()))
        .collect();
    let wanted = |part: &str| chosen.is_empty() || chosen.iter().any(|c| c == part);
    if wanted("--rest") {
        rest(&mut report, runs).await;
    }
    if wanted("--gateway") {
        gateway::run(&mut report, runs).await;
    }
    if wanted("--generation") {
        generation::run(&mut report, runs).await;
    }
    report.print();
}

/// mcp-client's REST API against direct sessions: latency, throughput, CPU and memory,
/// connects, cold start and reload.
async fn rest(report: &mut Report, runs: usize) {
    // Sequential latency, fast and Python servers.
    for (name, entry) in [("fast", echo_server_entry()), ("python", python_entry())] {
        let daemon = Daemon::start(json!({name: entry}));
        let api = Api::new(&daemon);
        api.post("/connect_server", json!({"server_name": name}))
            .await;
        let session = direct_session(&entry).await;
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(latency(&session, &api, name).await);
        }
        let column = |i: usize| samples.iter().map(|s| s[i]).collect::<Vec<_>>();
        let added: Vec<f64> = samples.iter().map(|s| s[2] - s[0]).collect();
        report.row(
            format!("{name}: direct p50 / p99"),
            format!(
                "{} ; {}",
                spread(&column(0), "µs"),
                spread(&column(1), "µs")
            ),
        );
        report.row(
            format!("{name}: via mcp-client p50 / p99"),
            format!(
                "{} ; {}",
                spread(&column(2), "µs"),
                spread(&column(3), "µs")
            ),
        );
        report.row(
            format!("{name}: added p50 (target ≤ 100 µs)"),
            spread(&added, "µs"),
        );
        if name == "fast" {
            // What the HTTP hop alone costs with the same client: GET / (no MCP behind it).
            let mut bare = Vec::new();
            for _ in 0..runs {
                let mut samples = Vec::with_capacity(LATENCY_CALLS);
                for _ in 0..LATENCY_CALLS {
                    samples.push(timed(api.get("/")).await);
                }
                bare.push(percentiles(&mut samples).0);
            }
            report.row("bare HTTP round trip to GET / (p50)", spread(&bare, "µs"));
        }
        session.cancel().await.ok();
    }

    // Throughput, one server and four, c = 1, 8, 64.
    let servers: Vec<String> = (0..4).map(|i| format!("fast{i}")).collect();
    let config: serde_json::Map<String, Value> = servers
        .iter()
        .map(|s| (s.clone(), echo_server_entry()))
        .collect();
    let daemon = Daemon::start(Value::Object(config));
    let api = Api::new(&daemon);
    let mut sessions = Vec::new();
    for server in &servers {
        api.post("/connect_server", json!({"server_name": server}))
            .await;
        sessions.push(direct_session(&echo_server_entry()).await);
    }
    let peers_direct: Arc<Vec<Peer<RoleClient>>> =
        Arc::new(sessions.iter().map(|s| s.peer().clone()).collect());
    let servers = Arc::new(servers);
    let pid = daemon.proc.pid();
    let rss_idle = rss_mib(pid);
    let mut cpu_per_call = Vec::new();
    for (label, spread_over) in [("one server", 1usize), ("4 servers", 4)] {
        for concurrency in [1usize, 8, 64] {
            let total = (concurrency * 100).max(2000);
            let mut ratios = Vec::new();
            let mut via_rates = Vec::new();
            for _ in 0..runs {
                let direct = {
                    let peers = peers_direct.clone();
                    throughput(concurrency, total, move |i| {
                        let peers = peers.clone();
                        async move {
                            let peer = &peers[i % spread_over];
                            direct_call(peer, "echo", json!({"message": "x"})).await;
                        }
                    })
                    .await
                };
                let cpu_before = cpu_seconds(pid);
                let via = {
                    let api = api.clone();
                    let servers = servers.clone();
                    throughput(concurrency, total, move |i| {
                        let api = api.clone();
                        let servers = servers.clone();
                        async move {
                            api.call(&servers[i % spread_over], "echo", json!({"message": "x"}))
                                .await;
                        }
                    })
                    .await
                };
                cpu_per_call.push((cpu_seconds(pid) - cpu_before) / total as f64 * 1e6);
                ratios.push(via / direct * 100.0);
                via_rates.push(via);
            }
            report.row(
                format!("throughput {label}, c={concurrency}: via mcp-client"),
                spread(&via_rates, "calls/s"),
            );
            report.row(
                format!("throughput {label}, c={concurrency}: via / direct"),
                spread(&ratios, "%"),
            );
        }
    }
    report.row(
        "mcp-client CPU per call (all throughput runs)",
        spread(&cpu_per_call, "µs"),
    );
    report.row(
        "mcp-client RSS idle, 4 servers connected",
        format!("{:.1} MiB", rss_idle),
    );
    report.row(
        "mcp-client RSS after the throughput runs",
        format!("{:.1} MiB", rss_mib(pid)),
    );
    for session in sessions {
        session.cancel().await.ok();
    }

    // 8 concurrent 250 ms calls on one server.
    let mut walls = Vec::new();
    for _ in 0..runs {
        let calls = (0..8).map(|_| api.call("fast0", "sleep", json!({"ms": 250})));
        walls.push(timed(futures::future::join_all(calls)).await.as_secs_f64() * 1e3);
    }
    report.row(
        "8 × 250 ms calls on one server (target ≤ 300 ms)",
        spread(&walls, "ms"),
    );
    drop(daemon);

    // Idle RSS with two servers.
    let daemon = Daemon::start(json!({"fast": echo_server_entry(), "python": python_entry()}));
    let api = Api::new(&daemon);
    api.post("/connect_server", json!({"server_name": "fast"}))
        .await;
    api.post("/connect_server", json!({"server_name": "python"}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.row(
        "mcp-client RSS idle, two servers (target ≤ 10 MiB)",
        format!("{:.1} MiB", rss_mib(daemon.proc.pid())),
    );

    // Connect time of one stdio server.
    let mut connects = Vec::new();
    for _ in 0..runs {
        api.post("/disconnect_server", json!({"server_name": "fast"}))
            .await;
        let took = timed(api.post("/connect_server", json!({"server_name": "fast"}))).await;
        connects.push(took.as_secs_f64() * 1e3);
    }
    report.row("connect one stdio server (fast)", spread(&connects, "ms"));
    drop(daemon);

    // Cold start to the first 200 on GET /.
    let mut starts = Vec::new();
    for _ in 0..runs {
        starts.push(cold_start().await);
    }
    report.row(
        "cold start to 200 on GET / (target ≤ 20 ms)",
        spread(&starts, "ms"),
    );

    // Reload: config renamed into place → the new server in /servers.
    let daemon = Daemon::start(json!({}));
    let api = Api::new(&daemon);
    let mut reloads = Vec::new();
    for run in 0..runs {
        let name = format!("added{run}");
        let mut servers = serde_json::Map::new();
        for i in 0..=run {
            servers.insert(format!("added{i}"), echo_server_entry());
        }
        let text = json!({"mcpServers": servers}).to_string();
        let path = daemon.config_path();
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        let start = Instant::now();
        std::fs::rename(&temp, &path).unwrap();
        while api.get("/servers").await.get(&name).is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reloads.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let debounce = mcp_client::watch::DEBOUNCE.as_secs_f64() * 1e3;
    report.row(
        format!("reload: rename → visible (debounce {debounce:.0} ms; target ≤ debounce + 100)"),
        spread(&reloads, "ms"),
    );
    drop(daemon);

    // Connect-all of 20 stdio servers vs the slowest single connect.
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let config: serde_json::Map<String, Value> = names
        .iter()
        .map(|s| (s.clone(), echo_server_entry()))
        .collect();
    let daemon = Daemon::start(Value::Object(config));
    let api = Api::new(&daemon);
    let mut ratios = Vec::new();
    let mut alls = Vec::new();
    for _ in 0..runs {
        let mut slowest = 0f64;
        for name in &names {
            let took = timed(api.post("/connect_server", json!({"server_name": name}))).await;
            slowest = slowest.max(took.as_secs_f64() * 1e3);
            api.post("/disconnect_server", json!({"server_name": name}))
                .await;
        }
        let all = names
            .iter()
            .map(|name| api.post("/connect_server", json!({"server_name": name})));
        let took = timed(futures::future::join_all(all)).await.as_secs_f64() * 1e3;
        for name in &names {
            api.post("/disconnect_server", json!({"server_name": name}))
                .await;
        }
        alls.push(took);
        ratios.push(took / slowest);
    }
    report.row("connect all 20 stdio servers at once", spread(&alls, "ms"));
    report.row(
        "connect-all 20 / slowest single connect (target ≤ 1.5)",
        spread(&ratios, "×"),
    );
    drop(daemon);
}

/// Starts mcp-client with an empty config and times until `GET /` answers 200, in ms.
async fn cold_start() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mcp.json"), r#"{"mcpServers": {}}"#).unwrap();
    let port = mag_tests::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    let start = Instant::now();
    let mut child = tokio::process::Command::new(sibling("mcp-client"))
        .arg("--config")
        .arg(dir.path().join("mcp.json"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = start.elapsed().as_secs_f64() * 1e3;
    child.kill().await.ok();
    took
}
