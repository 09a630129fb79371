//! Adapter for the official MCP conformance suite's client scenarios: drives the real
//! mcp-client against the suite's server.
//!
//! The suite runs `conformance-client URL` with `MCP_CONFORMANCE_SCENARIO` set. This starts
//! mcp-client with one streamable HTTP server at URL, connects it over mcp-client's HTTP API,
//! lists the tools and calls each (`add_numbers` with `{a: 2, b: 3}`, others with `{}`),
//! then shuts mcp-client down. Exit 0 when every step succeeded.

use std::process::ExitCode;
use std::time::Duration;

use mag_tests::Daemon;
use serde_json::json;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: conformance-client URL");
        return ExitCode::from(2);
    };
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    eprintln!("conformance-client: scenario {scenario:?} against {url}");
    let mut daemon = Daemon::start(json!({"conformance": {"url": url, "timeout": 10}}));
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

async fn drive(daemon: &Daemon) -> bool {
    let (status, answer) = daemon
        .post("/connect_server", json!({"server_name": "conformance"}))
        .await;
    eprintln!("connect_server: {status} {answer}");
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
        let (status, answer) = daemon.call("conformance", name, params).await;
        eprintln!("tool_call {name}: {status} {answer}");
        ok &= status == 200 && answer.get("error").is_none();
    }
    ok
}
