//! MCP generation end to end (SPEC §5): the real mag-server and mcp-client, a scripted
//! OpenAI-compatible endpoint speaking the real streaming wire format, the real store
//! (embedded SQLite, or MongoDB through SecantusDB), real pip installs into real venvs
//! (offline, from the peers' wheelhouse), and the generated tool called through MCP.

mod generation_support;

use std::time::Duration;

use mag_tests::llm::Reply;
use mag_tests::mag::mag_jwt;
use mongodb::bson::doc;
use serde_json::{Value, json};

use generation_support::*;

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
async fn an_llm_stream_framed_as_providers_and_proxies_do_is_read_whole() {
    // CRLF, comments, repeated `event:` and `retry:`, `id:`, unknown fields, a line with no
    // colon, comment-only keep-alives: the WHATWG SSE rules take or ignore each of them.
    let (llm, mag, _settings) = scripted_mag(&[]);
    llm.push(Reply::Noisy {
        text: uninstallable_design(),
    });
    let round = generate(&mag, round("A tool that reverses text.", None)).await;
    assert!(round.find("error").is_none(), "{round:?}");
    assert!(round.find("saved").is_some(), "{round:?}");
    assert_eq!(round.text(), uninstallable_design());

    // MAG's template endpoint: the system prompt a new conversation starts with.
    let (status, template) = mag.get("/api/mcp/ai-generator-template").await;
    assert_eq!(status, 200, "{template}");
    let text = template["template"].as_str().unwrap();
    assert!(
        text.starts_with("You are an engineer who designs"),
        "{template}"
    );
    assert!(!text.contains("{EXISTING_TOOLS}"), "{template}");
    assert!(template["note"].is_string(), "{template}");

    // The models MAG's pages pick from: the settings' [[models]], never a key or its
    // variable's name.
    let (status, models) = mag.get("/api/models").await;
    assert_eq!(status, 200, "{models}");
    assert_eq!(
        models,
        json!([
            {"name": MODEL, "base_url": llm.base_url(), "model": "gpt-scripted"},
            {"name": HASTY_MODEL, "base_url": llm.base_url(), "model": "gpt-scripted"},
        ])
    );
    let (status, one) = mag.get(&format!("/api/models/{MODEL}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["status"], "success", "{one}");
    assert_eq!(one["data"]["model"], "gpt-scripted", "{one}");
    for answer in [&models, &one] {
        let text = answer.to_string();
        assert!(
            !text.contains(API_KEY) && !text.contains("MAG_TEST_LLM_KEY"),
            "{text}"
        );
    }
    let (status, none) = mag.get("/api/models/no/such").await;
    assert_eq!(status, 404, "{none}");
    assert_eq!(none["code"], "unknown_model", "{none}");
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
        (
            json!({"requirement": "<end>END</end>", "stream": false}),
            400,
        ),
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
    // Streamed, an end without a conversation is MAG's `parameter_error` event, then
    // `[DONE]` (unstreamed it is the 400 above).
    let end = generate(&mag, round("<end>END</end>", None)).await;
    assert_eq!(end.status, 200, "{end:?}");
    let error = end.find("error").unwrap_or_else(|| panic!("{end:?}"));
    assert_eq!(error["type"], "parameter_error", "{end:?}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("conversation_id")
    );
    assert!(end.done && end.events.len() == 1, "{end:?}");
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

#[tokio::test(flavor = "multi_thread")]
async fn jwt_users_see_only_their_own_conversations_at_mags_paths() {
    const SECRET: &str = "mag-test-jwt-secret";
    const OPERATOR: &str = "mag-test-operator-token";
    let (llm, mut mag, _settings) = scripted_mag(&[
        ("JWT_SECRET_KEY", SECRET.into()),
        ("MAG_API_TOKEN", OPERATOR.into()),
    ]);
    let alice = mag_jwt(SECRET, "alice", "access", "user", 3600);
    let bob = mag_jwt(SECRET, "bob", "access", "user", 3600);
    let admin = mag_jwt(SECRET, "root", "access", "admin", 3600);

    // Alice designs a round; the user_id in her body does not override her token's.
    mag.token = Some(alice.clone());
    llm.push(Reply::text(round1()));
    let mut body = round("A tool that reverses text.", None);
    body["user_id"] = json!("mallory");
    let first = generate(&mag, body).await;
    assert!(first.find("saved").is_some(), "{first:?}");
    let id = first.conversation_id.clone().unwrap();
    let (status, list) = mag.get("/api/chat/conversations").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_count"], 1, "{list}");
    assert_eq!(list["conversations"][0]["_id"], id.as_str(), "{list}");
    assert_eq!(list["conversations"][0]["user_id"], "alice", "{list}");
    let (status, detail) = mag.get(&format!("/api/chat/conversations/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["generation_type"], "mcp", "{detail}");
    assert_eq!(detail["rounds"].as_array().unwrap().len(), 1, "{detail}");
    // Her title, tags and status, as MAG's conversation list edits them.
    let base = format!("/api/chat/conversations/{id}");
    for (field, body, key, want) in [
        (
            "title",
            json!({"title": "  Reverser  "}),
            "title",
            json!("Reverser"),
        ),
        (
            "tags",
            json!({"tags": [" text ", "tools"]}),
            "tags",
            json!(["text", "tools"]),
        ),
        (
            "status",
            json!({"status": "favorite"}),
            "new_status",
            json!("favorite"),
        ),
    ] {
        let (status, answer) = mag.put(&format!("{base}/{field}"), body).await;
        assert_eq!(status, 200, "{field}: {answer}");
        assert_eq!(answer["status"], "success", "{answer}");
        assert_eq!(answer[key], want, "{answer}");
    }
    for (field, body, want) in [
        ("title", json!({"title": "   "}), 400),
        ("tags", json!({"tags": ["x".repeat(21)]}), 422),
        ("status", json!({"status": "archived"}), 422),
    ] {
        let (status, answer) = mag.put(&format!("{base}/{field}"), body).await;
        assert_eq!(status, want, "{field}: {answer}");
    }
    let (_, list) = mag.get("/api/chat/conversations").await;
    let listed = &list["conversations"][0];
    assert_eq!(
        (&listed["title"], &listed["tags"], &listed["status"]),
        (
            &json!("Reverser"),
            &json!(["text", "tools"]),
            &json!("favorite")
        ),
        "{list}"
    );

    // Bob sees none of it, on MAG's paths and on ours, and cannot continue it.
    mag.token = Some(bob.clone());
    let (status, list) = mag.get("/api/chat/conversations").await;
    assert_eq!((status, &list["total_count"]), (200, &json!(0)), "{list}");
    let (_, list) = mag.get("/api/mcp/conversations").await;
    assert_eq!(list["total_count"], 0, "{list}");
    for path in [
        format!("/api/chat/conversations/{id}"),
        format!("/api/mcp/conversations/{id}"),
    ] {
        let (status, answer) = mag.get(&path).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["code"], "forbidden", "{answer}");
    }
    let (status, _) = mag
        .delete(&format!("/api/chat/conversations/{id}/permanent"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = mag
        .put(
            &format!("/api/chat/conversations/{id}/title"),
            json!({"title": "mine now"}),
        )
        .await;
    assert_eq!(status, 403);
    let sneaky = generate(&mag, round("Add the rest.", Some(&id))).await;
    assert_eq!(sneaky.status, 403, "{sneaky:?}");

    // An admin and the operator's token reach everything.
    mag.token = Some(admin);
    let (status, _) = mag.get(&format!("/api/chat/conversations/{id}")).await;
    assert_eq!(status, 200);
    mag.token = Some(OPERATOR.into());
    let (status, list) = mag.get("/api/mcp/conversations").await;
    assert_eq!((status, &list["total_count"]), (200, &json!(1)), "{list}");

    // Bad tokens are 401: another key, expired, a refresh token, garbage, none.
    for bad in [
        Some(mag_jwt("another-secret", "alice", "access", "user", 3600)),
        Some(mag_jwt(SECRET, "alice", "access", "user", -120)),
        Some(mag_jwt(SECRET, "alice", "refresh", "user", 3600)),
        Some("not.a.jwt".to_string()),
        None,
    ] {
        mag.token = bad.clone();
        let (status, answer) = mag.get("/api/chat/conversations").await;
        assert_eq!(status, 401, "{bad:?}: {answer}");
    }

    // Alice deletes it for good.
    mag.token = Some(alice);
    let (status, gone) = mag
        .delete(&format!("/api/chat/conversations/{id}/permanent"))
        .await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["status"], "success", "{gone}");
    let (status, _) = mag.get(&format!("/api/chat/conversations/{id}")).await;
    assert_eq!(status, 404);
}
