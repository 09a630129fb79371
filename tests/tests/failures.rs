//! Connecting what cannot work, and bad requests: a 4xx with the cause every time, never a
//! 500, a panic or a hang (SPEC §4, §6).

use mag_tests::{Daemon, py_stdio_entry};
use serde_json::{Value, json};

fn detail(answer: &Value) -> &str {
    answer["detail"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failures_are_4xx_with_the_cause_every_time() {
    let daemon = Daemon::start(json!({
        "missing": {"command": "/nonexistent/mcp-server"},
        "not-on-path": {"command": "no-such-mcp-server-anywhere"},
        "exits": {"command": "sh", "args": ["-c", "echo 'fatal: bad token' >&2; exit 3"]},
        "silent": {"command": "sleep", "args": ["600"], "timeout": 1},
        "garbage": {"command": "sh", "args": ["-c", "echo hello; echo not json >&2; sleep 600"], "timeout": 1},
        "bad-cwd": {"command": "true", "cwd": "/nonexistent/dir"},
        "unset-var": {"command": "true", "args": ["${MAG_TEST_SURELY_UNSET}"]},
        "refused": {"url": "http://127.0.0.1:9/mcp", "timeout": 5},
        "refused-sse": {"type": "sse", "url": "http://127.0.0.1:9/sse", "timeout": 5},
        "off": {"command": "true", "disabled": true},
    }));
    let expect = [
        ("missing", 400, "not found"),
        ("not-on-path", 400, "not found"),
        ("exits", 400, "exit status 3"),
        ("silent", 400, "did not answer initialize within"),
        ("garbage", 400, "did not answer initialize within"),
        ("bad-cwd", 400, "not a directory"),
        ("unset-var", 400, "MAG_TEST_SURELY_UNSET is not set"),
        ("refused", 400, "initialize"),
        ("refused-sse", 400, "GET http://127.0.0.1:9/sse"),
        ("off", 409, "disabled"),
    ];
    for round in 0..3 {
        for (server, want_status, want_text) in expect {
            let (status, answer) = daemon.try_connect(server).await;
            assert_eq!(status, want_status, "round {round}, {server}: {answer}");
            assert!(
                detail(&answer).contains(want_text),
                "round {round}, {server}: {answer}"
            );
        }
    }
    let (_, answer) = daemon.try_connect("exits").await;
    assert!(
        detail(&answer).contains("fatal: bad token"),
        "stderr belongs in the cause: {answer}"
    );
    let servers = daemon.get("/servers").await.1;
    assert_eq!(servers["exits"]["status"], "failed");
    assert!(
        servers["exits"]["error"]
            .as_str()
            .unwrap()
            .contains("exit status 3")
    );
    assert_eq!(servers["off"]["status"], "disabled");
    // The noise a server printed on stdout went to its log.
    let log =
        std::fs::read_to_string(daemon.dir.path().join("logs/servers/garbage.stderr.log")).unwrap();
    assert!(log.contains("[stdout] hello"), "{log}");
    assert!(log.contains("not json"), "{log}");
    // And the daemon is fine.
    assert_eq!(daemon.get("/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/connect_server",
            "malformed",
            b"{not json".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "/connect_server",
            "empty",
            Vec::new(),
            400,
            "malformed_json",
        ),
        (
            "/connect_server",
            "missing field",
            b"{}".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/connect_server",
            "wrong type",
            br#"{"server_name": 5}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/connect_server",
            "array",
            b"[]".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/connect_server",
            "unknown",
            br#"{"server_name": "ghost"}"#.to_vec(),
            404,
            "unknown_server",
        ),
        (
            "/disconnect_server",
            "unknown",
            br#"{"server_name": "ghost"}"#.to_vec(),
            404,
            "unknown_server",
        ),
        (
            "/tool_call",
            "no tool",
            br#"{"server_name": "py"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/tool_call",
            "params not object",
            br#"{"server_name": "py", "tool_name": "echo", "params": [1]}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/tool_call",
            "not connected",
            br#"{"server_name": "py", "tool_name": "echo"}"#.to_vec(),
            409,
            "not_connected",
        ),
        (
            "/load_config",
            "no config",
            b"{}".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "/load_config",
            "bad entry",
            br#"{"config": {"mcpServers": {"x": {"args": []}}}}"#.to_vec(),
            422,
            "invalid_config",
        ),
        (
            "/load_config",
            "bad name",
            br#"{"config": {"mcpServers": {"../x": {"command": "y"}}}}"#.to_vec(),
            422,
            "invalid_config",
        ),
        ("/nope", "no route", b"{}".to_vec(), 404, "not_found"),
        (
            "/servers",
            "wrong method",
            b"{}".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "/connect_server",
            "too large",
            vec![b' '; 5 * 1024 * 1024],
            413,
            "body_too_large",
        ),
    ];
    for (path, what, body, want_status, want_code) in cases {
        let (status, answer) = daemon.post_raw(path, body).await;
        assert_eq!(status, want_status, "{path} {what}: {answer}");
        assert_eq!(answer["code"], want_code, "{path} {what}: {answer}");
        assert!(!detail(&answer).is_empty(), "{path} {what}: {answer}");
    }
    // A refused config changed nothing.
    assert!(daemon.get("/servers").await.1.get("py").is_some());
    assert_eq!(daemon.get("/").await.0, 200);
}
