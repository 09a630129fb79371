//! Issue 14, what reaches the daemons through their config and their servers, against the
//! real binaries: secrets kept out of answers, log files and children's environments,
//! config files that are no regular file or too large, configs that would wipe every
//! server, REST callers that go away mid-call, 503 while mcp-client restarts, and the
//! autoConnect cap.

mod support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use mag_tests::mag::{MagOptions, MagServer, script};
use mag_tests::{Daemon, Proc, everything_entry, fixture, peers, py_stdio_entry, text};
use serde_json::{Value, json};
use support::*;

async fn failing_http_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn expanded_secrets_never_reach_an_answer_or_a_log_file() {
    const SECRET: &str = "sk-url-secret-0123456789";
    const LLM_KEY: &str = "sk-llm-key-9876543210";
    const API_TOKEN: &str = "mag-api-token-5555";
    const JWT: &str = "jwt-secret-key-7777";
    let sse_port = failing_http_server().await;
    let refused = mag_tests::free_port();
    let settings = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        settings.path(),
        "[[models]]\nname = \"m\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         api_key_env = \"MAG_TEST_LLM_KEY\"\nmodel = \"x\"\n",
    )
    .unwrap();
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({
            "sse": {"type": "sse", "url": format!("http://127.0.0.1:{sse_port}/x/${{MAG_TEST_SECRET}}/sse")},
            "http": {"url": format!("http://127.0.0.1:{refused}/mcp?key=${{MAG_TEST_SECRET}}")},
            "everything": everything_entry(),
        }),
        args: vec!["--config".into(), settings.path().display().to_string()],
        env: vec![
            ("MAG_TEST_SECRET".into(), SECRET.into()),
            ("MAG_TEST_LLM_KEY".into(), LLM_KEY.into()),
            ("MAG_API_TOKEN".into(), API_TOKEN.into()),
            ("JWT_SECRET_KEY".into(), JWT.into()),
        ],
        ..MagOptions::default()
    });
    mag.token = Some(API_TOKEN.into());
    let client = mag.wait_running().await["pid"].as_u64().unwrap() as u32;
    let (status, all) = mag.post("/api/mcp/connect/all", json!({})).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["servers"]["sse"]["status"], "failed", "{all}");
    assert_eq!(all["servers"]["http"]["status"], "failed", "{all}");
    for name in ["sse", "http"] {
        let (status, answer) = mag
            .post(&format!("/api/mcp/connect/{name}"), json!({}))
            .await;
        assert_eq!(status, 400, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(!detail.contains(SECRET), "{detail}");
        assert!(
            detail.contains("${MAG_TEST_SECRET}") || name == "http",
            "{detail}"
        );
    }
    let (_, status) = mag.get("/api/mcp/status").await;
    let status = status.to_string();
    assert!(!status.contains(SECRET), "{status}");
    assert!(status.contains("${MAG_TEST_SECRET}"), "{status}");

    // mag-server's secrets are not in mcp-client's environment, so no server inherits them.
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{client}/environ")).unwrap())
            .into_owned();
    for secret in [LLM_KEY, API_TOKEN, JWT] {
        assert!(
            !environ.contains(secret),
            "{secret} reached mcp-client's environment"
        );
    }
    let (status, env) = mag.test_tool("everything", "get-env", json!({})).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["status"], "success", "{env}");
    let env = env.to_string();
    assert!(env.contains("PATH"), "{env}");
    // Nor the key of the remote entries' URLs: it is for them, not for a stdio server.
    for secret in [LLM_KEY, API_TOKEN, JWT, SECRET] {
        assert!(!env.contains(secret), "{secret} reached a server: {env}");
    }

    // After a crash of mcp-client, /health's stderr tail holds no secret either.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = mag
        .wait_client(Duration::from_secs(30), |s| {
            s["last_exit"].is_object() && s["state"] == "running"
        })
        .await;
    assert!(!restarted.to_string().contains(SECRET), "{restarted}");
    let (_, health) = mag.get("/health").await;
    assert!(!health.to_string().contains(SECRET), "{health}");
    // Let the new mcp-client try the servers again and log it.
    mag.post("/api/mcp/connect/all", json!({})).await;
    mag.terminate();
    for secret in [SECRET, LLM_KEY, API_TOKEN, JWT] {
        let leaks = files_containing(&mag.dir.path().join("logs"), secret);
        assert!(leaks.is_empty(), "{secret} is in {leaks:?}");
    }
    let logs = files_containing(&mag.dir.path().join("logs"), "${MAG_TEST_SECRET}");
    assert!(!logs.is_empty(), "the unexpanded form is shown instead");
}

async fn config_error(daemon: &Daemon, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, root) = daemon.get("/").await;
        assert_eq!(status, 200, "{root}");
        if let Some(message) = root["config"]["error"]["message"].as_str()
            && message.contains(needle)
        {
            return message.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no config error with {needle:?}: {root}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) until `/servers` lists exactly `names`.
async fn wait_servers(daemon: &Daemon, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let servers = daemon.get("/servers").await.1;
        let listed: Vec<&str> = servers
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        if listed == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "servers {listed:?}, want {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_is_no_regular_file_is_reported_and_hot_reload_lives_on() {
    // /dev/zero: a config error, and the daemon listens.
    let logs = tempfile::tempdir().unwrap();
    let mut zero = Proc::spawn(
        std::process::Command::new(mag_tests::workspace_bin("mcp-client"))
            .args([
                "--config",
                "/dev/zero",
                "--listen",
                "127.0.0.1:0",
                "--log-dir",
            ])
            .arg(logs.path())
            .stdout(std::process::Stdio::piped()),
    );
    let base = mag_tests::listen_url(&mut zero, "mcp-client");
    let root: Value = http()
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = root["config"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("character device"), "{root}");
    drop(zero);

    // A FIFO in place of mcp.json: reported, never waited on; a good file after it applies.
    let daemon = Daemon::start(json!({"a": py_stdio_entry()}));
    wait_servers(&daemon, &["a"]).await;
    let path = daemon.config_path();
    let fifo = daemon.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::rename(&fifo, &path).unwrap();
    config_error(&daemon, "FIFO").await;
    wait_servers(&daemon, &["a"]).await;
    let good = json!({"mcpServers": {"b": py_stdio_entry()}}).to_string();
    let replacement = daemon.dir.path().join("new.json");
    std::fs::write(&replacement, &good).unwrap();
    std::fs::rename(&replacement, &path).unwrap();
    wait_servers(&daemon, &["b"]).await;
    let (_, root) = daemon.get("/").await;
    assert!(root["config"]["error"].is_null(), "{root}");

    // A link to /dev/zero: the same.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    config_error(&daemon, "character device").await;
    wait_servers(&daemon, &["b"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_over_the_size_limit_is_an_error() {
    let daemon = Daemon::start_with(
        json!({"a": py_stdio_entry()}),
        &["--config-limit", "2000"],
        &[],
    );
    wait_servers(&daemon, &["a"]).await;
    let big = json!({"mcpServers": {"b": py_stdio_entry()}, "pad": "x".repeat(3000)});
    std::fs::write(daemon.config_path(), big.to_string()).unwrap();
    config_error(&daemon, "over the config size limit of 2000 bytes").await;
    wait_servers(&daemon, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_to_a_symlinked_configs_target_are_hot_reloaded() {
    let daemon = Daemon::start(json!({"a": py_stdio_entry()}));
    wait_servers(&daemon, &["a"]).await;
    // mcp.json becomes a link to a file in another folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real.json");
    std::fs::write(
        &target,
        json!({"mcpServers": {"b": py_stdio_entry()}}).to_string(),
    )
    .unwrap();
    let link = daemon.dir.path().join("link.tmp");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, daemon.config_path()).unwrap();
    wait_servers(&daemon, &["b"]).await;
    // Now edit the target in place: seen through the link.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&target)
        .unwrap();
    file.write_all(
        json!({"mcpServers": {"c": py_stdio_entry()}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    drop(file);
    wait_servers(&daemon, &["c"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_without_mcp_servers_never_wipes_the_servers() {
    let daemon = Daemon::start(json!({"a": py_stdio_entry()}));
    wait_servers(&daemon, &["a"]).await;
    let bodies = [
        json!({"config": {"mcpservers": {}}}).to_string(),
        json!({"config": {}}).to_string(),
        r#"{"config": {"mcpServers": {"a": {"command": "x"}}, "mcpServers": {}}}"#.to_string(),
        r#"{"config": {"mcpServers": {"a": {"command": "x", "command": "y"}}}}"#.to_string(),
    ];
    for body in &bodies {
        let (status, answer) = daemon.post_raw("/load_config", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_config", "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(!detail.contains("line 0"), "{detail}");
    }
    wait_servers(&daemon, &["a"]).await;
    // The same by hand in the file.
    std::fs::write(daemon.config_path(), r#"{"mcpservers": {}}"#).unwrap();
    config_error(&daemon, "no \"mcpServers\"").await;
    std::fs::write(
        daemon.config_path(),
        r#"{"mcpServers": {}, "mcpServers": {"a": {"command": "x"}}}"#,
    )
    .unwrap();
    config_error(&daemon, "twice").await;
    wait_servers(&daemon, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mag_server_needs_a_version_and_mcp_servers_to_replace_the_config() {
    let mag = MagServer::start(json!({"a": py_stdio_entry()}));
    mag.wait_running().await;
    let before = std::fs::read(&mag.config).unwrap();
    let version = json!(mag.version().await);
    let cases = [
        json!({"config": {"mcpServers": {}}}).to_string(),
        json!({"mcpServers": {}}).to_string(),
        json!({"config": {"mcpservers": {}}, "version": version}).to_string(),
        json!({"config": {}, "version": version}).to_string(),
        format!(
            r#"{{"config": {{"mcpServers": {{}}, "mcpServers": {{}}}}, "version": {version}}}"#
        ),
    ];
    for body in cases {
        let (status, answer) = mag.post_raw("/api/mcp/config", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
    }
    assert_eq!(
        std::fs::read(&mag.config).unwrap(),
        before,
        "the file changed"
    );
    // With the version, an empty list is a deliberate wipe.
    let (status, answer) = mag.post_config(json!({"mcpServers": {}}), &version).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_config_replace_removes_the_dropped_generated_tools_folders() {
    let mag = MagServer::start(json!({
        "gen": {"command": "python3", "args": ["server.py"], "ai_generated": true},
        "kept": {"command": "python3", "args": ["server.py"], "ai_generated": true},
    }));
    mag.wait_running().await;
    let tools = mag.dir.path().join("data/tools");
    for name in ["gen", "kept"] {
        std::fs::create_dir_all(tools.join(name).join(".venv")).unwrap();
        std::fs::write(tools.join(name).join("server.py"), "print()").unwrap();
    }
    let version = json!(mag.version().await);
    let (status, answer) = mag
        .post_config(
            json!({"mcpServers": {"kept": {"command": "python3", "args": ["server.py"], "ai_generated": true}}}),
            &version,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        !tools.join("gen").exists(),
        "the dropped tool's folder stayed"
    );
    assert!(tools.join("kept/server.py").exists());
}

/// Sends `head` on a fresh connection to `addr`, then nothing; what came back before the
/// connection closed or `within` passed, and whether it closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_rest_caller_that_goes_away_does_not_cancel_the_call() {
    // A server on MAG's pinned SDK, which dies on a cancellation of a call in flight.
    let daemon = Daemon::start(json!({"old": {
        "command": peers().python_mcp194(),
        "args": [fixture("py_server_mcp194.py")],
    }}));
    daemon.connect("old").await;
    let pid = daemon.server("old").await["pid"].as_u64().unwrap();
    // A call that must survive the others' impatience.
    let patient = {
        let url = format!("{}/tool_call", daemon.base);
        tokio::spawn(async move {
            let body = json!({"server_name": "old", "tool_name": "slow_echo",
                              "params": {"message": "still here", "seconds": 3}});
            post_as(&url, "application/json", &[], body.to_string()).await
        })
    };
    for _ in 0..3 {
        let aborted = http()
            .post(format!("{}/tool_call", daemon.base))
            .json(&json!({"server_name": "old", "tool_name": "slow_echo",
                          "params": {"message": "x", "seconds": 1}}))
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(aborted.is_err(), "the call should have outlasted 100 ms");
    }
    let (status, answer) = patient.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text(&answer), "still here", "{answer}");
    let server = daemon.server("old").await;
    assert_eq!(
        server["pid"].as_u64(),
        Some(pid),
        "the server was restarted: {server}"
    );
    assert_eq!(server["reconnects"], 0, "{server}");
    // The dropped results are logged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = files_containing(&daemon.dir.path().join("logs"), "its result was dropped");
    assert!(!logs.is_empty(), "no log line about the dropped results");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_on_disconnect_opts_in_to_cancelling() {
    let mut entry = py_stdio_entry();
    entry["cancelOnDisconnect"] = json!(true);
    let daemon = Daemon::start(json!({"py": entry}));
    daemon.connect("py").await;
    let aborted = http()
        .post(format!("{}/tool_call", daemon.base))
        .json(&json!({"server_name": "py", "tool_name": "sleep", "params": {"ms": 2000}}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(aborted.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = daemon.call("py", "stats", json!({})).await;
        let stats: Value = serde_json::from_str(text(&stats)).unwrap();
        if stats["cancelled"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call was not cancelled: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mag_server_answers_503_at_once_while_mcp_client_restarts() {
    let mag = MagServer::start_with(MagOptions {
        servers: json!({}),
        args: vec!["--restart-backoff".into(), "3s".into()],
        ..MagOptions::default()
    });
    let client = mag.wait_running().await["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    mag.wait_client(Duration::from_secs(10), |s| s["state"] == "restarting")
        .await;
    for path in ["/api/mcp/tools", "/api/mcp/status"] {
        let (status, answer) = mag.get(path).await;
        assert_eq!(status, 503, "{path}: {answer}");
    }
    // test-tool answers as MAG's executor does (SPEC §9 over §5): 200, `status: "error"`,
    // with the cause, also at once.
    let (status, answer) = mag.test_tool("x", "y", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "error", "{answer}");
    assert_eq!(answer["code"], "mcp_client_unavailable", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_connects_run_at_most_eight_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    // A server that never answers initialize: each connect holds its process for 3 s.
    let silent = script(dir.path(), "silent.sh", "exec sleep 30");
    let servers: serde_json::Map<String, Value> = (0..24)
        .map(|i| {
            (
                format!("s{i:02}"),
                json!({"command": silent, "autoConnect": true, "timeout": 3}),
            )
        })
        .collect();
    let daemon = Daemon::start(Value::Object(servers));
    let me = daemon.proc.pid();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        // Each thread has its own list of the children it forked.
        let children: String = std::fs::read_dir(format!("/proc/{me}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .collect::<Vec<_>>()
            .join(" ");
        let running = children
            .split_whitespace()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep"))
            })
            .count();
        peak = peak.max(running);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peak > 0, "no autoConnect ran");
    assert!(peak <= 8, "{peak} autoConnects ran at once");
}
