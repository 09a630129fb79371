//! Tests of the test harness itself: SecantusDB through the official `mongodb` driver, and
//! the scripted OpenAI-compatible endpoint through reqwest.

use futures::StreamExt;
use mag_tests::llm::{CHUNK_CHARS, Reply, ScriptedLlm};
use mag_tests::mongo::{Secantus, real_mongodb_url};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

/// Inserts a document with a string `_id` into `db.coll` and reads it back.
async fn insert_and_read(uri: &str, db: &str) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let coll = client.database(db).collection::<Document>("harness");
    coll.insert_one(doc! {"_id": "conv-1", "title": "hello", "rounds": []})
        .await
        .expect("insert");
    coll.update_one(
        doc! {"_id": "conv-1"},
        doc! {"$push": {"rounds": {"round": 1, "messages": ["hi"]}}},
    )
    .await
    .expect("update");
    let found = coll
        .find_one(doc! {"_id": "conv-1"})
        .await
        .expect("find")
        .expect("the document");
    assert_eq!(found.get_str("title").unwrap(), "hello");
    assert_eq!(found.get_array("rounds").unwrap().len(), 1);
}

async fn read_title(uri: &str, db: &str) -> Option<String> {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let coll = client.database(db).collection::<Document>("harness");
    let found = coll.find_one(doc! {"_id": "conv-1"}).await.expect("find")?;
    Some(found.get_str("title").unwrap().to_string())
}

#[tokio::test]
async fn secantus_keeps_data_across_a_restart() {
    let mut db = Secantus::start();
    assert!(db.uri().starts_with("mongodb://127.0.0.1:"), "{}", db.uri());
    assert!(db.log().contains("secantus listening on"), "{}", db.log());
    insert_and_read(&db.uri(), "harness").await;

    let pid = db.pid().expect("running");
    db.stop();
    assert!(db.pid().is_none());
    assert!(!mag_tests::alive(pid), "secantus {pid} still runs");
    db.stop(); // idempotent

    let again = Secantus::start_at(db.port(), db.storage());
    assert_eq!(again.uri(), db.uri());
    assert_eq!(
        read_title(&again.uri(), "harness").await.as_deref(),
        Some("hello")
    );
    drop(again);

    db.restart();
    assert_eq!(
        read_title(&db.uri(), "harness").await.as_deref(),
        Some("hello")
    );
}

#[tokio::test]
#[ignore = "needs a real MongoDB: set MONGODB_URL and run with --ignored"]
async fn real_mongodb_when_set() {
    let url = real_mongodb_url().expect("set MONGODB_URL to a real MongoDB");
    let db = format!("mag_harness_{}", std::process::id());
    insert_and_read(&url, &db).await;
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    client.database(&db).drop().await.expect("drop the test db");
}

fn http() -> reqwest::Client {
    mag_common::install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Posts `body` to the endpoint with `key`; the status, the content type, the body's SSE
/// `data:` payloads, and whether the body ended with an error.
async fn chat(llm: &ScriptedLlm, key: &str, body: Value) -> (u16, String, Vec<String>, bool) {
    let response = http()
        .post(format!("{}/chat/completions", llm.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut text = Vec::new();
    let mut failed = false;
    let mut body = response.bytes_stream();
    while let Some(part) = body.next().await {
        match part {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let text = String::from_utf8(text).expect("utf-8");
    if !content_type.starts_with("text/event-stream") {
        return (status, content_type, vec![text], failed);
    }
    assert!(
        failed || text.ends_with("\n\n"),
        "unterminated event: {text:?}"
    );
    let events = text
        .split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_string()
        })
        .collect();
    (status, content_type, events, failed)
}

fn request(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "make a tool"}],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn scripted_llm_streams_chunks_usage_and_done() {
    let text =
        "<analysis>a tool that adds two numbers</analysis>\n<folder_name>adder</folder_name>";
    let llm = ScriptedLlm::start(
        "sk-test",
        vec![Reply::Text {
            text: text.to_string(),
            prompt_tokens: 120,
            completion_tokens: 30,
        }],
    );
    assert!(llm.base_url().starts_with("http://127.0.0.1:"));
    let (status, content_type, events, failed) = chat(&llm, "sk-test", request(true, true)).await;
    assert_eq!(status, 200, "{events:?}");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert!(!failed);

    let pieces = text.chars().count().div_ceil(CHUNK_CHARS);
    assert!(pieces > 1);
    // content chunks, the finish chunk, the usage chunk, [DONE]
    assert_eq!(events.len(), pieces + 3, "{events:#?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    let mut streamed = String::new();
    for (i, chunk) in chunks[..pieces].iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "gpt-test");
        assert!(chunk["created"].as_u64().is_some());
        let choice = &chunk["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], Value::Null);
        assert_eq!(
            choice["delta"].get("role").is_some(),
            i == 0,
            "role only in the first chunk: {chunk}"
        );
        streamed.push_str(choice["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(streamed, text);
    let finish = &chunks[pieces];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[pieces + 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150})
    );

    let requests = llm.requests();
    assert_eq!(requests, vec![request(true, true)]);
    assert_eq!(llm.remaining(), 0);
}

#[tokio::test]
async fn scripted_llm_script_steps() {
    let llm = ScriptedLlm::start("sk-test", vec![]);
    let long = "x".repeat(CHUNK_CHARS * 5);

    // Out of script: 500 with an OpenAI error body.
    let (status, _, body, _) = chat(&llm, "sk-test", request(true, false)).await;
    assert_eq!(status, 500);
    let error: Value = serde_json::from_str(&body[0]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ran out"),
        "{error}"
    );

    // Without include_usage: no usage chunk.
    llm.push(Reply::text("hello"));
    let (status, _, events, _) = chat(&llm, "sk-test", request(true, false)).await;
    assert_eq!(status, 200);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], "[DONE]");
    assert!(!events[0].contains("usage"), "{}", events[0]);

    // A drop: the first chunks, then the connection is cut.
    llm.push(Reply::Drop {
        text: long.clone(),
        chunks: 2,
    });
    let (status, _, events, failed) = chat(&llm, "sk-test", request(true, true)).await;
    assert_eq!(status, 200);
    assert!(failed, "the body should end with an error: {events:?}");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));

    // A slow one streams everything in the end.
    llm.push(Reply::Slow {
        text: long.clone(),
        pause: std::time::Duration::from_millis(100),
        prompt_tokens: 1,
        completion_tokens: 2,
    });
    let (_, _, events, failed) = chat(&llm, "sk-test", request(true, true)).await;
    assert!(!failed);
    assert_eq!(events.len(), 5 + 3, "{events:?}");

    // A scripted error.
    llm.push(Reply::Error {
        status: 429,
        message: "slow down".into(),
    });
    let (status, _, body, _) = chat(&llm, "sk-test", request(true, false)).await;
    assert_eq!(status, 429);
    let error: Value = serde_json::from_str(&body[0]).unwrap();
    assert_eq!(error["error"]["message"], "slow down");

    // Not streamed: one chat.completion.
    llm.push(Reply::text("whole"));
    let (status, content_type, body, _) = chat(&llm, "sk-test", request(false, false)).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let completion: Value = serde_json::from_str(&body[0]).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "whole");

    // A wrong key: 401, and the queued reply stays.
    llm.push(Reply::text("kept"));
    let (status, _, body, _) = chat(&llm, "sk-wrong", request(true, false)).await;
    assert_eq!(status, 401);
    let error: Value = serde_json::from_str(&body[0]).unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");
    assert_eq!(llm.remaining(), 1);

    // No messages: 400.
    let (status, _, _, _) = chat(&llm, "sk-test", json!({"model": "m", "stream": true})).await;
    assert_eq!(status, 400);
    let response = http()
        .post(format!("{}/chat/completions", llm.base_url()))
        .bearer_auth("sk-test")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(llm.remaining(), 1);
    assert_eq!(llm.requests().len(), 8);
}
