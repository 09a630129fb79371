//! Per-server log files: `LOG_DIR/servers/NAME.stderr.log` (SPEC §4).
//!
//! A stdio server's stderr is copied there line by line, and so is every line it prints on
//! stdout that is not JSON-RPC (prefixed `[stdout] `). The file is size-capped: when a write
//! would take it past the cap it is renamed to `NAME.stderr.log.1` (replacing the previous
//! one) and a new file is started, so a server that spams costs at most twice the cap on disk.
//! The last few stderr lines are also kept in memory, so a server that fails to start is
//! reported with what it said. Secret values ([`mag_common::secrets`]) are redacted from both.
//!
//! **No file work on the async threads.** The file is opened on the blocking pool, and lines
//! go, in order, through a bounded queue ([`QUEUE`] lines) to the log's writer task, which
//! writes (and rotates) them in batches on the blocking pool. A full queue makes the
//! server's readers wait, as a slow disk did before: nothing is dropped. The writer runs on
//! the supervisor's task tracker and ends once the log is dropped and its queue written.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Default cap of one server log file, in bytes (10 MiB).
pub const DEFAULT_LOG_CAP: u64 = 10 * 1024 * 1024;

/// How many of the last stderr lines are kept for error messages.
const TAIL_LINES: usize = 5;
/// The longest line kept in the tail, in bytes.
const TAIL_LINE_MAX: usize = 300;

/// How many lines wait for the writer at most before their senders wait.
pub const QUEUE: usize = 1024;

/// The most lines the writer takes in one trip to the blocking pool.
const BATCH: usize = 256;

/// How long [`ServerLog::settled_tail`] waits for stderr to reach its end.
const SETTLE: Duration = Duration::from_millis(300);

/// How long [`ServerLog::settled_tail`] waits for the lines so far to be in the file.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The log file of one server, safe to share between its stderr and stdout readers.
#[derive(Debug)]
pub struct ServerLog {
    path: PathBuf,
    records: mpsc::Sender<Record>,
    tail: Mutex<VecDeque<String>>,
    stderr_closed: tokio_util::sync::CancellationToken,
}

/// What the writer gets.
#[derive(Debug)]
enum Record {
    /// One line, prefixed, redacted, with its newline.
    Line(Vec<u8>),
    /// Answered once every line before it is written.
    Flush(oneshot::Sender<()>),
}

/// The file as the writer holds it.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    cap: u64,
    file: Option<File>,
    written: u64,
}

impl ServerLog {
    /// Opens (appending) `dir/servers/NAME.stderr.log`, creating the folders, on the blocking
    /// pool, and starts its writer on `tasks`. `name` must have passed
    /// [`mag_common::config::validate_server_name`]. `cap` is in bytes.
    ///
    /// # Errors
    /// The folder or file cannot be created.
    pub async fn open(
        dir: &Path,
        name: &str,
        cap: u64,
        tasks: &TaskTracker,
    ) -> std::io::Result<Self> {
        let dir = dir.join("servers");
        let path = dir.join(format!("{name}.stderr.log"));
        let file_path = path.clone();
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<LogFile> {
            std::fs::create_dir_all(&dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file_path)?;
            let written = file.metadata()?.len();
            Ok(LogFile {
                path: file_path,
                cap,
                file: Some(file),
                written,
            })
        })
        .await
        .map_err(std::io::Error::other)??;
        let (records, queue) = mpsc::channel(QUEUE);
        tasks.spawn(write_records(opened, queue));
        Ok(Self {
            path,
            records,
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
            stderr_closed: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one stderr line (without its newline) and remembers it for [`Self::tail`].
    pub async fn stderr_line(&self, line: &[u8]) {
        {
            let mut tail = self.lock_tail();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            let text = String::from_utf8_lossy(line);
            let text = mag_common::secrets::global().redact(text.trim_end());
            let mut kept = text.into_owned();
            if kept.len() > TAIL_LINE_MAX {
                let mut end = TAIL_LINE_MAX;
                while !kept.is_char_boundary(end) {
                    end -= 1;
                }
                kept.truncate(end);
                kept.push('…');
            }
            if !kept.is_empty() {
                tail.push_back(kept);
            }
        }
        self.write(b"", line).await;
    }

    /// Appends a line the server printed on stdout that is not JSON-RPC.
    pub async fn stdout_noise(&self, line: &[u8]) {
        self.write(b"[stdout] ", line).await;
    }

    /// Appends a note of the daemon's own (process start and exit), prefixed `[mcp-client] `.
    pub async fn note(&self, text: &str) {
        self.write(b"[mcp-client] ", text.as_bytes()).await;
    }

    /// [`Self::note`] for a caller that cannot wait: queued if the queue has room, else
    /// dropped (with a debug line in mcp-client's log). A log just opened always has room.
    pub fn note_now(&self, text: &str) {
        let record = record(b"[mcp-client] ", text.as_bytes());
        if self.records.try_send(Record::Line(record)).is_err() {
            tracing::debug!(path = %self.path.display(), "server log queue full: a note was dropped");
        }
    }

    /// Notes that the server's stderr reached its end (everything it wrote is logged).
    pub fn stderr_closed(&self) {
        self.stderr_closed.cancel();
    }

    /// Waits until every line appended so far is in the file (or the writer is gone).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.records.send(Record::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// [`Self::tail`], once stderr has reached its end or after 300 ms (a grandchild may hold
    /// it open): a process that just exited has often not had its last words read yet. By
    /// then the lines are in the file too (waited for up to a second).
    pub async fn settled_tail(&self) -> String {
        let _ = tokio::time::timeout(SETTLE, self.stderr_closed.cancelled()).await;
        let _ = tokio::time::timeout(FLUSH_WAIT, self.flush()).await;
        self.tail()
    }

    /// The last stderr lines (at most five, each cut to 300 bytes), joined by ` | `;
    /// empty when the server wrote nothing.
    pub fn tail(&self) -> String {
        let tail = self.lock_tail();
        tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    fn lock_tail(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `prefix` + `line` for the writer; waits while the queue is full.
    async fn write(&self, prefix: &[u8], line: &[u8]) {
        let record = record(prefix, line);
        // Fails only once the writer is gone (it never stops while a sender lives).
        let _ = self.records.send(Record::Line(record)).await;
    }
}

/// `prefix` + `line` + newline, `line` redacted (a server may print a key it was given).
fn record(prefix: &[u8], line: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let redacted = mag_common::secrets::global().redact(&text);
    let line = match &redacted {
        std::borrow::Cow::Owned(redacted) => redacted.as_bytes(),
        std::borrow::Cow::Borrowed(_) => line,
    };
    let mut record = Vec::with_capacity(prefix.len() + line.len() + 1);
    record.extend_from_slice(prefix);
    record.extend_from_slice(line);
    record.push(b'\n');
    record
}

/// The writer task: takes what is queued, writes it on the blocking pool, answers flushes;
/// ends when every sender is dropped and the queue is written.
async fn write_records(mut file: LogFile, mut queue: mpsc::Receiver<Record>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let records = std::mem::take(&mut batch);
        let written = tokio::task::spawn_blocking(move || {
            let mut flushed = Vec::new();
            for record in records {
                match record {
                    Record::Line(line) => file.write(&line),
                    Record::Flush(done) => flushed.push(done),
                }
            }
            (file, flushed)
        })
        .await;
        match written {
            Ok((back, flushed)) => {
                file = back;
                for done in flushed {
                    let _ = done.send(());
                }
            }
            Err(e) => {
                tracing::warn!("the server log writer failed: {e}");
                return;
            }
        }
    }
}

impl LogFile {
    fn write(&mut self, record: &[u8]) {
        let len = record.len() as u64;
        if self.written > 0 && self.written + len > self.cap {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(record) {
            tracing::warn!(path = %self.path.display(), "cannot write server log: {e}");
            self.file = None;
            return;
        }
        self.written += len;
    }

    fn rotate(&mut self) {
        self.file = None;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        if let Err(e) = std::fs::rename(&self.path, &old) {
            tracing::warn!(path = %self.path.display(), "cannot rotate server log: {e}");
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)
        {
            Ok(file) => self.file = Some(file),
            Err(e) => tracing::warn!(path = %self.path.display(), "cannot reopen server log: {e}"),
        }
        self.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_rotates_and_keeps_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let log = ServerLog::open(dir.path(), "s", 64, &tasks).await.unwrap();
        for i in 0..20 {
            log.stderr_line(format!("line {i:02} of stderr").as_bytes())
                .await;
        }
        log.stdout_noise(b"not json").await;
        log.flush().await;
        let current = std::fs::read_to_string(log.path()).unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("servers/s.stderr.log.1")).unwrap();
        assert!(
            current.len() <= 64 && rotated.len() <= 64,
            "{current:?} {rotated:?}"
        );
        assert!(current.ends_with("[stdout] not json\n"), "{current:?}");
        assert_eq!(
            log.tail(),
            "line 15 of stderr | line 16 of stderr | line 17 of stderr | line 18 of stderr | \
             line 19 of stderr"
        );
        // Dropping the log ends its writer, once its lines are written.
        log.note("last words").await;
        let path = log.path().to_path_buf();
        drop(log);
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("the writer ended");
        let current = std::fs::read_to_string(path).unwrap();
        assert!(
            current.ends_with("[mcp-client] last words\n"),
            "{current:?}"
        );
    }
}
