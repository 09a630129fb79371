//! A real MongoDB-wire server for the tests (SPEC §7): SecantusDB from PyPI
//! (`secantusdb`, installed into the peers' venv), a separate process on 127.0.0.1 with its
//! data in a folder, so a test can stop it mid-run and start it again on the same port and
//! data. When `MONGODB_URL` is set, tests also run against that real MongoDB
//! ([`real_mongodb_url`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Proc, free_port, peers};

/// What secantusd-py logs (on stderr, through Python `logging`) once it accepts
/// connections, followed by `HOST:PORT`.
const READY: &str = "secantus listening on";

/// How long it may take to say [`READY`].
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) `secantusd-py` on 127.0.0.1; stopped when dropped.
///
/// Its output (stdout and stderr, every run) goes to a log file in a temp folder of its
/// own, see [`Self::log`].
#[derive(Debug)]
pub struct Secantus {
    proc: Option<Proc>,
    port: u16,
    storage: PathBuf,
    /// The storage folder when [`Self::start`] made it (deleted on drop).
    _data: Option<tempfile::TempDir>,
    /// Holds the log file and an empty config file.
    home: tempfile::TempDir,
}

impl Secantus {
    /// Starts it on a free port with its data in a new temp folder (deleted on drop), and
    /// waits until it is ready. Panics with its log when it is not ready within 30 s or
    /// exits.
    pub fn start() -> Self {
        let data = tempfile::tempdir().expect("temp dir for secantus data");
        let mut secantus = Self::start_at(free_port(), data.path());
        secantus._data = Some(data);
        secantus
    }

    /// Starts it on 127.0.0.1:`port` with its data in `storage` (created if missing; kept
    /// on drop), e.g. again on the port and data of a stopped one, and waits until it is
    /// ready (panics like [`Self::start`]).
    pub fn start_at(port: u16, storage: &Path) -> Self {
        let home = tempfile::tempdir().expect("temp dir for secantus logs");
        // An explicit config file turns off its discovery of ./secantusd.toml and
        // ~/.secantus/secantusd.toml, which could change what a test gets.
        std::fs::write(home.path().join("secantusd.toml"), "").expect("write secantusd.toml");
        let mut secantus = Self {
            proc: None,
            port,
            storage: storage.to_path_buf(),
            _data: None,
            home,
        };
        secantus.launch();
        secantus
    }

    /// The connection string: `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder (WiredTiger home).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// The pid of the running server, `None` when stopped.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Its log file: stdout and stderr of every run, appended.
    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("secantusd.log")
    }

    /// The text of its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops it: SIGTERM, then SIGKILL when it has not exited within 10 s (it usually
    /// takes about 3 s). Does nothing when it is stopped already.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// Starts it again on the same port and data (stopping it first if it runs), and
    /// waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Spawns `secantusd-py` and waits for [`READY`] in the part of the log it writes.
    fn launch(&mut self) {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the secantus log");
        let from = log.metadata().map(|m| m.len() as usize).unwrap_or_default();
        let mut command = Command::new(peers().secantusd());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SECANTUS_") {
                command.env_remove(name);
            }
        }
        command
            .current_dir(self.home.path())
            .arg("--config")
            .arg(self.home.path().join("secantusd.toml"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(&self.storage)
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(Stdio::from(log));
        let mut proc = Proc::spawn(&mut command);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            if text
                .get(from..)
                .is_some_and(|new| String::from_utf8_lossy(new).contains(READY))
            {
                break;
            }
            if let Some(status) = proc.child().try_wait().expect("try_wait") {
                panic!(
                    "secantusd-py on port {} exited ({status}) before it was ready:\n{}",
                    self.port,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                drop(proc);
                panic!(
                    "secantusd-py on port {} not ready within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(proc);
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test run's `MONGODB_URL` when it is set and not empty: a real MongoDB that tests
/// also run against.
pub fn real_mongodb_url() -> Option<String> {
    std::env::var("MONGODB_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}
