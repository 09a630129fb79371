//! Per-server log files: `LOG_DIR/servers/NAME.stderr.log` (SPEC §4).
//!
//! A stdio server's stderr is copied there line by line, and so is every line it prints on
//! stdout that is not JSON-RPC (prefixed `[stdout] `). The file is size-capped: when a write
//! would take it past the cap it is renamed to `NAME.stderr.log.1` (replacing the previous
//! one) and a new file is started, so a server that spams costs at most twice the cap on disk.
//! The last few stderr lines are also kept in memory, so a server that fails to start is
//! reported with what it said. Secret values ([`mag_common::secrets`]) are redacted from both.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default cap of one server log file, in bytes (10 MiB).
pub const DEFAULT_LOG_CAP: u64 = 10 * 1024 * 1024;

/// How many of the last stderr lines are kept for error messages.
const TAIL_LINES: usize = 5;
/// The longest line kept in the tail, in bytes.
const TAIL_LINE_MAX: usize = 300;

/// The log file of one server, safe to share between its stderr and stdout readers.
#[derive(Debug)]
pub struct ServerLog {
    path: PathBuf,
    cap: u64,
    state: Mutex<LogState>,
    stderr_closed: tokio_util::sync::CancellationToken,
}

/// How long [`ServerLog::settled_tail`] waits for stderr to reach its end.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

#[derive(Debug)]
struct LogState {
    file: Option<File>,
    written: u64,
    tail: VecDeque<String>,
}

impl ServerLog {
    /// Opens (appending) `dir/servers/NAME.stderr.log`, creating the folders. `name` must have
    /// passed [`mag_common::config::validate_server_name`].
    ///
    /// # Errors
    /// The folder or file cannot be created.
    pub fn open(dir: &Path, name: &str, cap: u64) -> std::io::Result<Self> {
        let dir = dir.join("servers");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.stderr.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            cap,
            state: Mutex::new(LogState {
                file: Some(file),
                written,
                tail: VecDeque::with_capacity(TAIL_LINES),
            }),
            stderr_closed: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one stderr line (without its newline) and remembers it for [`Self::tail`].
    pub fn stderr_line(&self, line: &[u8]) {
        let mut state = self.lock();
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
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
            state.tail.push_back(kept);
        }
        self.write(&mut state, b"", line);
    }

    /// Appends a line the server printed on stdout that is not JSON-RPC.
    pub fn stdout_noise(&self, line: &[u8]) {
        let mut state = self.lock();
        self.write(&mut state, b"[stdout] ", line);
    }

    /// Appends a note of the daemon's own (process start and exit), prefixed `[mcp-client] `.
    pub fn note(&self, text: &str) {
        let mut state = self.lock();
        self.write(&mut state, b"[mcp-client] ", text.as_bytes());
    }

    /// Notes that the server's stderr reached its end (everything it wrote is logged).
    pub fn stderr_closed(&self) {
        self.stderr_closed.cancel();
    }

    /// [`Self::tail`], once stderr has reached its end or after 300 ms (a grandchild may hold
    /// it open): a process that just exited has often not had its last words read yet.
    pub async fn settled_tail(&self) -> String {
        let _ = tokio::time::timeout(SETTLE, self.stderr_closed.cancelled()).await;
        self.tail()
    }

    /// The last stderr lines (at most five, each cut to 300 bytes), joined by ` | `;
    /// empty when the server wrote nothing.
    pub fn tail(&self) -> String {
        let state = self.lock();
        state.tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, state: &mut LogState, prefix: &[u8], line: &[u8]) {
        // A server may print a key it was given: the log never shows it.
        let text = String::from_utf8_lossy(line);
        let redacted = mag_common::secrets::global().redact(&text);
        let line = match &redacted {
            std::borrow::Cow::Owned(redacted) => redacted.as_bytes(),
            std::borrow::Cow::Borrowed(_) => line,
        };
        let len = (prefix.len() + line.len() + 1) as u64;
        if state.written > 0 && state.written + len > self.cap {
            self.rotate(state);
        }
        let Some(file) = state.file.as_mut() else {
            return;
        };
        let mut record = Vec::with_capacity(len as usize);
        record.extend_from_slice(prefix);
        record.extend_from_slice(line);
        record.push(b'\n');
        if let Err(e) = file.write_all(&record) {
            tracing::warn!(path = %self.path.display(), "cannot write server log: {e}");
            state.file = None;
            return;
        }
        state.written += len;
    }

    fn rotate(&self, state: &mut LogState) {
        state.file = None;
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
            Ok(file) => state.file = Some(file),
            Err(e) => tracing::warn!(path = %self.path.display(), "cannot reopen server log: {e}"),
        }
        state.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rotates_and_keeps_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = ServerLog::open(dir.path(), "s", 64).unwrap();
        for i in 0..20 {
            log.stderr_line(format!("line {i:02} of stderr").as_bytes());
        }
        log.stdout_noise(b"not json");
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
    }
}
