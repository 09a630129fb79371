//! Adapter for the official MCP conformance suite's client scenarios: drives the real
//! mcp-client against the suite's server.
//!
//! The suite runs `conformance-client URL` with `MCP_CONFORMANCE_SCENARIO` set (and, for some
//! auth scenarios, `MCP_CONFORMANCE_CONTEXT`: a pre-registered client's id and secret, or a
//! private key). This starts mcp-client with one streamable HTTP server at URL (its `oauth`
//! settings from the context) and the client ID metadata document URL the suite expects,
//! connects it over mcp-client's HTTP API, lists the tools and calls each (`add_numbers` with
//! `{a: 2, b: 3}`, others with `{}`), then shuts mcp-client down. Whenever mcp-client answers
//! 401 `authorization_required`, it opens the `authorization_url` as a browser would
//! (following redirects: the suite's authorization server approves at once and sends it to
//! mcp-client's `/oauth/callback`), then tries again. Exit 0 when every step succeeded.

use std::process::ExitCode;
use std::time::Duration;

use mag_tests::Daemon;
use serde_json::{Value, json};

/// The client ID metadata document URL the suite's `auth/basic-cimd` expects.
const CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";

/// More than mcp-client's own limit, so that a server that keeps refusing is stopped by
/// mcp-client, not here.
const MAX_BROWSER_VISITS: usize = 6;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: conformance-client URL");
        return ExitCode::from(2);
    };
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    eprintln!("conformance-client: scenario {scenario:?} against {url}");
    let keys = tempfile::tempdir().expect("a temp dir");
    let mut entry = json!({"url": url, "timeout": 10});
    if let Some(oauth) = oauth_settings(&scenario, &context, keys.path()) {
        entry["oauth"] = oauth;
    }
    let mut daemon = Daemon::start_with(
        json!({"conformance": entry}),
        &["--oauth-client-metadata-url", CLIENT_METADATA_URL],
        &[],
    );
    let ok = drive(&daemon).await;
    let _ = daemon.post("/shutdown", json!({})).await;
    let exit = daemon.proc.wait_timeout(Duration::from_secs(15));
    eprintln!("conformance-client: mcp-client exited with {exit:?}");
    if ok && exit.is_some_and(|s| s.success()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The entry's `oauth` for the context the suite gave: a pre-registered client, client
/// credentials with a secret, or with a private key (written to a file under `dir`).
fn oauth_settings(scenario: &str, context: &Value, dir: &std::path::Path) -> Option<Value> {
    let client_id = context.get("client_id")?.as_str()?;
    let mut oauth = json!({"client_id": client_id});
    if let Some(secret) = context.get("client_secret").and_then(Value::as_str) {
        oauth["client_secret"] = json!(secret);
    }
    if let Some(pem) = context.get("private_key_pem").and_then(Value::as_str) {
        let path = dir.join("client-key.pem");
        std::fs::write(&path, pem).expect("write the key");
        oauth["private_key_file"] = json!(path);
    }
    if scenario.contains("client-credentials") {
        oauth["grant_type"] = json!("client_credentials");
    }
    Some(oauth)
}

/// Opens an authorization URL as a browser would, following redirects; whether the last
/// page was a success.
async fn visit(url: &str) -> bool {
    let browser = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    match browser.get(url).send().await {
        Ok(answer) => {
            let status = answer.status();
            let page = answer.text().await.unwrap_or_default();
            eprintln!("browser: {url} -> {status} {page}");
            status.is_success()
        }
        Err(e) => {
            eprintln!("browser: {url} failed: {e}");
            false
        }
    }
}

/// `send` again after each `authorization_required` it answers, at most
/// [`MAX_BROWSER_VISITS`] times.
async fn authorized<F, Fut>(what: &str, send: F) -> (u16, Value)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (u16, Value)>,
{
    for _ in 0..MAX_BROWSER_VISITS {
        let (status, answer) = send().await;
        eprintln!("{what}: {status} {answer}");
        if answer["code"] != "authorization_required" {
            return (status, answer);
        }
        let Some(url) = answer["authorization_url"].as_str() else {
            return (status, answer);
        };
        // A redirect that ends in another authorization (a step-up) is no failure yet:
        // asked again, mcp-client answers its URL.
        visit(url).await;
    }
    send().await
}

async fn drive(daemon: &Daemon) -> bool {
    let (status, _) = authorized("connect_server", || daemon.try_connect("conformance")).await;
    if status != 200 {
        return false;
    }
    let (_, tools) = daemon.get("/tools").await;
    let mut ok = true;
    for tool in tools.as_array().into_iter().flatten() {
        let name = tool["name"].as_str().unwrap_or_default();
        let params = match name {
            "add_numbers" => json!({"a": 2, "b": 3}),
            _ => json!({}),
        };
        let (status, answer) = authorized(&format!("tool_call {name}"), || {
            daemon.call("conformance", name, params.clone())
        })
        .await;
        ok &= status == 200 && answer.get("error").is_none();
    }
    ok
}
