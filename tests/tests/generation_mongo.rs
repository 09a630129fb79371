//! MCP generation end to end with conversations in MongoDB (SPEC §5): through SecantusDB,
//! the documents read back against MAG's schema and indexes, and a store that goes down
//! mid-run and comes back without losing an acknowledged round.

mod generation_support;

use std::time::{Duration, Instant};

use mag_tests::llm::Reply;
use mag_tests::mag::MagServer;
use mag_tests::mongo::Secantus;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use generation_support::*;

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
