//! Process groups: the one place the daemons start a child as a group leader and signal a
//! group (SPEC §4 process hygiene, §5 supervision of mcp-client).
//!
//! A child that leads its own group takes its whole tree with it when the group is ended
//! (SIGTERM to every member, SIGKILL after a grace period), so wrappers (`sh -c`, `npx`,
//! `uvx`) leave nothing behind. Spawning goes through `process-wrap`'s
//! `ProcessGroup::leader()` (as rmcp's own child-process transport does); signals go through
//! [`signal`], which never signals group 0 (the caller's own group), 1 or the daemon's own
//! group, whatever a caller passes.
//!
//! Also here: which variables of the daemon's environment a child of generated code may see
//! ([`is_base_env`]).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessGroup};

/// A child that leads its own process group, as `process-wrap` hands it out: its pipes
/// (`stdin()`, `stdout()`, `stderr()`), `id()` (also the group id) and `wait()`.
pub type GroupLeader = Box<dyn ChildWrapper>;

/// Starts `command` as the leader of a new process group; the child and its pid (the
/// group's id).
///
/// # Errors
/// The spawn failed (command not found, not executable, …), or the child was gone before
/// its pid could be read.
pub fn spawn_leader(command: tokio::process::Command) -> std::io::Result<(GroupLeader, u32)> {
    let mut wrap = CommandWrap::from(command);
    wrap.wrap(ProcessGroup::leader());
    let child = wrap.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child exited before its pid was read"))?;
    Ok((child, pid))
}

/// Waits for the group's leader alone to exit and returns its exit status.
///
/// Not `ChildWrapper::wait`: process-wrap's `ProcessGroupChild::wait` goes on to reap the
/// group's other members with `waitpid(-pgid)` and, while one of them that is the caller's
/// child still runs, waits (on the blocking pool) for it too. In a child subreaper
/// (mcp-client) the orphans a wrapper leaves in its group are the caller's children, so the
/// leader's status would be held back until they exit, and their reaping would race the
/// subreaper's own. This waits on the native child (the one tokio reaps, by its pid); end
/// what is left of the group with [`end`].
///
/// # Errors
/// The wait failed (an OS error), or `child` was not made by [`spawn_leader`].
pub async fn wait_leader(child: &mut GroupLeader) -> std::io::Result<ExitStatus> {
    // `spawn_leader` wraps the native child in one layer: the group.
    let leader: &mut dyn std::any::Any = child.inner_mut();
    match leader.downcast_mut::<tokio::process::Child>() {
        Some(native) => native.wait().await,
        None => Err(std::io::Error::other(
            "not a group leader spawned by spawn_leader",
        )),
    }
}

/// Sends `signal` to every process of group `pgid`; whether it was sent (`false` when the
/// group is empty or gone, and for the groups never signalled: 0, 1 and the daemon's own).
pub fn signal(pgid: u32, signal: Signal) -> bool {
    match group_pid(pgid) {
        Some(group) => killpg(group, signal).is_ok(),
        None => false,
    }
}

/// Whether group `pgid` has any process left (zombies count until reaped).
pub fn exists(pgid: u32) -> bool {
    group_pid(pgid).is_some_and(|group| killpg(group, None).is_ok())
}

/// The group as a signal target, unless it is one never to signal.
fn group_pid(pgid: u32) -> Option<Pid> {
    let raw = i32::try_from(pgid).ok().filter(|raw| *raw > 1)?;
    let group = Pid::from_raw(raw);
    (group != nix::unistd::getpgrp()).then_some(group)
}

/// Ends group `pgid`: SIGTERM to every member, then SIGKILL after `grace` to whatever is
/// left; returns once the group is empty, or 1 s after the SIGKILL (a process stuck in the
/// kernel, a zombie nobody reaps).
pub async fn end(pgid: u32, grace: Duration) {
    if !signal(pgid, Signal::SIGTERM) {
        return;
    }
    if wait_empty(pgid, grace).await {
        return;
    }
    signal(pgid, Signal::SIGKILL);
    wait_empty(pgid, Duration::from_secs(1)).await;
}

/// Waits up to `within` for group `pgid` to be empty; whether it is.
pub async fn wait_empty(pgid: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if !exists(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "exit status 3", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => status.to_string(),
    }
}

/// The variables of the daemon's environment that code an LLM wrote (an `ai_generated`
/// server, the tool installer's pip) may see besides what its entry names: what a program
/// needs to run and to reach the network, never a key or a token.
pub const BASE_ENV: [&str; 16] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
];

/// Whether a variable of the daemon's environment is one every program may see:
/// [`BASE_ENV`] and the locale's `LC_*`. A tool that needs a key gets it named in its entry,
/// e.g. `"env": {"WEATHER_KEY": "${WEATHER_KEY}"}`.
pub fn is_base_env(name: &str) -> bool {
    BASE_ENV.contains(&name) || name.starts_with("LC_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_leader_and_its_children_end_together() {
        let mut command = tokio::process::Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30 & wait"]);
        let (mut child, pid) = spawn_leader(command).unwrap();
        let _ = &mut child;
        assert_eq!(crate::procfs::stat(pid).unwrap().pgid, pid);
        // Wait until the shell has started both sleeps.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while crate::procfs::group_members(pid, 0).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the group never filled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let members = crate::procfs::group_members(pid, 0);
        // The leader is reaped as it exits, as a daemon's watcher task does.
        let waited = tokio::spawn(async move { child.wait().await });
        end(pid, Duration::from_secs(2)).await;
        let status = waited.await.unwrap().unwrap();
        assert!(status.code().is_none(), "{status:?}");
        for member in members {
            assert_eq!(
                crate::procfs::running_since(member),
                None,
                "{member} lives on"
            );
        }
        assert!(!exists(pid));
    }

    #[tokio::test]
    async fn the_leader_is_waited_for_alone() {
        let mut command = tokio::process::Command::new("sh");
        command.args(["-c", "sleep 30 & exit 4"]);
        let (mut child, pid) = spawn_leader(command).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), wait_leader(&mut child))
            .await
            .expect("the leader's status came")
            .unwrap();
        assert_eq!(describe_exit(status), "exit status 4");
        // Its background child is left for `end`.
        assert!(exists(pid));
        end(pid, Duration::from_secs(2)).await;
        assert!(!exists(pid));
    }

    #[test]
    fn never_signals_its_own_group_or_init() {
        let own = nix::unistd::getpgrp().as_raw() as u32;
        for pgid in [0, 1, own] {
            assert!(!signal(pgid, Signal::SIGCONT), "{pgid}");
        }
        assert!(!exists(0));
    }

    #[test]
    fn exits_read_well() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
    }
}
