//! What the daemons read of `/proc` (proc(5)): a process's state, parent, group and start
//! time, and the processes of a group. Blocking reads of small files: cheap, but call them
//! from blocking contexts when many are read (a walk of `/proc`).

/// What the daemons read of `/proc/PID/stat` (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `T` (stopped), …
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: u32,
    /// Field 5: the process group.
    pub pgid: u32,
    /// Field 22: the start time, in clock ticks after boot.
    pub start: u64,
}

/// `pid`'s [`Stat`]; `None` if it is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = text.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
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

/// When `pid` started (`/proc/PID/stat` field 22), zombie or not; `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// Whether `pid` (a process, or one thread of it by its thread id) is stopped: state `T`
/// (by a signal such as SIGSTOP) or `t` (by a tracer) in `/proc/PID/stat`. `false` when it
/// is gone. `kill(SIGSTOP)` only queues the signal; this tells when it has taken effect.
pub fn is_stopped(pid: u32) -> bool {
    stat(pid).is_some_and(|s| matches!(s.state, 'T' | 't'))
}

/// The pids of every process in `/proc` (a walk: blocking, a few ms).
pub fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The live processes (zombies left out) of process group `pgid` that started at or after
/// `since` (clock ticks after boot; 0 for all): a walk of `/proc`.
pub fn group_members(pgid: u32, since: u64) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            stat(*pid).is_some_and(|s| {
                s.pgid == pgid && s.start >= since && !matches!(s.state, 'Z' | 'X')
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).expect("our own stat");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert_eq!(running_since(std::process::id()), Some(me.start));
        assert!(!is_stopped(std::process::id()));
        assert!(group_members(me.pgid, 0).contains(&std::process::id()));
        assert_eq!(stat(u32::MAX), None);
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
