//! Tool calls: concurrency over one connection, timeouts with cancellation, tool errors, and
//! a server that dies mid-call (SPEC §4 Behaviour).

use std::time::Duration;

use mag_tests::{Daemon, PyHttpServer, alive, py_stdio_entry, text, wait_gone};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

async fn stats(daemon: &Daemon, server: &str) -> Value {
    let (_, answer) = daemon.call(server, "stats", json!({})).await;
    serde_json::from_str(text(&answer)).expect("stats JSON")
}

/// Lets a call reach `server` before the test goes on: polls `stats` until one is in
/// flight (up to about 2 s, then goes on anyway).
async fn wait_in_flight(daemon: &Daemon, server: &str) {
    for _ in 0..100 {
        if stats(daemon, server).await["in_flight"] == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a server's `/servers` entry shows it down and being brought back: `reconnecting`
/// between attempts, `connecting` while one runs (the first may already be under way).
fn retrying(server: &Value) -> bool {
    matches!(
        server["status"].as_str(),
        Some("reconnecting" | "connecting")
    )
}

async fn eight_sleeps_overlap(daemon: &Daemon, server: &str) {
    // Long enough that all eight reach the server while the first still sleeps, also on
    // a busy machine.
    let calls = (0..8).map(|_| daemon.call(server, "sleep", json!({"ms": 2_000})));
    for (status, answer) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{answer}");
        assert_eq!(text(&answer), "slept 2000 ms", "{answer}");
    }
    let stats = stats(daemon, server).await;
    assert_eq!(
        stats["peak_in_flight"], 8,
        "the server did not see 8 calls at once: {stats}"
    );
    assert_eq!(stats["completed"], 8, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_calls_overlap_on_one_stdio_connection() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    eight_sleeps_overlap(&daemon, "py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_calls_overlap_over_streamable_http() {
    let server = PyHttpServer::start("streamable-http");
    let daemon = Daemon::start(json!({"py": {"url": format!("{}/mcp", server.url())}}));
    daemon.connect("py").await;
    eight_sleeps_overlap(&daemon, "py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_caps_calls_in_flight() {
    let mut entry = py_stdio_entry();
    entry["maxConcurrency"] = json!(2);
    let daemon = Daemon::start(json!({"py": entry}));
    daemon.connect("py").await;
    let calls = (0..6).map(|_| daemon.call("py", "sleep", json!({"ms": 1_000})));
    for (status, answer) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{answer}");
    }
    let stats = stats(&daemon, "py").await;
    assert_eq!(stats["peak_in_flight"], 2, "{stats}");
    assert_eq!(stats["completed"], 6, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_timeout_fails_and_is_cancelled_on_the_server() {
    // The timeout bounds the connect too: long enough for a busy machine.
    let mut entry = py_stdio_entry();
    entry["timeout"] = json!(10);
    let daemon = Daemon::start(json!({"py": entry}));
    daemon.connect("py").await;
    let (status, answer) = daemon.call("py", "sleep", json!({"ms": 30_000})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["code"], "timeout", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("timed out"),
        "{answer}"
    );
    // The server got notifications/cancelled and stopped the work.
    let mut cancelled = json!(0);
    for _ in 0..400 {
        cancelled = stats(&daemon, "py").await["cancelled"].clone();
        if cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cancelled, 1, "the server never saw the cancellation");
    // The connection is still good.
    let (_, answer) = daemon
        .call("py", "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(text(&answer), "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_error_is_reported_with_its_text() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let (status, answer) = daemon
        .call("py", "fail", json!({"message": "broken on purpose"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["code"], "tool_error");
    assert!(!answer["error"].as_str().unwrap().is_empty(), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_fails_calls_in_flight_at_once_and_shows_disconnected() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let pid = daemon.server("py").await["pid"].as_u64().unwrap() as u32;
    let in_flight = daemon.call("py", "sleep", json!({"ms": 60_000}));
    let killer = async {
        wait_in_flight(&daemon, "py").await;
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    };
    let ((status, answer), ()) = tokio::join!(in_flight, killer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["code"], "server_gone", "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("SIGKILL"),
        "the error should say how it ended: {error}"
    );

    let server = daemon.server("py").await;
    assert_eq!(server["connected"], false, "{server}");
    assert!(retrying(&server), "{server}");
    assert!(
        server["error"].as_str().unwrap().contains("SIGKILL"),
        "{server}"
    );
    assert!(!alive(pid));

    // No operator action: it comes back within the backoff, with a new process.
    let server = daemon
        .wait_server("py", Duration::from_secs(60), |s| s["connected"] == true)
        .await;
    assert_eq!(server["status"], "connected", "{server}");
    assert_eq!(server["reconnects"], 1, "{server}");
    assert_ne!(server["pid"], json!(pid));
    assert!(server["error"].is_null(), "{server}");
    let (_, answer) = daemon.call("py", "echo", json!({"message": "back"})).await;
    assert_eq!(text(&answer), "back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrapper_that_dies_fails_the_call_even_if_its_child_holds_the_pipe() {
    // `sh` runs the server in the background and waits: killing sh leaves the server
    // holding stdout open, yet the call must fail now and the server be ended.
    let python = mag_tests::peers().python();
    let script = mag_tests::fixture("py_server.py");
    let daemon = Daemon::start(json!({"wrapped": {
        "command": "sh",
        // (sh gives a background job /dev/null as stdin unless told otherwise: fd 3.)
        "args": ["-c", format!("exec 3<&0; {} {} <&3 3<&- & wait", python.display(), script.display())],
    }}));
    daemon.connect("wrapped").await;
    let sh = daemon.server("wrapped").await["pid"].as_u64().unwrap() as u32;
    let in_flight = daemon.call("wrapped", "sleep", json!({"ms": 60_000}));
    let killer = async {
        wait_in_flight(&daemon, "wrapped").await;
        kill(Pid::from_raw(sh as i32), Signal::SIGKILL).unwrap();
    };
    let ((_, answer), ()) = tokio::join!(in_flight, killer);
    assert_eq!(answer["code"], "server_gone", "{answer}");
    // The whole group is ended: no python left in sh's process group.
    let group_left = || mag_tests::group_members(sh).len();
    for _ in 0..100 {
        if group_left() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        group_left(),
        0,
        "processes of the wrapper's group outlived it"
    );
    assert!(wait_gone(sh, Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tools_and_servers_are_404() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let (status, answer) = daemon.call("py", "no_such_tool", json!({})).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["code"], "unknown_tool");
    let (status, answer) = daemon.call("nobody", "echo", json!({})).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["code"], "unknown_server");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_remote_server_fails_the_call_in_flight_and_shows_disconnected() {
    let server = PyHttpServer::start("streamable-http");
    let daemon = Daemon::start(json!({"remote": {"url": format!("{}/mcp", server.url())}}));
    daemon.connect("remote").await;
    let in_flight = daemon.call("remote", "sleep", json!({"ms": 60_000}));
    let killer = async {
        wait_in_flight(&daemon, "remote").await;
        server.proc.signal(Signal::SIGKILL);
    };
    let ((status, answer), ()) = tokio::join!(in_flight, killer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["code"], "server_gone", "{answer}");
    assert!(!answer["error"].as_str().unwrap().is_empty(), "{answer}");
    // The call fails at once; the connection's watcher records the loss a moment later.
    let status = daemon
        .wait_server("remote", Duration::from_secs(10), retrying)
        .await;
    assert_eq!(status["connected"], false, "{status}");
    assert!(retrying(&status), "{status}");
    // Reaped, so its listening socket is surely closed (a connect to a dying process can be
    // reset instead of refused).
    let mut server = server;
    server.proc.wait_timeout(Duration::from_secs(10));
    // Connecting by hand while it is down names the cause.
    let (status, answer) = daemon.try_connect("remote").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{answer}"
    );
    let (status, _) = daemon.call("remote", "echo", json!({"message": "x"})).await;
    assert_eq!(status, 409);
    // The server comes back on its port: mcp-client reconnects by itself.
    let port = server.port;
    drop(server);
    let _again = PyHttpServer::start_on("streamable-http", port);
    let state = daemon
        .wait_server("remote", Duration::from_secs(40), |s| {
            s["connected"] == true
        })
        .await;
    assert_eq!(state["connected"], true, "{state}");
    assert!(state["reconnects"].as_u64().unwrap() >= 1, "{state}");
    let (_, answer) = daemon
        .call("remote", "echo", json!({"message": "back"}))
        .await;
    assert_eq!(text(&answer), "back", "{answer}");
}
