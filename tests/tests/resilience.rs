//! mcp-client stays up by itself: hot reload, reconnect, health pings, process hygiene,
//! stdout noise, large results, metrics (SPEC §4 Behaviour).

use std::time::Duration;

use mag_tests::{
    Daemon, PyHttpServer, fixture, group_members, peers, py_stdio_entry, text, wait_gone,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Writes `config` to the daemon's config file the way editors do: a temp file renamed in.
fn save_by_rename(daemon: &Daemon, text: &str) {
    let path = daemon.config_path();
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, &path).unwrap();
}

fn servers_json(servers: Value) -> String {
    serde_json::to_string_pretty(&json!({"mcpServers": servers})).unwrap()
}

async fn wait_root(daemon: &Daemon, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let root = daemon.get("/").await.1;
        if done(&root) {
            return root;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.get("/").await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_saved_by_rename_is_applied_and_unchanged_servers_keep_their_process() {
    let daemon = Daemon::start(json!({"keep": py_stdio_entry(), "drop": py_stdio_entry()}));
    daemon.connect("keep").await;
    daemon.connect("drop").await;
    let keep_pid = daemon.server("keep").await["pid"].clone();
    let drop_pid = daemon.server("drop").await["pid"].as_u64().unwrap() as u32;
    let revision = daemon.get("/").await.1["config"]["revision"].clone();

    let mut added = py_stdio_entry();
    added["autoConnect"] = json!(true);
    save_by_rename(
        &daemon,
        &servers_json(json!({"keep": py_stdio_entry(), "added": added})),
    );

    let added = daemon
        .wait_server("added", Duration::from_secs(60), |s| s["connected"] == true)
        .await;
    assert_eq!(added["connected"], true, "{added}");
    let servers = daemon.get("/servers").await.1;
    assert!(servers.get("drop").is_none(), "{servers}");
    assert!(
        wait_gone(drop_pid, Duration::from_secs(5)),
        "the removed server's process lives on"
    );
    assert_eq!(
        servers["keep"]["pid"], keep_pid,
        "an unchanged server was touched"
    );
    assert_eq!(servers["keep"]["connected"], true);
    let root = daemon.get("/").await.1;
    assert_ne!(root["config"]["revision"], revision);
    assert!(root["config"]["error"].is_null(), "{root}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_file_leaves_the_old_config_live_until_it_is_fixed() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    let pid = daemon.server("py").await["pid"].clone();
    let good = servers_json(json!({"py": py_stdio_entry(), "second": py_stdio_entry()}));
    // Cut inside the second entry, as a crash mid-save would. (Put in place whole: an
    // in-place write could be read while still empty.)
    let half = &good[..good.find("\"second\"").unwrap() + 20];
    save_by_rename(&daemon, half);

    let root = wait_root(&daemon, |r| !r["config"]["error"].is_null()).await;
    let error = &root["config"]["error"];
    assert!(error["line"].as_u64().unwrap() > 1, "{root}");
    assert!(error["column"].as_u64().unwrap() > 0, "{root}");
    assert!(!error["message"].as_str().unwrap().is_empty(), "{root}");
    // Still the old config, the server untouched.
    let servers = daemon.get("/servers").await.1;
    assert!(servers.get("second").is_none(), "{servers}");
    assert_eq!(servers["py"]["pid"], pid);
    let (_, answer) = daemon
        .call("py", "echo", json!({"message": "still live"}))
        .await;
    assert_eq!(text(&answer), "still live");

    save_by_rename(&daemon, &good);
    let root = wait_root(&daemon, |r| r["config"]["error"].is_null()).await;
    assert!(root["config"]["error"].is_null(), "{root}");
    let servers = daemon.get("/servers").await.1;
    assert!(servers.get("second").is_some(), "{servers}");
    assert_eq!(servers["py"]["pid"], pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_disconnect_is_not_undone_by_reconnects() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    daemon.connect("py").await;
    daemon
        .post("/disconnect_server", json!({"server_name": "py"}))
        .await;
    // Longer than the first backoff steps: nothing reconnects it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = daemon.server("py").await;
    assert_eq!(server["status"], "disconnected", "{server}");
    assert_eq!(server["reconnects"], 0, "{server}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_pings_is_replaced() {
    // The timeout bounds the connect too: long enough for a busy machine.
    let mut entry = py_stdio_entry();
    entry["timeout"] = json!(10);
    let daemon = Daemon::start_with(json!({"py": entry}), &["--ping-interval", "0.5"], &[]);
    daemon.connect("py").await;
    let pid = daemon.server("py").await["pid"].as_u64().unwrap() as u32;
    // A stopped process keeps its pipes open and answers nothing: only the ping can tell.
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let server = daemon
        .wait_server("py", Duration::from_secs(60), |s| {
            s["connected"] == true && s["pid"] != json!(pid)
        })
        .await;
    assert_eq!(server["connected"], true, "{server}");
    assert_ne!(server["pid"], json!(pid), "{server}");
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "the hung server was not ended"
    );
    let (_, answer) = daemon.call("py", "echo", json!({"message": "fresh"})).await;
    assert_eq!(text(&answer), "fresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_connect_server_that_fails_is_retried_until_it_works() {
    // The command fails until a marker file exists.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ready");
    let script = format!(
        "test -e {} || {{ echo 'not ready yet' >&2; exit 1; }}; exec {} {}",
        marker.display(),
        peers().python().display(),
        fixture("py_server.py").display()
    );
    let daemon = Daemon::start(json!({"flaky": {
        "command": "sh", "args": ["-c", script], "autoConnect": true
    }}));
    let server = daemon
        .wait_server("flaky", Duration::from_secs(30), |s| {
            s["attempts"].as_u64() >= Some(1) && s["status"] == "reconnecting"
        })
        .await;
    assert_eq!(server["status"], "reconnecting", "{server}");
    assert!(
        server["error"].as_str().unwrap().contains("not ready yet"),
        "{server}"
    );
    std::fs::write(&marker, "").unwrap();
    let server = daemon
        .wait_server("flaky", Duration::from_secs(40), |s| s["connected"] == true)
        .await;
    assert_eq!(server["connected"], true, "{server}");
    assert_eq!(server["attempts"], 0, "{server}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_printing_garbage_on_stdout_keeps_working() {
    // A banner before the handshake, and a loop in the same process group writing to the
    // same stdout all along (each line one atomic write, like the server's own messages).
    let wrapped = format!(
        "(while :; do echo 'tick: not JSON'; sleep 0.05; done) & exec {} {}",
        peers().python().display(),
        fixture("py_server.py").display()
    );
    let daemon = Daemon::start(json!({"noisy": {
        "command": "sh",
        "args": ["-c", wrapped],
        "env": {"MAG_TEST_BANNER": "Welcome to my server v1.0 (not JSON)"},
    }}));
    daemon.connect("noisy").await;
    for i in 0..20 {
        let (status, answer) = daemon
            .call("noisy", "echo", json!({"message": format!("m{i}")}))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(text(&answer), format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The log is written as the lines come: wait for the banner and a few ticks.
    let path = daemon.dir.path().join("logs/servers/noisy.stderr.log");
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("[stdout] Welcome") && log.matches("[stdout] tick: not JSON").count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log.contains("[stdout] Welcome to my server v1.0 (not JSON)"),
        "{log}"
    );
    assert!(log.matches("[stdout] tick: not JSON").count() >= 5, "{log}");
}

async fn big_result_passes(daemon: &Daemon, server: &str) {
    let size = 20 * 1024 * 1024;
    let (status, answer) = daemon.call(server, "big", json!({"size": size})).await;
    assert_eq!(status, 200);
    assert!(
        answer.get("error").is_none(),
        "{}",
        &answer.to_string()[..300]
    );
    assert_eq!(text(&answer).len(), size);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_20_mib_result_passes_over_stdio_and_streamable_http() {
    let server = PyHttpServer::start("streamable-http");
    let daemon = Daemon::start(json!({
        "stdio": py_stdio_entry(),
        "http": {"url": format!("{}/mcp", server.url())},
    }));
    daemon.connect("stdio").await;
    daemon.connect("http").await;
    big_result_passes(&daemon, "stdio").await;
    big_result_passes(&daemon, "http").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sigkill_of_the_daemon_the_next_start_ends_what_it_left() {
    let wrapped = format!(
        "sleep 600 & exec {} {}",
        peers().python().display(),
        fixture("py_server.py").display()
    );
    let mut daemon = Daemon::start(json!({"wrapped": {"command": "sh", "args": ["-c", wrapped]}}));
    daemon.connect("wrapped").await;
    let leader = daemon.server("wrapped").await["pid"].as_u64().unwrap() as u32;
    let before = group_members(leader);
    assert_eq!(
        before.len(),
        2,
        "python and its background sleep: {before:?}"
    );

    daemon.proc.signal(Signal::SIGKILL);
    daemon
        .proc
        .wait_timeout(Duration::from_secs(5))
        .expect("mcp-client died");
    // The background sleep survives its parent's death by itself.
    assert!(!group_members(leader).is_empty());

    daemon.respawn();
    assert_eq!(daemon.get("/").await.0, 200);
    for pid in before {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{pid} of the old run lives on"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_count_calls() {
    // The timeout bounds the connect too: long enough for a busy machine.
    let mut entry = py_stdio_entry();
    entry["timeout"] = json!(10);
    let daemon = Daemon::start(json!({"py": entry}));
    daemon.connect("py").await;
    for _ in 0..3 {
        daemon.call("py", "echo", json!({"message": "x"})).await;
    }
    daemon.call("py", "fail", json!({"message": "x"})).await;
    daemon.call("py", "sleep", json!({"ms": 30_000})).await;
    let response = reqwest::get(format!("{}/metrics", daemon.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    // Parsed by the Prometheus project's own Python client (its text-format parser).
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        key = s.name + json.dumps(s.labels, sort_keys=True)
        samples[key] = s.value
print(json.dumps(samples))
"#;
    let mut parser = std::process::Command::new(peers().python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(body.replace("# EOF\n", "").as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not Prometheus text: {}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Value = serde_json::from_slice(&output.stdout).unwrap();
    let get = |key: &str| {
        samples[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {samples}"))
    };
    assert_eq!(
        get(r#"mcp_tool_calls_total{"server": "py", "tool": "echo"}"#),
        3.0
    );
    assert_eq!(
        get(r#"mcp_tool_call_errors_total{"kind": "tool_error", "server": "py", "tool": "fail"}"#),
        1.0
    );
    assert_eq!(
        get(r#"mcp_tool_call_errors_total{"kind": "timeout", "server": "py", "tool": "sleep"}"#),
        1.0
    );
    assert_eq!(
        get(r#"mcp_tool_call_duration_seconds_count{"server": "py", "tool": "echo"}"#),
        3.0
    );
    assert_eq!(get(r#"mcp_servers_connected{}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_cpu_stays_near_zero_after_many_connect_disconnect_cycles() {
    let daemon = Daemon::start(json!({"py": py_stdio_entry()}));
    for _ in 0..10 {
        daemon.connect("py").await;
        daemon
            .post("/disconnect_server", json!({"server_name": "py"}))
            .await;
    }
    daemon.connect("py").await;
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.proc.pid())).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(") ")
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks() - before;
    // A spinning task would burn ~200 ticks (100 Hz) in 2 s; idle is ~0.
    assert!(used <= 20, "mcp-client used {used} ticks of CPU while idle");
}
