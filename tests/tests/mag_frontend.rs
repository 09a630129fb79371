//! MAG's frontend, replayed (SPEC §9): the calls its MCP page and its MCP-generation (agent)
//! page make, in their order, with the bodies and headers its services send at MAG revision
//! 5bff288 (`frontend/src/services/mcpService.ts`, `conversationService.ts`,
//! `modelService.ts`; the order of `store/mcpStore.ts`, `pages/MCPManager.tsx` and
//! `hooks/useSSEConnection.ts`), as a browser sends them from the frontend's origin
//! (`http://localhost:5173`, axios with its JWT), against the real mag-server with JWT users
//! alice and bob and an admin. The answers asserted are the ones that frontend reads.

mod generation_support;

use std::time::Duration;

use mag_tests::llm::Reply;
use mag_tests::py_stdio_entry;
use serde_json::{Value, json};

use generation_support::*;

const SECRET: &str = "mag-frontend-test-jwt-secret";
/// The origin of MAG's frontend (its Vite dev server).
const ORIGIN: &str = "http://localhost:5173";

/// MAG's frontend as the browser runs it: axios (`services/api.ts`: base `…/api`,
/// `Content-Type: application/json` on every request with data, none without, the JWT as
/// `Authorization: Bearer`) and `fetch` for the agent's SSE.
struct Page {
    http: reqwest::Client,
    api: String,
    token: Option<String>,
}

impl Page {
    fn of(mag: &mag_tests::mag::MagServer, token: Option<&str>) -> Self {
        Self {
            http: http(),
            api: format!("{}/api", mag.base),
            token: token.map(str::to_owned),
        }
    }

    /// One axios call: status and JSON body (axios drops `Content-Type` when there is no
    /// data: `adapters/xhr.js`; the browser then sends `Content-Length: 0` on a POST).
    async fn call(&self, method: reqwest::Method, path: &str, data: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .header("origin", ORIGIN)
            .header("accept", "application/json, text/plain, */*")
            .timeout(Duration::from_secs(120));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match data {
            Some(data) => request
                .header("content-type", "application/json")
                .body(data.to_string()),
            None if method == reqwest::Method::POST => request.header("content-length", "0"),
            None => request,
        };
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let cors = response
            .headers()
            .get("access-control-allow-origin")
            .cloned();
        assert_eq!(
            cors.as_ref().and_then(|v| v.to_str().ok()),
            Some(ORIGIN),
            "{method} {path}: the browser reads only answers with CORS headers"
        );
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    // mcpService.ts
    async fn get_mcp_config(&self) -> (u16, Value) {
        self.get("/mcp/config").await
    }
    async fn update_mcp_config(&self, config: Value, version: &Value) -> (u16, Value) {
        let body = json!({"config": config, "version": version});
        self.call(reqwest::Method::POST, "/mcp/config", Some(body))
            .await
    }
    async fn add_mcp_server(&self, name: &str, config: Value, version: &Value) -> (u16, Value) {
        let body = json!({"mcpServers": {name: config}, "version": version});
        self.call(reqwest::Method::POST, "/mcp/add", Some(body))
            .await
    }
    async fn remove_mcp_servers(&self, names: &[&str], version: &Value) -> (u16, Value) {
        let body = json!({"server_names": names, "version": version});
        self.call(reqwest::Method::POST, "/mcp/remove", Some(body))
            .await
    }
    async fn get_mcp_status(&self) -> (u16, Value) {
        self.get("/mcp/status").await
    }
    async fn connect_server(&self, name: &str) -> (u16, Value) {
        let path = format!("/mcp/connect/{name}");
        self.call(reqwest::Method::POST, &path, None).await
    }
    async fn disconnect_server(&self, name: &str) -> (u16, Value) {
        let path = format!("/mcp/disconnect/{name}");
        self.call(reqwest::Method::POST, &path, None).await
    }
    async fn get_mcp_tools(&self) -> (u16, Value) {
        self.get("/mcp/tools").await
    }
    async fn test_mcp_tool(&self, server: &str, tool: &str, params: Value) -> (u16, Value) {
        let body = json!({"server_name": server, "tool_name": tool, "params": params});
        self.call(reqwest::Method::POST, "/mcp/test-tool", Some(body))
            .await
    }

    // conversationService.ts
    async fn get_conversations(&self) -> (u16, Value) {
        self.get("/chat/conversations").await
    }
    async fn get_conversation_detail(&self, id: &str) -> (u16, Value) {
        self.get(&format!("/chat/conversations/{id}")).await
    }
    async fn update_conversation(&self, id: &str, field: &str, body: Value) -> (u16, Value) {
        let path = format!("/chat/conversations/{id}/{field}");
        self.call(reqwest::Method::PUT, &path, Some(body)).await
    }
    async fn delete_conversation_permanent(&self, id: &str) -> (u16, Value) {
        let path = format!("/chat/conversations/{id}/permanent");
        self.call(reqwest::Method::DELETE, &path, None).await
    }
    /// `createAgentSSE`: `fetch` with MAG's headers (the browser's preflight first: they
    /// are not CORS-safelisted); the `data:` payloads, `[DONE]` last.
    async fn create_agent_sse(&self, request: Value) -> (u16, Vec<String>) {
        let url = format!("{}/mcp/generate", self.api);
        let preflight = self
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,cache-control,content-type",
            )
            .send()
            .await
            .expect("a preflight answer");
        let allowed = preflight
            .headers()
            .get("access-control-allow-headers")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("cache-control") && allowed.contains("authorization"),
            "the browser would not send the request: {allowed:?}"
        );
        let mut call = self
            .http
            .post(url)
            .header("origin", ORIGIN)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(request.to_string());
        if let Some(token) = &self.token {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.expect("an answer");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let data = text
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.trim().to_owned())
            .collect();
        (status, data)
    }

    // modelService.ts
    async fn get_models(&self) -> (u16, Value) {
        self.get("/models").await
    }
}

/// `answer` (status, body) asserted to be 200 with MAG's `status` field `wanted`
/// (`"success"`, `"error"`); the body.
fn status_is(answer: (u16, Value), wanted: &str) -> Value {
    let (status, body) = answer;
    assert_eq!((status, &body["status"]), (200, &json!(wanted)), "{body}");
    body
}

/// `key` of the first event that has it.
fn event(data: &[String], key: &str) -> Option<Value> {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|e| e.get(key).cloned())
}

/// `utils/…`'s `generateMongoId`: the page picks a new conversation's id itself.
fn mongo_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:024x}", nanos & ((1u128 << 96) - 1))
}

fn mag_jwt(sub: &str, kind: &str, role: &str, exp_in: i64) -> String {
    mag_tests::mag::mag_jwt(SECRET, sub, kind, role, exp_in)
}

/// An entry as MAG's server form writes it (`types/mcp.ts`' `MCPServerConfig`).
fn form_entry(timeout: u64) -> Value {
    let mut entry = py_stdio_entry();
    for (key, value) in [
        ("transportType", json!("stdio")),
        ("autoApprove", json!([])),
        ("disabled", json!(false)),
        ("timeout", json!(timeout)),
        ("env", json!({})),
    ] {
        entry[key] = value;
    }
    entry
}

#[tokio::test(flavor = "multi_thread")]
async fn mags_frontend_pages_work_for_jwt_users() {
    let (llm, mag, _settings) = scripted_mag(&[("JWT_SECRET_KEY", SECRET.into())]);
    mag.wait_running().await;
    let alice = Page::of(&mag, Some(&mag_jwt("alice", "access", "user", 3600)));
    let bob = Page::of(&mag, Some(&mag_jwt("bob", "access", "user", 3600)));
    let admin = Page::of(&mag, Some(&mag_jwt("root", "access", "admin", 3600)));

    // The MCP page loads: fetchConfig, fetchStatus.
    let (status, config) = alice.get_mcp_config().await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["mcpServers"], json!({}));
    let mut version = config["version"].clone();
    assert_eq!(alice.get_mcp_status().await, (200, json!({})));

    // Add a server from the form (addServer, then fetchConfig): MAG's fields shown.
    let (status, added) = alice.add_mcp_server("py", form_entry(60), &version).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["status"], "success", "{added}");
    let (_, config) = alice.get_mcp_config().await;
    assert_eq!(config["mcpServers"]["py"]["transportType"], "stdio");
    assert_eq!(config["mcpServers"]["py"]["timeout"], 60);
    version = config["version"].clone();

    // Connect (a POST without data, so without Content-Type), then fetchStatus, fetchTools.
    let (status, connected) = alice.connect_server("py").await;
    assert_eq!(status, 200, "{connected}");
    let (_, servers) = alice.get_mcp_status().await;
    assert_eq!(servers["py"]["connected"], true, "{servers}");
    let (status, tools) = alice.get_mcp_tools().await;
    assert_eq!(status, 200, "{tools}");
    let names: Vec<&str> = tools["py"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{tools}");

    // The tool tester; after a disconnect it connects first (MAG's executor does).
    let tested = status_is(
        alice
            .test_mcp_tool("py", "echo", json!({"message": "hi"}))
            .await,
        "success",
    );
    assert!(tested["result"].to_string().contains("hi"), "{tested}");
    let (status, _) = alice.disconnect_server("py").await;
    assert_eq!(status, 200);
    let (_, servers) = alice.get_mcp_status().await;
    assert_eq!(servers["py"]["connected"], false, "{servers}");
    status_is(
        alice
            .test_mcp_tool("py", "echo", json!({"message": "again"}))
            .await,
        "success",
    );
    status_is(
        alice.test_mcp_tool("py", "no_such_tool", json!({})).await,
        "error",
    );

    // Edit (updateServer: the whole config with the page's version); the answer's
    // status.version is the page's next version.
    let mut edited = config["mcpServers"].clone();
    edited["py"]["timeout"] = json!(30);
    let (status, saved) = alice
        .update_mcp_config(json!({"mcpServers": edited}), &version)
        .await;
    assert_eq!(status, 200, "{saved}");
    version = saved["status"]["version"].clone();
    assert!(!version.is_null(), "{saved}");

    // Bob's page changes the config meanwhile: alice's save is MAG's 409 object.
    let (_, bobs) = bob.get_mcp_config().await;
    let (status, _) = bob
        .add_mcp_server("second", form_entry(60), &bobs["version"])
        .await;
    assert_eq!(status, 200);
    edited["py"]["timeout"] = json!(90);
    let (status, conflict) = alice
        .update_mcp_config(json!({"mcpServers": edited.clone()}), &version)
        .await;
    assert_eq!(status, 409, "{conflict}");
    let detail = &conflict["detail"];
    assert_eq!(detail["error"], "version_conflict", "{conflict}");
    assert!(detail["message"].is_string(), "{conflict}");
    assert_eq!(detail["expected_version"], version, "{conflict}");
    assert_ne!(detail["current_version"], version, "{conflict}");
    // MAG's integer versions (what the page holds before its first fetch) are stale too.
    let (status, _) = alice.remove_mcp_servers(&["second"], &json!(1)).await;
    assert_eq!(status, 409);
    // The page refetches: each server names the user who added it (the page's "provider"
    // line); alice may not delete bob's, bob may.
    let (_, config) = alice.get_mcp_config().await;
    assert_eq!(config["mcpServers"]["py"]["timeout"], 30, "{config}");
    assert_eq!(config["mcpServers"]["py"]["provider_user_id"], "alice");
    assert_eq!(config["mcpServers"]["second"]["provider_user_id"], "bob");
    assert!(config["mcpServers"]["second"]["created_at"].is_string());
    let (status, refused) = alice
        .remove_mcp_servers(&["second", "ghost"], &config["version"])
        .await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["status"], "permission_denied", "{refused}");
    assert_eq!(refused["permission_denied_servers"], json!(["second"]));
    assert_eq!(refused["not_found_servers"], json!(["ghost"]), "{refused}");
    // Nor may she claim it through a whole-config save; a server she adds there is hers.
    let mut claimed = config["mcpServers"].clone();
    claimed["second"]["provider_user_id"] = json!("alice");
    claimed["third"] = form_entry(60);
    let (status, saved) = alice
        .update_mcp_config(json!({"mcpServers": claimed}), &config["version"])
        .await;
    assert_eq!(status, 200, "{saved}");
    let (_, config) = alice.get_mcp_config().await;
    assert_eq!(config["mcpServers"]["second"]["provider_user_id"], "bob");
    assert_eq!(config["mcpServers"]["third"]["provider_user_id"], "alice");
    assert_eq!(config["mcpServers"]["py"]["provider_user_id"], "alice");
    status_is(
        bob.remove_mcp_servers(&["second"], &config["version"])
            .await,
        "success",
    );
    let (_, config) = alice.get_mcp_config().await;
    assert!(config["mcpServers"].get("second").is_none(), "{config}");

    // The agent page: models, the conversation list, an MCP-generation round whose id the
    // page chose, an early end (MAG's `incomplete` event).
    let (status, models) = alice.get_models().await;
    assert_eq!(status, 200, "{models}");
    assert!(
        models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == MODEL),
        "{models}"
    );
    assert!(!models.to_string().contains(API_KEY), "{models}");
    assert_eq!(
        alice.get_conversations().await,
        (200, json!({"conversations": [], "total_count": 0}))
    );
    let id = mongo_id();
    llm.push(Reply::text(round1()));
    let (status, data) = alice
        .create_agent_sse(json!({
            "requirement": "A tool that reverses text.",
            "model_name": MODEL,
            "conversation_id": id,
        }))
        .await;
    assert_eq!(status, 200, "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(event(&data, "error").is_none(), "{data:?}");
    let (status, end) = alice
        .create_agent_sse(json!({
            "requirement": "<end>END</end>",
            "model_name": MODEL,
            "conversation_id": id,
        }))
        .await;
    assert_eq!(status, 200);
    let incomplete = event(&end, "incomplete").unwrap_or_else(|| panic!("{end:?}"));
    assert_eq!(
        incomplete["missing_fields"],
        json!(["dependencies", "readme"])
    );

    // The conversation list and one conversation, then the list's edits.
    let (status, list) = alice.get_conversations().await;
    assert_eq!((status, &list["total_count"]), (200, &json!(1)), "{list}");
    assert_eq!(list["conversations"][0]["_id"], id.as_str(), "{list}");
    let (status, detail) = alice.get_conversation_detail(&id).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["generation_type"], "mcp", "{detail}");
    assert_eq!(detail["user_id"], "alice", "{detail}");
    for (field, body) in [
        ("title", json!({"title": "Reverser"})),
        ("tags", json!({"tags": ["text"]})),
        ("status", json!({"status": "favorite"})),
    ] {
        status_is(alice.update_conversation(&id, field, body).await, "success");
    }
    let (_, list) = alice.get_conversations().await;
    let listed = &list["conversations"][0];
    assert_eq!(
        (&listed["title"], &listed["tags"], &listed["status"]),
        (&json!("Reverser"), &json!(["text"]), &json!("favorite")),
        "{list}"
    );

    // Bob: none of alice's, 403 on hers; an admin reaches it.
    let (_, list) = bob.get_conversations().await;
    assert_eq!(list["total_count"], 0, "{list}");
    assert_eq!(bob.get_conversation_detail(&id).await.0, 403);
    assert_eq!(bob.delete_conversation_permanent(&id).await.0, 403);
    let (status, _) = bob
        .update_conversation(&id, "title", json!({"title": "mine"}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(admin.get_conversation_detail(&id).await.0, 200);

    // Bad tokens: 401 (the page then sends its user to /login).
    for bad in [
        Some(mag_jwt("alice", "access", "user", -60)),
        Some(mag_jwt("alice", "refresh", "user", 3600)),
        Some("not.a.jwt".to_owned()),
        None,
    ] {
        let page = Page::of(&mag, bad.as_deref());
        assert_eq!(page.get_conversations().await.0, 401, "{bad:?}");
        assert_eq!(page.get_mcp_config().await.0, 401, "{bad:?}");
    }

    // Alice deletes it for good.
    status_is(alice.delete_conversation_permanent(&id).await, "success");
    assert_eq!(alice.get_conversation_detail(&id).await.0, 404);
}
