//! mcp-client as the child subreaper of its servers, so that a process that escapes a
//! server's process group is still ended with its server.
//!
//! A server that daemonizes a helper (fork, `setsid`, fork again) puts it in a session and
//! process group of its own: ending the server's group misses it. [`start`] makes mcp-client
//! a child subreaper (`PR_SET_CHILD_SUBREAPER`, prctl(2)): an orphaned descendant of a
//! server is re-parented to mcp-client, not to init, when its parent exits.
//!
//! **Which server an orphan came from.** Every stdio server starts with
//! `MCP_CLIENT_GROUP=<mcp-client pid>-<n>` ([`MARKER_VAR`], [`Spawning::marker`]) in its
//! environment, unique to that start; its descendants inherit it. A child of mcp-client that
//! mcp-client did not spawn is a re-parented orphan, and belongs to the server whose marker
//! the head of its `/proc/PID/environ` holds (the environment it was exec'd with: a
//! `setenv` inside the process does not change it). Not a secret: a pid and a count.
//!
//! **When it is ended.** When a server's process group has been stopped (disconnect,
//! removal, reconnect, the server's own exit, shutdown), [`end_escaped`] ends the orphans
//! carrying its marker, with their descendants: SIGTERM, then SIGKILL after the grace. On
//! exit, [`end_all`] ends every orphan left, attributed or not. A process is named by its
//! pid and start time (`/proc/PID/stat` field 22), so a reused pid is never signalled.
//!
//! **Reaping.** Orphans that exit become mcp-client's zombies. A SIGCHLD listener reaps
//! exactly those: children in state `Z` that mcp-client did not spawn. It never calls
//! `waitpid(-1)`, which would take the exit status of a server that tokio waits for. So
//! every child process mcp-client spawns goes through [`spawning`], which records its pid
//! (under a lock held across the fork, so a child that dies at once is never mistaken for
//! an orphan).
//!
//! **Blocking work.** Walking /proc (the children lists of mcp-client's threads,
//! `/proc/PID/task/TID/children`, or every `/proc/N/stat` on kernels without them, and the
//! orphans' `environ`) runs on the blocking pool (`spawn_blocking`). Between the SIGTERM and
//! the SIGKILL, the async side re-reads only the `stat` of the few processes being ended.
//!
//! **Limits.** An orphan that exec'd with a cleared environment (`env -i`) or whose
//! `environ` cannot be read (a set-uid program) is attributed to no server: it is ended when
//! mcp-client exits, not with its server. A process that leaves after its group was stopped
//! and cleaned likewise. If mcp-client itself is SIGKILLed, orphans go to init: the next
//! start's [`crate::ledger`] sweep covers process groups only.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use mag_common::procfs::{running_since, stat};

/// The environment variable that marks a server's processes: `<mcp-client pid>-<n>`.
pub const MARKER_VAR: &str = "MCP_CLIENT_GROUP";

/// The most read of one process's `environ`, in bytes (Linux caps a new program's
/// arguments and environment together well below this).
const ENVIRON_MAX: u64 = 8 * 1024 * 1024;

/// The most read of one `children` file, in bytes.
const CHILDREN_MAX: u64 = 1024 * 1024;

/// How many processes one ending takes on at most (a fork bomb must not stall it).
const MAX_PROCESSES: usize = 10_000;

/// How many times [`end_escaped`] and [`end_all`] look again for processes that appeared
/// while they ended the last ones (forked, or re-parented when their parent died).
const ROUNDS: usize = 3;

/// The pids of the children mcp-client spawned and tokio waits for.
static SPAWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Held shared by each spawn from before the fork until its pid is in [`SPAWNED`], and
/// exclusively by the reaper while it tells mcp-client's own children from orphans: spawns
/// run side by side, and none is ever half-recorded while the reaper looks.
static SPAWNS: RwLock<()> = RwLock::new(());

/// Makes mcp-client the child subreaper of everything it starts and reaps the orphans that
/// exit (see the module docs). Call once, inside the runtime, before any server starts.
/// When the kernel refuses (it does not on Linux ≥ 3.4), escaped processes go to init as
/// before and a warning says so.
pub fn start() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper; escaped server processes go to init: {e}");
        return;
    }
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!("cannot listen for SIGCHLD; orphans are not reaped: {e}");
            return;
        }
    };
    // For the life of the process (not on the supervisor's task tracker): orphans are reaped
    // until the very end, also while shutdown ends what is left (`end_all`).
    tokio::spawn(async move {
        // A SIGCHLD that arrives during a sweep is kept and wakes the next one.
        while sigchld.recv().await.is_some() {
            match tokio::task::spawn_blocking(reap_orphans).await {
                Ok(0) => {}
                Ok(reaped) => tracing::debug!(reaped, "reaped orphans that exited"),
                Err(e) => tracing::warn!("the orphan reaper failed: {e}"),
            }
        }
    });
}

/// The right to spawn one child: keeps the reaper out (`SPAWNS`) from before the fork
/// until [`Spawning::spawned`] records the pid. Never held across an `.await`.
pub struct Spawning {
    _spawning: RwLockReadGuard<'static, ()>,
    marker: String,
}

/// Takes the registry for one spawn (see [`Spawning`]) and makes a new marker for it.
pub fn spawning() -> Spawning {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let n = STARTS.fetch_add(1, Ordering::Relaxed) + 1;
    Spawning {
        _spawning: SPAWNS.read().unwrap_or_else(|p| p.into_inner()),
        marker: format!("{}-{n}", std::process::id()),
    }
}

impl Spawning {
    /// The value of [`MARKER_VAR`] for the child about to start.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Records the child just started (tokio waits for it; the reaper leaves it alone).
    /// Returns its marker.
    pub fn spawned(self, pid: u32) -> String {
        spawned().insert(pid);
        self.marker
    }
}

/// Forgets a spawned child once tokio has reaped it.
pub fn waited(pid: u32) {
    spawned().remove(&pid);
}

fn spawned() -> MutexGuard<'static, BTreeSet<u32>> {
    SPAWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the processes that escaped the server started with `marker`: the orphans
/// re-parented to mcp-client that carry it, and their descendants. SIGTERM, then SIGKILL
/// after `grace` to what is left. Returns their pids (empty: none escaped).
pub async fn end_escaped(marker: &str, grace: Duration) -> Vec<u32> {
    end_rounds(grace, Some(marker.to_string())).await
}

/// Ends every orphan re-parented to mcp-client and its descendants, whatever server it came
/// from (on exit, after the servers were stopped), with a warning when there were any.
/// Returns their pids.
pub async fn end_all(grace: Duration) -> Vec<u32> {
    let ended = end_rounds(grace, None).await;
    if !ended.is_empty() {
        tracing::warn!(
            count = ended.len(),
            pids = ?ended,
            "ended processes that had escaped their servers and were still running"
        );
    }
    ended
}

/// Ends the orphans of `marker` (all with `None`) round by round; see [`ROUNDS`].
async fn end_rounds(grace: Duration, marker: Option<String>) -> Vec<u32> {
    let mut ended = Vec::new();
    for _ in 0..ROUNDS {
        let marker = marker.clone();
        let found = tokio::task::spawn_blocking(move || escaped(marker.as_deref()))
            .await
            .unwrap_or_default();
        if found.is_empty() {
            break;
        }
        end(&found, grace).await;
        ended.extend(found.iter().map(|p| p.pid));
    }
    ended
}

/// One process for good: its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: u32,
    start: u64,
}

impl Process {
    fn of(pid: u32) -> Option<Self> {
        running_since(pid).map(|start| Self { pid, start })
    }

    fn is_running(&self) -> bool {
        running_since(self.pid) == Some(self.start)
    }

    fn signal(&self, signal: Signal) {
        let Ok(pid) = i32::try_from(self.pid) else {
            return;
        };
        if self.is_running() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// SIGTERM to each of `processes`, up to `grace` for them to go, SIGKILL to the rest.
async fn end(processes: &[Process], grace: Duration) {
    for process in processes {
        process.signal(Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while processes.iter().any(Process::is_running) {
        if tokio::time::Instant::now() >= deadline {
            for process in processes {
                process.signal(Signal::SIGKILL);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The live orphans carrying `marker` (all of them with `None`), with their descendants.
fn escaped(marker: Option<&str>) -> Vec<Process> {
    let tree = Tree::load();
    let me = std::process::id();
    // No spawn half-recorded: a child being spawned now is in `ours` before we look.
    let _no_spawns = SPAWNS.write().unwrap_or_else(|p| p.into_inner());
    let ours = spawned();
    let mut found: Vec<Process> = tree
        .children(me)
        .into_iter()
        .filter(|pid| !ours.contains(pid))
        .filter(|pid| marker.is_none() || marker_of(*pid).as_deref() == marker)
        .filter_map(Process::of)
        .collect();
    drop(ours);
    let mut next = 0;
    while next < found.len() && found.len() < MAX_PROCESSES {
        let parent = found[next].pid;
        found.extend(tree.children(parent).into_iter().filter_map(Process::of));
        next += 1;
    }
    found.truncate(MAX_PROCESSES);
    found
}

/// Reaps mcp-client's zombie children that it did not spawn. Returns how many.
fn reap_orphans() -> usize {
    let me = std::process::id();
    let zombies: Vec<u32> = Tree::load()
        .children(me)
        .into_iter()
        .filter(|pid| stat(*pid).is_some_and(|s| s.state == 'Z'))
        .collect();
    let mut reaped = 0;
    for pid in zombies {
        // No spawn half-recorded: a child being spawned now is recorded before we look.
        let _no_spawns = SPAWNS.write().unwrap_or_else(|p| p.into_inner());
        let ours = spawned();
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if !ours.contains(&pid) && waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// The value of [`MARKER_VAR`] in the environment `pid` was exec'd with.
fn marker_of(pid: u32) -> Option<String> {
    let mut environ = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ"))
        .ok()?
        .take(ENVIRON_MAX)
        .read_to_end(&mut environ)
        .ok()?;
    let prefix = format!("{MARKER_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Who is whose child, as /proc tells.
enum Tree {
    /// Read `/proc/PID/task/TID/children` as needed (Linux with `CONFIG_PROC_CHILDREN`).
    ChildrenFiles,
    /// Every process's parent, from one pass over `/proc/N/stat`.
    Parents(HashMap<u32, Vec<u32>>),
}

impl Tree {
    fn load() -> Self {
        static HAS_CHILDREN_FILES: OnceLock<bool> = OnceLock::new();
        let has_files = *HAS_CHILDREN_FILES.get_or_init(|| {
            let me = std::process::id();
            std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
        });
        if has_files {
            return Self::ChildrenFiles;
        }
        let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                if let Some(s) = stat(pid) {
                    parents.entry(s.ppid).or_default().push(pid);
                }
            }
        }
        Self::Parents(parents)
    }

    /// The children of `pid` (of all its threads).
    fn children(&self, pid: u32) -> Vec<u32> {
        match self {
            Self::Parents(parents) => parents.get(&pid).cloned().unwrap_or_default(),
            Self::ChildrenFiles => {
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                    return Vec::new();
                };
                let mut children = Vec::new();
                for task in tasks.filter_map(Result::ok) {
                    let mut text = String::new();
                    let read = std::fs::File::open(task.path().join("children"))
                        .and_then(|f| f.take(CHILDREN_MAX).read_to_string(&mut text));
                    if read.is_ok() {
                        children.extend(
                            text.split_whitespace()
                                .filter_map(|p| p.parse::<u32>().ok()),
                        );
                    }
                }
                children
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_marker_of_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, "123-4")
            .spawn()
            .unwrap();
        // Until the child has exec'd, its environment is a copy of ours: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut marker = marker_of(child.id());
        while marker.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            marker = marker_of(child.id());
        }
        let mine = marker_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(marker.as_deref(), Some("123-4"));
        assert_eq!(mine, None);
    }

    #[test]
    fn sees_the_children_of_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = Tree::load()
            .children(std::process::id())
            .contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }
}
