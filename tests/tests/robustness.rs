//! Faults from issue 14 (security and fault campaign), end to end with the real binary: a
//! second daemon on a log dir whose lock file was deleted, servers that escape their process
//! group, servers that answer with malformed or erroneous JSON-RPC, and a legacy SSE server
//! whose endpoint points at another origin.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mag_tests::{
    Daemon, Proc, alive, fixture, free_port, peers, py_stdio_entry, wait_for_port, wait_gone,
    workspace_bin,
};
use serde_json::{Value, json};

/// The pid of `server` as `/servers` reports it.
async fn server_pid(daemon: &Daemon, server: &str) -> u32 {
    let state = daemon.server(server).await;
    state["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{server} has no pid: {state}")) as u32
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_a_recreated_log_dir_refuses_and_ends_nothing() {
    let daemon = Daemon::start(json!({"first": py_stdio_entry(), "second": py_stdio_entry()}));
    daemon.connect("first").await;
    let first = server_pid(&daemon, "first").await;
    let logs = daemon.dir.path().join("logs");
    // The log dir goes, lock file and all; the daemon's next server recreates it and the
    // daemon rewrites its ledger there.
    std::fs::remove_dir_all(&logs).unwrap();
    daemon.connect("second").await;
    let second = server_pid(&daemon, "second").await;
    assert!(logs.join("mcp-client.pgroups").exists());
    assert!(!logs.join("mcp-client.lock").exists());

    let mut intruder = Proc::spawn(
        Command::new(workspace_bin("mcp-client"))
            .arg("--config")
            .arg(daemon.config_path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--log-dir")
            .arg(&logs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let exit = intruder.wait_timeout(Duration::from_secs(30));
    let mut stderr = String::new();
    if exit.is_some() {
        let _ = intruder
            .child()
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
    }
    // Whatever the intruder did, the first daemon's servers must still run.
    assert!(
        alive(first),
        "the second daemon ended the first one's server"
    );
    assert!(
        alive(second),
        "the second daemon ended the first one's server"
    );
    let exit = exit.expect("the second mcp-client kept running on a live daemon's log dir");
    assert!(!exit.success(), "{exit}");
    let owner = daemon.proc.pid().to_string();
    assert!(
        stderr.contains(&format!("pid {owner}")),
        "the refusal does not name the running daemon (pid {owner}): {stderr}"
    );
    let (status, answer) = daemon.call("first", "echo", json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{answer}");
}
