//! The MongoDB conversation store (SPEC §5 Storage): the shared suite (`store_suite`)
//! through SecantusDB (a real MongoDB-wire server in a separate process) and, with
//! `MONGODB_URL`, a real MongoDB; the raw documents against MAG's schema and indexes; a
//! server that goes away, hangs and comes back under a live store; a password never shown.

mod store_suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mag_server::store::mongo::MongoStore;
use mag_server::store::{
    ConversationStore, DateTime, ListQuery, RoundSave, Store, StoreError, new_conversation_id,
};
use mag_tests::mongo::{Secantus, real_mongodb_url};
use mongodb::bson::{Bson, Document, doc};

/// A generous bound on any single operation against a down server: it catches a hang, not
/// a slow answer (the measured figures are printed).
const HANG_BOUND: Duration = Duration::from_secs(20);

/// A base time (ms since the epoch) for the conversations' dates.
const T0: i64 = 1_760_000_000_000;

use store_suite::*;

// ---------------------------------------------------------------------------------------
// MongoDB.

/// A database name unique to this run and call.
fn unique_db(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "magtest_{label}_{}_{nanos:x}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn mongo_store(uri: &str, database: &str) -> Arc<MongoStore> {
    Arc::new(MongoStore::connect(uri, database).await.expect("connect"))
}

/// A raw client on `uri`, for reading documents behind the store's back.
async fn raw_client(uri: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(uri).await.unwrap();
    options.server_selection_timeout = Some(Duration::from_secs(5));
    mongodb::Client::with_options(options).unwrap()
}

/// The suite and the MongoDB-only checks against the MongoDB at `uri`; the databases used
/// (to drop afterwards).
async fn mongo_suite(uri: &str, label: &str) -> Vec<String> {
    let mut databases = Vec::new();
    suite(async || -> Store {
        let name = unique_db(label);
        databases.push(name.clone());
        let store: Store = mongo_store(uri, &name).await;
        store
    })
    .await;
    let name = unique_db(label);
    databases.push(name.clone());
    mongo_schema(uri, &name).await;
    let name = unique_db(label);
    databases.push(name.clone());
    mongo_shared_with_mag(uri, &name).await;
    databases
}

/// A database MAG uses too: its other conversations (chat, graph generation: no `mcp_gen`
/// document) are neither listed nor deleted, and an `mcp_gen` document that a failed
/// round 1 left without its conversation does not block the id.
async fn mongo_shared_with_mag(uri: &str, database: &str) {
    let store: Store = mongo_store(uri, database).await;
    let client = raw_client(uri).await;
    let db = client.database(database);
    // Newer than ours, so it would take the first page if the page were cut before
    // MAG's conversations are left out.
    let later = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() + 86_400_000,
    );
    db.collection::<Document>("conversations")
        .insert_one(doc! {
            "_id": "graph_1", "user_id": "default_user", "type": "agent", "title": "a graph",
            "created_at": later, "updated_at": later, "round_count": 1_i64,
            "total_token_usage": {"total_tokens": 0_i64, "prompt_tokens": 0_i64, "completion_tokens": 0_i64},
            "status": "active", "tags": [],
        })
        .await
        .unwrap();
    let ours = first_round(&new_conversation_id(), "default_user", 0, "ours");
    store.save_round(&ours).await.unwrap();
    let all = ListQuery {
        user_id: None,
        limit: 100,
        skip: 0,
    };
    let listed: Vec<String> = store
        .list(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&ours.conversation.id),
        "MAG's graph conversation is not ours"
    );
    let first = store
        .list(&ListQuery {
            user_id: None,
            limit: 1,
            skip: 0,
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "a page of one holds ours");
    assert!(!store.delete("graph_1").await.unwrap());
    let kept = db
        .collection::<Document>("conversations")
        .find_one(doc! {"_id": "graph_1"})
        .await
        .unwrap();
    assert!(
        kept.is_some(),
        "a DELETE never touches MAG's other conversations"
    );

    let orphan = new_conversation_id();
    db.collection::<Document>("mcp_gen")
        .insert_one(
            doc! {"_id": &orphan, "conversation_id": &orphan, "rounds": [], "parsed_results": {}},
        )
        .await
        .unwrap();
    assert!(store.get(&orphan).await.unwrap().is_none());
    let round = first_round(&orphan, "default_user", 0, "after a failed round 1");
    store.save_round(&round).await.unwrap();
    let record = store.get(&orphan).await.unwrap().expect("stored");
    assert_eq!(record.generation.rounds.len(), 1);
}

/// The documents the store writes, read back raw with the driver: MAG's fields and BSON
/// types, field by field; and MAG's indexes.
async fn mongo_schema(uri: &str, database: &str) {
    let store = mongo_store(uri, database).await;
    assert_eq!(store.backend(), "mongodb");
    assert!(store.location().contains(database), "{}", store.location());
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    let mut r1 = r1;
    r1.round.model = None;
    r1.conversation.tags = vec!["t1".into()];
    store.save_round(&r1).await.unwrap();
    let r2 = after(&r1, 1_000, "more");
    store.save_round(&r2).await.unwrap();

    let client = raw_client(uri).await;
    let db = client.database(database);
    let conversation = db
        .collection::<Document>("conversations")
        .find_one(doc! {"_id": &id})
        .await
        .unwrap()
        .expect("the conversations document");
    let keys: Vec<&str> = conversation.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "_id",
            "user_id",
            "type",
            "title",
            "created_at",
            "updated_at",
            "round_count",
            "total_token_usage",
            "status",
            "tags"
        ],
        "{conversation}"
    );
    assert_eq!(conversation.get("_id"), Some(&Bson::String(id.clone())));
    assert_eq!(
        conversation.get("user_id"),
        Some(&Bson::String("alice".into()))
    );
    assert_eq!(
        conversation.get("type"),
        Some(&Bson::String("agent".into()))
    );
    assert_eq!(
        conversation.get("title"),
        Some(&Bson::String(r2.conversation.title.clone()))
    );
    assert_eq!(
        conversation.get("created_at"),
        Some(&Bson::DateTime(DateTime::from_millis(T0)))
    );
    assert_eq!(
        conversation.get("updated_at"),
        Some(&Bson::DateTime(DateTime::from_millis(T0 + 1_000)))
    );
    assert_eq!(conversation.get("round_count"), Some(&Bson::Int64(2)));
    assert_eq!(
        conversation.get_document("total_token_usage").unwrap(),
        &doc! {
            "total_tokens": Bson::Int64(460),
            "prompt_tokens": Bson::Int64(400),
            "completion_tokens": Bson::Int64(60),
        }
    );
    assert_eq!(
        conversation.get("status"),
        Some(&Bson::String("active".into()))
    );
    assert_eq!(
        conversation.get("tags"),
        Some(&Bson::Array(vec![Bson::String("t1".into())]))
    );

    let generation = db
        .collection::<Document>("mcp_gen")
        .find_one(doc! {"_id": &id})
        .await
        .unwrap()
        .expect("the mcp_gen document");
    let keys: Vec<&str> = generation.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["_id", "conversation_id", "rounds", "parsed_results"],
        "{generation}"
    );
    assert_eq!(generation.get("_id"), Some(&Bson::String(id.clone())));
    assert_eq!(
        generation.get("conversation_id"),
        Some(&Bson::String(id.clone()))
    );
    let rounds = generation.get_array("rounds").unwrap();
    assert_eq!(rounds.len(), 2);
    for (i, round) in rounds.iter().enumerate() {
        let Bson::Document(round) = round else {
            panic!("round {i} is not a document: {round}");
        };
        assert_eq!(round.get("round"), Some(&Bson::Int64(i as i64 + 1)));
        let messages = round.get_array("messages").unwrap();
        for message in messages {
            let Bson::Document(message) = message else {
                panic!("a message is not a document: {message}");
            };
            assert!(
                matches!(message.get("role"), Some(Bson::String(_))),
                "{message}"
            );
            assert!(
                matches!(message.get("content"), Some(Bson::String(_))),
                "{message}"
            );
        }
        if i == 0 {
            assert_eq!(
                round.keys().collect::<Vec<_>>(),
                ["round", "messages"],
                "{round}"
            );
            assert_eq!(messages.len(), 3);
        } else {
            assert_eq!(
                round.keys().collect::<Vec<_>>(),
                ["round", "messages", "model"],
                "{round}"
            );
            assert_eq!(round.get("model"), Some(&Bson::String("scripted".into())));
            assert_eq!(messages.len(), 2);
        }
    }
    let parsed = generation.get_document("parsed_results").unwrap();
    for key in mag_server::generation::parse::REQUIRED_SECTIONS {
        assert!(
            parsed.contains_key(key),
            "parsed_results lacks {key}: {parsed}"
        );
    }
    assert_eq!(parsed.get("folder_name"), Some(&Bson::Null));
    assert_eq!(
        parsed.get_document("script_files").unwrap(),
        &doc! {"main.py": "print(1)", "round_2.py": "more"}
    );
    assert_eq!(
        parsed.get("todo"),
        Some(&Bson::String("todo after more".into()))
    );

    // MAG's indexes, with the driver's default names.
    let indexes = |collection: &'static str| {
        let db = db.clone();
        async move {
            let mut cursor = db
                .collection::<Document>(collection)
                .list_index_names()
                .await
                .unwrap();
            cursor.sort();
            cursor
        }
    };
    assert_eq!(
        indexes("conversations").await,
        [
            "_id_",
            "status_1",
            "updated_at_-1",
            "user_id_1_type_1_created_at_-1"
        ]
    );
    assert_eq!(indexes("mcp_gen").await, ["_id_", "conversation_id_1"]);
    let keys = futures::TryStreamExt::try_collect::<Vec<_>>(
        db.collection::<Document>("conversations")
            .list_indexes()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let by_name = |name: &str| {
        keys.iter()
            .find(|m| m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
            .unwrap_or_else(|| panic!("no index {name}"))
    };
    let compound = by_name("user_id_1_type_1_created_at_-1");
    assert_eq!(
        compound
            .keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_i64().or(v.as_i32().map(i64::from))))
            .collect::<Vec<_>>(),
        [
            ("user_id", Some(1)),
            ("type", Some(1)),
            ("created_at", Some(-1))
        ]
    );
    assert_ne!(
        compound.options.as_ref().and_then(|o| o.unique),
        Some(true),
        "MAG's indexes are not unique"
    );
}

async fn drop_databases(uri: &str, databases: &[String]) {
    let client = raw_client(uri).await;
    for name in databases {
        client
            .database(name)
            .drop()
            .await
            .expect("drop the test database");
    }
}

#[tokio::test]
async fn mongodb_suite_on_secantus() {
    let secantus = Secantus::start();
    let databases = mongo_suite(&secantus.uri(), "suite").await;
    drop_databases(&secantus.uri(), &databases).await;
}

#[tokio::test]
#[ignore = "needs a real MongoDB: set MONGODB_URL and run with --ignored"]
async fn mongodb_suite_on_real_mongodb() {
    let url = real_mongodb_url().expect("set MONGODB_URL to a real MongoDB");
    let databases = mongo_suite(&url, "real").await;
    drop_databases(&url, &databases).await;
}

/// Runs `op` and checks it answers Unavailable within [`HANG_BOUND`]; how long it took.
async fn unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Duration {
    let start = Instant::now();
    let result = tokio::time::timeout(HANG_BOUND, op).await;
    let took = start.elapsed();
    match result {
        Ok(Err(StoreError::Unavailable(text))) => {
            eprintln!("{what}: Unavailable after {took:.2?}: {text}");
            assert!(text.contains("mongodb database"), "{text}");
        }
        Ok(other) => panic!("{what} with the server down: {other:?}"),
        Err(_) => panic!("{what} hung for {HANG_BOUND:?} with the server down"),
    }
    took
}

/// Every operation answers Unavailable when the server is down; how long each took. The
/// first `ping` runs alone (it meets the pooled connections a stopped server left), the
/// others concurrently.
async fn every_operation_unavailable(store: &Store, stored: &RoundSave) -> Vec<Duration> {
    let next = after(stored, 60_000, "while down");
    let fresh = first_round(&new_conversation_id(), "alice", 60_000, "while down");
    let ping = unavailable("ping", store.ping()).await;
    let everything = query(None, 10, 0);
    let (get, list, create, append, delete) = tokio::join!(
        unavailable("get", store.get(&stored.conversation.id)),
        unavailable("list", store.list(&everything)),
        unavailable("save_round 1", store.save_round(&fresh)),
        unavailable("save_round N", store.save_round(&next)),
        unavailable("delete", store.delete("mcp_not_there")),
    );
    vec![ping, get, list, create, append, delete]
}

/// Polls `ping` until it succeeds; how long that took.
async fn recovers(store: &Store) -> Duration {
    let start = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => return start.elapsed(),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the store did not recover within 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The store is made before the server exists, sees it come up, go down and come back on
/// the same port and data: while down, every operation answers Unavailable within seconds;
/// once back, the same store works again and everything saved before is there.
#[tokio::test]
async fn mongodb_outage_and_recovery_on_secantus() {
    let storage = tempfile::tempdir().unwrap();
    let port = mag_tests::free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let database = unique_db("outage");
    let store: Store = mongo_store(&uri, &database).await;
    assert_eq!(
        store.location(),
        format!("mongodb database {database:?} at 127.0.0.1:{port}")
    );

    // Never up yet.
    let before = first_round(&new_conversation_id(), "alice", 0, "before the server");
    let took = every_operation_unavailable(&store, &before).await;
    eprintln!("never started: Unavailable after {took:.2?}");

    let mut secantus = Secantus::start_at(port, storage.path());
    let up = recovers(&store).await;
    eprintln!("server started: the store answered after {up:.2?}");
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    let r2 = after(&r1, 1_000, "more");
    store.save_round(&r2).await.unwrap();
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2]));

    // Down, with pooled connections to a server that went away.
    let stopping = Instant::now();
    secantus.stop();
    eprintln!("secantus stopped in {:.2?}", stopping.elapsed());
    let took = every_operation_unavailable(&store, &r2).await;
    eprintln!("after a stop: Unavailable after {took:.2?}");
    // Again, now that the driver knows the server is gone.
    let took = every_operation_unavailable(&store, &r2).await;
    eprintln!("still down: Unavailable after {took:.2?}");

    // Back on the same port and data, the same store.
    let restarted = Instant::now();
    let secantus = Secantus::start_at(port, storage.path());
    eprintln!("secantus restarted in {:.2?}", restarted.elapsed());
    let back = recovers(&store).await;
    eprintln!("server back: the store answered after {back:.2?}");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2]));
    let r3 = after(&r2, 2_000, "after the outage");
    store
        .save_round(&r3)
        .await
        .expect("a round after the outage");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2, &r3]));
    assert_eq!(
        ids(&store.list(&query(None, 10, 0)).await.unwrap()),
        [id.as_str()]
    );
    // Nothing was stored while it was down.
    assert!(get(&store, &before.conversation.id).await.is_none());

    // The indexes were created once the server answered.
    let client = raw_client(&secantus.uri()).await;
    let mut names = client
        .database(&database)
        .collection::<Document>("conversations")
        .list_index_names()
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "_id_",
            "status_1",
            "updated_at_-1",
            "user_id_1_type_1_created_at_-1"
        ]
    );
    drop(secantus);
}

/// A URL with a password: neither `location` nor any error holds it.
#[tokio::test]
async fn mongodb_never_shows_the_password() {
    let port = mag_tests::free_port();
    let uri = format!("mongodb://mag:s3cr%40tpw@127.0.0.1:{port}/?authSource=admin");
    let store: Store = mongo_store(&uri, "mag").await;
    assert_eq!(
        store.location(),
        format!("mongodb database \"mag\" at 127.0.0.1:{port}")
    );
    let err = store.ping().await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!text.contains("s3cr") && !text.contains("tpw"), "{text}");
    let err = MongoStore::connect(
        "mongodb://mag:s3cr%40tpw@127.0.0.1:1/?bogusOption=1&w=-5",
        "mag",
    )
    .await
    .expect_err("a bad URL");
    assert!(!err.to_string().contains("s3cr"), "{err}");
}

/// Sends SIGCONT to a stopped process when dropped (also when a check fails).
struct Frozen(u32);

impl Frozen {
    /// SIGSTOPs `pid` and waits until every one of its threads is stopped: `kill` only
    /// queues the signal, and a thread running on another CPU (or in uninterruptible I/O)
    /// may still answer a request sent right after it returns.
    fn freeze(pid: u32) -> Self {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP");
        let frozen = Self(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} did not stop within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        frozen
    }
}

/// Whether every thread of `pid` (each id under `/proc/PID/task`) is stopped.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        task.file_name()
            .to_str()
            .and_then(|tid| tid.parse().ok())
            .is_some_and(mag_common::procfs::is_stopped)
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// A server that accepts connections but never answers (SIGSTOP): every operation still
/// answers Unavailable within seconds, and the store works again once it answers.
#[tokio::test]
async fn mongodb_hung_server_on_secantus() {
    let secantus = Secantus::start();
    let store: Store = mongo_store(&secantus.uri(), &unique_db("hung")).await;
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();

    let frozen = Frozen::freeze(secantus.pid().expect("running"));
    let took = every_operation_unavailable(&store, &r1).await;
    eprintln!("hung server: Unavailable after {took:.2?}");
    drop(frozen);

    let back = recovers(&store).await;
    eprintln!("server answering again: the store answered after {back:.2?}");
    let r2 = after(&r1, 1_000, "after the freeze");
    store
        .save_round(&r2)
        .await
        .expect("a round after the freeze");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2]));
}
