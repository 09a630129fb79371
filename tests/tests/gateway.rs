//! The MCP gateway (SPEC §8) against the official Python SDK client
//! (`tests/fixtures/gateway_client.py`): the aggregate `/mcp` in front of server-everything
//! and two servers whose tool names collide, one server through `/servers/NAME/mcp` and
//! `x-mcp-server-id`, tool filters and argument validation on both faces, `list_changed`
//! after an edit of `mcp.json`, and bad input at the endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::{Daemon, Proc, everything_entry, fixture, peers, py_stdio_entry};
use serde_json::{Value, json};

/// The Python SDK client of the fixtures, its steps read as they come.
struct SdkClient {
    _proc: Proc,
    steps: mpsc::Receiver<Value>,
}

/// Which official SDK's client runs the steps.
#[derive(Clone, Copy, Debug)]
enum Sdk {
    /// `gateway_client.py`, on PyPI `mcp`.
    Python,
    /// `gateway_client.mjs`, on npm `@modelcontextprotocol/sdk` (Node 22).
    TypeScript,
}

impl SdkClient {
    fn start(url: &str, headers: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_sdk(Sdk::Python, url, headers, env)
    }

    fn start_sdk(sdk: Sdk, url: &str, headers: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = match sdk {
            Sdk::Python => {
                let mut command = Command::new(peers().python());
                command.arg(fixture("gateway_client.py"));
                command
            }
            Sdk::TypeScript => {
                let mut command = Command::new(peers().node22());
                command
                    .arg(fixture("gateway_client.mjs"))
                    .env("MCP_SDK_DIR", peers().typescript_sdk());
                command
            }
        };
        command
            .arg(url)
            .args(headers)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Proc::spawn(&mut command);
        let stdout = proc.child().stdout.take().expect("stdout");
        let (sender, steps) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(step) = serde_json::from_str::<Value>(&line) {
                    let _ = sender.send(step);
                }
            }
        });
        Self { _proc: proc, steps }
    }

    /// The next step, which must be `name`.
    fn step(&self, name: &str) -> Value {
        let step = self
            .steps
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("the SDK client did not reach step {name:?}"));
        assert_eq!(step["step"], name, "unexpected step: {step}");
        step
    }
}

/// A JSON array of numbers as `f64`s (the SDKs write `1` or `1.0`).
fn floats(values: &Value) -> Vec<f64> {
    values
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn names(step: &Value) -> Vec<String> {
    step["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect()
}

/// Rewrites the daemon's `mcp.json` at once (as editors do: a new file renamed over it).
fn write_config(daemon: &Daemon, servers: Value) {
    let path = daemon.config_path();
    let next = path.with_extension("json.new");
    std::fs::write(&next, json!({"mcpServers": servers}).to_string()).unwrap();
    std::fs::rename(next, path).unwrap();
}

/// mcp-client with `servers` (each with `autoConnect`), once every one is connected.
async fn running(servers: &[(&str, Value)]) -> Daemon {
    let config: serde_json::Map<String, Value> = servers
        .iter()
        .map(|(name, entry)| {
            let entry = dict(entry.clone(), &[("autoConnect", json!(true))]);
            (name.to_string(), entry)
        })
        .collect();
    let daemon = Daemon::start(Value::Object(config));
    for (name, _) in servers {
        connected(&daemon, name).await;
    }
    daemon
}

/// Waits (up to 60 s) for `server` to be connected.
async fn connected(daemon: &Daemon, server: &str) {
    let state = daemon
        .wait_server(server, Duration::from_secs(60), |s| s["connected"] == true)
        .await;
    assert_eq!(
        state["connected"], true,
        "{server} did not connect: {state}"
    );
}

fn servers() -> Value {
    let mut py = py_stdio_entry();
    py["disabledTools"] = json!(["stats"]);
    json!({
        "everything": dict(everything_entry(), &[("autoConnect", json!(true))]),
        "py": dict(py, &[("autoConnect", json!(true))]),
        "py2": dict(py_stdio_entry(), &[("autoConnect", json!(true))]),
    })
}

fn dict(mut entry: Value, fields: &[(&str, Value)]) -> Value {
    for (key, value) in fields {
        entry[*key] = value.clone();
    }
    entry
}

/// Checks the steps every run shares (calls, validation, prompts, resources, progress,
/// sampling, elicitation, cancellation) and returns at the `ready` step.
fn common_steps(client: &SdkClient, prefix: &str) {
    let invalid = client.step("invalid");
    assert_eq!(invalid["is_error"], true);
    let text = invalid["text"].as_str().unwrap();
    assert!(
        text.contains("/message") && text.contains("string"),
        "{text}"
    );
    let prompts = client.step("prompts");
    assert!(names(&prompts).contains(&format!("{prefix}simple-prompt")));
    assert_eq!(
        client.step("prompt")["text"],
        "This is a simple prompt without arguments."
    );
    let resource = client.step("resource");
    assert!(resource["count"].as_u64().unwrap() > 0);
    assert!(!resource["text"].as_str().unwrap().is_empty(), "{resource}");
    let progress = client.step("progress");
    assert_eq!(floats(&progress["updates"]), [1.0, 2.0, 3.0], "{progress}");
    let sampling = client.step("sampling");
    assert_eq!(sampling["is_error"], false);
    assert!(
        sampling["text"]
            .as_str()
            .unwrap()
            .contains("sampled by the gateway test client"),
        "{sampling}"
    );
    let elicitation = client.step("elicitation");
    assert!(
        elicitation["text"].as_str().unwrap().contains("Ada"),
        "{elicitation}"
    );
    let cancel = client.step("cancel");
    assert_eq!(cancel["cancelled"], true);
    assert_eq!(cancel["stats"]["in_flight"], 0, "the call leaked: {cancel}");
    assert_eq!(
        cancel["stats"]["cancelled"], 1,
        "not cancelled upstream: {cancel}"
    );
    client.step("ready");
}

#[tokio::test]
async fn the_aggregate_serves_every_server_to_the_python_sdk() {
    aggregate_with(Sdk::Python).await;
}

#[tokio::test]
async fn the_aggregate_serves_every_server_to_the_typescript_sdk() {
    aggregate_with(Sdk::TypeScript).await;
}

/// The aggregate in front of server-everything and two servers whose tool names collide,
/// through `sdk`'s client: every step, then a server added by editing mcp.json.
async fn aggregate_with(sdk: Sdk) {
    let daemon = Daemon::start(servers());
    for server in ["everything", "py", "py2"] {
        connected(&daemon, server).await;
    }
    let client = SdkClient::start_sdk(
        sdk,
        &format!("{}/mcp", daemon.base),
        &[],
        &[
            ("GATEWAY_PREFIX", "everything__"),
            ("GATEWAY_CALL", "everything__echo,py__echo,py2__echo"),
            ("GATEWAY_HIDDEN", "py__stats"),
            ("GATEWAY_SLEEP", "py2__sleep"),
            ("GATEWAY_STATS", "py2__stats"),
        ],
    );
    let init = client.step("initialize");
    assert_eq!(init["server"], "mcp-client");
    assert!(init["capabilities"]["prompts"].is_object(), "{init}");
    let tools = names(&client.step("tools"));
    for name in ["everything__echo", "py__echo", "py2__echo", "py2__stats"] {
        assert!(
            tools.contains(&name.to_string()),
            "{name} missing: {tools:?}"
        );
    }
    assert!(
        !tools.contains(&"py__stats".to_string()),
        "disabledTools shown"
    );
    let valid = |name: &String| {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    assert!(tools.iter().all(valid), "{tools:?}");
    for (name, text) in [
        ("everything__echo", "Echo: hi"),
        ("py__echo", "hi"),
        ("py2__echo", "hi"),
    ] {
        let call = client.step("call");
        assert_eq!(call["name"], name);
        assert_eq!(call["text"], text, "{call}");
    }
    let hidden = client.step("hidden");
    assert!(
        hidden["error"].is_string(),
        "a hidden tool was called: {hidden}"
    );
    common_steps(&client, "everything__");
    // A server added by editing mcp.json reaches the open session.
    let mut edited = servers();
    edited["py3"] = dict(py_stdio_entry(), &[("autoConnect", json!(true))]);
    write_config(&daemon, edited);
    let changed = client.step("changed");
    assert_eq!(changed["seen"], true, "no tools/list_changed: {changed}");
    let tools = names(&changed);
    assert!(tools.contains(&"py3__echo".to_string()), "{tools:?}");
}

#[tokio::test]
async fn one_server_is_transparent_and_its_filters_change_without_a_reconnect() {
    let daemon = Daemon::start(servers());
    for server in ["everything", "py", "py2"] {
        connected(&daemon, server).await;
    }
    let pid = daemon.server("everything").await["pid"].clone();
    let routes = [
        (format!("{}/servers/everything/mcp", daemon.base), vec![]),
        (
            format!("{}/mcp", daemon.base),
            vec!["x-mcp-server-id=everything"],
        ),
    ];
    for (round, (url, headers)) in routes.iter().enumerate() {
        let headers: Vec<&str> = headers.iter().map(|h| &**h).collect();
        let client = SdkClient::start(
            url,
            &headers,
            &[
                ("GATEWAY_CALL", "echo"),
                ("GATEWAY_HIDDEN", if round == 0 { "get-env" } else { "" }),
                ("GATEWAY_WAIT", if round == 0 { "60" } else { "0" }),
            ],
        );
        let init = client.step("initialize");
        assert_eq!(init["server"], "mcp-servers/everything", "{init}");
        let tools = names(&client.step("tools"));
        assert!(tools.contains(&"echo".to_string()), "{tools:?}");
        assert!(tools.iter().all(|t| !t.contains("__")), "{tools:?}");
        assert_eq!(client.step("call")["text"], "Echo: hi");
        if round == 0 {
            // Not hidden yet: get-env answers.
            assert!(client.step("hidden")["error"].is_null());
        }
        let invalid = client.step("invalid");
        assert_eq!(invalid["is_error"], true, "{invalid}");
        assert!(invalid["text"].as_str().unwrap().contains("/message"));
        let prompts = client.step("prompts");
        assert!(names(&prompts).contains(&"simple-prompt".to_string()));
        client.step("prompt");
        client.step("resource");
        assert_eq!(floats(&client.step("progress")["updates"]), [1.0, 2.0, 3.0]);
        assert_eq!(client.step("sampling")["is_error"], false);
        assert_eq!(client.step("elicitation")["is_error"], false);
        client.step("ready");
        if round == 0 {
            let mut edited = servers();
            edited["everything"]["disabledTools"] = json!(["get-env"]);
            write_config(&daemon, edited);
            let changed = client.step("changed");
            assert_eq!(changed["seen"], true, "{changed}");
            assert!(!names(&changed).contains(&"get-env".to_string()));
            assert_eq!(
                daemon.server("everything").await["pid"],
                pid,
                "a filter change reconnected the server"
            );
        }
    }
}

#[tokio::test]
async fn rest_hides_filtered_tools_and_validates_arguments() {
    let daemon = Daemon::start(servers());
    connected(&daemon, "py").await;
    let (_, tools) = daemon.get("/tools").await;
    let py: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["server_name"] == "py")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(py.contains(&"echo") && !py.contains(&"stats"), "{py:?}");
    let (status, answer) = daemon.call("py", "stats", json!({})).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "tool_not_allowed");
    let (status, answer) = daemon.call("py", "echo", json!({"message": 5})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["code"], "invalid_arguments");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.contains("/message"), "{detail}");
    let (status, answer) = daemon.call("py", "echo", json!({})).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("message"));
}

#[tokio::test]
async fn bad_input_at_the_gateway_gets_clear_answers() {
    let daemon = running(&[("py", py_stdio_entry())]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{}/mcp", daemon.base);
    let accept = "application/json, text/event-stream";
    // A page on another origin (DNS rebinding, cross-site POST): refused.
    let answer = http
        .post(&url)
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    // Malformed JSON-RPC: a JSON-RPC error, not a hang or a crash.
    let answer = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());
    // A session id nobody gave out.
    let answer = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("mcp-session-id", "no-such-session")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    // Unknown servers, by path and by header.
    let (status, body) = daemon.post("/servers/nope/mcp", json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "unknown_server");
    let answer = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("x-mcp-server-id", "nope")
        .body(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    // The daemon is still fine.
    let (status, _) = daemon.get("/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn mag_server_serves_the_gateway_under_its_own_token() {
    let token = "gateway-test-token-0123456789";
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({
            "everything": dict(everything_entry(), &[("autoConnect", json!(true))]),
            "py": dict(py_stdio_entry(), &[("autoConnect", json!(true))]),
        }),
        env: vec![("MAG_API_TOKEN".into(), token.into())],
        ..MagOptions::default()
    });
    mag.token = Some(token.into());
    mag.wait_running().await;
    mag.connect("everything").await;
    mag.connect("py").await;
    // Without mag-server's token: 401, before anything reaches mcp-client.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let answer = http
        .post(format!("{}/mcp", mag.base))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // With it: the aggregate and one server, streams and all.
    let bearer = format!("Authorization=Bearer {token}");
    let client = SdkClient::start(
        &format!("{}/mcp", mag.base),
        &[&bearer],
        &[
            ("GATEWAY_PREFIX", "everything__"),
            ("GATEWAY_CALL", "everything__echo,py__echo"),
            ("GATEWAY_SLEEP", "py__sleep"),
            ("GATEWAY_STATS", "py__stats"),
            ("GATEWAY_WAIT", "0"),
        ],
    );
    assert_eq!(client.step("initialize")["server"], "mcp-client");
    let tools = names(&client.step("tools"));
    assert!(tools.contains(&"py__echo".to_string()), "{tools:?}");
    assert_eq!(client.step("call")["text"], "Echo: hi");
    assert_eq!(client.step("call")["text"], "hi");
    common_steps(&client, "everything__");
    let one = SdkClient::start(
        &format!("{}/servers/py/mcp", mag.base),
        &[&bearer],
        &[("GATEWAY_CALL", "echo"), ("GATEWAY_WAIT", "0")],
    );
    assert_eq!(one.step("initialize")["server"], "mag-test-peer");
    assert!(names(&one.step("tools")).contains(&"echo".to_string()));
    assert_eq!(one.step("call")["text"], "hi");
}

/// Reads `data:` lines of an SSE answer until one parses as JSON that `wanted` accepts.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:")
                && let Ok(event) = serde_json::from_str::<Value>(data.trim())
                && wanted(&event)
            {
                return event;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no such event within 30 s")
            .expect("the stream ended")
            .expect("the stream failed");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A client session of the gateway over plain HTTP, with no GET stream: what an SDK does,
/// by hand, to see exactly which stream carries what.
struct RawSession {
    http: reqwest::Client,
    url: String,
    id: String,
}

impl RawSession {
    /// `initialize` (with `capabilities`) and `notifications/initialized` at `url`.
    async fn open(url: &str, capabilities: Value) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut session = Self {
            http,
            url: url.to_string(),
            id: String::new(),
        };
        let init = session
            .post(mag_tests::initialize_request("raw-http", capabilities))
            .await;
        session.id = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        drop(init);
        session
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        session
    }

    /// POSTs one JSON-RPC message in the session; the answer's body is not read.
    async fn post(&self, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if !self.id.is_empty() {
            request = request.header("mcp-session-id", &self.id);
        }
        request.send().await.expect("POST")
    }

    /// One JSON-RPC request `method` with `params` as request `id`; its answer, read from the
    /// request's stream.
    async fn ask(&self, id: u64, method: &str, params: Value) -> Value {
        let answer = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let mut stream = answer.bytes_stream();
        next_event(&mut stream, &mut String::new(), |e| e["id"] == id).await
    }

    /// POSTs `tools/call` of `tool` with `arguments` as request `id`; the answer (an SSE
    /// stream) is not read.
    async fn call_tool(&self, id: u64, tool: &str, arguments: Value) -> reqwest::Response {
        self.post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}))
            .await
    }

    /// The session's own stream (`GET`), where notifications not tied to a request come.
    async fn stream(&self) -> reqwest::Response {
        self.http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.id)
            .send()
            .await
            .expect("GET")
    }

    /// Ends the session (`DELETE`).
    async fn end(&self) -> reqwest::StatusCode {
        let ended = self
            .http
            .delete(&self.url)
            .header("mcp-session-id", &self.id)
            .send()
            .await
            .expect("DELETE");
        ended.status()
    }
}

/// Waits for `sampling/createMessage` on the stream of `call` (a `tools/call` with id 2 in
/// `session`), answers it with `text`, and returns the call's answer.
async fn sampled_on_its_stream(session: &RawSession, call: reqwest::Response, text: &str) -> Value {
    let mut stream = call.bytes_stream();
    let mut buffer = String::new();
    let asked = next_event(&mut stream, &mut buffer, |e| {
        e["method"] == "sampling/createMessage"
    })
    .await;
    session
        .post(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "role": "assistant", "model": "m", "stopReason": "endTurn",
            "content": {"type": "text", "text": text}}}))
        .await;
    next_event(&mut stream, &mut buffer, |e| e["id"] == 2).await
}

#[tokio::test]
async fn a_sampling_request_comes_on_the_stream_of_the_call_that_caused_it() {
    let daemon = running(&[("everything", everything_entry())]).await;
    let url = format!("{}/servers/everything/mcp", daemon.base);
    let session = RawSession::open(&url, json!({"sampling": {}})).await;
    // No GET stream: the request must come on the call's own stream.
    let call = session
        .call_tool(
            2,
            "trigger-sampling-request",
            json!({"prompt": "hi", "maxTokens": 5}),
        )
        .await;
    let result = sampled_on_its_stream(&session, call, "sampled on the call's stream").await;
    let text = mag_tests::text(&result["result"]);
    assert!(text.contains("sampled on the call's stream"), "{result}");
}

#[tokio::test]
async fn a_call_in_flight_is_cancelled_on_the_server_when_its_session_ends() {
    let daemon = running(&[("py", py_stdio_entry())]).await;
    let url = format!("{}/servers/py/mcp", daemon.base);
    let session = RawSession::open(&url, json!({})).await;
    // A long call whose client then ends its session.
    let call = session.call_tool(2, "sleep", json!({"ms": 30000})).await;
    let started = py_json_until(&daemon, "stats", |s| s["in_flight"] == 1).await;
    assert_eq!(started["in_flight"], 1, "the call did not start: {started}");
    drop(call);
    let ended = session.end().await;
    assert!(ended.is_success(), "{ended}");
    let last = py_json_until(&daemon, "stats", |s| s["in_flight"] == 0).await;
    assert_eq!(last["in_flight"], 0, "the call leaked: {last}");
    assert_eq!(last["cancelled"], 1, "not cancelled on the server: {last}");
}

/// The JSON text that `tool` of the `py` server answers (`stats`: its `sleep` calls in
/// flight, cancelled, completed; `asked`: its log level and subscribed URIs), by REST.
async fn py_json(daemon: &Daemon, tool: &str) -> Value {
    let (_, answer) = daemon.call("py", tool, json!({})).await;
    serde_json::from_str(mag_tests::text(&answer)).expect("a JSON answer")
}

/// [`py_json`] once `done` holds for it (or after 10 s): the last answer.
async fn py_json_until(daemon: &Daemon, tool: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut answer = Value::Null;
    for _ in 0..200 {
        answer = py_json(daemon, tool).await;
        if done(&answer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answer
}

#[tokio::test]
async fn the_aggregate_lists_come_in_pages_with_opaque_cursors() {
    // 7 × server-everything's 16 tools: more than one page of 100.
    let names: Vec<String> = (0..7).map(|i| format!("e{i}")).collect();
    let servers: Vec<(&str, Value)> = names.iter().map(|n| (&**n, everything_entry())).collect();
    let daemon = running(&servers).await;
    let session = RawSession::open(&format!("{}/mcp", daemon.base), json!({})).await;
    let list = |cursor: Option<&Value>| {
        let mut params = json!({});
        if let Some(cursor) = cursor {
            params["cursor"] = cursor.clone();
        }
        params
    };
    let mut all = Vec::new();
    let mut cursor: Option<Value> = None;
    for id in 2..10 {
        let page = session.ask(id, "tools/list", list(cursor.as_ref())).await;
        let tools = page["result"]["tools"].as_array().expect("tools").clone();
        assert!(tools.len() <= 100, "a page of {}", tools.len());
        all.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        match page["result"].get("nextCursor") {
            Some(next) if !next.is_null() => cursor = Some(next.clone()),
            _ => break,
        }
    }
    assert_eq!(all.len(), 7 * 16, "{all:?}");
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a tool listed twice");
    // A cursor the gateway never gave out: invalid params.
    let refused = session
        .ask(20, "tools/list", list(Some(&json!("made-up"))))
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
}

#[tokio::test]
async fn client_sessions_are_capped() {
    let daemon = Daemon::start_with(
        json!({"py": dict(py_stdio_entry(), &[("autoConnect", json!(true))])}),
        &["--max-sessions", "2"],
        &[],
    );
    connected(&daemon, "py").await;
    let aggregate = format!("{}/mcp", daemon.base);
    let one = format!("{}/servers/py/mcp", daemon.base);
    let first = RawSession::open(&aggregate, json!({})).await;
    let _second = RawSession::open(&one, json!({})).await;
    // A third, on either route: 503 with the reason, and the open sessions still work.
    let third = first
        .http
        .post(&aggregate)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(mag_tests::initialize_request("third", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 503);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["code"], "too_many_sessions", "{body}");
    let tools = first.ask(2, "tools/list", json!({})).await;
    assert!(tools["result"]["tools"].is_array(), "{tools}");
    // Ending one makes room.
    assert!(first.end().await.is_success());
    let _again = RawSession::open(&aggregate, json!({})).await;
}

#[tokio::test]
async fn each_session_hears_server_logs_from_its_own_level_up() {
    let daemon = running(&[("py", py_stdio_entry())]).await;
    let url = format!("{}/servers/py/mcp", daemon.base);
    let quiet = RawSession::open(&url, json!({})).await;
    let chatty = RawSession::open(&url, json!({})).await;
    for (session, level) in [(&quiet, "error"), (&chatty, "debug")] {
        let answer = session
            .ask(2, "logging/setLevel", json!({"level": level}))
            .await;
        assert!(answer.get("result").is_some(), "{answer}");
    }
    let mut quiet_stream = quiet.stream().await.bytes_stream();
    let mut chatty_stream = chatty.stream().await.bytes_stream();
    let (mut quiet_buffer, mut chatty_buffer) = (String::new(), String::new());
    for (id, level, message) in [(3, "info", "chatter"), (4, "error", "alarm")] {
        let arguments = json!({"level": level, "message": message});
        chatty
            .ask(
                id,
                "tools/call",
                json!({"name": "log", "arguments": arguments}),
            )
            .await;
        let heard = next_event(&mut chatty_stream, &mut chatty_buffer, |e| {
            e["method"] == "notifications/message"
        })
        .await;
        assert_eq!(heard["params"]["data"], message, "{heard}");
    }
    // The session that asked for errors only never got the info line.
    let heard = next_event(&mut quiet_stream, &mut quiet_buffer, |e| {
        e["method"] == "notifications/message"
    })
    .await;
    assert_eq!(heard["params"]["data"], "alarm", "{heard}");
    assert_eq!(heard["params"]["level"], "error", "{heard}");
}

#[tokio::test]
async fn servers_are_asked_for_the_sessions_levels_and_subscriptions_across_reconnects() {
    let daemon = running(&[("py", py_stdio_entry())]).await;
    let one = RawSession::open(&format!("{}/servers/py/mcp", daemon.base), json!({})).await;
    let all = RawSession::open(&format!("{}/mcp", daemon.base), json!({})).await;
    for (session, level, uris) in [
        (&one, "debug", &["note://a", "note://b"][..]),
        (&all, "error", &["note://a"][..]),
    ] {
        let set = session
            .ask(2, "logging/setLevel", json!({"level": level}))
            .await;
        assert!(set.get("result").is_some(), "{set}");
        for (id, uri) in (3..).zip(uris) {
            let subscribed = session
                .ask(id, "resources/subscribe", json!({"uri": uri}))
                .await;
            assert!(subscribed.get("result").is_some(), "{subscribed}");
        }
    }
    let both = json!({"log_level": "debug", "subscribed": ["note://a", "note://b"]});
    assert_eq!(py_json(&daemon, "asked").await, both);

    // The server dies; the process that replaces it is asked the same.
    let pid = daemon.server("py").await["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = daemon
        .wait_server("py", Duration::from_secs(60), |s| {
            s["connected"] == true && s["pid"] != json!(pid)
        })
        .await;
    assert_ne!(back["pid"], json!(pid), "{back}");
    assert_eq!(py_json_until(&daemon, "asked", |a| *a == both).await, both);

    // note://a is still held by the other session: only the server's own unsubscribe would
    // drop it.
    let dropped = one
        .ask(9, "resources/unsubscribe", json!({"uri": "note://a"}))
        .await;
    assert!(dropped.get("result").is_some(), "{dropped}");
    assert_eq!(py_json(&daemon, "asked").await, both);

    // The session that asked for debug and note://b ends: the level goes back to the other
    // session's, note://b is unsubscribed.
    assert!(one.end().await.is_success());
    let left = json!({"log_level": "error", "subscribed": ["note://a"]});
    assert_eq!(py_json_until(&daemon, "asked", |a| *a == left).await, left);
}

#[tokio::test]
async fn a_remote_servers_sampling_request_goes_to_the_client_whose_call_caused_it() {
    let server = mag_tests::PyHttpServer::start("streamable-http");
    let remote = json!({"url": format!("{}/mcp", server.url())});
    let daemon = running(&[("remote", remote)]).await;
    let url = format!("{}/servers/remote/mcp", daemon.base);
    let first = RawSession::open(&url, json!({"sampling": {}})).await;
    let second = RawSession::open(&url, json!({"sampling": {}})).await;
    // The first client's call asks for a sampling after a second; by then the second client
    // has a newer call in flight on the same server, which also declared sampling.
    let call = first
        .call_tool(2, "sample", json!({"prompt": "hi", "delay_ms": 1000}))
        .await;
    let _newer = second.call_tool(2, "sleep", json!({"ms": 5000})).await;
    let result = sampled_on_its_stream(&first, call, "sampled by the first client").await;
    assert_eq!(
        mag_tests::text(&result["result"]),
        "sampled by the first client",
        "{result}"
    );
}
