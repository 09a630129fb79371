//! The command line: `--help` and `--version` answer without starting anything, and a
//! taken address is a clear error. (Also makes `cargo test --workspace` build the binary
//! that the end-to-end tests in `tests/` start.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-client");

#[test]
fn help_lists_every_flag() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--listen",
        "--log-dir",
        "--token-env",
        "--body-limit",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let logs = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "--listen",
            &addr,
            "--config",
            "/nonexistent/mcp.json",
            "--log-dir",
        ])
        .arg(logs.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
