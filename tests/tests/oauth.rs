//! OAuth to remote servers (SPEC §10) against a real authorization server: the official
//! Python SDK's own (`tests/fixtures/oauth_server.py`: metadata, dynamic registration, PKCE,
//! refresh, revocation; it approves every authorization at once), with the real mcp-client.
//! The official suite's auth scenarios are in `conformance.rs`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use mag_tests::{Daemon, Proc, fixture, free_port, peers, text, wait_for_port};
use serde_json::{Value, json};

/// The fixture server, its access tokens living `ttl` seconds.
fn oauth_server(ttl: u64) -> (Proc, String) {
    let port = free_port();
    let proc = Proc::spawn(
        Command::new(peers().python())
            .arg(fixture("oauth_server.py"))
            .arg(port.to_string())
            .arg(ttl.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port, Duration::from_secs(30));
    (proc, format!("http://127.0.0.1:{port}"))
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Opens `url` as a browser would (redirects followed): the last page's status, text and
/// URL.
async fn open(url: &str) -> (u16, String, String) {
    let answer = browser().get(url).send().await.expect("the page");
    let last = answer.url().to_string();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap(), last)
}

async fn stats(server: &str) -> Value {
    let answer = browser()
        .get(format!("{server}/test/stats"))
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

/// Every file under `dir`, read as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_authorized_once_reconnects_refreshes_and_asks_again_when_revoked() {
    let (_server, base) = oauth_server(4);
    let mut daemon = Daemon::start(json!({"remote": {"url": format!("{base}/mcp")}}));

    // The first connect needs the user: 401 with the URL, and /servers shows it.
    let (status, answer) = daemon.try_connect("remote").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["code"], "authorization_required", "{answer}");
    let url = answer["authorization_url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{base}/authorize?")), "{url}");
    for part in ["code_challenge_method=S256", "resource=", "state="] {
        assert!(url.contains(part), "{part} in {url}");
    }
    let state = daemon.server("remote").await;
    assert_eq!(state["status"], "needs_authorization", "{state}");
    assert_eq!(state["authorization_url"], url.as_str(), "{state}");
    // Asked again meanwhile: the same authorization, not a new one.
    let (_, again) = daemon.try_connect("remote").await;
    assert_eq!(again["authorization_url"], url.as_str(), "{again}");

    // An MCP client of the gateway is told the server needs authorization, not where.
    let gateway = browser()
        .post(format!("{}/servers/remote/mcp", daemon.base))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(mag_tests::initialize_request("t", json!({})).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(gateway.contains("needs authorization"), "{gateway}");
    assert!(!gateway.contains("/authorize?"), "{gateway}");

    // A redirect with an unknown state changes nothing.
    let (status, page, _) = open(&format!(
        "{}/oauth/callback?code=made-up&state=made-up",
        daemon.base
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("no authorization waits"), "{page}");
    assert_eq!(
        daemon.server("remote").await["status"],
        "needs_authorization"
    );

    // The user approves: the redirect lands on mcp-client, which connects the server.
    let (status, page, callback) = open(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("authorized and connected"), "{page}");
    assert!(callback.starts_with(&format!("{}/oauth/callback?", daemon.base)));
    let state = daemon.server("remote").await;
    assert_eq!(state["status"], "connected", "{state}");
    assert!(state.get("authorization_url").is_none(), "{state}");
    let (status, called) = daemon.call("remote", "whoami", json!({})).await;
    assert_eq!(status, 200, "{called}");
    assert!(!text(&called).is_empty(), "{called}");
    // The same redirect again (a replayed state) is refused, the server undisturbed.
    let (status, page, _) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert_eq!(daemon.server("remote").await["status"], "connected");

    // The token file: only the daemon's user reads it; no token in any answer or log.
    let tokens_path = daemon.dir.path().join("data/oauth-tokens.json");
    let mode = std::fs::metadata(&tokens_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let held_tokens = || {
        let file: Value = serde_json::from_slice(&std::fs::read(&tokens_path).unwrap()).unwrap();
        let held = &file["servers"]["remote"]["credentials"]["token_response"];
        [&held["access_token"], &held["refresh_token"]].map(|t| t.as_str().unwrap().to_string())
    };
    let [access, refresh] = held_tokens();

    // After a restart it reconnects with no user; an expired token is refreshed.
    let _ = daemon.post("/shutdown", json!({})).await;
    daemon.proc.wait_timeout(Duration::from_secs(15));
    daemon.respawn();
    daemon.connect("remote").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, called) = daemon.call("remote", "whoami", json!({})).await;
    assert_eq!(status, 200, "{called}");
    let counts = stats(&base).await;
    assert_eq!(counts["authorizations"], 1, "{counts}");
    assert!(counts["refreshes"].as_u64().unwrap() >= 1, "{counts}");

    // Revoked (the operator removed the app): back to needs_authorization, a fresh URL.
    let [live_access, live_refresh] = held_tokens();
    browser()
        .post(format!("{base}/test/revoke"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, answer) = daemon.call("remote", "whoami", json!({})).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["code"], "authorization_required", "{answer}");
    let fresh = answer["authorization_url"].as_str().unwrap();
    assert_ne!(fresh, url);
    let state = daemon.server("remote").await;
    assert_eq!(state["status"], "needs_authorization", "{state}");
    assert_eq!(state["authorization_url"], fresh, "{state}");

    let tokens = std::fs::read_to_string(&tokens_path).unwrap();
    let (_, servers) = daemon.get("/servers").await;
    let (_, root) = daemon.get("/").await;
    let logs = all_text(&daemon.dir.path().join("logs"));
    for (what, seen) in [
        ("/servers", servers.to_string()),
        ("/", root.to_string()),
        ("the logs", logs),
    ] {
        assert!(
            !seen.contains(&access) && !seen.contains(&refresh),
            "a token in {what}"
        );
    }
    // The refused tokens are dropped from the file too.
    assert!(
        !tokens.contains(&live_access) && !tokens.contains(&live_refresh),
        "{tokens}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_authorization_server_is_a_clear_error_on_its_server_alone() {
    let (_server, base) = oauth_server(3600);
    let mut broken = Vec::new();
    let mut entries = json!({"good": {"url": format!("{base}/mcp")}});
    for mode in ["garbage", "hang"] {
        let port = free_port();
        broken.push(Proc::spawn(
            Command::new(peers().python())
                .arg(fixture("broken_oauth_server.py"))
                .arg(port.to_string())
                .arg(mode)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        wait_for_port(port, Duration::from_secs(30));
        entries[mode] = json!({"url": format!("http://127.0.0.1:{port}/mcp"), "timeout": 3});
    }
    let daemon = Daemon::start(entries);
    let (_, answer) = daemon.try_connect("good").await;
    let (status, page, _) = open(answer["authorization_url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{page}");
    // Garbage is a refusal (waits for a person); silence is an outage (tried again).
    for (mode, kind, says) in [
        ("garbage", "unauthorized", "needs authorization, but"),
        ("hang", "transport", "within"),
    ] {
        let (status, answer) = daemon.try_connect(mode).await;
        assert_eq!(status, 400, "{mode}: {answer}");
        assert_eq!(answer["kind"], kind, "{mode}: {answer}");
        let state = daemon.server(mode).await;
        assert_eq!(state["status"], "failed", "{mode}: {state}");
        assert_eq!(state["error_kind"], kind, "{mode}: {state}");
        assert!(
            state["error"].as_str().unwrap().contains(says),
            "{mode}: {state}"
        );
    }
    let (status, called) = daemon.call("good", "whoami", json!({})).await;
    assert_eq!(status, 200, "{called}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mag_server_shows_the_authorization_and_takes_the_redirect_itself() {
    let (_server, base) = oauth_server(3600);
    let mut mag = mag_tests::mag::MagServer::start_with(mag_tests::mag::MagOptions {
        servers: json!({"remote": {"url": format!("{base}/mcp")}}),
        env: vec![
            ("MAG_API_TOKEN".into(), "oauth-test-token".into()),
            ("JWT_SECRET_KEY".into(), "oauth-test-jwt-secret".into()),
        ],
        ..Default::default()
    });
    mag.wait_running().await;
    // A MAG user who does not own the server is not shown where to authorize it: whoever
    // approves decides whose account everyone's calls use.
    mag.token = Some(mag_tests::mag::mag_jwt(
        "oauth-test-jwt-secret",
        "bob",
        "access",
        "user",
        600,
    ));
    let (status, answer) = mag.post("/api/mcp/connect/remote", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "authorization_required", "{answer}");
    assert!(answer.get("authorization_url").is_none(), "{answer}");
    let (_, servers) = mag.get("/api/mcp/status").await;
    assert_eq!(
        servers["remote"]["status"], "needs_authorization",
        "{servers}"
    );
    assert!(
        servers["remote"].get("authorization_url").is_none(),
        "{servers}"
    );
    assert!(!servers.to_string().contains("/authorize?"), "{servers}");
    mag.token = Some("oauth-test-token".into());
    // 400, not 401: MAG's frontend would send its user to its login page.
    let (status, answer) = mag.post("/api/mcp/connect/remote", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "authorization_required", "{answer}");
    let url = answer["authorization_url"].as_str().unwrap().to_string();
    let redirect = format!("{}/oauth/callback", mag.base);
    let encoded = redirect.replace(":", "%3A").replace("/", "%2F");
    assert!(url.contains(&format!("redirect_uri={encoded}")), "{url}");
    let (_, servers) = mag.get("/api/mcp/status").await;
    assert_eq!(
        servers["remote"]["status"], "needs_authorization",
        "{servers}"
    );
    assert_eq!(servers["remote"]["authorization_url"], url.as_str());

    // The browser comes back to mag-server (no token: the state guards it).
    let (status, page, last) = open(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(last.starts_with(&redirect), "{last}");
    let (_, servers) = mag.get("/api/mcp/status").await;
    assert_eq!(servers["remote"]["connected"], true, "{servers}");
    let (status, tested) = mag.test_tool("remote", "whoami", json!({})).await;
    assert_eq!(
        (status, &tested["status"]),
        (200, &json!("success")),
        "{tested}"
    );
}
