//! MCP generation end to end (SPEC §5): the real mag-server and mcp-client, a scripted
//! OpenAI-compatible endpoint speaking the real streaming wire format, the real store
//! (embedded SQLite, or MongoDB through SecantusDB), real pip installs into real venvs
//! (offline, from the peers' wheelhouse), and the generated tool called through MCP.

use std::path::Path;
use std::time::{Duration, Instant};

use mag_tests::llm::{Reply, ScriptedLlm};
use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::mongo::Secantus;
use mag_tests::peers;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

const API_KEY: &str = "sk-scripted-test-key";
const MODEL: &str = "scripted";

/// The generated server: the tool `reverse`, on the official Python SDK (`mcp` 2.x).
const MAIN_V2: &str = r#"from mcp.server.mcpserver import MCPServer

mcp = MCPServer("text_tools")


@mcp.tool()
def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]


if __name__ == "__main__":
    mcp.run("stdio")
"#;

/// Round 1's answer: analysis, todo, folder name and a first main.py (replaced in round 2).
fn round1() -> String {
    "Here is a first design.\n<analysis>One tool, reverse(text) -> text reversed.</analysis>\n\
     <todo>README and dependencies</todo>\n<folder_name>text_tools</folder_name>\n\
     <script_file name=\"main.py\">print('draft')</script_file>\n\
     <script_file name=\"draft_notes.py\">NOTES = 1</script_file>"
        .to_owned()
}

/// [`round2`] as a reply that holds its rest back for `pause` (10 prompt and 5 completion
/// tokens).
fn slow_round2(pause: Duration) -> Reply {
    Reply::Slow {
        text: round2(),
        pause,
        prompt_tokens: 10,
        completion_tokens: 5,
    }
}

/// Round 2's answer: the real main.py, dependencies (from the wheelhouse), the README, and
/// a file dropped.
fn round2() -> String {
    format!(
        "Done.\n<script_file name=\"main.py\">\n{MAIN_V2}\n</script_file>\n\
         <delete_script_file>draft_notes.py</delete_script_file>\n\
         <dependencies>mcp>=2,<3</dependencies>\n\
         <readme># text_tools\n\nreverse(text): the text reversed.</readme>\n<todo>nothing</todo>"
    )
}

/// A model of the settings file whose whole answer must come within 2 s.
const HASTY_MODEL: &str = "hasty";

/// A settings file naming the scripted endpoint as model [`MODEL`], and as
/// [`HASTY_MODEL`] with a `round_timeout` of 2 s.
fn settings_file(dir: &Path, llm: &ScriptedLlm) -> std::path::PathBuf {
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
fn start_mag(settings: &Path, env: &[(&str, String)]) -> MagServer {
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
fn scripted_mag(env: &[(&str, String)]) -> (ScriptedLlm, MagServer, tempfile::TempDir) {
    let llm = ScriptedLlm::start(API_KEY, vec![]);
    let settings_dir = tempfile::tempdir().unwrap();
    let settings = settings_file(settings_dir.path(), &llm);
    let mag = start_mag(&settings, env);
    (llm, mag, settings_dir)
}

/// What one `POST /api/mcp/generate` with `stream: true` gave.
#[derive(Debug)]
struct Streamed {
    status: u16,
    conversation_id: Option<String>,
    /// The `data:` payloads before `[DONE]`, parsed.
    events: Vec<Value>,
    /// Whether `data: [DONE]` ended it.
    done: bool,
    /// The body of a non-SSE answer.
    body: Value,
}

impl Streamed {
    /// The text of the chunks, joined.
    fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    fn find(&self, key: &str) -> Option<&Value> {
        self.events.iter().find_map(|e| e.get(key))
    }
}

fn http() -> reqwest::Client {
    mag_common::install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

async fn generate(mag: &MagServer, body: Value) -> Streamed {
    let response = http()
        .post(format!("{}/api/mcp/generate", mag.base))
        .json(&body)
        .send()
        .await
        .expect("POST /api/mcp/generate");
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

fn round(requirement: &str, conversation_id: Option<&str>) -> Value {
    let mut body = json!({"requirement": requirement, "model_name": MODEL, "stream": true});
    if let Some(id) = conversation_id {
        body["conversation_id"] = json!(id);
    }
    body
}

/// Two rounds, an early end (incomplete), the end: the tool is installed, registered,
/// connected and callable. Answers the conversation id.
async fn design_and_install(mag: &MagServer, llm: &ScriptedLlm) -> String {
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
async fn check_conversation(mag: &MagServer, id: &str) {
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

#[tokio::test(flavor = "multi_thread")]
async fn embedded_store_designs_installs_and_survives_a_restart() {
    let (llm, mut mag, _settings) = scripted_mag(&[]);
    mag.wait_running().await;
    wait_store_ok(&mag, "embedded").await;

    let id = design_and_install(&mag, &llm).await;
    check_conversation(&mag, &id).await;

    // A new mag-server on the same folders: the conversation, the tool and its entry are
    // all still there, and the tool connects and answers again.
    mag.restart();
    mag.wait_running().await;
    check_conversation(&mag, &id).await;
    mag.connect("text_tools").await;
    let (status, called) = mag
        .test_tool("text_tools", "reverse", json!({"text": "xyz"}))
        .await;
    assert_eq!(status, 200, "{called}");
    assert!(called["result"].to_string().contains("zyx"), "{called}");

    // A retried end (say its caller timed out during pip) answers the tool it installed,
    // also after the restart: no second copy.
    let again = generate(&mag, round("<end>END</end>", Some(&id))).await;
    let completion = again
        .find("completion")
        .unwrap_or_else(|| panic!("{again:?}"));
    assert_eq!(completion["tool_name"], "text_tools", "{completion}");
    assert_eq!(completion["connected"], true, "{completion}");
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!(["text_tools"]));

    // Removing the generated server deletes its folder too; the conversation stays.
    let (status, removed) = mag
        .post("/api/mcp/remove", json!({"server_names": ["text_tools"]}))
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["ai_generated_count"], 1, "{removed}");
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!([]));
    let (status, _) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 200);
    let (status, deleted) = mag.delete(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 404);
}

fn doc_type(document: &Document, key: &str) -> mongodb::bson::spec::ElementType {
    document
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {document}"))
        .element_type()
}

/// The documents in MongoDB, read back with the official driver: MAG's schema.
async fn check_documents(uri: &str, db: &str, id: &str) {
    use mongodb::bson::spec::ElementType;
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let db = client.database(db);
    let conversation: Document = db
        .collection::<Document>("conversations")
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .expect("the conversations document");
    for (key, kind) in [
        ("_id", ElementType::String),
        ("user_id", ElementType::String),
        ("type", ElementType::String),
        ("title", ElementType::String),
        ("created_at", ElementType::DateTime),
        ("updated_at", ElementType::DateTime),
        ("round_count", ElementType::Int64),
        ("total_token_usage", ElementType::EmbeddedDocument),
        ("status", ElementType::String),
        ("tags", ElementType::Array),
    ] {
        assert_eq!(
            doc_type(&conversation, key),
            kind,
            "{key} in {conversation}"
        );
    }
    assert_eq!(conversation.get_str("type").unwrap(), "agent");
    assert_eq!(conversation.get_str("user_id").unwrap(), "default_user");
    assert_eq!(conversation.get_str("status").unwrap(), "active");
    assert_eq!(conversation.get_i64("round_count").unwrap(), 2);
    let usage = conversation.get_document("total_token_usage").unwrap();
    for key in ["total_tokens", "prompt_tokens", "completion_tokens"] {
        assert_eq!(doc_type(usage, key), ElementType::Int64, "{usage}");
    }
    let generation: Document = db
        .collection::<Document>("mcp_gen")
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .expect("the mcp_gen document");
    assert_eq!(generation.get_str("conversation_id").unwrap(), id);
    let rounds = generation.get_array("rounds").unwrap();
    assert_eq!(rounds.len(), 2);
    let Bson::Document(first) = &rounds[0] else {
        panic!("{generation}")
    };
    assert_eq!(first.get_i64("round").unwrap(), 1);
    assert_eq!(first.get_str("model").unwrap(), MODEL);
    let messages = first.get_array("messages").unwrap();
    let Bson::Document(system) = &messages[0] else {
        panic!("{first}")
    };
    assert_eq!(system.get_str("role").unwrap(), "system");
    let parsed = generation.get_document("parsed_results").unwrap();
    let mut keys: Vec<&str> = parsed.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "analysis",
            "dependencies",
            "folder_name",
            "readme",
            "script_files",
            "todo"
        ]
    );
    assert_eq!(
        doc_type(parsed, "script_files"),
        ElementType::EmbeddedDocument
    );
    assert!(
        parsed
            .get_document("script_files")
            .unwrap()
            .get_str("main.py")
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_store_designs_installs_with_mags_documents() {
    let mongo = Secantus::start();
    let env = [
        ("MONGODB_URL", mongo.uri()),
        ("MONGODB_DB", "mag_gen_e2e".to_owned()),
    ];
    let (llm, mag, _settings) = scripted_mag(&env);
    mag.wait_running().await;
    wait_store_ok(&mag, "mongodb").await;

    let id = design_and_install(&mag, &llm).await;
    check_conversation(&mag, &id).await;
    check_documents(&mongo.uri(), "mag_gen_e2e", &id).await;
}

/// Polls `/health` until the store (`backend`, "embedded" or "mongodb") reports `ok`: its
/// first ping may need longer than the health check allows on a busy machine.
async fn wait_store_ok(mag: &MagServer, backend: &str) {
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

/// A request that must answer, and within a bound that only catches a hang.
async fn get_within(mag: &MagServer, path: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, body) = mag
        .request_within(reqwest::Method::GET, path, None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("GET {path} hung"));
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_down_mid_run_answers_503_and_recovers_without_losing_anything() {
    let mut mongo = Secantus::start();
    let (port, storage) = (mongo.port(), mongo.storage().to_path_buf());
    let env = [
        ("MONGODB_URL", mongo.uri()),
        ("MONGODB_DB", "mag_down".to_owned()),
    ];
    let (llm, mag, _settings) = scripted_mag(&env);
    mag.wait_running().await;

    llm.push(Reply::text(round1()));
    let first = generate(&mag, round("A tool that reverses text.", None)).await;
    assert!(first.find("saved").is_some(), "{first:?}");
    let id = first.conversation_id.clone().unwrap();

    // Round 2 is streaming when MongoDB stops: the stream ends with a database error, and
    // the round is not acknowledged. The model holds the rest of its answer until MongoDB
    // is surely down (SIGTERM takes about 2 s; the pause leaves room for a slow machine).
    llm.push(slow_round2(Duration::from_secs(12)));
    let streaming = generate(&mag, round("Add the rest.", Some(&id)));
    let stopping = async {
        // Round 1 read back and round 2 with the model: now the store goes away.
        llm.wait_requests(2).await;
        tokio::task::spawn_blocking(move || {
            mongo.stop();
            mongo
        })
        .await
        .unwrap()
    };
    let (second, mut mongo) = tokio::join!(streaming, stopping);
    assert!(second.done, "{second:?}");
    assert!(second.find("saved").is_none(), "{second:?}");
    let error = second.find("error").unwrap_or_else(|| panic!("{second:?}"));
    assert_eq!(error["type"], "database_error", "{second:?}");
    assert_eq!(
        second.text(),
        round2(),
        "the answer was relayed before the save failed"
    );

    // Down: the conversation endpoints answer 503 with the cause, the MCP ones work.
    let (status, body, took) = get_within(&mag, "/api/mcp/conversations").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable", "{body}");
    eprintln!("503 with MongoDB down after {took:?}");
    let (status, body, _) = get_within(&mag, &format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 503, "{body}");
    let down = generate(&mag, round("More.", Some(&id))).await;
    assert_eq!(down.status, 503, "{down:?}");
    let (status, body, _) = get_within(&mag, "/api/mcp/status").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = get_within(&mag, "/api/mcp/config").await;
    assert_eq!(status, 200, "{body}");
    let (_, health, _) = get_within(&mag, "/health").await;
    assert_eq!(health["store"]["state"], "unavailable", "{health}");

    // Back on the same port and data: it works again without a restart, with round 1
    // (acknowledged) kept and the unacknowledged round 2 absent.
    mongo.restart();
    assert_eq!((mongo.port(), mongo.storage()), (port, storage.as_path()));
    let started = Instant::now();
    let detail = loop {
        let (status, body, _) = get_within(&mag, &format!("/api/mcp/conversations/{id}")).await;
        if status == 200 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("recovered {:?} after MongoDB came back", started.elapsed());
    assert_eq!(detail["round_count"], 1, "{detail}");
    assert_eq!(detail["rounds"].as_array().unwrap().len(), 1);
    llm.push(Reply::text(round2()));
    let again = generate(&mag, round("Add the rest.", Some(&id))).await;
    let saved = again.find("saved").unwrap_or_else(|| panic!("{again:?}"));
    assert_eq!(saved["round"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_failures_end_the_stream_with_an_error_and_store_nothing() {
    let (llm, mag, _settings) = scripted_mag(&[]);

    // A new conversation whose first round fails is not created.
    llm.push(Reply::Error {
        status: 500,
        message: "the model is overloaded".into(),
    });
    let failed = generate(&mag, round("A tool.", None)).await;
    assert!(failed.done, "{failed:?}");
    let error = failed.find("error").unwrap_or_else(|| panic!("{failed:?}"));
    assert_eq!(error["type"], "api_error");
    assert!(
        error["message"].as_str().unwrap().contains("overloaded"),
        "{error}"
    );
    let id = failed.conversation_id.unwrap();
    let (status, _) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 404);

    // A dropped stream mid-answer: relayed chunks, then an error; the round is not stored.
    llm.push(Reply::text(round1()));
    let ok = generate(&mag, round("A tool.", None)).await;
    let id = ok.conversation_id.unwrap();
    llm.push(Reply::Drop {
        text: round2(),
        chunks: 2,
    });
    let dropped = generate(&mag, round("More.", Some(&id))).await;
    assert!(dropped.done, "{dropped:?}");
    assert!(!dropped.text().is_empty(), "{dropped:?}");
    assert_eq!(
        dropped.find("error").unwrap()["type"],
        "api_error",
        "{dropped:?}"
    );
    assert!(dropped.find("saved").is_none());
    let (_, detail) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(detail["round_count"], 1, "{detail}");
    assert_eq!(
        detail["parsed_results"]["dependencies"],
        Value::Null,
        "{detail}"
    );

    // Non-streaming: the conversation after the round, or the error as HTTP.
    llm.push(Reply::text(round2()));
    let mut body = round("More.", Some(&id));
    body["stream"] = json!(false);
    let (status, answer) = mag.post("/api/mcp/generate", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["round_count"], 2, "{answer}");
    assert_eq!(answer["model"], MODEL);
    // An endpoint that echoes the key in its error: the key is not passed on.
    llm.push(Reply::Error {
        status: 429,
        message: format!("rate limited for key {API_KEY}"),
    });
    let (status, answer) = mag.post("/api/mcp/generate", body).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("rate limited"),
        "{answer}"
    );
    assert!(!answer.to_string().contains(API_KEY), "the key never shows");
}

/// A whole design in one answer, whose dependency no index has.
fn uninstallable_design() -> String {
    format!(
        "<analysis>reverse(text)</analysis><todo>none</todo>\
         <folder_name>broken_tools</folder_name>\
         <script_file name=\"main.py\">{MAIN_V2}</script_file>\
         <dependencies>no-such-package-mag-test==9.9.9</dependencies><readme>r</readme>"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_is_kept_and_runaway_answers_fail_their_round() {
    let (llm, mag, _settings) = scripted_mag(&[]);

    // A reasoning model: its reasoning is stored with the answer (MAG's assistant
    // message), never relayed as the answer's text and never sent back to the model.
    let thoughts = "The user wants text reversed; one tool is enough.";
    llm.push(Reply::Reasoning {
        reasoning: thoughts.into(),
        text: uninstallable_design(),
    });
    let first = generate(&mag, round("A tool that reverses text.", None)).await;
    assert!(first.find("saved").is_some(), "{first:?}");
    assert_eq!(first.text(), uninstallable_design());
    let id = first.conversation_id.clone().unwrap();
    let (_, detail) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    let assistant = &detail["rounds"][0]["messages"][2];
    assert_eq!(
        *assistant,
        json!({"role": "assistant", "reasoning_content": thoughts, "content": uninstallable_design()}),
        "{detail}"
    );
    llm.push(Reply::text("<todo>still none</todo>"));
    let second = generate(&mag, round("Anything left?", Some(&id))).await;
    assert!(second.find("saved").is_some(), "{second:?}");
    let sent = llm.requests().last().cloned().unwrap();
    assert_eq!(
        sent["messages"][2],
        json!({"role": "assistant", "content": uninstallable_design()}),
        "the reasoning is not sent back"
    );

    // An answer that is not complete within the model's round_timeout, or that grows
    // past 4 MiB, fails its round (the conversation is free again, nothing stored).
    llm.push(slow_round2(Duration::from_secs(8)));
    let mut hasty = round("More.", Some(&id));
    hasty["model_name"] = json!(HASTY_MODEL);
    let late = generate(&mag, hasty).await;
    let error = late.find("error").unwrap_or_else(|| panic!("{late:?}"));
    assert_eq!(error["type"], "api_error", "{late:?}");
    assert!(
        error["message"].as_str().unwrap().contains("round_timeout"),
        "{error}"
    );
    assert!(late.done && late.find("saved").is_none(), "{late:?}");
    llm.push(Reply::text("🦀".repeat(1_100_000)));
    let endless = generate(&mag, round("More.", Some(&id))).await;
    let error = endless
        .find("error")
        .unwrap_or_else(|| panic!("{:?}", endless.status));
    assert!(
        error["message"].as_str().unwrap().contains("4 MiB"),
        "{error}"
    );
    assert!(endless.done && endless.find("saved").is_none());
    let (_, detail) = mag.get(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(detail["round_count"], 2, "{detail}");

    // An end whose install fails is MAG's assembly_error; nothing is registered.
    let end = generate(&mag, round("<end>END</end>", Some(&id))).await;
    let error = end.find("error").unwrap_or_else(|| panic!("{end:?}"));
    assert_eq!(error["type"], "assembly_error", "{end:?}");
    assert!(end.done && end.find("completion").is_none(), "{end:?}");
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_runs_one_round_at_a_time_and_says_so_at_once() {
    let (llm, mag, _settings) = scripted_mag(&[]);
    llm.push(Reply::text(round1()));
    let first = generate(&mag, round("A tool.", None)).await;
    let id = first.conversation_id.clone().unwrap();

    // Round 2 is with the model: another round, the end or a delete of the same
    // conversation answers 409 at once instead of queueing behind it.
    llm.push(slow_round2(Duration::from_secs(10)));
    let streaming = generate(&mag, round("Add the rest.", Some(&id)));
    let meanwhile = async {
        llm.wait_requests(2).await;
        for requirement in ["Something else.", "<end>END</end>"] {
            let (status, answer) = mag
                .post("/api/mcp/generate", round(requirement, Some(&id)))
                .await;
            assert_eq!(status, 409, "{answer}");
            assert_eq!(answer["code"], "conversation_busy", "{answer}");
        }
        let (status, answer) = mag.delete(&format!("/api/mcp/conversations/{id}")).await;
        assert_eq!(status, 409, "{answer}");
    };
    let (second, ()) = tokio::join!(streaming, meanwhile);
    assert_eq!(second.find("saved").unwrap()["round"], 2, "{second:?}");
    let (status, _) = mag.delete(&format!("/api/mcp/conversations/{id}")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_generation_requests_get_clear_errors() {
    let (llm, mag, _settings) = scripted_mag(&[]);

    for (body, want) in [
        (json!({"requirement": "  ", "model_name": MODEL}), 400),
        (json!({"requirement": "x", "model_name": ""}), 400),
        (json!({"requirement": "x", "model_name": "nope"}), 404),
        (
            json!({"requirement": "x", "model_name": MODEL, "conversation_id": "../etc"}),
            400,
        ),
        (json!({"requirement": "<end>END</end>"}), 400),
        (
            json!({"requirement": "<end>END</end>", "conversation_id": "mcp_0000000000000000"}),
            404,
        ),
        (json!({"model_name": MODEL}), 422),
        (json!({"requirement": 5, "model_name": MODEL}), 422),
    ] {
        let (status, answer) = mag.post("/api/mcp/generate", body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["detail"].is_string(), "{answer}");
    }
    let (status, answer) = mag.post_raw("/api/mcp/generate", "{not json").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        llm.requests().is_empty(),
        "no bad request reached the model"
    );

    let (status, _) = mag.get("/api/mcp/conversations/nope").await;
    assert_eq!(status, 404);
    let (status, _) = mag.get("/api/mcp/conversations?limit=0").await;
    assert_eq!(status, 400);

    let tool = |folder: &str, deps: &str| json!({"folder_name": folder, "script_files": {"main.py": MAIN_V2}, "readme": "r", "dependencies": deps});
    for (body, want) in [
        (tool("../escape", "mcp==2.3.0"), 422),
        (tool("a/b", "mcp==2.3.0"), 422),
        (tool("ok", "mcp --index-url http://127.0.0.1:1/"), 422),
        (
            tool("ok", "https://127.0.0.1:1/${MAG_API_TOKEN}/p.whl"),
            422,
        ),
        (
            json!({"folder_name": "ok", "script_files": {"../x.py": "x"}, "readme": "", "dependencies": ""}),
            422,
        ),
        (json!({"folder_name": "ok"}), 422),
    ] {
        let (status, answer) = mag.post("/api/mcp/register-tool", body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
    }
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!([]), "nothing was written");
    assert!(!mag.dir.path().join("escape").exists());

    // A failing install leaves nothing behind: no folder, no entry.
    let (status, answer) = mag
        .post(
            "/api/mcp/register-tool",
            tool("broken", "no-such-package-mag-test==9.9.9"),
        )
        .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["code"], "tool_install_failed", "{answer}");
    let (_, tools) = mag.get("/api/mcp/ai-tools").await;
    assert_eq!(tools, json!([]));
    let (_, config) = mag.get("/api/mcp/config").await;
    assert!(config["mcpServers"].get("broken").is_none(), "{config}");
}

/// One round against a real OpenAI-compatible endpoint, when `MAG_TEST_LLM_BASE_URL`,
/// `MAG_TEST_LLM_MODEL` and `MAG_TEST_LLM_API_KEY` are set (skipped otherwise).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a real LLM endpoint: set MAG_TEST_LLM_BASE_URL, MAG_TEST_LLM_MODEL, MAG_TEST_LLM_API_KEY and run with --ignored"]
async fn a_real_llm_endpoint_when_configured() {
    let (Ok(base), Ok(model)) = (
        std::env::var("MAG_TEST_LLM_BASE_URL"),
        std::env::var("MAG_TEST_LLM_MODEL"),
    ) else {
        panic!("set MAG_TEST_LLM_BASE_URL, MAG_TEST_LLM_MODEL and MAG_TEST_LLM_API_KEY");
    };
    let settings_dir = tempfile::tempdir().unwrap();
    let path = settings_dir.path().join("mag-server.toml");
    std::fs::write(
        &path,
        format!(
            "[[models]]\nname = \"real\"\nbase_url = \"{base}\"\napi_key_env = \"MAG_TEST_LLM_API_KEY\"\nmodel = \"{model}\"\n"
        ),
    )
    .unwrap();
    let key = std::env::var("MAG_TEST_LLM_API_KEY").unwrap_or_default();
    let mag = start_mag(&path, &[("MAG_TEST_LLM_API_KEY", key)]);
    let body = json!({"requirement": "A tool that adds two numbers.", "model_name": "real"});
    let answer = generate(&mag, body).await;
    assert!(answer.done && answer.find("saved").is_some(), "{answer:?}");
    assert!(!answer.text().is_empty());
}
