//! The command line: `--help` lists every setting without starting anything, bad settings
//! and a taken address are clear errors. (Also makes `cargo test --workspace` build the
//! binary that the end-to-end tests in `tests/` start.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mag-server");

#[test]
fn help_lists_every_flag_and_its_variable() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--listen",
        "--mcp-config",
        "--client-listen",
        "--client-bin",
        "--log-dir",
        "--data-dir",
        "--body-limit",
        "--restart-backoff",
        "--crash-loop-exits",
        "--crash-loop-window",
        "--stop-grace",
        "--poll-interval",
        "--stuck-after",
        "MAG_LISTEN",
        "MAG_MCP_CONFIG",
        "MAG_CLIENT_LISTEN",
        "MAG_POLL_INTERVAL",
        "MAG_STUCK_AFTER",
        "MAG_API_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--listen", &addr, "--client-bin", "/nonexistent/mcp-client"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_bad_settings_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mag.toml");
    std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mag.toml") && stderr.contains("listen"),
        "{stderr}"
    );
}
