//! The MongoDB store: MAG's collections `conversations` and `mcp_gen` through the official
//! driver, with MAG's schema (see the [parent module](super)) and indexes.
//!
//! The client connects lazily: [`MongoStore::connect`] only parses the URL, so mag-server
//! starts with MongoDB down. Server selection and TCP connects give up after 3 s and every
//! driver call is bounded by [`OP_TIMEOUT`], so a down server answers
//! [`StoreError::Unavailable`] within a few seconds; the driver's monitor finds the server
//! again once it is back, without a restart. MAG's indexes are created after the first
//! operation that reaches the server, while no other operation of the store runs (and
//! retried after later ones until that succeeds); a failure there is logged, never an
//! operation's error.
//!
//! Without transactions (a standalone `mongod` has none), a round is stored in document
//! order. Round 1: an existing conversation with the id is a conflict; the `mcp_gen`
//! document is written first (replacing one a failed round 1 left without its
//! conversation), then the `conversations` one, whose failure takes the first back, so a
//! listed conversation always has its rounds. Round N: the round and the parsed results
//! go into `mcp_gen` in one atomic update, only when exactly N-1 rounds are stored; that
//! update is the round's commit. The conversation's counters follow as values, not
//! increments: when that second write fails the round still counts as stored (a warning
//! is logged, `get` repairs `round_count`, the next round sets the counters again), and
//! only that round's token usage is missing from the total. A write that ran out of
//! [`OP_TIMEOUT`] may still land on the server afterwards: the round was answered as not
//! stored (503) yet shows up in the conversation; `get` then counts it, so the next round
//! follows it.
//!
//! Only conversations with an `mcp_gen` document are MCP generation's: `list` and
//! `delete` leave MAG's other conversations (chat, graph generation) alone.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};

use super::{
    CONVERSATION_TYPE, Conversation, ConversationRecord, ConversationStore, DateTime, ListQuery,
    McpGen, MetaChange, RoundSave, StoreError, url_secrets,
};

/// The `conversations` collection.
pub const CONVERSATIONS: &str = "conversations";
/// The `mcp_gen` collection.
pub const MCP_GEN: &str = "mcp_gen";

/// How long the driver looks for a usable server before an operation fails.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP (and TLS) connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The bound on every driver call (a server that accepts connections but does not answer).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on parsing the URL (a `mongodb+srv://` URL needs DNS lookups).
const PARSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The driver's application name, seen in the server's logs and `currentOp`.
const APP_NAME: &str = "mag-server";

/// The MongoDB store (see the module docs).
pub struct MongoStore {
    database: Database,
    conversations: Collection<Conversation>,
    generations: Collection<McpGen>,
    /// `mcp_gen` untyped, for reads with a projection (which a typed `McpGen` cannot hold).
    generation_docs: Collection<Document>,
    /// `mongodb database "NAME" at HOST:PORT,…`: never the credentials.
    location: String,
    /// The URL's password, raw and decoded: scrubbed from every error text.
    secrets: Vec<String>,
    /// Whether MAG's indexes are known to exist (or the server refused them).
    indexes_ready: AtomicBool,
    /// Operations hold it shared, index creation exclusive (see [`Self::ensure_indexes`]).
    index_gate: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// A store on database `database` of the MongoDB at `url` (a `mongodb://` or
    /// `mongodb+srv://` connection string). Does not contact the server (only DNS for
    /// `mongodb+srv://`): the driver connects on the first operation.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL does not parse (the text never holds its
    /// password) or `database` is not a valid database name.
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        let mut secrets = url_secrets(url);
        check_database_name(database)?;
        let parse = ClientOptions::parse(url).into_future();
        let mut options = match tokio::time::timeout(PARSE_TIMEOUT, parse).await {
            Ok(Ok(options)) => options,
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(scrub(
                    &secrets,
                    format!("MONGODB_URL does not parse: {}", e.kind),
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "MONGODB_URL: resolving its hosts took more than {PARSE_TIMEOUT:?}"
                )));
            }
        };
        if let Some(password) = options.credential.as_ref().and_then(|c| c.password.clone())
            && !password.is_empty()
            && !secrets.contains(&password)
        {
            secrets.push(password);
        }
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(CONNECT_TIMEOUT);
        options.app_name = Some(APP_NAME.to_owned());
        let hosts = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // The hosts never hold the user info.
        let location = format!("mongodb database {database:?} at {hosts}");
        let client = Client::with_options(options).map_err(|e| {
            StoreError::Unavailable(scrub(
                &secrets,
                format!("MONGODB_URL is not usable: {}", e.kind),
            ))
        })?;
        let database = client.database(database);
        Ok(Self {
            conversations: database.collection(CONVERSATIONS),
            generations: database.collection(MCP_GEN),
            generation_docs: database.collection(MCP_GEN),
            database,
            location,
            secrets,
            indexes_ready: AtomicBool::new(false),
            index_gate: tokio::sync::RwLock::new(()),
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// MAG's indexes (non-unique, the driver's default names): `conversations`
    /// `{user_id: 1, type: 1, created_at: -1}`, `{status: 1}`, `{updated_at: -1}`; `mcp_gen`
    /// `{conversation_id: 1}`. Existing ones are kept. Bounded by [`OP_TIMEOUT`] in all.
    async fn create_indexes(&self) -> Result<(), DriverError> {
        let conversations = [
            doc! {"user_id": 1, "type": 1, "created_at": -1},
            doc! {"status": 1},
            doc! {"updated_at": -1},
        ]
        .map(|keys| IndexModel::builder().keys(keys).build());
        let generations = IndexModel::builder()
            .keys(doc! {"conversation_id": 1})
            .build();
        let create = async {
            self.conversations.create_indexes(conversations).await?;
            self.generations.create_index(generations).await?;
            Ok(())
        };
        tokio::time::timeout(OP_TIMEOUT, create)
            .await
            .unwrap_or_else(|_| {
                Err(DriverError::custom(format!(
                    "no answer within {OP_TIMEOUT:?}"
                )))
            })
    }

    /// After an operation that reached the server: creates the indexes unless that was done
    /// before, with no operation of this store running meanwhile (SecantusDB hangs for
    /// good when `createIndexes` races an insert that creates the collection). A failure
    /// is logged, and tried again after the next operation unless the server refused the
    /// command (e.g. an index of the same keys but other options exists, or the user may
    /// not create indexes).
    async fn ensure_indexes(&self) {
        let _exclusive = self.index_gate.write().await;
        if self.indexes_ready.load(Ordering::Acquire) {
            return;
        }
        match self.create_indexes().await {
            Ok(()) => {
                self.indexes_ready.store(true, Ordering::Release);
                tracing::debug!("{}: MAG's indexes are in place", self.location);
            }
            Err(e) if matches!(*e.kind, ErrorKind::Command(_)) => {
                self.indexes_ready.store(true, Ordering::Release);
                tracing::warn!(
                    "{}: the server refused MAG's indexes (not tried again): {}",
                    self.location,
                    scrub(&self.secrets, e.kind.to_string())
                );
            }
            Err(e) => tracing::warn!(
                "{}: cannot create MAG's indexes yet: {}",
                self.location,
                scrub(&self.secrets, e.kind.to_string())
            ),
        }
    }

    /// Runs `op`, one operation of the store; while the indexes are not in place, under
    /// the shared side of the index gate, and followed by [`Self::ensure_indexes`] when
    /// the server answered.
    async fn guarded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.indexes_ready.load(Ordering::Acquire) {
            return op.await;
        }
        let result = {
            let _shared = self.index_gate.read().await;
            op.await
        };
        if !matches!(result, Err(StoreError::Unavailable(_))) {
            self.ensure_indexes().await;
        }
        result
    }

    /// Runs one driver call with [`OP_TIMEOUT`]; errors classified by [`Self::error`].
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, call.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(what, &e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{}: cannot {what}: no answer within {OP_TIMEOUT:?}",
                self.location
            ))),
        }
    }

    /// A driver error as a [`StoreError`]: a duplicate key is [`StoreError::Conflict`], a
    /// document that does not decode [`StoreError::Corrupt`], anything else (network,
    /// server selection, cleared pool, timeouts, refusals) [`StoreError::Unavailable`]; the
    /// text names the database, what failed and the driver's message.
    fn error(&self, what: &str, e: &DriverError) -> StoreError {
        let text = scrub(
            &self.secrets,
            format!("{}: cannot {what}: {}", self.location, e.kind),
        );
        match &*e.kind {
            _ if is_duplicate_key(e) => StoreError::Conflict(text),
            ErrorKind::BsonDeserialization(_) => StoreError::Corrupt(text),
            _ => StoreError::Unavailable(text),
        }
    }

    /// `value` as BSON, or [`StoreError::Corrupt`] naming `what`.
    fn encode<T: serde::Serialize>(&self, what: &str, value: &T) -> Result<Bson, StoreError> {
        mongodb::bson::to_bson(value).map_err(|e| {
            StoreError::Corrupt(format!(
                "{}: cannot encode {what} as BSON: {e}",
                self.location
            ))
        })
    }

    async fn insert_conversation(&self, save: &RoundSave) -> Result<(), StoreError> {
        let id = &save.conversation.id;
        let taken = |e: StoreError| match e {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("conversation id {id} is taken"))
            }
            other => other,
        };
        let existing = self
            .bounded(
                "look for the conversation",
                self.conversations.find_one(doc! {"_id": id}),
            )
            .await?;
        if existing.is_some() {
            return Err(StoreError::Conflict(format!(
                "conversation id {id} is taken"
            )));
        }
        let generation = McpGen {
            id: id.clone(),
            conversation_id: id.clone(),
            rounds: vec![save.round.clone()],
            parsed_results: save.parsed_results.clone(),
        };
        // An `mcp_gen` document without its conversation is what a failed round 1 left
        // behind: replaced, so the id stays usable.
        self.bounded(
            "store the mcp_gen document",
            self.generations
                .replace_one(doc! {"_id": id}, &generation)
                .upsert(true),
        )
        .await?;
        // When this fails the `mcp_gen` document stays: alone it is invisible and the next
        // round 1 replaces it; and an insert that timed out may still have landed, which
        // leaves both documents, a whole conversation (taking it back would leave a
        // `conversations` document alone, which blocks its id for good).
        self.bounded(
            "insert the conversations document",
            self.conversations.insert_one(&save.conversation),
        )
        .await
        .map(drop)
        .map_err(taken)
    }

    async fn append_round(&self, save: &RoundSave) -> Result<(), StoreError> {
        let c = &save.conversation;
        let n = save.round.round;
        let round = self.encode("the round", &save.round)?;
        let parsed = self.encode("the parsed results", &save.parsed_results)?;
        let pushed = self
            .bounded(
                "store the round in mcp_gen",
                self.generations.update_one(
                    doc! {"_id": &c.id, "rounds": {"$size": n - 1}},
                    doc! {"$push": {"rounds": round}, "$set": {"parsed_results": parsed}},
                ),
            )
            .await?;
        if pushed.matched_count == 0 {
            let stored = self
                .bounded(
                    "read the stored rounds",
                    self.generation_docs
                        .find_one(doc! {"_id": &c.id})
                        .projection(doc! {"rounds.round": 1}),
                )
                .await?;
            return Err(StoreError::Conflict(match stored {
                None => format!(
                    "conversation {} was deleted (or never existed): cannot store its round \
                     {n}",
                    c.id
                ),
                Some(d) => format!(
                    "conversation {}: another round was stored meanwhile ({} rounds are \
                     stored, round {n} needs {})",
                    c.id,
                    d.get_array("rounds").map(Vec::len).unwrap_or_default(),
                    n - 1
                ),
            }));
        }
        // The round (messages and parsed results) is stored now, in one atomic update.
        // The conversation's counters follow; when that fails the round still counts as
        // stored (its messages are what the caller saw), and the next round sets the
        // counters again (values, not increments; `get` repairs `round_count`).
        let usage = self.encode("the token usage", &c.total_token_usage)?;
        let updated = self
            .bounded(
                "update the conversations document",
                self.conversations.update_one(
                    doc! {"_id": &c.id},
                    doc! {"$set": {
                        "round_count": c.round_count,
                        "total_token_usage": usage,
                        "updated_at": c.updated_at,
                        "title": &c.title,
                    }},
                ),
            )
            .await;
        let updated = match updated {
            Ok(updated) => updated,
            Err(e) => {
                tracing::warn!(
                    "conversation {}: round {n} is stored, its counters are not: {e}",
                    c.id
                );
                return Ok(());
            }
        };
        if updated.matched_count == 0 {
            return Err(StoreError::Conflict(format!(
                "conversation {} was deleted while its round {n} was stored",
                c.id
            )));
        }
        Ok(())
    }

    async fn get_record(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let Some(conversation) = self
            .bounded(
                &format!("read conversation {id:?}"),
                self.conversations.find_one(doc! {"_id": id}),
            )
            .await?
        else {
            return Ok(None);
        };
        let generation = self
            .bounded(
                &format!("read the mcp_gen document of {id:?}"),
                self.generations.find_one(doc! {"_id": id}),
            )
            .await?;
        Ok(generation.map(|generation| {
            let mut conversation = conversation;
            // A round whose counters could not be set (see `append_round`).
            conversation.round_count = conversation.round_count.max(generation.rounds.len() as i64);
            ConversationRecord {
                conversation,
                generation,
            }
        }))
    }

    /// MAG's graph generation uses `type: "agent"` too: only conversations with an
    /// `mcp_gen` document are MCP generation's, so those ids are read first and the page
    /// is taken from them (newest first, then by id, as the embedded store orders).
    async fn list_conversations(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError> {
        let ours: Vec<Document> = self
            .bounded("list mcp_gen documents", async {
                self.generation_docs
                    .find(doc! {})
                    .projection(doc! {"_id": 1})
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let ids: Vec<&str> = ours.iter().filter_map(|d| d.get_str("_id").ok()).collect();
        let mut filter = doc! {"_id": {"$in": ids}, "type": CONVERSATION_TYPE};
        if let Some(user) = &query.user_id {
            filter.insert("user_id", user);
        }
        self.bounded("list conversations", async {
            self.conversations
                .find(filter)
                .sort(doc! {"updated_at": -1, "_id": 1})
                .skip(query.skip)
                .limit(query.limit)
                .await?
                .try_collect()
                .await
        })
        .await
    }

    /// Only an MCP-generation conversation (one with an `mcp_gen` document): the other
    /// conversations MAG keeps in `conversations` are not ours to delete. The
    /// `conversations` document goes first: if the second delete fails, what is left is an
    /// `mcp_gen` document alone, which nothing shows and the next round 1 with the id
    /// replaces.
    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        let ours = self
            .bounded(
                "look for the mcp_gen document",
                self.generation_docs
                    .find_one(doc! {"_id": id})
                    .projection(doc! {"_id": 1}),
            )
            .await?;
        if ours.is_none() {
            return Ok(false);
        }
        self.bounded(
            "delete the conversations document",
            self.conversations.delete_one(doc! {"_id": id}),
        )
        .await?;
        self.bounded(
            "delete the mcp_gen document",
            self.generations.delete_one(doc! {"_id": id}),
        )
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl ConversationStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guarded(async {
            self.bounded("ping", self.database.run_command(doc! {"ping": 1}))
                .await
                .map(drop)
        })
        .await
    }

    async fn save_round(&self, save: &RoundSave) -> Result<(), StoreError> {
        match save.round.round {
            1 => self.guarded(self.insert_conversation(save)).await,
            n if n > 1 => self.guarded(self.append_round(save)).await,
            n => Err(StoreError::Conflict(format!(
                "conversation {}: round {n} is not a round number (they start at 1)",
                save.conversation.id
            ))),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        self.guarded(self.get_record(id)).await
    }

    /// A `limit` of 0 or less returns nothing.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError> {
        if query.limit <= 0 {
            return Ok(Vec::new());
        }
        self.guarded(self.list_conversations(query)).await
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.guarded(self.delete_conversation(id)).await
    }

    async fn update(
        &self,
        id: &str,
        change: &MetaChange,
        at: DateTime,
    ) -> Result<bool, StoreError> {
        let set = match change {
            MetaChange::Title(title) => doc! {"title": title, "updated_at": at},
            MetaChange::Tags(tags) => doc! {"tags": tags, "updated_at": at},
            MetaChange::Status(status) => doc! {"status": status, "updated_at": at},
        };
        let updated = self
            .guarded(
                self.bounded(
                    "update the conversations document",
                    self.conversations
                        .update_one(doc! {"_id": id}, doc! {"$set": set}),
                ),
            )
            .await?;
        Ok(updated.matched_count > 0)
    }
}

/// Whether `e` is MongoDB's duplicate key error (11000).
fn is_duplicate_key(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// `text` with every secret replaced by `***`.
fn scrub(secrets: &[String], mut text: String) -> String {
    for secret in secrets {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

/// MongoDB's rules for a database name: 1 to 63 bytes, none of `/\. "$` or NUL.
fn check_database_name(name: &str) -> Result<(), StoreError> {
    let bad = name.is_empty()
        || name.len() > 63
        || name
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'));
    if bad {
        return Err(StoreError::Unavailable(format!(
            "MONGODB_DB {name:?} is not a valid database name (1 to 63 bytes, none of \
             /\\. \"$)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_and_scrubbed() {
        let secrets = url_secrets("mongodb://mag:p%40ss@db1:27017,db2/?authSource=admin");
        assert_eq!(secrets, ["p%40ss", "p@ss"]);
        assert_eq!(
            scrub(&secrets, "auth p@ss and p%40ss".into()),
            "auth *** and ***"
        );
        assert!(url_secrets("mongodb://127.0.0.1:27017/?directConnection=true").is_empty());
        assert!(url_secrets("mongodb://user@host/").is_empty());
    }

    #[tokio::test]
    async fn connect_is_lazy_and_hides_the_password() {
        let store =
            MongoStore::connect("mongodb://mag:hunter2@127.0.0.1:9/?authSource=admin", "mag")
                .await
                .unwrap();
        assert_eq!(store.location(), r#"mongodb database "mag" at 127.0.0.1:9"#);
        assert!(!format!("{store:?}").contains("hunter2"));
        let err = MongoStore::connect("mongodb://mag:hunter2@127.0.0.1:9/?w=bogus&x=1", "mag")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            MongoStore::connect("mongodb://127.0.0.1", "a.b")
                .await
                .is_err()
        );
    }
}
