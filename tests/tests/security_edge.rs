//! Issue 14, the HTTP edge, against the real binaries: what a page in the operator's
//! browser could do (Origin, Host, Content-Type), `/health` without the token, an empty
//! token, a second mag-server on a locked data dir, and the edge's limits (slowloris, idle
//! and stalled connections, oversized bodies, the connection cap).

mod support;

use std::time::{Duration, Instant};

use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::{Daemon, py_stdio_entry};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_make_mcp_client_run_a_command() {
    let daemon = Daemon::start(json!({}));
    let pwned = daemon.dir.path().join("pwned");
    let attack = json!({"config": {"mcpServers": {"pwn": {
        "command": "sh", "args": ["-c", format!("touch {}", pwned.display())], "autoConnect": true
    }}}})
    .to_string();
    let url = format!("{}/load_config", daemon.base);

    // A cross-site "simple" POST (no preflight): refused before anything is read.
    for content_type in ["text/plain", "application/json"] {
        let (status, answer) = post_as(
            &url,
            content_type,
            &[("origin", "http://evil.example")],
            attack.clone(),
        )
        .await;
        assert_eq!(status, 403, "{content_type}: {answer}");
        assert_eq!(answer["code"], "forbidden_origin");
    }
    let (status, answer) = post_as(&url, "text/plain", &[("origin", "null")], attack.clone()).await;
    assert_eq!((status, &answer["code"]), (403, &json!("forbidden_origin")));
    // A loopback page must still send JSON as JSON.
    let (status, answer) = post_as(
        &url,
        "text/plain",
        &[("origin", "http://localhost:5173")],
        attack.clone(),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(answer["code"], "unsupported_media_type");
    // DNS rebinding: the page's own name in Host.
    let (status, answer) = post_as(
        &url,
        "application/json",
        &[("host", "evil.example:8765")],
        attack.clone(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "forbidden_host");
    let response = http()
        .get(format!("{}/servers", daemon.base))
        .header("host", "rebind.evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pwned.exists(), "the page's command ran");
    assert_eq!(daemon.get("/servers").await.1, json!({}));

    // Without Origin (curl, SDKs, mag-server) nothing changes, even as a form type.
    let harmless = json!({"config": {"mcpServers": {"py": py_stdio_entry()}}}).to_string();
    let (status, answer) = post_as(
        &url,
        "application/x-www-form-urlencoded",
        &[],
        harmless.clone(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // A loopback page sending JSON is fine.
    let (status, answer) = post_as(
        &url,
        "application/json",
        &[("origin", "http://127.0.0.1:3000"), ("host", "localhost")],
        harmless,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_origins_and_hosts_are_settings() {
    let daemon = Daemon::start_with(
        json!({}),
        &[
            "--allowed-origins",
            "https://mag.example.com",
            "--allowed-hosts",
            "mcp.example.com",
        ],
        &[],
    );
    let url = format!("{}/servers", daemon.base);
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let mut request = http().get(url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get(vec![("origin", "https://mag.example.com")]).await, 200);
    assert_eq!(
        get(vec![("origin", "https://other.example.com")]).await,
        403
    );
    assert_eq!(get(vec![("host", "mcp.example.com")]).await, 200);
    assert_eq!(get(vec![("host", "other.example.com")]).await, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_add_a_server_through_mag_server() {
    let mag = MagServer::start(json!({}));
    mag.wait_running().await;
    let before = std::fs::read(&mag.config).unwrap();
    let pwned = mag.dir.path().join("pwned");
    let attack = json!({"mcpServers": {"pwn": {
        "command": "sh", "args": ["-c", format!("touch {}", pwned.display())], "autoConnect": true
    }}})
    .to_string();
    let url = format!("{}/api/mcp/add", mag.base);
    let (status, answer) = post_as(
        &url,
        "text/plain",
        &[("origin", "http://evil.example")],
        attack.clone(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "forbidden_origin");
    let (status, answer) = post_as(
        &url,
        "application/json",
        &[("host", "evil.example")],
        attack,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post_as(
        &format!("{}/api/mcp/connect/all", mag.base),
        "text/plain",
        &[("origin", "https://evil.example")],
        String::new(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read(&mag.config).unwrap(),
        before,
        "mcp.json changed"
    );
    assert!(!pwned.exists());
    // The README's curl examples (no Origin, form content type) still work.
    let (status, answer) = post_as(
        &format!("{}/api/mcp/add", mag.base),
        "application/x-www-form-urlencoded",
        &[],
        json!({"mcpServers": {"py": py_stdio_entry()}}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// A server on 127.0.0.1 that answers every request with HTTP 500; its port.
#[tokio::test(flavor = "multi_thread")]
async fn pages_of_taken_origins_get_cors_answers_and_others_none() {
    // MAG's frontend (Vite's port) calls mag-server with a token: the browser first sends a
    // preflight without it, then the request; a page elsewhere gets no CORS headers.
    let mag = MagServer::start_with(MagOptions {
        servers: json!({}),
        env: vec![("MAG_API_TOKEN".into(), "cors-test-token".into())],
        ..MagOptions::default()
    });
    mag.wait_running().await;
    let url = format!("{}/api/mcp/config", mag.base);
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,cache-control,content-type",
            )
            .send()
    };
    let answer = preflight("http://localhost:5173").await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    let headers = answer.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        ["authorization", "cache-control", "content-type"]
            .iter()
            .all(|h| allowed.contains(h)),
        "{allowed}"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let answer = http()
        .get(&url)
        .header("origin", "http://localhost:5173")
        .bearer_auth("cors-test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );

    let answer = preflight("http://evil.example").await.unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{answer:?}"
    );
    let answer = http()
        .get(&url)
        .header("origin", "http://evil.example")
        .bearer_auth("cors-test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_without_the_token_is_liveness_only() {
    let mut mag = MagServer::start_with(MagOptions {
        servers: json!({}),
        env: vec![("MAG_API_TOKEN".into(), "t0ken-for-health".into())],
        ..MagOptions::default()
    });
    mag.token = Some("t0ken-for-health".into());
    let client = mag.wait_running().await["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let full = mag
        .wait_client(Duration::from_secs(30), |s| {
            s["last_exit"].is_object() && s["state"] == "running"
        })
        .await;
    assert!(full["last_exit"]["reason"].is_string(), "{full}");
    mag.token = None;
    let (status, open) = mag.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(open["mcp_client"]["state"], "running", "{open}");
    for hidden in ["last_exit", "pid", "error", "last_reconnect", "address"] {
        assert!(open["mcp_client"].get(hidden).is_none(), "{hidden}: {open}");
    }
    assert!(open.get("pid").is_none(), "{open}");
    // The lowercase scheme is a bearer token too (RFC 7235).
    let response = http()
        .get(format!("{}/api/mcp/config", mag.base))
        .header("authorization", "bearer t0ken-for-health")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_api_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.json");
    std::fs::write(&config, r#"{"mcpServers": {}}"#).unwrap();
    let mut command = mag_tests::mag::command(
        dir.path(),
        &config,
        mag_tests::free_port(),
        &MagOptions::default(),
    );
    command.env("MAG_API_TOKEN", "");
    let (code, stdout, stderr) = run_bounded(&mut command);
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(
        stderr.contains("MAG_API_TOKEN is set but empty"),
        "{stderr}"
    );
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_mag_server_on_a_locked_data_dir_never_says_it_listens() {
    let mag = MagServer::start(json!({}));
    mag.wait_running().await;
    let mut command = mag_tests::mag::command(
        mag.dir.path(),
        &mag.config,
        mag_tests::free_port(),
        &MagOptions::default(),
    );
    let (code, stdout, stderr) = run_bounded(&mut command);
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("another mag-server uses the data dir"),
        "{stderr}"
    );
}

/// `GET /`'s `config.error.message` once it holds `needle` (up to 10 s).
async fn send_and_wait(addr: &str, head: &[u8], within: Duration) -> (String, bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(within, tcp.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_oversized_requests_are_cut_off() {
    let daemon = Daemon::start(json!({}));
    let addr = authority(&daemon.base).to_string();
    // The header timeout is 10 s; allow for a loaded machine, but not for "never".
    let bound = Duration::from_secs(25);

    // Slowloris: one header byte a second.
    let slow_addr = addr.clone();
    let slowloris = tokio::spawn(async move {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(&slow_addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if tcp.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        started.elapsed()
    });
    // An idle connection that never sends a thing.
    let (_, closed) = send_and_wait(&addr, b"", bound).await;
    assert!(closed, "an idle connection stayed open for {bound:?}");
    // A kept-alive connection that goes idle after its first request.
    let (answer, closed) =
        send_and_wait(&addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", bound).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed,
        "a kept-alive idle connection stayed open for {bound:?}"
    );
    // A body announced but never sent: 413 from the header, not a wait for the body.
    let (answer, _) = send_and_wait(
        &addr,
        b"POST /load_config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 104857600\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    let took = slowloris.await.unwrap();
    assert!(
        took < Duration::from_secs(40),
        "the slowloris connection lasted {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_overlong_bodies_are_refused() {
    let daemon = Daemon::start(json!({}));
    let addr = authority(&daemon.base).to_string();
    // A chunked body (no Content-Length) over the limit: 413 once it passes it.
    let limit = 4 * 1024 * 1024;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /load_config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= limit {
        let head = format!("{:x}\r\n", chunk.len());
        if tcp.write_all(head.as_bytes()).await.is_err()
            || tcp.write_all(&chunk).await.is_err()
            || tcp.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // A body that stops half-way: 408 once it has paused for 30 s, not a request held for
    // good.
    let (answer, _) = send_and_wait(
        &addr,
        b"POST /load_config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"config\":",
        Duration::from_secs(60),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_answered_503_and_logged() {
    let daemon = Daemon::start_with(json!({}), &["--max-connections", "4"], &[]);
    let addr = authority(&daemon.base).to_string();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answer, closed) = send_and_wait(
        &addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(closed);
    drop(held);
    // Slots free again once connections end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.get("/").await.0 != 200 {
        assert!(Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = files_containing(&daemon.dir.path().join("logs"), "connection cap reached");
    assert!(!logs.is_empty(), "no log line about the cap");
}
