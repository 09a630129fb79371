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

/// An `mcp.json` entry running `misbehaving_server.py MODE` over stdio.
fn misbehaving(mode: &str) -> Value {
    json!({
        "command": peers().python(),
        "args": [fixture("misbehaving_server.py"), mode],
        "timeout": 30,
    })
}

fn detail(answer: &Value) -> &str {
    answer["detail"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_initialize_is_reported_in_the_servers_words() {
    let daemon = Daemon::start(json!({
        "error": misbehaving("init-error"),
        "malformed": misbehaving("init-malformed"),
        "wrong-id": misbehaving("init-wrong-id"),
        "string-code": misbehaving("init-string-code"),
    }));
    let expect: [(&str, &[&str]); 4] = [
        ("error", &["this server wants a sampling client", "-32602"]),
        (
            "malformed",
            &["the initialize result is malformed", "protocolVersion"],
        ),
        ("wrong-id", &["4242"]),
        ("string-code", &["malformed", "E_INIT", "no init today"]),
    ];
    for (server, words) in expect {
        let (status, answer) = daemon.try_connect(server).await;
        assert_eq!(status, 400, "{server}: {answer}");
        for word in words {
            assert!(
                detail(&answer).contains(word),
                "{server}: the cause lacks {word:?}: {answer}"
            );
        }
    }
}

/// Everything mcp-client logged to its own log file so far (`LOG_DIR/mcp-client.log.*`).
fn daemon_log(log_dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return String::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mcp-client.log"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_tool_is_skipped_and_the_rest_of_every_page_is_listed() {
    let daemon = Daemon::start(json!({"shaky": misbehaving("tools")}));
    let answer = daemon.connect("shaky").await;
    assert_eq!(
        answer["tools"],
        json!(["alpha", "echo", "oops", "crash"]),
        "{answer}"
    );
    let (status, echoed) = daemon
        .call("shaky", "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(mag_tests::text(&echoed), "still here");
    // The log is written by a background thread: wait for the warnings to land.
    let logs = daemon.dir.path().join("logs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = ["no_schema", "string_schema", "without a name"];
    loop {
        let log = daemon_log(&logs);
        let skipped: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("shaky") && l.contains("skipped"))
            .collect();
        let named = |word: &str| skipped.iter().any(|l| l.contains(word));
        if wanted.iter().all(|w| named(w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mcp-client's log does not name each skipped tool: {skipped:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `legacy_sse_server.py` with `args` after its port; ended when dropped.
fn legacy_sse_server(port: u16, args: &[&str]) -> Proc {
    let proc = Proc::spawn(
        Command::new(peers().python())
            .arg(fixture("legacy_sse_server.py"))
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::null()),
    );
    wait_for_port(port, Duration::from_secs(30));
    proc
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_with_a_string_code_fails_its_call_over_every_transport() {
    let (sse_port, http_port) = (free_port(), free_port());
    let _sse = legacy_sse_server(sse_port, &["string-code"]);
    let _http = Proc::spawn(
        Command::new(peers().python())
            .arg(fixture("streamable_http_server.py"))
            .arg(http_port.to_string())
            .stdout(Stdio::null()),
    );
    wait_for_port(http_port, Duration::from_secs(30));
    let daemon = Daemon::start(json!({
        "stdio": misbehaving("serve"),
        "sse": {"type": "sse", "url": format!("http://127.0.0.1:{sse_port}/sse"), "timeout": 30},
        "http": {"url": format!("http://127.0.0.1:{http_port}/mcp"), "timeout": 30},
    }));
    for server in ["stdio", "sse", "http"] {
        daemon.connect(server).await;
        let (status, answer) = daemon.call(server, "oops", json!({})).await;
        assert_eq!(status, 200, "{server}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(answer["code"], "server_error", "{server}: {answer}");
        assert!(
            error.contains("malformed") && error.contains("bad"),
            "{server}: the error does not say what the server sent: {answer}"
        );
        // The connection is still good.
        let (status, answer) = daemon.call(server, "echo", json!({"message": "x"})).await;
        assert_eq!(status, 200, "{server}: {answer}");
        assert!(answer.get("error").is_none(), "{server}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_sse_endpoint_on_another_origin_is_refused() {
    let (port, other) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests.jsonl");
    let _sse = legacy_sse_server(
        port,
        &[
            "foreign-endpoint",
            &other.to_string(),
            record.to_str().unwrap(),
        ],
    );
    wait_for_port(other, Duration::from_secs(30));
    let daemon = Daemon::start(json!({
        "sse": {
            "type": "sse",
            "url": format!("http://127.0.0.1:{port}/sse?key=URLKEY"),
            "headers": {"Authorization": "Bearer HEADERKEY"},
            "timeout": 10,
        },
    }));
    let (status, answer) = daemon.try_connect("sse").await;
    let posted = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        posted.is_empty(),
        "mcp-client sent requests to the other origin: {posted}"
    );
    assert_eq!(status, 400, "{answer}");
    let cause = detail(&answer);
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{other}"),
    ] {
        assert!(
            cause.contains(&origin),
            "the cause lacks {origin}: {answer}"
        );
    }
    for secret in ["URLKEY", "HEADERKEY", "SECRET"] {
        assert!(
            !cause.contains(secret),
            "the cause shows {secret}: {answer}"
        );
    }
}

/// Processes a test must not leave behind whatever happens: SIGKILLed when dropped, if each
/// is still the process it was (same start time).
struct KillOnDrop(Vec<(u32, u64)>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for (pid, start) in &self.0 {
            if mag_common::procfs::running_since(*pid) == Some(*start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// What `misbehaving_server.py escape PIDFILE` left outside its group.
struct Escapees {
    /// Sleeps for good.
    long: u32,
    /// Exits by itself after a second.
    short: u32,
    /// Sleeps for good with an empty environment (no marker: no server can claim it).
    bare: u32,
    /// Kills the long-lived ones if the test fails.
    _guard: KillOnDrop,
}

/// Reads the pids the fixture wrote (waiting for the file).
fn escapees(pidfile: &Path) -> Escapees {
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            pidfile.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pids: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
    let (long, short, bare) = (pids[0], pids[1], pids[2]);
    let guard = KillOnDrop(
        [long, bare]
            .into_iter()
            .filter_map(|pid| Some((pid, mag_common::procfs::running_since(pid)?)))
            .collect(),
    );
    Escapees {
        long,
        short,
        bare,
        _guard: guard,
    }
}

/// An `mcp.json` entry for a server that leaves two processes outside its group.
fn escaping(pidfile: &Path) -> Value {
    let mut entry = misbehaving("escape");
    entry["args"]
        .as_array_mut()
        .unwrap()
        .push(json!(pidfile.to_str().unwrap()));
    entry
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_escape_a_servers_group_end_with_it_and_are_reaped() {
    let files = tempfile::tempdir().unwrap();
    let (on_disconnect, on_exit) = (files.path().join("a.pids"), files.path().join("b.pids"));
    let daemon = Daemon::start(json!({
        "disconnected": escaping(&on_disconnect),
        "crashing": escaping(&on_exit),
    }));
    daemon.connect("disconnected").await;
    let escaped = escapees(&on_disconnect);
    let (long, short) = (escaped.long, escaped.short);
    let leader = server_pid(&daemon, "disconnected").await;
    assert!(alive(long), "the escaped process is not running");
    assert_ne!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(long as i32))).ok(),
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(leader as i32))).ok(),
        "the fixture did not leave its group"
    );
    // The short-lived one exits by itself: reaped, not left a zombie (its /proc entry goes).
    let reaped = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{short}")).exists() {
        assert!(Instant::now() < reaped, "{short} was left a zombie");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, answer) = daemon
        .post("/disconnect_server", json!({"server_name": "disconnected"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        wait_gone(long, Duration::from_secs(15)),
        "{long} escaped its server's group and outlived the disconnect"
    );

    // A server that exits by itself takes its escaped processes along too.
    daemon.connect("crashing").await;
    let escaped = escapees(&on_exit);
    let long = escaped.long;
    assert!(alive(long), "the escaped process is not running");
    let _ = daemon.call("crashing", "crash", json!({})).await;
    assert!(
        wait_gone(long, Duration::from_secs(15)),
        "{long} escaped its server's group and outlived the server's exit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_a_server_started_outlives_mcp_client() {
    let files = tempfile::tempdir().unwrap();
    let pidfile = files.path().join("pids");
    let mut daemon = Daemon::start(json!({"escaping": escaping(&pidfile)}));
    daemon.connect("escaping").await;
    let leader = server_pid(&daemon, "escaping").await;
    let escaped = escapees(&pidfile);
    assert!(
        alive(escaped.long) && alive(escaped.bare),
        "the escaped processes are not running"
    );
    daemon.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = daemon
        .proc
        .wait_timeout(Duration::from_secs(30))
        .expect("mcp-client exited");
    assert_eq!(exit.code(), Some(0));
    assert!(
        wait_gone(leader, Duration::from_secs(5)),
        "{leader} outlived mcp-client"
    );
    for (pid, what) in [(escaped.long, "marked"), (escaped.bare, "unmarked")] {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{pid} ({what}) escaped its server's group and outlived mcp-client"
        );
    }
}
