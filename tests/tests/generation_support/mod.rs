//! What the MCP-generation test files share: the scripted designs, a mag-server with the
//! scripted endpoint as its model, streamed rounds, a whole design-and-install, and the
//! checks of a stored conversation. (Each test file compiles this module; what one of them
//! does not use is no dead code.)
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use mag_tests::llm::{Reply, ScriptedLlm};
use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::peers;
use serde_json::{Value, json};

pub const API_KEY: &str = "sk-scripted-test-key";
pub const MODEL: &str = "scripted";

/// The generated server: the tool `reverse`, on the official Python SDK (`mcp` 2.x).
pub const MAIN_V2: &str = r#"from mcp.server.mcpserver import MCPServer

mcp = MCPServer("text_tools")


@mcp.tool()
def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]


if __name__ == "__main__":
    mcp.run("stdio")
"#;

/// Round 1's answer: analysis, todo, folder name and a first main.py (replaced in round 2).
pub fn round1() -> String {
    "Here is a first design.\n<analysis>One tool, reverse(text) -> text reversed.</analysis>\n\
     <todo>README and dependencies</todo>\n<folder_name>text_tools</folder_name>\n\
     <script_file name=\"main.py\">print('draft')</script_file>\n\
     <script_file name=\"draft_notes.py\">NOTES = 1</script_file>"
        .to_owned()
}

/// [`round2`] as a reply that holds its rest back for `pause` (10 prompt and 5 completion
/// tokens).
pub fn slow_round2(pause: Duration) -> Reply {
    Reply::Slow {
        text: round2(),
        pause,
        prompt_tokens: 10,
        completion_tokens: 5,
    }
}

/// Round 2's answer: the real main.py, dependencies (from the wheelhouse), the README, and
/// a file dropped.
pub fn round2() -> String {
    format!(
        "Done.\n<script_file name=\"main.py\">\n{MAIN_V2}\n</script_file>\n\
         <delete_script_file>draft_notes.py</delete_script_file>\n\
         <dependencies>mcp>=2,<3</dependencies>\n\
         <readme># text_tools\n\nreverse(text): the text reversed.</readme>\n<todo>nothing</todo>"
    )
}

/// A model of the settings file whose whole answer must come within 2 s.
pub const HASTY_MODEL: &str = "hasty";

/// A settings file naming the scripted endpoint as model [`MODEL`], and as
/// [`HASTY_MODEL`] with a `round_timeout` of 2 s.
pub fn settings_file(dir: &Path, llm: &ScriptedLlm) -> std::path::PathBuf {
    let path = dir.join("mag-server.toml");
    let text = format!(
        "[[models]]\nname = \"{MODEL}\"\nbase_url = \"{url}\"\napi_key_env = \"MAG_TEST_LLM_KEY\"\n\
         model = \"gpt-scripted\"\nidle_timeout = \"60s\"\n\n\
         [[models]]\nname = \"{HASTY_MODEL}\"\nbase_url = \"{url}\"\n\
         api_key_env = \"MAG_TEST_LLM_KEY\"\nmodel = \"gpt-scripted\"\nround_timeout = \"2s\"\n",
        url = llm.base_url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// mag-server with the scripted model, offline pip (the wheelhouse), and `env` on top.
pub fn start_mag(settings: &Path, env: &[(&str, String)]) -> MagServer {
    let wheels = peers().wheelhouse();
    let mut all = vec![
        ("MAG_TEST_LLM_KEY".to_owned(), API_KEY.to_owned()),
        ("PIP_NO_INDEX".to_owned(), "1".to_owned()),
        ("PIP_FIND_LINKS".to_owned(), wheels.display().to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    MagServer::start_with(MagOptions {
        servers: json!({}),
        args: vec!["--config".into(), settings.display().to_string()],
        env: all,
        ..MagOptions::default()
    })
}

/// A scripted endpoint and a mag-server using it through [`settings_file`] (kept in the
/// returned folder, which must outlive the server: a restart reads it again), with `env`.
pub fn scripted_mag(env: &[(&str, String)]) -> (ScriptedLlm, MagServer, tempfile::TempDir) {
    let llm = ScriptedLlm::start(API_KEY, vec![]);
    let settings_dir = tempfile::tempdir().unwrap();
    let settings = settings_file(settings_dir.path(), &llm);
    let mag = start_mag(&settings, env);
    (llm, mag, settings_dir)
}

/// What one `POST /api/mcp/generate` with `stream: true` gave.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub conversation_id: Option<String>,
    /// The `data:` payloads before `[DONE]`, parsed.
    pub events: Vec<Value>,
    /// Whether `data: [DONE]` ended it.
    pub done: bool,
    /// The body of a non-SSE answer.
    pub body: Value,
}

impl Streamed {
    /// The text of the chunks, joined.
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    pub fn find(&self, key: &str) -> Option<&Value> {
        self.events.iter().find_map(|e| e.get(key))
    }
}

pub fn http() -> reqwest::Client {
    mag_common::install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

pub async fn generate(mag: &MagServer, body: Value) -> Streamed {
    let mut request = http()
        .post(format!("{}/api/mcp/generate", mag.base))
        .json(&body);
    if let Some(token) = &mag.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /api/mcp/generate");
    let status = response.status().as_u16();
    let conversation_id = response
        .headers()
        .get("x-conversation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = response.text().await.expect("the whole body");
    let mut streamed = Streamed {
        status,
        conversation_id,
        events: Vec::new(),
        done: false,
        body: Value::Null,
    };
    if !sse {
        streamed.body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return streamed;
    }
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        assert!(!streamed.done, "an event after [DONE]: {data}");
        if data == "[DONE]" {
            streamed.done = true;
        } else {
            streamed
                .events
                .push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")));
        }
    }
    streamed
}

pub fn round(requirement: &str, conversation_id: Option<&str>) -> Value {
    let mut body = json!({"requirement": requirement, "model_name": MODEL, "stream": true});
    if let Some(id) = conversation_id {
        body["conversation_id"] = json!(id);
    }
    body
}

/// Two rounds, an early end (incomplete), the end: the tool is installed, registered,
/// connected and callable. Answers the conversation id.
pub async fn design_and_install(mag: &MagServer, llm: &ScriptedLlm) -> String {
    llm.push(Reply::text(round1()));
    let first = generate(mag, round("A tool that reverses text.", None)).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.done, "{first:?}");
    assert_eq!(first.text(), round1(), "chunks relayed in order, unchanged");
    let id = first.conversation_id.clone().expect("X-Conversation-Id");
    assert!(id.starts_with("mcp_") && id.len() == 20, "{id}");
    let saved = first.find("saved").expect("the round is acknowledged");
    assert_eq!(saved["conversation_id"], id.as_str());
    assert_eq!(saved["round"], 1);
    assert!(first.find("error").is_none(), "{first:?}");

    // The endpoint got the system prompt, the requirement and the usage request.
    let request = llm.requests().last().cloned().unwrap();
    assert_eq!(request["model"], "gpt-scripted");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{request}");
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("<script_file name=")
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "A tool that reverses text."})
    );

    // Ending now: the parts still missing, nothing installed.
    let early = generate(mag, round("<end>END</end>", Some(&id))).await;
    assert!(early.done, "{early:?}");
    let incomplete = early.find("incomplete").expect("incomplete");
    assert_eq!(
        incomplete["missing_fields"],
        json!(["dependencies", "readme"]),
        "{early:?}"
    );
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!([]));

    llm.push(Reply::text(round2()));
    let second = generate(mag, round("Add the README and dependencies.", Some(&id))).await;
    assert!(second.done && second.find("saved").is_some(), "{second:?}");
    let request = llm.requests().last().cloned().unwrap();
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "the history went along: {request}");
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], round1().as_str());

    let started = Instant::now();
    let end = generate(mag, round("<end>END</end>", Some(&id))).await;
    eprintln!(
        "end (write, venv, pip install, register, connect): {:?}",
        started.elapsed()
    );
    assert!(end.done, "{end:?}");
    let completion = end.find("completion").unwrap_or_else(|| panic!("{end:?}"));
    assert_eq!(completion["tool_name"], "text_tools", "{completion}");
    assert_eq!(completion["connected"], true, "{completion}");

    // Registered through the config writer as an ai_generated stdio server, and callable.
    let (_, config) = mag.get("/api/mcp/config").await;
    let entry = &config["mcpServers"]["text_tools"];
    assert_eq!(entry["ai_generated"], true, "{config}");
    assert_eq!(entry["transportType"], "stdio");
    assert_eq!(entry["conversation_id"], id.as_str(), "{entry}");
    assert_eq!(entry["conversation_round"], 2, "{entry}");
    // Its owner, as MAG records it: the conversation's user.
    assert_eq!(entry["provider_user_id"], "default_user", "{entry}");
    assert!(entry["conversation_created_at"].is_string(), "{entry}");
    let folder = Path::new(entry["cwd"].as_str().unwrap());
    assert!(folder.join(".venv/bin/python").exists());
    assert_eq!(
        std::fs::read_to_string(folder.join("main.py"))
            .unwrap()
            .trim(),
        MAIN_V2.trim()
    );
    assert!(
        !folder.join("draft_notes.py").exists(),
        "deleted in round 2"
    );
    assert!(folder.join("README.md").exists());
    let (status, called) = mag
        .test_tool("text_tools", "reverse", json!({"text": "abc"}))
        .await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["status"], "success", "{called}");
    assert!(called["result"].to_string().contains("cba"), "{called}");
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!(["text_tools"]));
    id
}

/// The conversation as the API shows it after [`design_and_install`].
pub async fn check_conversation(mag: &MagServer, id: &str) {
    let (status, detail) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["_id"], id);
    assert_eq!(detail["type"], "agent");
    assert_eq!(detail["generation_type"], "mcp");
    assert_eq!(detail["round_count"], 2);
    assert_eq!(detail["title"], "A tool that reverses text.");
    let rounds = detail["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    let roles = |r: &Value| -> Vec<String> {
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(roles(&rounds[0]), ["system", "user", "assistant"]);
    assert_eq!(roles(&rounds[1]), ["user", "assistant"]);
    assert_eq!(rounds[1]["model"], MODEL);
    let parsed = &detail["parsed_results"];
    assert_eq!(parsed["folder_name"], "text_tools");
    assert_eq!(parsed["dependencies"], "mcp>=2,<3");
    assert_eq!(parsed["todo"], "nothing");
    assert_eq!(
        parsed["script_files"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["main.py"]
    );
    // Reply::text reports 10 prompt tokens and one completion token per chunk.
    let usage = &detail["total_token_usage"];
    assert_eq!(usage["prompt_tokens"], 20, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_i64().unwrap(),
        20 + usage["completion_tokens"].as_i64().unwrap()
    );
    let (status, list) = mag.get("/api/mcp/conversations").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["conversations"][0]["_id"], id);
    assert!(
        list["conversations"][0].get("rounds").is_none(),
        "the list has metadata only"
    );
}

/// Polls `/health` until the store (`backend`, "embedded" or "mongodb") reports `ok`: its
/// first ping may need longer than the health check allows on a busy machine.
pub async fn wait_store_ok(mag: &MagServer, backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = mag.get("/health").await;
        assert_eq!(health["store"]["backend"], backend, "{health}");
        if health["store"]["state"] == "ok" {
            return;
        }
        assert!(Instant::now() < deadline, "the store is not ok: {health}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
