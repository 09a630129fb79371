//! The daemon's life: GET /, applying configs, and shutdown that leaves no process behind
//! (SPEC §4).

use std::time::Duration;

use mag_tests::{Daemon, alive, assert_gone, everything_entry, py_stdio_entry, wait_gone};
use nix::sys::signal::Signal;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn root_reports_the_daemon_and_its_config() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    let (status, root) = daemon.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root["status"], "running");
    assert_eq!(root["service"], "mcp-client");
    assert_eq!(root["servers_connected"], 0);
    assert_eq!(root["pid"], daemon.proc.pid());
    assert!(root["version"].is_string());
    assert!(
        root["config"]["path"]
            .as_str()
            .unwrap()
            .ends_with("mcp.json")
    );
    assert_eq!(root["config"]["revision"].as_str().unwrap().len(), 16);
    assert!(root["config"]["error"].is_null());
    daemon.connect("py").await;
    assert_eq!(daemon.get("/").await.1["servers_connected"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_config_file_at_start_is_reported_with_its_position() {
    let bad = Daemon::start_text(
        "{\n  \"mcpServers\": {\n    \"a\": {\"command\": 1}\n  }\n}\n",
        &[],
        &[],
    );
    let (status, root) = bad.get("/").await;
    assert_eq!(status, 200);
    let error = &root["config"]["error"];
    assert_eq!(error["line"], 3, "{root}");
    assert!(error["column"].as_u64().unwrap() > 0, "{root}");
    assert!(
        error["message"].as_str().unwrap().contains("invalid type"),
        "{root}"
    );
    assert_eq!(bad.get("/servers").await.1, json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn load_config_diffs_per_server_and_leaves_unchanged_ones_alone() {
    let daemon = Daemon::start(
        json!({"keep": py_stdio_entry(), "change": py_stdio_entry(), "drop": py_stdio_entry()}),
    );
    for server in ["keep", "change", "drop"] {
        daemon.connect(server).await;
    }
    let pid =
        |servers: &serde_json::Value, name: &str| servers[name]["pid"].as_u64().map(|p| p as u32);
    let before = daemon.get("/servers").await.1;
    let mut changed = py_stdio_entry();
    changed["timeout"] = json!(30);
    let mut added = py_stdio_entry();
    added["autoConnect"] = json!(true);
    let (status, report) = daemon
        .post(
            "/load_config",
            json!({"config": {"mcpServers": {"keep": py_stdio_entry(), "change": changed, "new": added}}}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"status": "accepted", "added": ["new"], "updated": ["change"], "removed": ["drop"]})
    );
    // Removed: gone, its process ended.
    assert!(wait_gone(
        pid(&before, "drop").unwrap(),
        Duration::from_secs(5)
    ));
    // Changed: reconnected with a new process; added with autoConnect: connected.
    let mut after = json!(null);
    for _ in 0..1200 {
        after = daemon.get("/servers").await.1;
        if after["change"]["connected"] == true && after["new"]["connected"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after.get("drop").is_none(), "{after}");
    assert_eq!(after["change"]["connected"], true, "{after}");
    assert_ne!(pid(&after, "change"), pid(&before, "change"));
    assert!(!alive(pid(&before, "change").unwrap()));
    assert_eq!(after["new"]["connected"], true, "{after}");
    // Unchanged: the same process.
    assert_eq!(pid(&after, "keep"), pid(&before, "keep"));
}

async fn connected_pids(daemon: &Daemon) -> Vec<u32> {
    let servers = daemon.get("/servers").await.1;
    servers
        .as_object()
        .unwrap()
        .values()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_over_http_ends_every_server_and_exits_zero() {
    let mut daemon =
        Daemon::start(json!({"py": py_stdio_entry(), "everything": everything_entry()}));
    daemon.connect("py").await;
    daemon.connect("everything").await;
    let pids = connected_pids(&daemon).await;
    assert_eq!(pids.len(), 2);
    let (status, answer) = daemon.post("/shutdown", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"status": "shutdown_initiated"}));
    let exit = daemon
        .proc
        .wait_timeout(Duration::from_secs(15))
        .expect("mcp-client exited");
    assert_eq!(exit.code(), Some(0));
    assert_gone(pids, Duration::from_secs(1), "mcp-client");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_end_every_server_and_exit_zero() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut daemon = Daemon::start(json!({"py": py_stdio_entry()}));
        daemon.connect("py").await;
        let pids = connected_pids(&daemon).await;
        daemon.proc.signal(signal);
        let exit = daemon
            .proc
            .wait_timeout(Duration::from_secs(15))
            .expect("mcp-client exited");
        assert_eq!(exit.code(), Some(0), "{signal}");
        assert_gone(
            pids,
            Duration::from_secs(1),
            &format!("mcp-client ({signal})"),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_ends_the_process_group() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let pid = connected_pids(&daemon).await[0];
    let (status, answer) = daemon
        .post("/disconnect_server", json!({"server_name": "py"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "disconnected", "{answer}");
    assert!(wait_gone(pid, Duration::from_secs(5)));
    let server = daemon.server("py").await;
    assert_eq!(server["status"], "disconnected");
    assert!(server["error"].is_null());
    let (_, answer) = daemon
        .post("/disconnect_server", json!({"server_name": "py"}))
        .await;
    assert_eq!(answer["status"], "not_connected", "{answer}");
    // And it connects again.
    daemon.connect("py").await;
}

#[test]
fn the_default_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mcp.json");
    let text = std::fs::read_to_string(path).unwrap();
    let config = mag_common::config::McpConfig::parse(&text).unwrap();
    assert!(config.servers["everything"].auto_connect);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_every_endpoint_but_root_and_stays_out_of_servers() {
    let secret = "s3cret-token-for-test";
    let daemon = mag_tests::Daemon::start_with(
        json!({"everything": everything_entry()}),
        &["--token-env", "MAG_TEST_TOKEN"],
        &[("MAG_TEST_TOKEN", secret)],
    );
    assert_eq!(daemon.get("/").await.0, 200);
    let (status, answer) = daemon.get("/servers").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["code"], "unauthorized");
    let (status, _) = daemon.try_connect("everything").await;
    assert_eq!(status, 401);

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let authed = |path: &str| {
        http.post(format!("{}{path}", daemon.base))
            .bearer_auth(secret)
            .header("content-type", "application/json")
    };
    let wrong = http
        .get(format!("{}/servers", daemon.base))
        .bearer_auth("s3cret-token-for-tesT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let connect = authed("/connect_server")
        .body(json!({"server_name": "everything"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(connect.status(), 200);
    // server-everything's get-env dumps its environment: the token is not in it.
    let call = authed("/tool_call")
        .body(
            json!({"server_name": "everything", "tool_name": "get-env", "params": {}}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    let body = call.text().await.unwrap();
    assert!(body.contains("PATH"), "{body}");
    assert!(
        !body.contains(secret),
        "the token leaked to a server: {body}"
    );
    assert!(!body.contains("MAG_TEST_TOKEN"), "{body}");
    // Nor is it in the daemon's log.
    let logs = std::fs::read_dir(daemon.dir.path().join("logs")).unwrap();
    for entry in logs.flatten().filter(|e| e.path().is_file()) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains(secret),
            "token in {}",
            entry.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ai_generated_server_gets_only_the_base_environment_and_its_own_env() {
    let key = "sk-model-key-for-test";
    let mut generated = everything_entry();
    generated["ai_generated"] = json!(true);
    generated["env"] = json!({"NAMED_KEY": "${MAG_TEST_MODEL_KEY}"});
    let daemon = mag_tests::Daemon::start_with(
        json!({"operators": everything_entry(), "generated": generated}),
        &[],
        &[("MAG_TEST_MODEL_KEY", key)],
    );
    let get_env = |server: &'static str| {
        let daemon = &daemon;
        async move {
            daemon.connect(server).await;
            let (status, answer) = daemon.call(server, "get-env", json!({})).await;
            assert_eq!(status, 200, "{answer}");
            answer.to_string()
        }
    };
    // An operator's server inherits the daemon's environment, as it always did.
    let env = get_env("operators").await;
    assert!(env.contains("MAG_TEST_MODEL_KEY"), "{env}");
    // LLM-written code gets PATH and friends, plus only what its entry names.
    let env = get_env("generated").await;
    assert!(env.contains("PATH"), "{env}");
    assert!(!env.contains("MAG_TEST_MODEL_KEY"), "{env}");
    assert!(env.contains("NAMED_KEY") && env.contains(key), "{env}");
}

#[test]
fn a_token_variable_that_is_not_set_is_refused_at_start() {
    let output = std::process::Command::new(mag_tests::workspace_bin("mcp-client"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token-env",
            "MAG_SURELY_UNSET_TOKEN_VAR",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MAG_SURELY_UNSET_TOKEN_VAR"), "{stderr}");
}
