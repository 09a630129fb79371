//! The official MCP conformance suite's client scenarios, run against mcp-client through
//! `conformance-client` (npm `@modelcontextprotocol/conformance`, on Node 22).

use std::process::Command;

use mag_tests::peers;

fn run_scenario(scenario: &str) {
    let peers = peers();
    // The adapter starts mcp-client from the same folder.
    mag_tests::workspace_bin("mcp-client");
    let output = Command::new(peers.node22())
        .arg(peers.conformance_js())
        .args([
            "client",
            "--command",
            env!("CARGO_BIN_EXE_conformance-client"),
        ])
        .args(["--scenario", scenario, "--timeout", "60000"])
        .output()
        .expect("run the conformance suite");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // "Passed: 0/0" passes vacuously: at least one check must have run, none failed.
    let passed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Passed: "))
        .unwrap_or_else(|| panic!("no summary for {scenario}:\n{text}"));
    assert!(
        !passed.starts_with("0/"),
        "scenario {scenario} ran no check:\n{text}"
    );
    // The suite grades a reconnect 200-500 ms past the server's `retry` as a warning
    // ("slightly late ... may indicate network delays"), which fails its exit status; on a
    // busy machine scheduling alone can cause that. That one warning is tolerated here;
    // any failure, a very late reconnect (a failure) or any other warning is not.
    if passed.contains(" 0 failed, 1 warnings")
        && text.contains("Warning: Client reconnected slightly late")
    {
        eprintln!("scenario {scenario}: passed with the reconnect-timing warning:\n{text}");
        return;
    }
    assert!(
        output.status.success(),
        "scenario {scenario} failed:\n{text}"
    );
    assert!(
        text.contains("OVERALL: PASSED"),
        "scenario {scenario}:\n{text}"
    );
    assert!(
        passed.contains(" 0 failed, 0 warnings"),
        "scenario {scenario}: {passed}\n{text}"
    );
}

#[test]
fn conformance_initialize() {
    run_scenario("initialize");
}

#[test]
fn conformance_tools_call() {
    run_scenario("tools_call");
}

#[test]
fn conformance_sse_retry() {
    run_scenario("sse-retry");
}
