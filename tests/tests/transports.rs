//! Every transport against real servers: connect, list tools, call (SPEC §4, §7).

use mag_tests::{Daemon, PyHttpServer, everything_entry, peers, py_stdio_entry, text};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn server_everything_over_stdio() {
    let daemon = Daemon::start(json!({"everything": everything_entry()}));
    let connected = daemon.connect("everything").await;
    assert_eq!(connected["status"], "connected");
    assert!(
        connected["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("echo")),
        "{connected}"
    );

    let (status, answer) = daemon
        .call("everything", "echo", json!({"message": "hello"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text(&answer), "Echo: hello");
    assert!(answer.get("error").is_none(), "{answer}");

    let (_, answer) = daemon
        .call("everything", "get-sum", json!({"a": 2, "b": 3}))
        .await;
    assert!(text(&answer).contains('5'), "{answer}");

    let (_, tools) = daemon.get("/tools").await;
    let echo = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo")
        .expect("echo in /tools");
    assert_eq!(echo["server_name"], "everything");
    assert_eq!(echo["input_schema"]["type"], "object");
    assert!(echo["description"].is_string());

    let server = daemon.server("everything").await;
    assert_eq!(server["connected"], true);
    assert_eq!(server["status"], "connected");
    assert_eq!(server["transport_type"], "stdio");
    assert_eq!(server["protocol_version"], "2025-11-25");
    assert!(server["pid"].as_u64().is_some(), "{server}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_everything_tool_list_changes_are_followed() {
    // server-everything registers a tool after `initialized` and sends
    // notifications/tools/list_changed: the list must end up holding it.
    let daemon = Daemon::start(json!({"everything": everything_entry()}));
    daemon.connect("everything").await;
    let mut seen = false;
    for _ in 0..600 {
        let server = daemon.server("everything").await;
        if server["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("simulate-research-query"))
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "the tool announced by list_changed never appeared");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_server_over_stdio() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let (status, answer) = daemon.call("py", "echo", json!({"message": "über"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text(&answer), "über");
    let (_, answer) = daemon
        .call("py", "add_numbers", json!({"a": 1.5, "b": 2}))
        .await;
    assert_eq!(text(&answer), "3.5");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_server_over_legacy_sse() {
    let server = PyHttpServer::start("sse");
    let daemon = Daemon::start(json!({
        "py-sse": {"type": "sse", "url": format!("{}/sse", server.url())}
    }));
    daemon.connect("py-sse").await;
    let (status, answer) = daemon
        .call("py-sse", "echo", json!({"message": "over sse"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text(&answer), "over sse");
    assert_eq!(daemon.server("py-sse").await["transport_type"], "sse");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_server_over_streamable_http() {
    let server = PyHttpServer::start("streamable-http");
    // No type: a url means streamable HTTP.
    let daemon = Daemon::start(json!({"py-http": {"url": format!("{}/mcp", server.url())}}));
    daemon.connect("py-http").await;
    let (status, answer) = daemon
        .call("py-http", "echo", json!({"message": "over http"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text(&answer), "over http");
    assert_eq!(
        daemon.server("py-http").await["transport_type"],
        "streamable_http"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_server_time_over_stdio() {
    let daemon = Daemon::start(json!({"time": {"command": peers().mcp_server_time()}}));
    let connected = daemon.connect("time").await;
    assert!(
        connected["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("get_current_time"))
    );
    let (status, answer) = daemon
        .call("time", "get_current_time", json!({"timezone": "UTC"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(text(&answer).contains("\"timezone\": \"UTC\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_filesystem_over_stdio_with_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi from a file").unwrap();
    // `${VAR}` in args expands from the daemon's environment.
    let root = dir.path().to_str().unwrap();
    let daemon = Daemon::start_with(
        json!({"fs": {"command": "node", "args": [peers().filesystem_js(), "${ROOT_FOR_TEST}"]}}),
        &[],
        &[("ROOT_FOR_TEST", root)],
    );
    daemon.connect("fs").await;
    let path = dir.path().join("hello.txt");
    let (_, answer) = daemon
        .call("fs", "read_text_file", json!({"path": path}))
        .await;
    assert_eq!(text(&answer), "hi from a file", "{answer}");
}
