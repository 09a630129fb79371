//! The spawned mcp-client's output files: `LOG_DIR/mcp_client_stdout.log` and
//! `mcp_client_stderr.log` (appended to across runs), and the end of what one run wrote on
//! stderr, without ANSI colour codes and with secrets redacted, for `/health`'s
//! `last_exit.stderr_tail`. These functions block: callers run them on tokio's blocking
//! pool (see [`super::blocking`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The spawned client's stdout log, in the log dir.
pub const STDOUT_LOG: &str = "mcp_client_stdout.log";

/// The spawned client's stderr log, in the log dir.
pub const STDERR_LOG: &str = "mcp_client_stderr.log";

/// The most of a run's stderr that [`stderr_tail`] keeps, in bytes.
const TAIL: u64 = 2048;

/// The log files of one run, open for appending.
pub(super) struct RunLogs {
    /// For its stdout.
    pub stdout: File,
    /// For its stderr.
    pub stderr: File,
    /// Where this run's stderr starts in its file, for [`stderr_tail`].
    pub stderr_start: u64,
}

/// Opens (creating `log_dir` and the files when missing) the stdout and stderr logs for
/// appending, and writes `header` (a line saying what is started) to stderr first.
///
/// # Errors
/// The folder or a file cannot be created or opened (a failed header write is ignored).
pub(super) fn open(log_dir: &Path, header: &str) -> std::io::Result<RunLogs> {
    std::fs::create_dir_all(log_dir)?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(name))
    };
    let stdout = open(STDOUT_LOG)?;
    let mut stderr = open(STDERR_LOG)?;
    let _ = writeln!(stderr, "{header}");
    let stderr_start = stderr.stream_position().unwrap_or(0);
    Ok(RunLogs {
        stdout,
        stderr,
        stderr_start,
    })
}

/// The last ~2 KiB written to `path` after `from`, whole lines.
pub(super) fn stderr_tail(path: &Path, from: u64) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = from.max(len.saturating_sub(TAIL));
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = strip_ansi(&String::from_utf8_lossy(&bytes));
    let text = if start > from {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let text = mag_common::secrets::redact(text.trim());
    (!text.is_empty()).then_some(text)
}

/// `text` without ANSI escape sequences (`ESC [ … letter`), for logs of a program that
/// colours its output anyway.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starts_after_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let first = open(&logs, "[mag-server] starting 1").unwrap();
        drop(first);
        let second = open(&logs, "[mag-server] starting 2").unwrap();
        let path = logs.join(STDERR_LOG);
        assert_eq!(second.stderr_start, std::fs::metadata(&path).unwrap().len());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[mag-server] starting 1\n[mag-server] starting 2\n"
        );
        assert!(logs.join(STDOUT_LOG).exists());
        assert_eq!(stderr_tail(&path, second.stderr_start), None);
    }

    #[test]
    fn the_stderr_tail_is_what_this_run_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("err.log");
        std::fs::write(&path, "old run\n").unwrap();
        let from = std::fs::metadata(&path).unwrap().len();
        assert_eq!(stderr_tail(&path, from), None);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "cannot listen on 127.0.0.1:1: in use").unwrap();
        assert_eq!(
            stderr_tail(&path, from).as_deref(),
            Some("cannot listen on 127.0.0.1:1: in use")
        );
        writeln!(file, "\u{1b}[2mdim\u{1b}[0m plain").unwrap();
        assert!(stderr_tail(&path, from).unwrap().ends_with("\ndim plain"));
        let long = "x".repeat(5000);
        writeln!(file, "{long}\nlast line").unwrap();
        let tail = stderr_tail(&path, from).unwrap();
        assert!(tail.len() <= 2048 && tail.ends_with("last line"), "{tail}");
    }
}
