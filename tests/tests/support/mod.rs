//! What the security test files share: an HTTP client, requests as a browser would send
//! them, bounded runs of a program, and a search of every file under a folder. (Each test
//! file compiles this module; what one of them does not use is no dead code.)
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use mag_tests::Proc;
use serde_json::Value;

pub fn http() -> reqwest::Client {
    mag_common::install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// `POST url` with `body` as `content_type` and extra `headers`: status and JSON body.
pub async fn post_as(
    url: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value) {
    let mut request = http()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// `host:port` of a base URL.
pub fn authority(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && String::from_utf8_lossy(&bytes).contains(needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Runs `command` (stdout and stderr piped) for at most 30 s: exit code, stdout, stderr.
pub fn run_bounded(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    use std::io::Read;
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut proc = Proc::spawn(command);
    let status = proc.wait_timeout(Duration::from_secs(30));
    let child = proc.child();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(pipe) = child.stdout.as_mut() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(pipe) = child.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status.and_then(|s| s.code()), stdout, stderr)
}
