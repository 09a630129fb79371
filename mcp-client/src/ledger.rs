//! The ledger of live server process groups, so that no server outlives the daemon even when
//! the daemon is SIGKILLed: the next start ends what the crashed run left.
//!
//! `LOG_DIR/mcp-client.pgroups` holds one line per live group, `PGID STARTTIME`, where
//! STARTTIME is the leader's start time in clock ticks since boot (`/proc/PID/stat` field
//! 22). It is replaced by rename (never half-written) whenever a group starts or ends.
//!
//! On start, the groups a previous run listed are ended (SIGTERM, SIGKILL after 2 s) when
//! they are still that run's: the leader is alive with the recorded start time, or the leader
//! is gone and members that started after it remain (Linux keeps a group id from being reused
//! while any member lives). A listed id whose leader is alive with another start time belongs
//! to someone else now and is left alone.
//!
//! `LOG_DIR/mcp-client.lock` is held (`flock`) for the daemon's life, so two daemons never
//! share a ledger and never end each other's servers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The ledger of one daemon; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    groups: Mutex<BTreeMap<u32, u64>>,
    _lock: File,
}

/// Why the ledger could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another live mcp-client holds the lock on this log dir.
    #[error("another mcp-client is running with the log dir {0} (its lock file is held)")]
    InUse(PathBuf),
    /// The lock or ledger file could not be opened or read.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Ledger {
    /// Takes the ledger of `log_dir`, ending the process groups a previous run left there.
    /// Returns the ledger and how many leftover processes were ended.
    ///
    /// # Errors
    /// [`LedgerError::InUse`] when another daemon holds it; [`LedgerError::Io`].
    pub fn open(log_dir: &Path) -> Result<(Self, usize), LedgerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Io { path, source }
        };
        std::fs::create_dir_all(log_dir).map_err(io(log_dir))?;
        let lock_path = log_dir.join("mcp-client.lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(LedgerError::InUse(log_dir.to_path_buf()));
        }
        let path = log_dir.join("mcp-client.pgroups");
        let previous = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let ended = end_leftovers(&previous);
        let ledger = Self {
            path,
            groups: Mutex::new(BTreeMap::new()),
            _lock: lock,
        };
        ledger.save(&BTreeMap::new());
        Ok((ledger, ended))
    }

    /// Records a group that just started (its leader's pid).
    pub fn add(&self, pgid: u32) {
        let Some(start) = start_time(pgid) else {
            return;
        };
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.insert(pgid, start);
        self.save(&groups);
    }

    /// Forgets a group that has ended.
    pub fn remove(&self, pgid: u32) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if groups.remove(&pgid).is_some() {
            self.save(&groups);
        }
    }

    fn save(&self, groups: &BTreeMap<u32, u64>) {
        let text: String = groups
            .iter()
            .map(|(pgid, start)| format!("{pgid} {start}\n"))
            .collect();
        let temp = self.path.with_extension("pgroups.tmp");
        // No fsync: the ledger must survive the daemon's death, not the machine's (after a
        // reboot no server of ours is left), and the page cache outlives any process.
        let written = File::create(&temp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&temp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), "cannot write the process ledger: {e}");
        }
    }
}

fn parse(text: &str) -> BTreeMap<u32, u64> {
    text.lines()
        .filter_map(|line| {
            let (pgid, start) = line.split_once(' ')?;
            Some((pgid.parse().ok()?, start.trim().parse().ok()?))
        })
        .collect()
}

/// When the running process `pid` started, in clock ticks after boot (`/proc/PID/stat`
/// field 22); `None` when it is gone or a zombie (state `Z` or `X`), so a process that
/// exited counts as gone even while no one has reaped it (an orphan under a PID 1 that does
/// not reap). With the pid it names one process for good: a reused pid has another start
/// time.
pub fn running_since(pid: u32) -> Option<u64> {
    stat(pid)
        .filter(|s| !matches!(s.state, 'Z' | 'X'))
        .map(|s| s.start)
}

/// Whether `pid` (a process, or one thread of it by its thread id) is stopped: state `T`
/// (by a signal such as SIGSTOP) or `t` (by a tracer) in `/proc/PID/stat`. `false` when it
/// is gone. `kill(SIGSTOP)` only queues the signal; this tells when it has taken effect.
pub fn is_stopped(pid: u32) -> bool {
    stat(pid).is_some_and(|s| matches!(s.state, 'T' | 't'))
}

/// What the ledger reads of `/proc/PID/stat`.
struct Stat {
    state: char,
    pgid: u32,
    start: u64,
}

/// `pid`'s [`Stat`]; `None` if it is gone.
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = text.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// The processes of the group `pgid` whose leader started at `leader_start`, if it is still
/// that group (see the module docs).
fn members(pgid: u32, leader_start: u64) -> Vec<u32> {
    if let Some(start) = start_time(pgid)
        && start != leader_start
    {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgid == pgid && s.start >= leader_start))
        .collect()
}

/// Ends the leftovers of `groups`: SIGTERM, up to 2 s, SIGKILL. Returns how many there were.
fn end_leftovers(groups: &BTreeMap<u32, u64>) -> usize {
    let leftovers: Vec<(u32, usize)> = groups
        .iter()
        .map(|(pgid, start)| (*pgid, members(*pgid, *start).len()))
        .filter(|(_, count)| *count > 0)
        .collect();
    if leftovers.is_empty() {
        return 0;
    }
    for (pgid, count) in &leftovers {
        tracing::warn!(
            pgid,
            count,
            "ending processes a previous mcp-client left behind"
        );
        signal(*pgid, Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline
        && leftovers
            .iter()
            .any(|(pgid, _)| !members(*pgid, groups[pgid]).is_empty())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pgid, _) in &leftovers {
        if !members(*pgid, groups[pgid]).is_empty() {
            signal(*pgid, Signal::SIGKILL);
        }
    }
    leftovers.iter().map(|(_, count)| count).sum()
}

fn signal(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_cannot_take_the_same_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let (first, ended) = Ledger::open(dir.path()).unwrap();
        assert_eq!(ended, 0);
        assert!(matches!(
            Ledger::open(dir.path()),
            Err(LedgerError::InUse(_))
        ));
        drop(first);
        // A sibling test's spawn may have forked meanwhile: its child shares the lock's open
        // file (and so the flock) until its exec closes it, so a free lock may show held for
        // that moment. Only a lock still held after 10 s fails the test.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Ledger::open(dir.path()) {
                Ok(_) => break,
                Err(LedgerError::InUse(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("the dropped ledger was not given up: {e}"),
            }
        }
    }

    #[test]
    fn records_and_forgets_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path()).unwrap();
        let me = std::process::id();
        ledger.add(me);
        let text = std::fs::read_to_string(dir.path().join("mcp-client.pgroups")).unwrap();
        assert_eq!(parse(&text).get(&me), start_time(me).as_ref());
        ledger.remove(me);
        let text = std::fs::read_to_string(dir.path().join("mcp-client.pgroups")).unwrap();
        assert!(text.is_empty());
    }

    #[test]
    fn a_stopped_process_is_seen_stopped() {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!is_stopped(pid));
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let mut polls = 0;
        while !is_stopped(pid) {
            polls += 1;
            assert!(polls < 1_000, "SIGSTOP never took effect");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!is_stopped(pid));
    }
}
