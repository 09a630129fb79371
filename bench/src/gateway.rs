//! The MCP gateway (SPEC §8): an rmcp client over streamable HTTP calling the fast echo
//! server through `/servers/fast/mcp` (one server, transparent) and through `/mcp` (the
//! aggregate, `fast__echo`), against a direct stdio session in the same run; `tools/list`
//! of the aggregate over 20 servers, and a call among 320 tools (20 server-everything); the
//! memory an idle client session costs mcp-client.

use std::sync::Arc;
use std::time::Duration;

use mag_tests::Daemon;
use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::Peer;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

use super::{
    Api, LATENCY_CALLS, Report, Session, WARMUP_CALLS, direct_session, echo_server_entry,
    percentiles, rss_mib, spread, throughput, timed,
};

/// Idle client sessions opened for the memory figure.
const IDLE_SESSIONS: usize = 200;

/// An MCP session over streamable HTTP to `url`, protocol 2025-11-25.
async fn http_session(url: &str) -> Session {
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .expect("gateway handshake")
}

async fn call(peer: &Peer<RoleClient>, tool: &str) {
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(
        json!({"message": "ping"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let result = peer.call_tool_once(params).await.expect("gateway call");
    drop(result);
}

/// mcp-client with 20 servers `PREFIX00` … `PREFIX19` of `entry`, once all are connected.
async fn twenty_servers(prefix: &str, entry: Value) -> Daemon {
    let names: Vec<String> = (0..20).map(|i| format!("{prefix}{i:02}")).collect();
    let config: serde_json::Map<String, Value> = names
        .iter()
        .map(|name| {
            let mut entry = entry.clone();
            entry["autoConnect"] = json!(true);
            (name.clone(), entry)
        })
        .collect();
    let daemon = Daemon::start(Value::Object(config));
    wait_connected(&Api::new(&daemon), &names).await;
    daemon
}

/// Waits until every server of `names` is connected.
async fn wait_connected(api: &Api, names: &[String]) {
    for _ in 0..600 {
        let servers = api.get("/servers").await;
        if names.iter().all(|n| servers[n]["connected"] == true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the servers did not connect");
}

/// Runs the gateway figures into `report`.
pub async fn run(report: &mut Report, runs: usize) {
    let mut entry = echo_server_entry();
    entry["autoConnect"] = json!(true);
    let daemon = Daemon::start(json!({"fast": entry}));
    let api = Api::new(&daemon);
    wait_connected(&api, &["fast".to_string()]).await;
    let direct = direct_session(&echo_server_entry()).await;
    let one = http_session(&format!("{}/servers/fast/mcp", daemon.base)).await;
    let all = http_session(&format!("{}/mcp", daemon.base)).await;
    // The same server kind over rmcp's streamable HTTP with no gateway: the transport's floor.
    let port = mag_tests::free_port();
    let _http_server = mag_tests::Proc::spawn(
        std::process::Command::new(super::sibling("bench-echo-server"))
            .args(["--http", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    mag_tests::wait_for_port(port, Duration::from_secs(10));
    let bare = http_session(&format!("http://127.0.0.1:{port}/mcp")).await;
    let routes: [(&str, &Session, &str); 4] = [
        ("direct", &direct, "echo"),
        ("/servers/fast/mcp", &one, "echo"),
        ("/mcp", &all, "fast__echo"),
        ("rmcp HTTP, no gateway", &bare, "echo"),
    ];

    // Sequential latency, interleaved so all three see the same machine load.
    let mut p50s: Vec<[f64; 4]> = Vec::new();
    for _ in 0..runs {
        for _ in 0..WARMUP_CALLS {
            for (_, session, tool) in &routes {
                call(session.peer(), tool).await;
            }
        }
        let mut samples: [Vec<Duration>; 4] =
            std::array::from_fn(|_| Vec::with_capacity(LATENCY_CALLS));
        for _ in 0..LATENCY_CALLS {
            for (i, (_, session, tool)) in routes.iter().enumerate() {
                samples[i].push(timed(call(session.peer(), tool)).await);
            }
        }
        p50s.push(samples.map(|mut s| percentiles(&mut s).0));
    }
    let column = |i: usize| p50s.iter().map(|s| s[i]).collect::<Vec<_>>();
    report.row(
        "gateway: direct p50 ; via /servers/fast/mcp ; via /mcp",
        format!(
            "{} ; {} ; {}",
            spread(&column(0), "µs"),
            spread(&column(1), "µs"),
            spread(&column(2), "µs")
        ),
    );
    let added = |i: usize| p50s.iter().map(|s| s[i] - s[0]).collect::<Vec<_>>();
    report.row(
        "gateway: added p50, /servers/fast/mcp ; /mcp (target ≤ 150 µs)",
        format!("{} ; {}", spread(&added(1), "µs"), spread(&added(2), "µs")),
    );
    report.row(
        "rmcp streamable HTTP without the gateway (bench-echo-server --http): p50 ; added over direct",
        format!("{} ; {}", spread(&column(3), "µs"), spread(&added(3), "µs")),
    );
    let over_floor = |i: usize| p50s.iter().map(|s| s[i] - s[3]).collect::<Vec<_>>();
    report.row(
        "gateway: added p50 over rmcp HTTP without it, /servers/fast/mcp ; /mcp",
        format!(
            "{} ; {}",
            spread(&over_floor(1), "µs"),
            spread(&over_floor(2), "µs")
        ),
    );

    // Throughput at c = 64, each route against direct in the same repetition.
    let peers: Arc<Vec<(Peer<RoleClient>, &'static str)>> = Arc::new(vec![
        (direct.peer().clone(), "echo"),
        (one.peer().clone(), "echo"),
        (all.peer().clone(), "fast__echo"),
        (bare.peer().clone(), "echo"),
    ]);
    let mut ratios = [Vec::new(), Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..runs {
        let mut measured = [0f64; 4];
        for (i, rate) in measured.iter_mut().enumerate() {
            let peers = peers.clone();
            *rate = throughput(64, 6400, move |_| {
                let peers = peers.clone();
                async move {
                    let (peer, tool) = &peers[i];
                    call(peer, tool).await;
                }
            })
            .await;
        }
        for i in 0..3 {
            rates[i].push(measured[i + 1]);
            ratios[i].push(measured[i + 1] / measured[0] * 100.0);
        }
    }
    report.row(
        "gateway: throughput c=64, /servers/fast/mcp ; /mcp",
        format!(
            "{} ; {}",
            spread(&rates[0], "calls/s"),
            spread(&rates[1], "calls/s")
        ),
    );
    report.row(
        "gateway: throughput c=64 / direct, /servers/fast/mcp ; /mcp (target ≥ 80 %)",
        format!("{} ; {}", spread(&ratios[0], "%"), spread(&ratios[1], "%")),
    );
    report.row(
        "rmcp streamable HTTP without the gateway: throughput c=64 ; / direct",
        format!(
            "{} ; {}",
            spread(&rates[2], "calls/s"),
            spread(&ratios[2], "%")
        ),
    );
    for session in [direct, one, all, bare] {
        session.cancel().await.ok();
    }

    // Memory per idle client session.
    let pid = daemon.proc.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mib(pid);
    let mut idle = Vec::with_capacity(IDLE_SESSIONS);
    for _ in 0..IDLE_SESSIONS {
        idle.push(http_session(&format!("{}/mcp", daemon.base)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_session = (rss_mib(pid) - before) * 1024.0 / IDLE_SESSIONS as f64;
    report.row(
        format!("gateway: mcp-client memory per idle client session ({IDLE_SESSIONS} open)"),
        format!("{per_session:.1} KiB"),
    );
    for session in idle {
        session.cancel().await.ok();
    }
    drop(daemon);

    // tools/list of the aggregate over 20 servers.
    let daemon = twenty_servers("s", echo_server_entry()).await;
    let session = http_session(&format!("{}/mcp", daemon.base)).await;
    let listed = session.peer().list_all_tools().await.expect("tools/list");
    assert_eq!(listed.len(), 40, "20 servers × 2 tools");
    let mut lists = Vec::new();
    for _ in 0..runs {
        let mut samples = Vec::with_capacity(200);
        for _ in 0..200 {
            samples.push(timed(session.peer().list_all_tools()).await);
        }
        lists.push(percentiles(&mut samples).0 / 1000.0);
    }
    report.row(
        "gateway: tools/list of /mcp over 20 servers, p50 (target ≤ 2 ms)",
        spread(&lists, "ms"),
    );
    session.cancel().await.ok();
    drop(daemon);

    // tools/call of the aggregate over 20 server-everything (16 tools each): what resolving
    // a public name among 320 costs a call, against the same call on /servers/NAME/mcp.
    let daemon = twenty_servers("e", mag_tests::everything_entry()).await;
    let aggregate = http_session(&format!("{}/mcp", daemon.base)).await;
    let one = http_session(&format!("{}/servers/e19/mcp", daemon.base)).await;
    for _ in 0..WARMUP_CALLS {
        call(aggregate.peer(), "e19__echo").await;
        call(one.peer(), "echo").await;
    }
    let mut added = Vec::new();
    for _ in 0..runs {
        let (mut via_all, mut via_one) = (Vec::new(), Vec::new());
        for _ in 0..LATENCY_CALLS {
            via_all.push(timed(call(aggregate.peer(), "e19__echo")).await);
            via_one.push(timed(call(one.peer(), "echo")).await);
        }
        added.push(percentiles(&mut via_all).0 - percentiles(&mut via_one).0);
    }
    report.row(
        "gateway: tools/call of /mcp over 20 server-everything (320 tools), p50 over /servers/NAME/mcp",
        spread(&added, "µs"),
    );
    aggregate.cancel().await.ok();
    one.cancel().await.ok();
    drop(daemon);
}
