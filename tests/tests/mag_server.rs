//! mag-server end to end (SPEC §5, §6): the real mag-server binary starting the real
//! mcp-client binary, driving real MCP servers.

use std::time::Duration;

use mag_common::config::revision;
use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::{py_stdio_entry, wait_gone};
use serde_json::{Value, json};

fn servers(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn config_round_trip_keeps_every_field_and_refuses_a_stale_version() {
    let mut entry = py_stdio_entry();
    entry["x-note"] = json!({"kept": [1, 2]});
    let mag = MagServer::start(json!({"py": entry}));
    mag.wait_running().await;

    // GET: the file's servers, fields as written plus the ones MAG fills on every entry
    // (where absent), and the revision of its bytes.
    let (status, config) = mag.get("/api/mcp/config").await;
    assert_eq!(status, 200, "{config}");
    let mut shown = entry.clone();
    shown["transportType"] = json!("stdio");
    shown["timeout"] = json!(60);
    shown["autoApprove"] = json!([]);
    shown["disabled"] = json!(false);
    assert_eq!(config["mcpServers"]["py"], shown);
    let bytes = std::fs::read(&mag.config).unwrap();
    assert_eq!(config["version"], revision(&bytes));

    // POST: written byte for byte as sent (order and unknown fields kept), live at once.
    let mut other = py_stdio_entry();
    other["zeta"] = json!(true);
    other["autoApprove"] = json!(["echo"]);
    let new = json!({
        "mcpServers": {"second": other, "py": entry},
        "comment": "top-level fields are kept too",
    });
    let (status, answer) = mag.post_config(new.clone(), &config["version"]).await;
    assert_eq!(status, 200, "{answer}");
    let written = std::fs::read(&mag.config).unwrap();
    assert_eq!(
        String::from_utf8(written.clone()).unwrap(),
        format!("{}\n", serde_json::to_string_pretty(&new).unwrap())
    );
    assert_eq!(answer["version"], revision(&written));
    assert_eq!(answer["status"]["version"], revision(&written));
    assert!(answer["status"]["message"].is_string(), "{answer}");
    assert_eq!(answer["applied"]["added"], json!(["second"]), "{answer}");
    let (status, live) = mag.get("/api/mcp/status").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(servers(&live), ["py", "second"]);
    assert_eq!(live["second"]["auto_approve"], json!(["echo"]), "{live}");

    // The old version is stale now: 409, nothing written.
    let (status, refused) = mag
        .post_config(json!({"mcpServers": {}}), &config["version"])
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "stale_revision");
    assert_eq!(refused["current_version"], answer["version"]);
    // MAG's shape: `detail` is an object.
    assert_eq!(refused["detail"]["error"], "version_conflict", "{refused}");
    assert!(
        refused["detail"]["message"]
            .as_str()
            .unwrap()
            .contains("changed")
    );
    assert_eq!(refused["detail"]["current_version"], answer["version"]);
    assert_eq!(refused["detail"]["expected_version"], config["version"]);
    assert_eq!(std::fs::read(&mag.config).unwrap(), written);

    // GET shows what was written, MAG's filled fields added where absent (an
    // `autoApprove` written is kept).
    let (_, again) = mag.get("/api/mcp/config").await;
    for (name, written) in new["mcpServers"].as_object().unwrap() {
        let shown = &again["mcpServers"][name];
        for (field, value) in written.as_object().unwrap() {
            assert_eq!(shown[field], *value, "{name}.{field}: {again}");
        }
        assert_eq!(shown["transportType"], "stdio", "{again}");
    }
    assert_eq!(
        again["mcpServers"]["second"]["autoApprove"],
        json!(["echo"])
    );
    assert_eq!(again["mcpServers"]["py"]["autoApprove"], json!([]));
    assert_eq!(again["comment"], new["comment"]);
    assert_eq!(again["version"], answer["version"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_never_lose_an_update() {
    let mag = MagServer::start(json!({}));
    mag.wait_running().await;

    // Two writers with the same version: exactly one wins.
    let mag = &mag;
    let version = json!(mag.version().await);
    let write = |name: &'static str| {
        let config = json!({"mcpServers": {name: py_stdio_entry()}});
        let version = &version;
        async move { mag.post_config(config, version).await }
    };
    let ((a, body_a), (b, body_b)) = tokio::join!(write("a"), write("b"));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{body_a} {body_b}");

    // Many adders, each retrying on 409 with a fresh version: every server lands.
    let names: Vec<String> = (0..8).map(|i| format!("srv{i}")).collect();
    let adds = names.iter().map(|name| async move {
        for _ in 0..100 {
            let version = mag.version().await;
            let (status, answer) = mag
                .post(
                    "/api/mcp/add",
                    json!({"mcpServers": {name.as_str(): py_stdio_entry()}, "version": version}),
                )
                .await;
            match status {
                200 => {
                    assert_eq!(answer["status"], "success", "{answer}");
                    assert_eq!(answer["added_servers"], json!([name]), "{answer}");
                    return;
                }
                409 => assert_eq!(answer["code"], "stale_revision", "{answer}"),
                _ => panic!("add {name}: {status} {answer}"),
            }
        }
        panic!("add {name}: still stale after 100 tries");
    });
    futures::future::join_all(adds).await;
    let (_, config) = mag.get("/api/mcp/config").await;
    let mut in_file = servers(&config["mcpServers"]);
    in_file.retain(|n| n.starts_with("srv"));
    assert_eq!(in_file, names);
    let (_, live) = mag.get("/api/mcp/status").await;
    for name in &names {
        assert!(live.get(name).is_some(), "{name} not live: {live}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_and_remove_answer_with_mags_shapes() {
    let mag = MagServer::start(json!({"py": py_stdio_entry()}));
    mag.wait_running().await;

    let mut generated = py_stdio_entry();
    generated["ai_generated"] = json!(true);
    let (status, added) = mag
        .post(
            "/api/mcp/add",
            json!({"mcpServers": {"py": py_stdio_entry(), "gen": generated}}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["status"], "partial_success");
    assert_eq!(added["added_servers"], json!(["gen"]));
    assert_eq!(added["duplicate_servers"], json!(["py"]));
    assert_eq!(added["skipped_servers"], json!(["py"]));
    assert_eq!(added["new_version"], mag.version().await);
    assert!(added["update_result"]["status"]["message"].is_string());

    let (status, same) = mag
        .post(
            "/api/mcp/add",
            json!({"mcpServers": {"py": py_stdio_entry()}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(same["status"], "no_changes");
    assert_eq!(same["current_version"], mag.version().await);

    // Removing a connected server ends its process.
    mag.connect("gen").await;
    let pid = mag.get("/api/mcp/status").await.1["gen"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let version = mag.version().await;
    let (status, removed) = mag
        .post(
            "/api/mcp/remove",
            json!({"server_names": ["gen", "ghost"], "version": version}),
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["status"], "partial_success");
    assert_eq!(removed["removed_servers"], json!(["gen"]));
    assert_eq!(removed["not_found_servers"], json!(["ghost"]));
    assert_eq!(removed["failed_removals"], json!([]));
    assert_eq!(removed["ai_generated_count"], 1);
    assert_eq!(removed["traditional_count"], 0);
    assert_eq!(removed["total_requested"], 2);
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "server {pid} kept running"
    );
    assert!(mag.get("/api/mcp/status").await.1.get("gen").is_none());

    // MAG's older body, a bare list; a stale version is refused.
    let (status, stale) = mag
        .post(
            "/api/mcp/remove",
            json!({"server_names": ["py"], "version": version}),
        )
        .await;
    assert_eq!(status, 409, "{stale}");
    let (status, removed) = mag.post("/api/mcp/remove", json!(["py"])).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["status"], "success");
    assert_eq!(mag.get("/api/mcp/config").await.1["mcpServers"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_endpoints_keep_mags_shapes() {
    let mut disabled = py_stdio_entry();
    disabled["disabled"] = json!(true);
    let mag = MagServer::start(json!({
        "one": py_stdio_entry(),
        "two": py_stdio_entry(),
        "off": disabled,
        "broken": {"command": "/nonexistent/server"},
    }));
    mag.wait_running().await;

    let (status, all) = mag.post("/api/mcp/connect/all", json!({})).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["status"], "completed");
    assert_eq!(
        all["summary"],
        json!({"total_servers": 3, "successful_connections": 2, "failed_connections": 1, "already_connected": 0}),
    );
    assert_eq!(all["servers"]["one"]["status"], "connected");
    assert_eq!(all["servers"]["broken"]["status"], "failed");
    assert!(all["servers"]["broken"]["error"].is_string(), "{all}");
    assert!(all["servers"].get("off").is_none(), "{all}");
    assert!(
        all["tools"]["two"]
            .as_array()
            .unwrap()
            .contains(&json!("echo"))
    );
    let (_, again) = mag.post("/api/mcp/connect/all", json!({})).await;
    assert_eq!(again["summary"]["already_connected"], 2, "{again}");

    let (status, tools) = mag.get("/api/mcp/tools").await;
    assert_eq!(status, 200);
    assert_eq!(servers(&tools), ["one", "two"]);
    let echo = tools["one"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo")
        .expect("echo");
    assert!(echo["description"].is_string() && echo["input_schema"].is_object());

    let (status, ok) = mag
        .test_tool("one", "add_numbers", json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["status"], "success");
    assert_eq!(ok["result"][0]["text"], "5.0");
    assert_eq!(ok["params"], json!({"a": 2, "b": 3}));
    assert!(ok["execution_time"].as_f64().unwrap() >= 0.0);
    let (status, failed) = mag
        .test_tool("one", "fail", json!({"message": "nope"}))
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "error");
    assert_eq!(failed["code"], "tool_error", "{failed}");
    assert!(!failed["error"].as_str().unwrap().is_empty(), "{failed}");
    assert!(failed["result"].is_null(), "{failed}");

    let (status, gone) = mag.post("/api/mcp/disconnect/two", json!({})).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["status"], "disconnected");
    let (status, not) = mag.post("/api/mcp/disconnect/two", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(not["status"], "not_connected");
    let (status, off) = mag.post("/api/mcp/connect/off", json!({})).await;
    assert_eq!(status, 409, "{off}");

    // test-tool as MAG's executor: a disconnected server is connected first, and every
    // failure is a 200 with `status: "error"`.
    let (status, back) = mag.test_tool("two", "echo", json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["status"], "success", "{back}");
    assert_eq!(back["result"][0]["text"], "hi", "{back}");
    let (_, live) = mag.get("/api/mcp/status").await;
    assert_eq!(live["two"]["connected"], true, "{live}");
    for (server, tool, code) in [
        ("nope", "echo", "unknown_server"),
        ("one", "nope", "unknown_tool"),
        ("broken", "echo", "connect_failed"),
        ("off", "echo", "server_disabled"),
    ] {
        let (status, failed) = mag.test_tool(server, tool, json!({})).await;
        assert_eq!(status, 200, "{server}/{tool}: {failed}");
        assert_eq!(failed["status"], "error", "{server}/{tool}: {failed}");
        assert_eq!(failed["code"], code, "{server}/{tool}: {failed}");
        assert!(!failed["error"].as_str().unwrap().is_empty(), "{failed}");
        assert_eq!(failed["server_name"], server, "{failed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_detail() {
    let mag = MagServer::start_with(MagOptions {
        servers: json!({"py": py_stdio_entry()}),
        args: vec!["--body-limit".into(), "2048".into()],
        ..MagOptions::default()
    });
    mag.wait_running().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/mcp/config", "{not json".into(), 400, "malformed_json"),
        ("/api/mcp/config", "[1]".into(), 422, "invalid_body"),
        (
            "/api/mcp/config",
            json!({"nothing": 1}).to_string(),
            422,
            "invalid_body",
        ),
        (
            "/api/mcp/config",
            json!({"config": {"mcpServers": {"a": {"args": []}}}}).to_string(),
            422,
            "invalid_config",
        ),
        (
            "/api/mcp/config",
            json!({"config": {"mcpServers": {"../etc": {"command": "x"}}}}).to_string(),
            422,
            "invalid_config",
        ),
        (
            "/api/mcp/add",
            json!({"servers": {}}).to_string(),
            422,
            "invalid_body",
        ),
        (
            "/api/mcp/add",
            json!({"mcpServers": {"a/b": {"command": "x"}}}).to_string(),
            422,
            "invalid_server_name",
        ),
        (
            "/api/mcp/add",
            json!({"mcpServers": {"a": {"command": "x", "timeout": "soon"}}}).to_string(),
            422,
            "invalid_config",
        ),
        (
            "/api/mcp/remove",
            json!({"names": 1}).to_string(),
            422,
            "invalid_body",
        ),
        (
            "/api/mcp/test-tool",
            json!({"server_name": "py"}).to_string(),
            422,
            "invalid_body",
        ),
        (
            "/api/mcp/test-tool",
            json!({"server_name": "py", "tool_name": "echo", "params": [1]}).to_string(),
            422,
            "invalid_body",
        ),
        ("/api/mcp/connect/nope", "{}".into(), 404, "unknown_server"),
        (
            "/api/mcp/disconnect/nope",
            "{}".into(),
            404,
            "unknown_server",
        ),
        ("/api/mcp/nothing-here", "{}".into(), 404, "not_found"),
        (
            "/api/mcp/config",
            json!({"config": {"mcpServers": {}, "pad": "x".repeat(4096)}}).to_string(),
            413,
            "body_too_large",
        ),
    ];
    for (path, body, want, code) in cases {
        let (status, answer) = mag.post_raw(path, body.clone()).await;
        assert_eq!(status, want, "{path} {body:.80}: {answer}");
        assert_eq!(answer["code"], code, "{path} {body:.80}: {answer}");
        assert!(
            !answer["detail"].as_str().unwrap_or_default().is_empty(),
            "{answer}"
        );
    }
    let (status, answer) = mag.get("/api/mcp/test-tool").await;
    assert_eq!(status, 405, "{answer}");

    // A hand-broken file: GET says where, with the version that lets a client replace it.
    std::fs::write(
        &mag.config,
        "{\n  \"mcpServers\": {\"a\": {\"command\": 1}}\n}\n",
    )
    .unwrap();
    let (status, broken) = mag.get("/api/mcp/config").await;
    assert_eq!(status, 409, "{broken}");
    assert_eq!(broken["code"], "config_file_invalid");
    assert_eq!(broken["line"], 2, "{broken}");
    let (status, added) = mag
        .post(
            "/api/mcp/add",
            json!({"mcpServers": {"b": py_stdio_entry()}}),
        )
        .await;
    assert_eq!(status, 409, "{added}");
    let (status, fixed) = mag
        .post_config(json!({"mcpServers": {}}), &broken["version"])
        .await;
    assert_eq!(status, 200, "{fixed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_token_guards_everything_but_health_and_stays_out_of_the_client() {
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({}),
        env: vec![("MAG_API_TOKEN".into(), "s3cret-api".into())],
        ..MagOptions::default()
    });
    // Without the token, /health is liveness only: states, no pids, errors or stderr.
    let (status, open) = mag.get("/health").await;
    assert_eq!(status, 200, "{open}");
    assert!(open["mcp_client"]["state"].is_string(), "{open}");
    assert!(
        open.get("pid").is_none() && open["mcp_client"].get("pid").is_none(),
        "{open}"
    );
    mag.token = Some("s3cret-api".into());
    let client = mag.wait_running().await["pid"].as_u64().unwrap();
    mag.token = None;
    for path in ["/api/mcp/config", "/api/mcp/status", "/api/nothing"] {
        let (status, answer) = mag.get(path).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(answer["code"], "unauthorized");
    }
    mag.token = Some("wrong".into());
    assert_eq!(mag.get("/api/mcp/config").await.0, 401);
    mag.token = Some("s3cret-api".into());
    let (status, config) = mag.get("/api/mcp/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(mag.get("/api/mcp/status").await.0, 200);

    // Neither token reaches an answer or mcp-client's environment beyond its own.
    let health = mag.get("/health").await.1.to_string();
    assert!(!health.contains("s3cret-api"));
    let environ = std::fs::read(format!("/proc/{client}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("s3cret-api"),
        "MAG_API_TOKEN leaked to mcp-client"
    );
    assert!(environ.contains("MAG_CLIENT_TOKEN="));
}
