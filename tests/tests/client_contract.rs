//! mcp-client's contract with its operators (SPEC §4, issue 13): a failed connect says what
//! kind of failure it was, the same way in `/connect_server`, `/servers` and `/metrics`; and a
//! server removed or changed while it is still connecting is let go at once, so neither
//! `POST /load_config` nor the file watcher waits for its connect to time out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mag_tests::{Daemon, alive, fixture, group_members, wait_gone};
use serde_json::{Value, json};

/// The longest any request of these tests may take: far below the 60 s connect timeout the
/// stuck servers have, so a request that waits for one fails the test instead of passing late.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn post(daemon: &Daemon, path: &str, body: Value) -> (u16, Value) {
    tokio::time::timeout(ANSWER_WITHIN, daemon.post(path, body))
        .await
        .unwrap_or_else(|_| panic!("POST {path} got no answer within {ANSWER_WITHIN:?}"))
}

async fn get(daemon: &Daemon, path: &str) -> (u16, Value) {
    tokio::time::timeout(ANSWER_WITHIN, daemon.get(path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} got no answer within {ANSWER_WITHIN:?}"))
}

/// `/metrics` as text.
async fn metrics(daemon: &Daemon) -> String {
    let (status, body) = get(daemon, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.as_str().unwrap_or_default().to_string()
}

/// The value of `mcp_connect_failures_total{server, kind}`, if the series exists.
fn connect_failures(metrics: &str, server: &str, kind: &str) -> Option<u64> {
    let series = format!("mcp_connect_failures_total{{server=\"{server}\",kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

/// A stdio entry that never answers `initialize` (within its 60 s timeout): a shell that
/// writes its pid to `pidfile` and becomes `sleep 600`.
fn stuck_entry(pidfile: &Path) -> Value {
    json!({
        "command": "sh",
        "args": ["-c", format!("echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 600", pidfile.display())],
        "timeout": 60,
        "autoConnect": true,
    })
}

/// The pid a [`stuck_entry`] wrote, once it has (within 10 s).
async fn read_pid(pidfile: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            pidfile.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (off the async threads) up to 5 s for `pid` and its group to be gone.
async fn assert_ended(pid: u32, what: &str) {
    let gone = tokio::task::spawn_blocking(move || wait_gone(pid, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(gone, "{what}: process {pid} still runs 5 s later");
    assert_eq!(
        group_members(pid),
        Vec::<u32>::new(),
        "{what}: its group lives on"
    );
}

/// Writes the daemon's config file by rename, as editors do.
fn write_config(path: &Path, servers: Value) {
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, json!({"mcpServers": servers}).to_string()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A local HTTP server (axum, 127.0.0.1) that answers every request to `/status/CODE` with
/// that status and a plain-text body; plain HTTP, so `https://` to it fails in TLS.
async fn status_server() -> (u16, tokio::task::JoinHandle<()>) {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    async fn answer(UrlPath(code): UrlPath<u16>) -> (StatusCode, &'static str) {
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
            "not an MCP server",
        )
    }
    let router = axum::Router::new().route("/status/{code}", axum::routing::any(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, server)
}

/// A stdio server (plain Python, no SDK) that answers `initialize` with protocol version
/// 1999-01-01, which no MCP revision has.
const OLD_VERSION_SERVER: &str = r#"
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": "1999-01-01", "capabilities": {},
            "serverInfo": {"name": "old", "version": "1"}}}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn connect_failures_have_a_kind_in_the_answer_the_status_and_the_metrics() {
    let files = tempfile::tempdir().unwrap();
    let not_executable: PathBuf = files.path().join("server.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let (port, http) = status_server().await;
    let daemon = Daemon::start(json!({
        "missing": {"command": "/nonexistent/mcp-server"},
        "not-executable": {"command": not_executable},
        "exits": {"command": "sh", "args": ["-c", "echo 'fatal: bad token' >&2; exit 3"]},
        "silent": {"command": "sleep", "args": ["600"], "timeout": 1},
        "init-error": {"command": "python3", "args": [fixture("misbehaving_server.py"), "init-error"]},
        "old-version": {"command": "python3", "args": ["-c", OLD_VERSION_SERVER]},
        "unset-var": {"command": "true", "args": ["${MAG_TEST_SURELY_UNSET}"]},
        "bad-header": {"url": format!("http://127.0.0.1:{port}/status/200"), "headers": {"bad name": "x"}},
        "bad-url": {"url": "http://exa mple/mcp"},
        "refused": {"url": "http://127.0.0.1:9/mcp", "timeout": 5},
        "refused-sse": {"type": "sse", "url": "http://127.0.0.1:9/sse", "timeout": 5},
        "tls": {"url": format!("https://127.0.0.1:{port}/status/200"), "timeout": 5},
        "http-404": {"url": format!("http://127.0.0.1:{port}/status/404"), "timeout": 5},
        "http-500": {"url": format!("http://127.0.0.1:{port}/status/500"), "timeout": 5},
        "sse-403": {"type": "sse", "url": format!("http://127.0.0.1:{port}/status/403"), "timeout": 5},
    }));
    let expect = [
        ("missing", "command_not_found", "not found"),
        (
            "not-executable",
            "command_not_executable",
            "is not executable",
        ),
        ("exits", "exited_early", "exit status 3"),
        (
            "silent",
            "handshake_timeout",
            "did not answer initialize within",
        ),
        ("init-error", "protocol", "JSON-RPC error -32602"),
        ("old-version", "protocol", "1999-01-01"),
        ("unset-var", "config", "MAG_TEST_SURELY_UNSET is not set"),
        ("bad-header", "config", "invalid header name"),
        ("bad-url", "config", "invalid url"),
        ("refused", "refused", "initialize"),
        ("refused-sse", "refused", "GET http://127.0.0.1:9/sse"),
        ("tls", "tls", ""),
        ("http-404", "http_status", "404"),
        ("http-500", "http_status", "500"),
        ("sse-403", "http_status", "HTTP 403"),
    ];
    for round in 1..=2u64 {
        for (server, kind, text) in expect {
            let (status, answer) =
                post(&daemon, "/connect_server", json!({"server_name": server})).await;
            assert_eq!(status, 400, "{server}: {answer}");
            assert_eq!(answer["code"], "connect_failed", "{server}: {answer}");
            assert_eq!(answer["kind"], kind, "{server}: {answer}");
            let detail = answer["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(text), "{server}: {answer}");
        }
        let (_, servers) = get(&daemon, "/servers").await;
        let text = metrics(&daemon).await;
        for (server, kind, _) in expect {
            let view = &servers[server];
            assert_eq!(view["status"], "failed", "{server}: {view}");
            assert_eq!(view["error_kind"], kind, "{server}: {view}");
            assert!(view["error"].is_string(), "{server}: {view}");
            assert_eq!(
                connect_failures(&text, server, kind),
                Some(round),
                "{server}: {kind} in\n{text}"
            );
        }
    }
    http.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_server_has_no_error_kind_and_a_lost_one_says_so() {
    let daemon = Daemon::start(json!({
        "serve": {"command": "python3", "args": [fixture("misbehaving_server.py"), "serve"]},
    }));
    let (status, answer) = post(&daemon, "/connect_server", json!({"server_name": "serve"})).await;
    assert_eq!(status, 200, "{answer}");
    let view = daemon.server("serve").await;
    assert!(view["error_kind"].is_null(), "{view}");
    assert!(view["error"].is_null(), "{view}");
    // The server exits (status 7) on `crash`: the connection is lost.
    let _ = post(
        &daemon,
        "/tool_call",
        json!({"server_name": "serve", "tool_name": "crash", "params": {}}),
    )
    .await;
    let view = daemon
        .wait_server("serve", Duration::from_secs(5), |s| !s["error"].is_null())
        .await;
    assert_eq!(view["error_kind"], "connection_lost", "{view}");
    assert!(
        view["error"].as_str().unwrap().contains("exit status 7"),
        "{view}"
    );
    // A lost connection is not a failed connect.
    let text = metrics(&daemon).await;
    assert!(
        !text.contains("mcp_connect_failures_total{server=\"serve\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_removed_while_connecting_does_not_hold_up_load_config() {
    let files = tempfile::tempdir().unwrap();
    let pidfile = files.path().join("stuck.pid");
    let daemon = Daemon::start(json!({"stuck": stuck_entry(&pidfile)}));
    let pid = read_pid(&pidfile).await;
    let state = daemon
        .wait_server("stuck", Duration::from_secs(5), |s| {
            s["status"] == "connecting"
        })
        .await;
    assert_eq!(state["status"], "connecting", "{state}");
    // An operator's connect waits on the same connect.
    let base = daemon.base.clone();
    let waiting = tokio::spawn(async move {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(ANSWER_WITHIN)
            .build()
            .unwrap()
            .post(format!("{base}/connect_server"))
            .json(&json!({"server_name": "stuck"}))
            .send()
            .await;
        response.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let (status, answer) = post(
        &daemon,
        "/load_config",
        json!({"config": {"mcpServers": {}}}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], json!(["stuck"]), "{answer}");
    assert!(took < Duration::from_secs(5), "/load_config took {took:?}");
    assert_ended(pid, "the removed server").await;
    // The waiting connect got its answer: the server is gone.
    let waited = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .expect("the waiting connect got no answer")
        .unwrap();
    assert_eq!(waited.ok(), Some(404));
    let (_, servers) = get(&daemon, "/servers").await;
    assert_eq!(servers, json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_watcher_is_not_held_up_by_a_server_still_connecting() {
    let files = tempfile::tempdir().unwrap();
    let (first, second) = (
        files.path().join("first.pid"),
        files.path().join("second.pid"),
    );
    let daemon = Daemon::start(json!({"stuck": stuck_entry(&first)}));
    let config = daemon.config_path();
    let first_pid = read_pid(&first).await;

    // Changed while connecting: the old connect is let go, its process ended, and the new
    // entry connects (it was wanted, autoConnect).
    write_config(&config, json!({"stuck": stuck_entry(&second)}));
    assert_ended(first_pid, "the changed server's first process").await;
    let second_pid = read_pid(&second).await;
    assert!(alive(second_pid));

    // Removed while connecting, then another change: both are applied at once.
    write_config(&config, json!({}));
    assert_ended(second_pid, "the removed server").await;
    write_config(&config, json!({"later": {"command": "true"}}));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, servers) = get(&daemon, "/servers").await;
        if servers.get("later").is_some() && servers.get("stuck").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not apply the last change within 5 s: {servers}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_wrapper_leaves_in_its_group_does_not_hold_back_the_exit() {
    // The shell starts a sleep in the background and becomes the server: when the server
    // exits, the sleep is left in its group (and, mcp-client being a subreaper, becomes
    // mcp-client's child). The exit is still reported at once, and the sleep ended.
    let files = tempfile::tempdir().unwrap();
    let pidfile = files.path().join("sleep.pid");
    let script = format!(
        "sleep 600 & echo $! > {0}.tmp && mv {0}.tmp {0} && exec python3 {1} serve",
        pidfile.display(),
        fixture("misbehaving_server.py").display()
    );
    let daemon = Daemon::start(json!({"wrapped": {"command": "sh", "args": ["-c", script]}}));
    let (status, answer) = post(
        &daemon,
        "/connect_server",
        json!({"server_name": "wrapped"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sleep = read_pid(&pidfile).await;
    let (_, answer) = post(
        &daemon,
        "/tool_call",
        json!({"server_name": "wrapped", "tool_name": "crash", "params": {}}),
    )
    .await;
    assert_eq!(answer["code"], "server_gone", "{answer}");
    let view = daemon
        .wait_server("wrapped", Duration::from_secs(5), |s| !s["error"].is_null())
        .await;
    assert!(
        view["error"].as_str().unwrap().contains("exit status 7"),
        "the exit status was held back: {view}"
    );
    assert_ended(sleep, "the wrapper's background sleep").await;
    // Put the server down for good before the daemon goes (it reconnects, being wanted).
    let _ = post(
        &daemon,
        "/disconnect_server",
        json!({"server_name": "wrapped"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_disconnect_cancels_a_connect_in_flight() {
    let files = tempfile::tempdir().unwrap();
    let pidfile = files.path().join("stuck.pid");
    let mut entry = stuck_entry(&pidfile);
    entry["autoConnect"] = json!(false);
    let daemon = Daemon::start(json!({"stuck": entry}));
    let base = daemon.base.clone();
    let connecting = tokio::spawn(async move {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(ANSWER_WITHIN)
            .build()
            .unwrap()
            .post(format!("{base}/connect_server"))
            .json(&json!({"server_name": "stuck"}))
            .send()
            .await
            .expect("the connect got an answer");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or_default())
    });
    let pid = read_pid(&pidfile).await;
    let started = Instant::now();
    let (status, answer) = post(
        &daemon,
        "/disconnect_server",
        json!({"server_name": "stuck"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "not_connected", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_ended(pid, "the disconnected server").await;
    let (status, answer) = tokio::time::timeout(ANSWER_WITHIN, connecting)
        .await
        .expect("the connect got no answer")
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["kind"], "cancelled", "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disconnected by the operator"),
        "{answer}"
    );
    let view = daemon.server("stuck").await;
    assert_eq!(view["status"], "disconnected", "{view}");
    assert!(view["error"].is_null(), "{view}");
    // A cancelled connect is not a failure.
    assert!(
        !metrics(&daemon)
            .await
            .contains("mcp_connect_failures_total{server=\"stuck\"")
    );
}
