//! The contract between mag-server and mcp-client (`mag_common::wire`): an answer that is
//! not what mcp-client's API says is a clear, typed error naming the field, never a silent
//! default. The real mcp-client cannot be made to answer wrongly, so a stand-in on the same
//! wire (HTTP and JSON, SPEC §4) is adopted by the real mag-server.

use std::time::Duration;

use axum::Json;
use axum::routing::{get, post};
use mag_tests::mag::{MagOptions, MagServer};
use serde_json::{Value, json};

/// An "mcp-client" on 127.0.0.1 whose `/servers` is right and whose `/tools` and
/// `/connect_server` answers each lack a required field; its port.
async fn stand_in(config_path: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = move || {
        let config_path = config_path.clone();
        async move {
            Json(json!({
                "status": "running", "servers_connected": 1, "service": "mcp-client",
                "version": "0.0.0", "pid": std::process::id(),
                "config": {"path": config_path, "revision": null, "error": null},
            }))
        }
    };
    let servers = || async {
        Json(json!({"a": {
            "connected": true, "init_attempted": true, "tools": ["echo"], "error": null,
            "transport_type": "stdio", "status": "connected", "pid": null,
            "connected_since": null, "reconnects": 0, "attempts": 0,
            "protocol_version": "2025-11-25", "auto_approve": [],
        }}))
    };
    // `input_schema` missing.
    let tools =
        || async { Json(json!([{"server_name": "a", "name": "echo", "description": null}])) };
    // `tools` missing.
    let connect = || async { Json(json!({"status": "connected", "server": "a"})) };
    let app = axum::Router::new()
        .route("/", get(root))
        .route("/servers", get(servers))
        .route("/tools", get(tools))
        .route("/connect_server", post(connect));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_missing_a_field_is_a_typed_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.json");
    std::fs::write(&config, r#"{"mcpServers": {"a": {"command": "true"}}}"#).unwrap();
    let port = stand_in(config.display().to_string()).await;
    let mag = MagServer::start_with(MagOptions {
        mcp_config: Some(config),
        client_port: Some(port),
        ..MagOptions::default()
    });
    let client = mag
        .wait_client(Duration::from_secs(30), |s| s["state"] == "adopted")
        .await;
    assert!(client["error"].is_null(), "{client}");

    // A well-formed answer passes through.
    let (status, servers) = mag.get("/api/mcp/status").await;
    assert_eq!(status, 200, "{servers}");
    assert_eq!(servers["a"]["status"], "connected");

    let (status, tools) = mag.get("/api/mcp/tools").await;
    assert_eq!(status, 502, "{tools}");
    assert_eq!(tools["code"], "mcp_client_bad_answer", "{tools}");
    let detail = tools["detail"].as_str().unwrap();
    assert!(detail.contains("GET /tools"), "{detail}");
    assert!(detail.contains("missing field `input_schema`"), "{detail}");

    let (status, connected) = mag.post("/api/mcp/connect/a", Value::Null).await;
    assert_eq!(status, 502, "{connected}");
    let detail = connected["detail"].as_str().unwrap();
    assert!(detail.contains("missing field `tools`"), "{detail}");
}
