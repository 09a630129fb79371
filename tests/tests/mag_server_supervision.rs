//! mag-server supervising the real mcp-client (SPEC §5 Supervision): restarts and
//! reconnects, stuck and crash-looping clients, a foreign program on the address, SIGTERM,
//! wrapper scripts, adopting a running client and taking back one a killed mag-server left.

use std::time::Duration;

use mag_tests::mag::{MagOptions, MagServer, script};
use mag_tests::{Daemon, alive, assert_gone, py_stdio_entry, wait_gone};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_is_restarted_and_its_servers_reconnected() {
    let mag = MagServer::start(json!({"py": py_stdio_entry(), "idle": py_stdio_entry()}));
    let first = mag.wait_running().await;
    let first_pid = first["pid"].as_u64().unwrap() as u32;
    assert_eq!(first["managed"], true);
    mag.connect("py").await;
    let old_server = mag.get("/api/mcp/status").await.1["py"]["pid"].clone();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let after = mag
        .wait_client(Duration::from_secs(60), |s| {
            s["state"] == "running" && s["pid"].as_u64() != Some(first_pid as u64)
        })
        .await;
    assert!(after["restarts"].as_u64().unwrap() >= 1, "{after}");
    assert_eq!(after["last_exit"]["signal"], "SIGKILL", "{after}");
    assert_eq!(
        after["last_reconnect"]["connected"],
        json!(["py"]),
        "{after}"
    );

    let (status, live) = mag.get("/api/mcp/status").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["py"]["connected"], true, "{live}");
    assert_ne!(live["py"]["pid"], old_server);
    assert_eq!(
        live["idle"]["connected"], false,
        "only the connected ones: {live}"
    );
    let (status, answer) = mag
        .test_tool("py", "echo", json!({"message": "back"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["result"][0]["text"], "back");
}

/// `args` with stuck detection shortened (polls every 500 ms, stuck after 2 failed polls,
/// each of which still waits 5 s), so a frozen client is replaced in ~11 s instead of ~21 s.
fn quick_stuck_detection(args: &[&str]) -> Vec<String> {
    ["--poll-interval", "500ms", "--stuck-after", "2"]
        .iter()
        .chain(args)
        .map(|arg| arg.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_client_is_stopped_and_replaced() {
    let mag = MagServer::start_with(MagOptions {
        servers: json!({"py": py_stdio_entry()}),
        args: quick_stuck_detection(&["--stop-grace", "1s"]),
        ..MagOptions::default()
    });
    let first = mag.wait_running().await["pid"].as_u64().unwrap();
    mag.connect("py").await;
    // Frozen: it holds its port but answers nothing.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGSTOP).unwrap();
    let after = mag
        .wait_client(Duration::from_secs(90), |s| {
            s["state"] == "running" && s["pid"].as_u64() != Some(first)
        })
        .await;
    let reason = after["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("stopped answering"), "{after}");
    assert!(wait_gone(first as u32, Duration::from_secs(5)));
    let (status, answer) = mag
        .test_tool("py", "echo", json!({"message": "thawed"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"][0]["text"], "thawed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_exits_at_once_trips_the_crash_loop_guard() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bad = script(
        bin_dir.path(),
        "mcp-client",
        "echo 'boom: this is not an mcp-client' >&2\nexit 3",
    );
    let mag = MagServer::start_with(MagOptions {
        servers: json!({"py": py_stdio_entry()}),
        args: [
            "--client-bin",
            bad.to_str().unwrap(),
            "--restart-backoff",
            "20ms",
            "--restart-backoff-max",
            "100ms",
        ]
        .map(String::from)
        .to_vec(),
        ..MagOptions::default()
    });
    let status = mag
        .wait_client(Duration::from_secs(60), |s| s["state"] == "crash_loop")
        .await;
    assert_eq!(status["last_exit"]["code"], 3, "{status}");
    assert!(
        status["last_exit"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("boom: this is not an mcp-client"),
        "{status}"
    );
    assert!(
        status["error"].as_str().unwrap().contains("5 times"),
        "{status}"
    );
    assert!(status["pid"].is_null());

    // Forwarded endpoints answer 503 with the cause, and do not hang.
    let within = Duration::from_secs(10);
    for (method, path) in [
        (reqwest::Method::GET, "/api/mcp/status"),
        (reqwest::Method::GET, "/api/mcp/tools"),
        (reqwest::Method::POST, "/api/mcp/connect/py"),
    ] {
        let body = (method == reqwest::Method::POST).then(|| "{}".to_string());
        let (code, answer) = mag
            .request_within(method, path, body, within)
            .await
            .unwrap_or_else(|| panic!("{path} did not answer within {within:?}"));
        assert_eq!(code, 503, "{path}: {answer}");
        assert_eq!(answer["code"], "mcp_client_unavailable");
        assert!(
            answer["detail"].as_str().unwrap().contains("crash loop"),
            "{answer}"
        );
    }

    // The config can still be edited; the answer says mcp-client did not take it.
    let version = mag.version().await;
    let (code, saved) = mag
        .post_config(json!({"mcpServers": {}}), &json!(version))
        .await;
    assert_eq!(code, 200, "{saved}");
    assert!(saved["status"]["warning"].is_string(), "{saved}");
    assert!(saved["applied"].is_null());

    // A restart on demand tries again (and trips the guard again).
    let (code, restart) = mag.post("/api/mcp/client/restart", json!({})).await;
    assert_eq!(code, 200, "{restart}");
    let before = status["restarts"].as_u64().unwrap();
    let again = mag
        .wait_client(Duration::from_secs(60), |s| {
            s["state"] == "crash_loop" && s["restarts"].as_u64().unwrap() > before
        })
        .await;
    assert_eq!(again["last_exit"]["code"], 3);
}

/// Holds the client address with something that is not mcp-client.
enum Foreign {
    /// Accepts TCP connections (the kernel does) and never answers.
    Silent(#[allow(dead_code)] std::net::TcpListener),
    /// Answers every request with a fixed HTTP response.
    Http,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_program_on_the_client_address_is_reported_and_not_replaced() {
    for kind in ["silent", "http"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _holder = match kind {
            "silent" => Foreign::Silent(listener),
            _ => {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    for stream in listener.incoming() {
                        let Ok(mut stream) = stream else { return };
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\
                              connection: close\r\n\r\nhello, world",
                        );
                    }
                });
                Foreign::Http
            }
        };
        let mag = MagServer::start_with(MagOptions {
            servers: json!({"py": py_stdio_entry()}),
            client_port: Some(port),
            ..MagOptions::default()
        });
        let status = mag
            .wait_client(Duration::from_secs(30), |s| s["state"] == "address_in_use")
            .await;
        let error = status["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("127.0.0.1:{port}")),
            "{kind}: {error}"
        );
        assert!(error.contains("not mcp-client"), "{kind}: {error}");
        if kind == "http" {
            assert!(error.contains("hello, world"), "{kind}: {error}");
        }
        assert!(status["pid"].is_null(), "{status}");
        let (code, answer) = mag
            .request_within(
                reqwest::Method::GET,
                "/api/mcp/status",
                None,
                Duration::from_secs(10),
            )
            .await
            .expect("an answer");
        assert_eq!(code, 503, "{answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap()
                .contains("held by another program"),
            "{answer}"
        );
        assert!(
            !mag.log("mcp_client_stderr.log").exists(),
            "{kind}: mag-server tried to start mcp-client on a held address"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_client_and_every_server_and_exits_zero() {
    let mut mag = MagServer::start(json!({"a": py_stdio_entry(), "b": py_stdio_entry()}));
    let client = mag.wait_running().await["pid"].as_u64().unwrap() as u32;
    mag.connect("a").await;
    mag.connect("b").await;
    let servers = mag.server_pids().await;
    assert_eq!(servers.len(), 2);
    assert!(mag.dir.path().join("data/mcp-client.token").exists());

    assert_eq!(mag.terminate(), Some(0));
    assert_gone(
        [client].into_iter().chain(servers),
        Duration::from_secs(2),
        "mag-server",
    );
    assert!(!mag.dir.path().join("data/mcp-client.token").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrapper_script_is_supervised_and_stopped_as_a_whole() {
    // The binary is a shell script that runs mcp-client as its child (no exec): readiness
    // and stopping go by the process group.
    let bin_dir = tempfile::tempdir().unwrap();
    let real = mag_tests::workspace_bin("mcp-client");
    let wrapper = script(
        bin_dir.path(),
        "mcp-client",
        &format!("'{}' \"$@\"\necho wrapper done", real.display()),
    );
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({"py": py_stdio_entry()}),
        args: vec!["--client-bin".into(), wrapper.to_str().unwrap().into()],
        ..MagOptions::default()
    });
    let shell = mag.wait_running().await["pid"].as_u64().unwrap() as u32;
    let root: Value = reqwest::get(format!("http://127.0.0.1:{}/", mag.client_port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = root["pid"].as_u64().unwrap() as u32;
    assert_ne!(client, shell);
    mag.connect("py").await;
    let servers = mag.server_pids().await;

    assert_eq!(mag.terminate(), Some(0));
    assert_gone(
        [shell, client].into_iter().chain(servers),
        Duration::from_secs(2),
        "mag-server",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_client_is_adopted_and_left_running() {
    let daemon = Daemon::start_with(
        json!({"py": py_stdio_entry()}),
        &["--token-env", "ADOPT_TOKEN"],
        &[("ADOPT_TOKEN", "adopt-secret")],
    );
    let port: u16 = daemon.base.rsplit(':').next().unwrap().parse().unwrap();
    let config = daemon.dir.path().join("mcp.json");

    // Without its token: reported, not used, not replaced.
    let stranger = MagServer::start_with(MagOptions {
        mcp_config: Some(config.clone()),
        client_port: Some(port),
        ..MagOptions::default()
    });
    let status = stranger
        .wait_client(Duration::from_secs(30), |s| s["state"] == "address_in_use")
        .await;
    assert!(
        status["error"].as_str().unwrap().contains("token"),
        "{status}"
    );
    drop(stranger);

    let mut mag = MagServer::start_with(MagOptions {
        mcp_config: Some(config),
        client_port: Some(port),
        env: vec![("MAG_CLIENT_TOKEN".into(), "adopt-secret".into())],
        ..MagOptions::default()
    });
    let status = mag.wait_running().await;
    assert_eq!(status["state"], "adopted", "{status}");
    assert_eq!(status["pid"], daemon.proc.pid());
    assert_eq!(status["managed"], false);
    mag.connect("py").await;
    let (code, answer) = mag
        .test_tool("py", "echo", json!({"message": "adopted"}))
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"][0]["text"], "adopted");
    let (code, refused) = mag.post("/api/mcp/client/restart", json!({})).await;
    assert_eq!(code, 409, "{refused}");

    assert_eq!(mag.terminate(), Some(0));
    assert!(
        alive(daemon.proc.pid()),
        "the adopted mcp-client was stopped"
    );
    let (code, root) = daemon.get("/").await;
    assert_eq!(code, 200);
    assert_eq!(root["servers_connected"], 1, "{root}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_left_by_a_killed_mag_server_is_taken_back_and_stopped_with_it() {
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({"py": py_stdio_entry()}),
        args: quick_stuck_detection(&[]),
        ..MagOptions::default()
    });
    let client = mag.wait_running().await["pid"].as_u64().unwrap() as u32;
    mag.connect("py").await;
    let server = mag.server_pids().await;

    // mag-server dies without stopping its client; the next one, on the same data dir,
    // knows the client by the token file and takes it back.
    mag.kill();
    assert!(alive(client), "mcp-client outlives a SIGKILLed mag-server");
    mag.restart();
    let status = mag.wait_running().await;
    assert_eq!(status["state"], "adopted", "{status}");
    assert_eq!(status["pid"], client, "{status}");
    assert_eq!(status["managed"], true, "{status}");

    // Being mag-server's, it can be restarted: replaced by a new one, servers reconnected.
    let (code, answer) = mag.post("/api/mcp/client/restart", json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let status = mag
        .wait_client(Duration::from_secs(30), |s| {
            s["state"] == "running" && s["pid"] != client
        })
        .await;
    assert!(wait_gone(client, Duration::from_secs(10)), "{status}");
    assert_gone(
        server.iter().copied(),
        Duration::from_secs(10),
        "its client",
    );
    let replacement = status["pid"].as_u64().unwrap() as u32;

    // And taken back again after another SIGKILL, then stopped with mag-server.
    mag.kill();
    mag.restart();
    let status = mag.wait_running().await;
    assert_eq!(status["pid"], replacement, "{status}");
    assert_eq!(status["managed"], true, "{status}");

    // Stuck (SIGSTOP), it is replaced like a spawned one.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(replacement as i32),
        Signal::SIGSTOP,
    )
    .unwrap();
    let status = mag
        .wait_client(Duration::from_secs(60), |s| {
            s["state"] == "running" && s["pid"] != replacement
        })
        .await;
    assert!(wait_gone(replacement, Duration::from_secs(10)), "{status}");
    let newest = status["pid"].as_u64().unwrap() as u32;

    mag.connect("py").await;
    let server = mag.server_pids().await;
    assert_eq!(mag.terminate(), Some(0));
    assert_gone(
        server.into_iter().chain([newest]),
        Duration::from_secs(10),
        "mag-server",
    );
    assert!(!mag.dir.path().join("data/mcp-client.token").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_mag_server_on_the_same_data_dir_is_refused() {
    let mag = MagServer::start(json!({"py": py_stdio_entry()}));
    mag.wait_running().await;
    // Same folders (so the same data dir), another client port.
    let mut second = mag_tests::mag::command(
        mag.dir.path(),
        &mag.config,
        mag_tests::free_port(),
        &MagOptions::default(),
    );
    second
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut second = mag_tests::Proc::spawn(&mut second);
    let status = second
        .wait_timeout(Duration::from_secs(30))
        .expect("the second mag-server exits");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.child().stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("another mag-server uses the data dir"),
        "{stderr}"
    );
    // The first one is untouched.
    let status = mag.client_status().await;
    assert_eq!(status["state"], "running", "{status}");
}
