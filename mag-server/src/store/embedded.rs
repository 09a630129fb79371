//! The embedded store: one SQLite file in the data dir (`DATA_DIR/conversations.sqlite3`),
//! used when `MONGODB_URL` is unset, so a fresh machine needs no database.
//!
//! It keeps MAG's documents as rows (schema version 1, in `PRAGMA user_version`):
//! - `conversations`: one column per field of a `conversations` document (`id` is `_id`,
//!   times are milliseconds since the Unix epoch, `tags` is a JSON array), with MAG's
//!   indexes `(user_id, type, created_at DESC)`, `(status)`, `(updated_at DESC)`;
//! - `mcp_gen`: `id`, `conversation_id`, `parsed_results` (a JSON object), index
//!   `(conversation_id)`;
//! - `mcp_gen_rounds`: the `rounds` of an `mcp_gen` document, one row per round:
//!   `(conversation_id, round)` primary key, `messages` (a JSON array), `model`.
//!
//! The file runs in WAL mode with `synchronous=FULL` (a stored round survives a power cut)
//! and a busy timeout. SQLite is blocking: the one connection sits behind a mutex and every
//! call runs on tokio's blocking pool, inside one transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{
    CONVERSATION_TYPE, Conversation, ConversationRecord, ConversationStore, DateTime, ListQuery,
    McpGen, MetaChange, Round, RoundSave, StoreError, TokenUsage,
};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock another process holds on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version 1.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    round_count INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    status TEXT NOT NULL,
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_user_id_type_created_at
    ON conversations (user_id, type, created_at DESC);
CREATE INDEX IF NOT EXISTS conversations_status ON conversations (status);
CREATE INDEX IF NOT EXISTS conversations_updated_at ON conversations (updated_at DESC);
CREATE TABLE IF NOT EXISTS mcp_gen (
    id TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL,
    parsed_results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mcp_gen_conversation_id ON mcp_gen (conversation_id);
CREATE TABLE IF NOT EXISTS mcp_gen_rounds (
    conversation_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    messages TEXT NOT NULL,
    model TEXT,
    PRIMARY KEY (conversation_id, round)
);
";

/// The embedded SQLite store (see the module docs). Cheap to clone: clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl EmbeddedStore {
    /// Opens the store in the SQLite file `path` (e.g. `DATA_DIR/conversations.sqlite3`),
    /// creating its parent folder, the file and the schema when missing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the folder or file cannot be created or opened, or
    /// the file holds a newer schema version than this build knows;
    /// [`StoreError::Corrupt`] when the file is not an SQLite database. The text names the
    /// file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "embedded store {}: cannot create {}: {e}",
                    path.display(),
                    parent.display()
                ))
            })?;
        }
        let fail = |e: rusqlite::Error| sqlite_error(path, &e);
        let mut conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "embedded store {}: WAL journal unavailable, using {mode}",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(fail)?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA_V1).map_err(fail)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(fail)?;
            }
            SCHEMA_VERSION => {}
            newer => {
                return Err(StoreError::Unavailable(format!(
                    "embedded store {}: schema version {newer} is newer than this \
                     mag-server's ({SCHEMA_VERSION})",
                    path.display()
                )));
            }
        }
        tx.commit().map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the connection on tokio's blocking pool.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A panic while the lock was held rolled its transaction back (`Transaction`'s
            // drop), so the connection is still good.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            op(&mut conn, &path)
        });
        task.await.map_err(|e| {
            StoreError::Unavailable(format!(
                "embedded store {}: the operation failed: {e}",
                self.path.display()
            ))
        })?
    }
}

/// A rusqlite error as a [`StoreError`] naming the file: a malformed file or a value that
/// does not read back is [`StoreError::Corrupt`], anything else (I/O, busy, full disk,
/// read-only) [`StoreError::Unavailable`].
fn sqlite_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    let text = format!("embedded store {}: {e}", path.display());
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(text),
        _ => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(text),
            _ => StoreError::Unavailable(text),
        },
    }
}

/// JSON text read back from `what`, or [`StoreError::Corrupt`].
fn from_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Corrupt(format!(
            "embedded store {}: {what} is not valid JSON of the expected shape: {e}",
            path.display()
        ))
    })
}

/// `value` as JSON text.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Values built of `serde_json` types, strings and integers always serialize.
    serde_json::to_string(value).expect("serializable as JSON")
}

const CONVERSATION_COLUMNS: &str = "id, user_id, type, title, created_at, updated_at, \
     round_count, total_tokens, prompt_tokens, completion_tokens, status, tags";

/// A `conversations` row as read with [`CONVERSATION_COLUMNS`]; `tags` still JSON text.
fn conversation_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Conversation, String)> {
    Ok((
        Conversation {
            id: row.get(0)?,
            user_id: row.get(1)?,
            kind: row.get(2)?,
            title: row.get(3)?,
            created_at: DateTime::from_millis(row.get(4)?),
            updated_at: DateTime::from_millis(row.get(5)?),
            round_count: row.get(6)?,
            total_token_usage: TokenUsage {
                total_tokens: row.get(7)?,
                prompt_tokens: row.get(8)?,
                completion_tokens: row.get(9)?,
            },
            status: row.get(10)?,
            tags: Vec::new(),
        },
        row.get(11)?,
    ))
}

/// Fills in the tags of a [`conversation_row`].
fn with_tags(
    path: &Path,
    (mut c, tags): (Conversation, String),
) -> Result<Conversation, StoreError> {
    c.tags = from_json(path, &format!("the tags of conversation {:?}", c.id), &tags)?;
    Ok(c)
}

/// The body of [`ConversationStore::save_round`], inside one immediate transaction.
fn save_round(conn: &mut Connection, path: &Path, save: &RoundSave) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| sqlite_error(path, &e);
    let c = &save.conversation;
    let n = save.round.round;
    if n < 1 {
        return Err(StoreError::Conflict(format!(
            "conversation {}: round {n} is not a round number (they start at 1)",
            c.id
        )));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let generation_exists = tx
        .query_row("SELECT 1 FROM mcp_gen WHERE id = ?1", [&c.id], |_| Ok(()))
        .optional()
        .map_err(fail)?
        .is_some();
    let messages = to_json(&save.round.messages);
    let parsed = to_json(&save.parsed_results);
    if n == 1 {
        let conversation_exists = tx
            .query_row("SELECT 1 FROM conversations WHERE id = ?1", [&c.id], |_| {
                Ok(())
            })
            .optional()
            .map_err(fail)?
            .is_some();
        if generation_exists || conversation_exists {
            return Err(StoreError::Conflict(format!(
                "conversation id {} is taken",
                c.id
            )));
        }
        tx.execute(
            "INSERT INTO mcp_gen (id, conversation_id, parsed_results) VALUES (?1, ?1, ?2)",
            params![c.id, parsed],
        )
        .map_err(fail)?;
        tx.execute(
            &format!(
                "INSERT INTO conversations ({CONVERSATION_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                c.id,
                c.user_id,
                c.kind,
                c.title,
                c.created_at.timestamp_millis(),
                c.updated_at.timestamp_millis(),
                c.round_count,
                c.total_token_usage.total_tokens,
                c.total_token_usage.prompt_tokens,
                c.total_token_usage.completion_tokens,
                c.status,
                to_json(&c.tags),
            ],
        )
        .map_err(fail)?;
    } else {
        if !generation_exists {
            return Err(StoreError::Conflict(format!(
                "conversation {} was deleted (or never existed): cannot store its round {n}",
                c.id
            )));
        }
        let stored: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM mcp_gen_rounds WHERE conversation_id = ?1",
                [&c.id],
                |row| row.get(0),
            )
            .map_err(fail)?;
        if stored != n - 1 {
            return Err(StoreError::Conflict(format!(
                "conversation {}: another round was stored meanwhile ({stored} rounds are \
                 stored, round {n} needs {})",
                c.id,
                n - 1
            )));
        }
        tx.execute(
            "UPDATE mcp_gen SET parsed_results = ?2 WHERE id = ?1",
            params![c.id, parsed],
        )
        .map_err(fail)?;
        let updated = tx
            .execute(
                "UPDATE conversations SET round_count = ?2, total_tokens = ?3, \
                 prompt_tokens = ?4, completion_tokens = ?5, updated_at = ?6, title = ?7 \
                 WHERE id = ?1",
                params![
                    c.id,
                    c.round_count,
                    c.total_token_usage.total_tokens,
                    c.total_token_usage.prompt_tokens,
                    c.total_token_usage.completion_tokens,
                    c.updated_at.timestamp_millis(),
                    c.title,
                ],
            )
            .map_err(fail)?;
        if updated == 0 {
            return Err(StoreError::Conflict(format!(
                "conversation {} was deleted: cannot store its round {n}",
                c.id
            )));
        }
    }
    tx.execute(
        "INSERT INTO mcp_gen_rounds (conversation_id, round, messages, model) \
         VALUES (?1, ?2, ?3, ?4)",
        params![c.id, n, messages, save.round.model],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(format!(
            "conversation {}: round {n} is stored already",
            c.id
        )),
        _ => fail(e),
    })?;
    tx.commit().map_err(fail)
}

/// The body of [`ConversationStore::get`].
fn get(
    conn: &mut Connection,
    path: &Path,
    id: &str,
) -> Result<Option<ConversationRecord>, StoreError> {
    let fail = |e: rusqlite::Error| sqlite_error(path, &e);
    // A read transaction: one snapshot of the three tables.
    let tx = conn.transaction().map_err(fail)?;
    let Some(row) = tx
        .query_row(
            &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"),
            [id],
            conversation_row,
        )
        .optional()
        .map_err(fail)?
    else {
        return Ok(None);
    };
    let conversation = with_tags(path, row)?;
    let Some((conversation_id, parsed)) = tx
        .query_row(
            "SELECT conversation_id, parsed_results FROM mcp_gen WHERE id = ?1",
            [id],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()
        .map_err(fail)?
    else {
        return Ok(None);
    };
    let parsed_results: Map<String, Value> =
        from_json(path, &format!("the parsed_results of {id:?}"), &parsed)?;
    let mut statement = tx
        .prepare(
            "SELECT round, messages, model FROM mcp_gen_rounds WHERE conversation_id = ?1 \
             ORDER BY round",
        )
        .map_err(fail)?;
    let rows = statement
        .query_map([id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(fail)?;
    let mut rounds = Vec::new();
    for row in rows {
        let (round, messages, model) = row.map_err(fail)?;
        let messages = from_json(
            path,
            &format!("the messages of round {round} of {id:?}"),
            &messages,
        )?;
        rounds.push(Round {
            round,
            messages,
            model,
        });
    }
    Ok(Some(ConversationRecord {
        conversation,
        generation: McpGen {
            id: id.to_owned(),
            conversation_id,
            rounds,
            parsed_results,
        },
    }))
}

/// The body of [`ConversationStore::list`].
fn list(
    conn: &mut Connection,
    path: &Path,
    query: &ListQuery,
) -> Result<Vec<Conversation>, StoreError> {
    let fail = |e: rusqlite::Error| sqlite_error(path, &e);
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE type = ?1 AND (?2 IS NULL OR user_id = ?2) \
             ORDER BY updated_at DESC, id LIMIT ?3 OFFSET ?4"
        ))
        .map_err(fail)?;
    let skip = i64::try_from(query.skip).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(
            params![CONVERSATION_TYPE, query.user_id, query.limit, skip],
            conversation_row,
        )
        .map_err(fail)?;
    let mut list = Vec::new();
    for row in rows {
        list.push(with_tags(path, row.map_err(fail)?)?);
    }
    Ok(list)
}

/// The body of [`ConversationStore::delete`].
fn delete(conn: &mut Connection, path: &Path, id: &str) -> Result<bool, StoreError> {
    let fail = |e: rusqlite::Error| sqlite_error(path, &e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    tx.execute(
        "DELETE FROM mcp_gen_rounds WHERE conversation_id = ?1",
        [id],
    )
    .map_err(fail)?;
    tx.execute("DELETE FROM mcp_gen WHERE id = ?1", [id])
        .map_err(fail)?;
    let deleted = tx
        .execute("DELETE FROM conversations WHERE id = ?1", [id])
        .map_err(fail)?;
    tx.commit().map_err(fail)?;
    Ok(deleted > 0)
}

fn update(
    conn: &mut Connection,
    path: &Path,
    id: &str,
    change: &MetaChange,
    at: DateTime,
) -> Result<bool, StoreError> {
    let (column, value) = match change {
        MetaChange::Title(title) => ("title", title.clone()),
        MetaChange::Tags(tags) => ("tags", to_json(tags)),
        MetaChange::Status(status) => ("status", status.clone()),
    };
    let changed = conn
        .execute(
            &format!("UPDATE conversations SET {column} = ?2, updated_at = ?3 WHERE id = ?1"),
            rusqlite::params![id, value, at.timestamp_millis()],
        )
        .map_err(|e| sqlite_error(path, &e))?;
    Ok(changed > 0)
}

#[async_trait]
impl ConversationStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn location(&self) -> String {
        format!("SQLite file {}", self.path.display())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn, path| {
            conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |_| Ok(()))
                .map_err(|e| sqlite_error(path, &e))
        })
        .await
    }

    async fn save_round(&self, save: &RoundSave) -> Result<(), StoreError> {
        let save = save.clone();
        self.run(move |conn, path| save_round(conn, path, &save))
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn, path| get(conn, path, &id)).await
    }

    /// A `limit` of 0 or less returns nothing.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError> {
        if query.limit <= 0 {
            return Ok(Vec::new());
        }
        let query = query.clone();
        self.run(move |conn, path| list(conn, path, &query)).await
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |conn, path| delete(conn, path, &id)).await
    }

    async fn update(
        &self,
        id: &str,
        change: &MetaChange,
        at: DateTime,
    ) -> Result<bool, StoreError> {
        let (id, change) = (id.to_owned(), change.clone());
        self.run(move |conn, path| update(conn, path, &id, &change, at))
            .await
    }
}
