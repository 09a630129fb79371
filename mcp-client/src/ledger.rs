//! The ledger of live server process groups, so that no server outlives the daemon even when
//! the daemon is SIGKILLed: the next start ends what the crashed run left.
//!
//! `LOG_DIR/mcp-client.pgroups` is text, one record a line:
//!
//! ```text
//! owner 4242 1234567
//! 5150 1234890
//! 5203 1235001
//! ```
//!
//! The first line, `owner PID STARTTIME`, names the daemon that writes the file; each other
//! line is one live group, `PGID STARTTIME`, the leader's pid and start time. A STARTTIME is
//! in clock ticks since boot (`/proc/PID/stat` field 22, see [`running_since`]): with the pid
//! it names one process for good. The file is replaced by rename (never half-written)
//! whenever a group starts or ends. A file without an owner line (written before the owner
//! was recorded) is read as one whose owner is gone; older daemons skip the owner line.
//!
//! **Writing.** [`Ledger::add`] and [`Ledger::remove`] are called from async tasks: they only
//! change the set in memory (a std mutex held for microseconds) and wake the ledger's writer,
//! a thread of its own that writes the newest set. It writes one set at a time and always
//! the newest it has seen, so the file never goes back to an older set; sets that came and
//! went while it wrote are skipped. A group is on disk a moment after it started: a daemon
//! SIGKILLed in that moment leaves a server the next start does not know of, which
//! `PR_SET_PDEATHSIG` (SIGTERM) ends anyway. [`Ledger::flush`] waits until the file is
//! current (shutdown, tests).
//!
//! On start, if the recorded owner is alive (same pid and start time) and is not this
//! process, the daemon refuses to start ([`LedgerError::InUseBy`]) and signals nothing: the
//! groups are that daemon's live servers. This holds even when the lock file below is gone
//! (someone deleted the log dir while the owner ran, and the owner's next write recreated
//! the ledger). Otherwise the groups the previous run listed are ended (SIGTERM, SIGKILL
//! after 2 s) when they are still that run's: the leader is alive with the recorded start
//! time, or the leader is gone and members that started after it remain (Linux keeps a group
//! id from being reused while any member lives). A listed id whose leader is alive with
//! another start time belongs to someone else now and is left alone.
//!
//! `LOG_DIR/mcp-client.lock` is held (`flock`) for the daemon's life, so two daemons never
//! share a ledger and never end each other's servers; the owner line covers the case where
//! the lock file itself was removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mag_common::procfs::{self, running_since, start_time, stat};
use nix::sys::signal::Signal;

/// The ledger of one daemon; see the module docs. Dropping it lets its writer write what
/// is pending and end; the lock on the log dir is given up then.
#[derive(Debug)]
pub struct Ledger {
    shared: Arc<Shared>,
}

/// What the ledger and its writer thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<Pending>,
    /// Signalled when the set changes (for the writer), when a set is written (for
    /// [`Ledger::flush`]) and when the ledger is dropped.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    /// Live groups: leader pid to the leader's start time.
    groups: BTreeMap<u32, u64>,
    /// Bumped at every change of `groups`.
    version: u64,
    /// The version last written (or given up on: a write that failed is logged).
    written: u64,
    /// The ledger was dropped: the writer writes what is pending and ends.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why the ledger could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another live mcp-client holds the lock on this log dir.
    #[error("another mcp-client is running with the log dir {0} (its lock file is held)")]
    InUse(PathBuf),
    /// The ledger's recorded owner, another mcp-client, is alive (though the lock file was
    /// not held: the log dir was deleted and recreated under it). Its groups are left alone.
    #[error(
        "another mcp-client (pid {pid}) is running with the log dir {log_dir}: it owns \
         {ledger} (its lock file was removed; stop it, or use another --log-dir)"
    )]
    InUseBy {
        /// The log dir.
        log_dir: PathBuf,
        /// The ledger file naming the owner.
        ledger: PathBuf,
        /// The live owner's pid.
        pid: u32,
    },
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
    /// [`LedgerError::InUse`] when another daemon holds the lock, [`LedgerError::InUseBy`]
    /// when the ledger's recorded owner is another live daemon (nothing is signalled then);
    /// [`LedgerError::Io`].
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Recorded::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        let me = std::process::id();
        if let Some((pid, start)) = previous.owner
            && pid != me
            && running_since(pid) == Some(start)
        {
            return Err(LedgerError::InUseBy {
                log_dir: log_dir.to_path_buf(),
                ledger: path,
                pid,
            });
        }
        let ended = end_leftovers(&previous.groups);
        let file = LedgerFile {
            path,
            owner: running_since(me).map(|start| (me, start)),
        };
        file.save(&BTreeMap::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("mcp-client-ledger".into())
            .spawn(move || write_until_closed(&writer, &file, lock))
            .map_err(io(log_dir))?;
        Ok((Self { shared }, ended))
    }

    /// Records a group that just started (its leader's pid). Reads its start time from
    /// /proc now (an in-memory read), while it is surely our unreaped child; the file is
    /// written by the writer thread.
    pub fn add(&self, pgid: u32) {
        let Some(start) = start_time(pgid) else {
            return;
        };
        let mut pending = self.shared.lock();
        pending.groups.insert(pgid, start);
        pending.version += 1;
        self.shared.changed.notify_all();
    }

    /// Forgets a group that has ended.
    pub fn remove(&self, pgid: u32) {
        let mut pending = self.shared.lock();
        if pending.groups.remove(&pgid).is_some() {
            pending.version += 1;
            self.shared.changed.notify_all();
        }
    }

    /// Waits (blocking: call it off the async threads) up to `within` until the file holds
    /// the current set; whether it does.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut pending = self.shared.lock();
        while pending.written < pending.version {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = self
                .shared
                .changed
                .wait_timeout(pending, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

/// The writer thread: writes the newest set whenever it changed, until the ledger is
/// dropped and nothing is pending. Holds the log dir's lock until then, so no other daemon
/// takes the ledger while a write may still come.
fn write_until_closed(shared: &Shared, file: &LedgerFile, _lock: File) {
    let mut pending = shared.lock();
    loop {
        if pending.written < pending.version {
            let (groups, version) = (pending.groups.clone(), pending.version);
            drop(pending);
            file.save(&groups);
            pending = shared.lock();
            pending.written = version;
            shared.changed.notify_all();
        } else if pending.closed {
            return;
        } else {
            pending = shared
                .changed
                .wait(pending)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The ledger file and the owner line it starts with.
#[derive(Debug)]
struct LedgerFile {
    path: PathBuf,
    /// This daemon's pid and start time (the owner line); `None` if /proc could not tell.
    owner: Option<(u32, u64)>,
}

impl LedgerFile {
    /// Replaces the file with the owner line and `groups` (a failure is logged).
    fn save(&self, groups: &BTreeMap<u32, u64>) {
        let owner = self
            .owner
            .map(|(pid, start)| format!("{OWNER} {pid} {start}\n"));
        let text: String = owner
            .into_iter()
            .chain(
                groups
                    .iter()
                    .map(|(pgid, start)| format!("{pgid} {start}\n")),
            )
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

/// The first word of the owner line.
const OWNER: &str = "owner";

/// What a ledger file records (see the module docs).
#[derive(Debug, Default, PartialEq)]
struct Recorded {
    /// The daemon that wrote it: pid and start time. `None` in a file of the old format.
    owner: Option<(u32, u64)>,
    /// Live groups: leader pid (the group id) to the leader's start time.
    groups: BTreeMap<u32, u64>,
}

/// Reads a ledger file; lines that are not records (a torn or foreign file) are skipped.
fn parse(text: &str) -> Recorded {
    let mut recorded = Recorded::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next();
        let owner = first == Some(OWNER);
        let first = if owner { words.next() } else { first };
        let (Some(Ok(pid)), Some(Ok(start)), None) = (
            first.map(str::parse::<u32>),
            words.next().map(str::parse::<u64>),
            words.next(),
        ) else {
            continue;
        };
        if owner {
            recorded.owner = Some((pid, start));
        } else {
            recorded.groups.insert(pid, start);
        }
    }
    recorded
}

/// The processes of the group `pgid` whose leader started at `leader_start`, if it is still
/// that group (see the module docs).
fn members(pgid: u32, leader_start: u64) -> Vec<u32> {
    if let Some(start) = start_time(pgid)
        && start != leader_start
    {
        return Vec::new();
    }
    procfs::pids()
        .into_iter()
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

/// Through the one process-group helper (never group 0, 1 or our own).
fn signal(pgid: u32, signal: Signal) {
    mag_common::process_group::signal(pgid, signal);
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
        assert!(ledger.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(dir.path().join("mcp-client.pgroups")).unwrap();
        let recorded = parse(&text);
        assert_eq!(recorded.groups.get(&me), start_time(me).as_ref());
        assert_eq!(recorded.owner, Some((me, start_time(me).unwrap())));
        assert!(text.starts_with(&format!("owner {me} ")), "{text}");
        ledger.remove(me);
        assert!(ledger.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(dir.path().join("mcp-client.pgroups")).unwrap();
        assert_eq!(parse(&text).groups, BTreeMap::new());
    }

    #[test]
    fn the_file_ends_with_the_newest_set() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path()).unwrap();
        let read = || {
            parse(&std::fs::read_to_string(dir.path().join("mcp-client.pgroups")).unwrap()).groups
        };
        let me = std::process::id();
        for _ in 0..200 {
            ledger.add(me);
            ledger.remove(me);
        }
        ledger.add(me);
        assert!(ledger.flush(Duration::from_secs(5)));
        assert_eq!(read().get(&me), start_time(me).as_ref());
        ledger.remove(me);
        assert!(ledger.flush(Duration::from_secs(5)));
        assert_eq!(read(), BTreeMap::new());
    }

    #[test]
    fn parses_both_formats_and_skips_junk() {
        let old = parse("12 345\n13 346\n");
        assert_eq!(old.owner, None);
        assert_eq!(old.groups, BTreeMap::from([(12, 345), (13, 346)]));
        let new = parse("owner 7 70\n12 345\nowner x 1\n14\n1 2 3\n\n");
        assert_eq!(new.owner, Some((7, 70)));
        assert_eq!(new.groups, BTreeMap::from([(12, 345)]));
    }

    /// A `sleep` leading its own process group, as a server would.
    fn group_leader() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn end(mut child: std::process::Child) {
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_live_recorded_owner_is_refused_and_its_groups_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Another live process stands in for the owning daemon (its lock file is gone).
        let owner = group_leader();
        let server = group_leader();
        let (owner_pid, server_pid) = (owner.id(), server.id());
        let text = format!(
            "owner {owner_pid} {}\n{server_pid} {}\n",
            start_time(owner_pid).unwrap(),
            start_time(server_pid).unwrap()
        );
        std::fs::write(dir.path().join("mcp-client.pgroups"), &text).unwrap();
        let refused = Ledger::open(dir.path());
        let alive = running_since(server_pid).is_some();
        end(owner);
        end(server);
        match refused {
            Err(LedgerError::InUseBy { pid, .. }) => assert_eq!(pid, owner_pid),
            other => panic!("expected InUseBy, got {other:?}"),
        }
        assert!(alive, "the live owner's server was ended");
    }

    #[test]
    fn groups_of_a_gone_owner_and_of_an_old_file_are_ended() {
        for with_owner in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut server = group_leader();
            let server_pid = server.id();
            let server_start = start_time(server_pid).unwrap();
            // Reaped as soon as it exits, so the sweep does not wait for a zombie.
            let reaper = std::thread::spawn(move || server.wait());
            // An owner that is gone (a pid above any pid_max).
            let owner = if with_owner {
                "owner 4000000000 1\n"
            } else {
                ""
            };
            let text = format!("{owner}{server_pid} {server_start}\n");
            std::fs::write(dir.path().join("mcp-client.pgroups"), &text).unwrap();
            let opened = Ledger::open(dir.path());
            let _ = reaper.join();
            let (_ledger, ended) = opened.unwrap();
            assert_eq!(ended, 1, "owner line: {with_owner}");
        }
    }
}
