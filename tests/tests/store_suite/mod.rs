//! The conversation store's shared suite (SPEC §5 Storage): checks run against every
//! backend through `Arc<dyn ConversationStore>`, and the helpers that build rounds. Used by
//! `store_embedded.rs` and `store_mongo.rs` (each compiles it; what one of them does not
//! use is no dead code).
#![allow(dead_code)]

use std::time::Duration;

use mag_server::store::{
    CONVERSATION_TYPE, Conversation, ConversationRecord, DateTime, ListQuery, McpGen, MetaChange,
    Round, RoundSave, Store, StoreError, TokenUsage, empty_parsed_results, new_conversation_id,
};
use serde_json::{Map, Value, json};

/// A generous bound on any single operation against a down server: it catches a hang, not
/// a slow answer (the measured figures are printed).
pub(crate) const HANG_BOUND: Duration = Duration::from_secs(20);

/// A base time (ms since the epoch) for the conversations' dates.
pub(crate) const T0: i64 = 1_760_000_000_000;

// ---------------------------------------------------------------------------------------
// Building rounds.

pub(crate) fn usage(prompt: i64, completion: i64) -> TokenUsage {
    TokenUsage {
        total_tokens: prompt + completion,
        prompt_tokens: prompt,
        completion_tokens: completion,
    }
}

/// A new conversation's round 1 for `user`, created (and updated) at `T0 + at` ms.
pub(crate) fn first_round(id: &str, user: &str, at: i64, requirement: &str) -> RoundSave {
    let when = DateTime::from_millis(T0 + at);
    let mut parsed = empty_parsed_results();
    parsed.insert(
        "analysis".into(),
        json!(format!("analysis of {requirement}")),
    );
    parsed.insert("script_files".into(), json!({"main.py": "print(1)"}));
    RoundSave {
        conversation: Conversation {
            id: id.to_owned(),
            user_id: user.to_owned(),
            kind: CONVERSATION_TYPE.into(),
            title: requirement.chars().take(50).collect(),
            created_at: when,
            updated_at: when,
            round_count: 1,
            total_token_usage: usage(100, 20),
            status: "active".into(),
            tags: Vec::new(),
        },
        round: Round {
            round: 1,
            messages: vec![
                json!({"role": "system", "content": "You write MCP servers."}),
                json!({"role": "user", "content": requirement}),
                json!({"role": "assistant", "content": format!("<analysis>{requirement}</analysis>")}),
            ],
            model: Some("scripted".into()),
        },
        parsed_results: parsed,
    }
}

/// The round after `record` (or after the save `previous`), updated at `T0 + at` ms, with
/// `text` as the user's message and the answer.
pub(crate) fn next_round(
    previous: &Conversation,
    parsed: &Map<String, Value>,
    at: i64,
    text: &str,
) -> RoundSave {
    let mut conversation = previous.clone();
    conversation.round_count += 1;
    conversation.updated_at = DateTime::from_millis(T0 + at);
    conversation.total_token_usage = conversation.total_token_usage.plus(usage(300, 40));
    conversation.title = format!("{} (round {})", previous.title, conversation.round_count);
    let mut parsed_results = parsed.clone();
    parsed_results.insert("todo".into(), json!(format!("todo after {text}")));
    parsed_results["script_files"]
        .as_object_mut()
        .unwrap()
        .insert(
            format!("round_{}.py", conversation.round_count),
            json!(text),
        );
    RoundSave {
        round: Round {
            round: conversation.round_count,
            messages: vec![
                json!({"role": "user", "content": text}),
                json!({"role": "assistant", "content": format!("answer to {text}")}),
            ],
            model: Some("scripted".into()),
        },
        conversation,
        parsed_results,
    }
}

/// The round after the saves `saves` (stored in order), see [`next_round`].
pub(crate) fn after(save: &RoundSave, at: i64, text: &str) -> RoundSave {
    next_round(&save.conversation, &save.parsed_results, at, text)
}

/// What `get` should answer after `saves` (round 1 first).
pub(crate) fn record_of(saves: &[&RoundSave]) -> ConversationRecord {
    let last = saves.last().unwrap();
    let mut conversation = last.conversation.clone();
    conversation.created_at = saves[0].conversation.created_at;
    ConversationRecord {
        conversation,
        generation: McpGen {
            id: last.conversation.id.clone(),
            conversation_id: last.conversation.id.clone(),
            rounds: saves.iter().map(|s| s.round.clone()).collect(),
            parsed_results: last.parsed_results.clone(),
        },
    }
}

pub(crate) fn query(user: Option<&str>, limit: i64, skip: u64) -> ListQuery {
    ListQuery {
        user_id: user.map(str::to_owned),
        limit,
        skip,
    }
}

pub(crate) fn ids(list: &[Conversation]) -> Vec<&str> {
    list.iter().map(|c| c.id.as_str()).collect()
}

#[track_caller]
pub(crate) fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    what: &str,
) -> String {
    match result {
        Err(StoreError::Conflict(text)) => text,
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

pub(crate) async fn get(store: &Store, id: &str) -> Option<ConversationRecord> {
    store.get(id).await.expect("get")
}

// ---------------------------------------------------------------------------------------
// The shared suite: each check gets a fresh, empty store.

/// Runs every check of the suite, each on a fresh store from `fresh`.
pub(crate) async fn suite(mut fresh: impl AsyncFnMut() -> Store) {
    round_one_creates(fresh().await).await;
    later_rounds_append(fresh().await).await;
    stale_saves_conflict(fresh().await).await;
    taken_id_conflicts(fresh().await).await;
    list_orders_filters_and_pages(fresh().await).await;
    delete_removes(fresh().await).await;
    update_sets_one_field(fresh().await).await;
    unicode_and_large_messages(fresh().await).await;
    concurrent_saves_one_wins(fresh().await).await;
}

/// Round 1 creates the conversation: `get` answers the same data, `list` shows it.
pub(crate) async fn round_one_creates(store: Store) {
    store.ping().await.expect("ping");
    let id = new_conversation_id();
    assert!(get(&store, &id).await.is_none());
    let save = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&save).await.expect("round 1");
    let record = get(&store, &id).await.expect("the new conversation");
    assert_eq!(record, record_of(&[&save]));
    assert_eq!(record.conversation.round_count, 1);
    assert_eq!(record.messages().len(), 3);
    let list = store.list(&query(None, 10, 0)).await.unwrap();
    assert_eq!(list, vec![save.conversation.clone()]);
}

/// Rounds 2 and 3 append: rounds in order, counters and parsed results set.
pub(crate) async fn later_rounds_append(store: Store) {
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    let r2 = after(&r1, 1_000, "add a forecast");
    store.save_round(&r2).await.expect("round 2");
    let record = get(&store, &id).await.unwrap();
    assert_eq!(record, record_of(&[&r1, &r2]));
    assert_eq!(record.conversation.round_count, 2);
    assert_eq!(record.conversation.total_token_usage, usage(400, 60));
    assert_eq!(record.conversation.created_at, r1.conversation.created_at);
    assert_eq!(
        record.conversation.updated_at,
        DateTime::from_millis(T0 + 1_000)
    );
    assert_eq!(
        record.generation.parsed_results["todo"],
        "todo after add a forecast"
    );
    let r3 = after(&r2, 2_000, "and the wind");
    store.save_round(&r3).await.expect("round 3");
    let record = get(&store, &id).await.unwrap();
    assert_eq!(record, record_of(&[&r1, &r2, &r3]));
    assert_eq!(
        record
            .generation
            .rounds
            .iter()
            .map(|r| r.round)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(record.messages().len(), 7);
    let list = store.list(&query(None, 10, 0)).await.unwrap();
    assert_eq!(list, vec![record.conversation]);
}

/// A round that does not follow the stored ones is a conflict and changes nothing.
pub(crate) async fn stale_saves_conflict(store: Store) {
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    // Round 3 when only round 1 is stored.
    let r2 = after(&r1, 1_000, "add a forecast");
    let r3 = after(&r2, 2_000, "and the wind");
    let text = assert_conflict(store.save_round(&r3).await, "round 3 after round 1");
    assert!(text.contains(&id), "{text}");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1]));

    store.save_round(&r2).await.unwrap();
    let before = get(&store, &id).await.unwrap();
    // Round 2 again, from a writer that read the conversation after round 1.
    let stale = after(&r1, 3_000, "a different round 2");
    assert_conflict(store.save_round(&stale).await, "round 2 again");
    // The very same round 2 again (a retry after it was stored).
    assert_conflict(store.save_round(&r2).await, "the same round 2 again");
    // A gap.
    let mut r4 = after(&r3, 4_000, "round four");
    r4.round.round = 4;
    r4.conversation.round_count = 4;
    assert_conflict(store.save_round(&r4).await, "round 4 after round 2");
    // Not a round number.
    let mut r0 = after(&r2, 5_000, "round zero");
    r0.round.round = 0;
    assert_conflict(store.save_round(&r0).await, "round 0");
    assert_eq!(get(&store, &id).await.unwrap(), before);
    assert_eq!(
        store.list(&query(None, 10, 0)).await.unwrap(),
        vec![before.conversation]
    );

    // A later round of a conversation that does not exist.
    let missing = after(&first_round("mcp_missing", "alice", 0, "x"), 1_000, "y");
    let text = assert_conflict(store.save_round(&missing).await, "round 2 of nothing");
    assert!(text.contains("deleted"), "{text}");
    assert!(get(&store, "mcp_missing").await.is_none());
}

/// Round 1 with a taken id is a conflict and changes nothing.
pub(crate) async fn taken_id_conflicts(store: Store) {
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    let other = first_round(&id, "bob", 5_000, "something else");
    let text = assert_conflict(store.save_round(&other).await, "round 1 on a taken id");
    assert!(text.contains(&id), "{text}");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1]));
    assert_eq!(store.list(&query(None, 10, 0)).await.unwrap().len(), 1);
    // A taken id after rounds were added.
    let r2 = after(&r1, 1_000, "more");
    store.save_round(&r2).await.unwrap();
    assert_conflict(store.save_round(&other).await, "round 1 on a taken id");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2]));
}

/// `list`: newest `updated_at` first, the user filter, skip and limit.
pub(crate) async fn list_orders_filters_and_pages(store: Store) {
    assert!(store.list(&query(None, 10, 0)).await.unwrap().is_empty());
    // Created out of order: (id, user, created at).
    let specs = [
        ("mcp_list_a", "alice", 3_000),
        ("mcp_list_b", "bob", 1_000),
        ("mcp_list_c", "alice", 5_000),
        ("mcp_list_d", "bob", 4_000),
        ("mcp_list_e", "alice", 2_000),
    ];
    let mut saves = Vec::new();
    for (id, user, at) in specs {
        let save = first_round(id, user, at, &format!("tool {id}"));
        store.save_round(&save).await.unwrap();
        saves.push(save);
    }
    let all = store.list(&query(None, 100, 0)).await.unwrap();
    assert_eq!(
        ids(&all),
        [
            "mcp_list_c",
            "mcp_list_d",
            "mcp_list_a",
            "mcp_list_e",
            "mcp_list_b"
        ]
    );
    // A new round moves the oldest to the front.
    store
        .save_round(&after(&saves[1], 9_000, "again"))
        .await
        .unwrap();
    let all = store.list(&query(None, 100, 0)).await.unwrap();
    assert_eq!(
        ids(&all),
        [
            "mcp_list_b",
            "mcp_list_c",
            "mcp_list_d",
            "mcp_list_a",
            "mcp_list_e"
        ]
    );
    assert_eq!(all[0].round_count, 2);
    assert!(all.iter().all(|c| c.kind == CONVERSATION_TYPE));

    let alice = store.list(&query(Some("alice"), 100, 0)).await.unwrap();
    assert_eq!(ids(&alice), ["mcp_list_c", "mcp_list_a", "mcp_list_e"]);
    assert!(alice.iter().all(|c| c.user_id == "alice"));
    let bob = store.list(&query(Some("bob"), 100, 0)).await.unwrap();
    assert_eq!(ids(&bob), ["mcp_list_b", "mcp_list_d"]);
    assert!(
        store
            .list(&query(Some("carol"), 100, 0))
            .await
            .unwrap()
            .is_empty()
    );

    let page = store.list(&query(None, 2, 0)).await.unwrap();
    assert_eq!(ids(&page), ["mcp_list_b", "mcp_list_c"]);
    let page = store.list(&query(None, 2, 2)).await.unwrap();
    assert_eq!(ids(&page), ["mcp_list_d", "mcp_list_a"]);
    let page = store.list(&query(None, 2, 4)).await.unwrap();
    assert_eq!(ids(&page), ["mcp_list_e"]);
    assert!(store.list(&query(None, 2, 5)).await.unwrap().is_empty());
    assert!(
        store
            .list(&query(None, 2, u64::MAX / 2))
            .await
            .unwrap()
            .is_empty()
    );
    let page = store.list(&query(Some("alice"), 1, 1)).await.unwrap();
    assert_eq!(ids(&page), ["mcp_list_a"]);
    assert!(store.list(&query(None, 0, 0)).await.unwrap().is_empty());
}

/// `delete`: true then false; the conversation is gone from `get` and `list`, later rounds
/// conflict, and the id can start a new conversation.
pub(crate) async fn delete_removes(store: Store) {
    let id = new_conversation_id();
    let keep = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    let r2 = after(&r1, 1_000, "more");
    store.save_round(&r2).await.unwrap();
    let kept = first_round(&keep, "alice", 500, "another tool");
    store.save_round(&kept).await.unwrap();

    assert!(store.delete(&id).await.expect("delete"));
    assert!(get(&store, &id).await.is_none());
    assert_eq!(
        ids(&store.list(&query(None, 10, 0)).await.unwrap()),
        [keep.as_str()]
    );
    assert!(!store.delete(&id).await.expect("delete again"));
    assert!(!store.delete("mcp_never_was").await.unwrap());
    let r3 = after(&r2, 2_000, "after the delete");
    let text = assert_conflict(store.save_round(&r3).await, "a round after the delete");
    assert!(text.contains("deleted"), "{text}");
    assert!(get(&store, &id).await.is_none());
    assert_eq!(get(&store, &keep).await.unwrap(), record_of(&[&kept]));

    let again = first_round(&id, "bob", 3_000, "a new start");
    store
        .save_round(&again)
        .await
        .expect("round 1 on a freed id");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&again]));
}

/// `update` (MAG's title, tags and status endpoints): one field and `updated_at` change,
/// nothing else; `false` for an unknown id.
pub(crate) async fn update_sets_one_field(store: Store) {
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    store.save_round(&r1).await.unwrap();
    let mut want = record_of(&[&r1]);
    for (n, change) in [
        MetaChange::Title("Weather, finally".into()),
        MetaChange::Tags(vec!["weather".into(), "天气".into()]),
        MetaChange::Status("favorite".into()),
    ]
    .into_iter()
    .enumerate()
    {
        let at = DateTime::from_millis(T0 + 10_000 + n as i64);
        assert!(store.update(&id, &change, at).await.expect("update"));
        match &change {
            MetaChange::Title(title) => want.conversation.title = title.clone(),
            MetaChange::Tags(tags) => want.conversation.tags = tags.clone(),
            MetaChange::Status(status) => want.conversation.status = status.clone(),
        }
        want.conversation.updated_at = at;
        assert_eq!(get(&store, &id).await.unwrap(), want, "after {change:?}");
    }
    let listed = store.list(&query(None, 10, 0)).await.unwrap();
    assert_eq!(listed, [want.conversation.clone()]);
    let at = DateTime::from_millis(T0);
    assert!(
        !store
            .update("mcp_never_was", &MetaChange::Status("active".into()), at)
            .await
            .unwrap()
    );
}

/// Unicode, control characters, arbitrary message fields and a 1 MiB message read back
/// exactly.
pub(crate) async fn unicode_and_large_messages(store: Store) {
    let id = new_conversation_id();
    let text = "héllo wörld — 天气预报 🌦️👩‍💻 שלום مرحبا \u{0301}\t\"quotes\" \\ back\nslash \u{1}";
    let mut r1 = first_round(&id, "ユーザー", 0, text);
    r1.conversation.tags = vec!["ünïcode".into(), "🏷️".into()];
    r1.round.messages.push(json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "f", "arguments": "{\"x\": 1}"}}],
        "n": 3, "negative": -7, "ratio": 1.5, "ok": true, "nothing": null,
        "nested": {"deep": [[1, 2], {"k": "v"}]},
    }));
    r1.parsed_results.insert(
        "script_files".into(),
        json!({"天气.py": text, "dir/ü.txt": "x"}),
    );
    store.save_round(&r1).await.expect("unicode round 1");
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1]));
    assert_eq!(
        store
            .list(&query(Some("ユーザー"), 10, 0))
            .await
            .unwrap()
            .len(),
        1
    );

    let big: String = "0123456789abcdef🙂".repeat((1024 * 1024_usize).div_ceil(20));
    assert!(big.len() >= 1024 * 1024);
    let mut r2 = after(&r1, 1_000, "a big answer");
    r2.round.messages[1] = json!({"role": "assistant", "content": big});
    r2.parsed_results["script_files"]
        .as_object_mut()
        .unwrap()
        .insert("big.txt".into(), json!(big));
    store.save_round(&r2).await.expect("a 1 MiB round");
    let record = get(&store, &id).await.unwrap();
    assert_eq!(
        record.generation.rounds[1].messages[1]["content"],
        big.as_str()
    );
    assert_eq!(record, record_of(&[&r1, &r2]));
}

/// Concurrent saves of the same round: exactly one wins, and its round is the one stored.
pub(crate) async fn concurrent_saves_one_wins(store: Store) {
    const WRITERS: usize = 8;
    // Round 1 of one new id.
    let id = new_conversation_id();
    let saves = (0..WRITERS)
        .map(|writer| first_round(&id, &format!("writer{writer}"), writer as i64, "race"))
        .collect();
    let r1 = race(&store, saves, "round 1").await;
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1]));

    // Round 2, from writers that all read round 1.
    let saves = (0..WRITERS)
        .map(|writer| after(&r1, 1_000 + writer as i64, &format!("writer {writer}")))
        .collect();
    let r2 = race(&store, saves, "round 2").await;
    let record = get(&store, &id).await.unwrap();
    assert_eq!(record, record_of(&[&r1, &r2]));
    assert_eq!(record.conversation.round_count, 2);
}

/// Saves `saves` all at once: exactly one wins, the others get a conflict; returns the
/// winner (`what` names the round in failures).
async fn race(store: &Store, saves: Vec<RoundSave>, what: &str) -> RoundSave {
    let mut tasks = tokio::task::JoinSet::new();
    for save in saves {
        let store = store.clone();
        tasks.spawn(async move { (store.save_round(&save).await, save) });
    }
    let results = tasks.join_all().await;
    let winners: Vec<&RoundSave> = results
        .iter()
        .filter(|(r, _)| r.is_ok())
        .map(|(_, s)| s)
        .collect();
    assert_eq!(winners.len(), 1, "{what} winners: {results:?}");
    for (result, _) in &results {
        if let Err(e) = result {
            assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        }
    }
    winners[0].clone()
}
