//! What MCP generation costs in mag-server (issue 5): a round relayed through
//! `POST /api/mcp/generate` against the same scripted answer streamed straight from the
//! endpoint, and the conversation endpoints, on the embedded store and on the MongoDB
//! store (against SecantusDB, the tests' MongoDB-wire server).
//!
//! The model is the tests' scripted OpenAI-compatible endpoint (`mag_tests::llm`), which
//! streams without pauses, so what a round costs beyond the direct stream is mag-server's
//! own work: reading the conversation, building the system prompt (mcp-client's tools),
//! relaying every chunk as SSE, parsing the sections and storing the round.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mag_tests::llm::{Reply, ScriptedLlm};
use mag_tests::mag::{MagOptions, MagServer};
use mag_tests::mongo::Secantus;
use serde_json::{Value, json};

use crate::{Report, percentiles, rss_mib, spread};

const API_KEY: &str = "sk-bench";
/// Rounds per sample (each a new conversation, as an operator's first round is).
const ROUNDS: usize = 30;
/// Reads per sample of the conversation endpoints.
const READS: usize = 200;

/// A design answer of about 2 KiB (52 chunks of 40 characters), with every section.
fn answer() -> String {
    let script = "def reverse(text: str) -> str:\n    return text[::-1]\n".repeat(28);
    format!(
        "<analysis>One tool.</analysis><todo>none</todo><folder_name>bench_tool</folder_name>\
         <script_file name=\"main.py\">{script}</script_file>\
         <dependencies>mcp>=2,<3</dependencies><readme># bench_tool</readme>"
    )
}

/// Times one streamed request: (time to the first chunk of text, time to `[DONE]`, the
/// body). It carries the scripted endpoint's key (mag-server, without a token, pays it no
/// heed).
async fn stream(http: &reqwest::Client, url: &str, body: &Value) -> (Duration, Duration, String) {
    let started = Instant::now();
    let response = http
        .post(url)
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .expect("POST");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mut bytes = response.bytes_stream();
    let mut seen = Vec::new();
    let mut first = None;
    while let Some(piece) = bytes.next().await {
        seen.extend_from_slice(&piece.expect("the stream"));
        if first.is_none() && seen.windows(9).any(|w| w == b"\"content\"") {
            first = Some(started.elapsed());
        }
        if seen.ends_with(b"data: [DONE]\n\n") {
            break;
        }
    }
    let total = started.elapsed();
    let text = String::from_utf8_lossy(&seen).into_owned();
    (first.expect("a chunk of text"), total, text)
}

/// [`stream`] of one generation round, which must have been stored.
async fn round_via(http: &reqwest::Client, url: &str, body: &Value) -> (Duration, Duration) {
    let (first, total, text) = stream(http, url, body).await;
    assert!(
        text.contains("\"saved\""),
        "the round was not stored: {text}"
    );
    (first, total)
}

/// The median of `samples` in ms (the bench's [`percentiles`]).
fn p50_ms(mut samples: Vec<Duration>) -> f64 {
    percentiles(&mut samples).0 / 1e3
}

async fn read_p50(http: &reqwest::Client, url: &str) -> f64 {
    let mut samples = Vec::with_capacity(READS);
    for _ in 0..READS {
        let started = Instant::now();
        let response = http.get(url).send().await.expect("GET");
        assert!(response.status().is_success(), "{url}");
        response.bytes().await.expect("body");
        samples.push(started.elapsed());
    }
    p50_ms(samples)
}

/// Adds the generation rows for one store (`label`; `env` selects it) to `report`.
async fn one_store(report: &mut Report, runs: usize, label: &str, env: Vec<(String, String)>) {
    let llm = ScriptedLlm::start(API_KEY, vec![]);
    let settings = tempfile::tempdir().unwrap();
    let path = settings.path().join("mag-server.toml");
    std::fs::write(
        &path,
        format!(
            "[[models]]\nname = \"scripted\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_LLM_KEY\"\n\
             model = \"m\"\n",
            llm.base_url()
        ),
    )
    .unwrap();
    let mut all_env = vec![("BENCH_LLM_KEY".to_owned(), API_KEY.to_owned())];
    all_env.extend(env);
    let mag = MagServer::start_with(MagOptions {
        servers: json!({}),
        args: vec!["--config".into(), path.display().to_string()],
        env: all_env,
        ..MagOptions::default()
    });
    mag.wait_running().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    let direct_url = format!("{}/chat/completions", llm.base_url());
    let direct_body = json!({
        "model": "m", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "A tool that reverses text."}],
    });
    let generate_url = format!("{}/api/mcp/generate", mag.base);
    let round = json!({"requirement": "A tool that reverses text.", "model_name": "scripted"});
    // One warm-up round each way (connections, the store's first write, page cache).
    llm.push(Reply::text(answer()));
    stream(&http, &direct_url, &direct_body).await;
    llm.push(Reply::text(answer()));
    round_via(&http, &generate_url, &round).await;

    let (mut first_via, mut first_direct, mut total_via, mut total_direct, mut added) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (mut fd, mut td, mut fv, mut tv) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            llm.push(Reply::text(answer()));
            let (first, total, _) = stream(&http, &direct_url, &direct_body).await;
            fd.push(first);
            td.push(total);
            llm.push(Reply::text(answer()));
            let (first, total) = round_via(&http, &generate_url, &round).await;
            fv.push(first);
            tv.push(total);
        }
        let (fd, td, fv, tv) = (p50_ms(fd), p50_ms(td), p50_ms(fv), p50_ms(tv));
        first_direct.push(fd);
        total_direct.push(td);
        first_via.push(fv);
        total_via.push(tv);
        added.push(tv - td);
    }
    report.row(
        format!("generation ({label}): first chunk direct / via mag-server (p50)"),
        format!(
            "{} ; {}",
            spread(&first_direct, "ms"),
            spread(&first_via, "ms")
        ),
    );
    report.row(
        format!("generation ({label}): 2 KiB round direct / via mag-server (p50)"),
        format!(
            "{} ; {}",
            spread(&total_direct, "ms"),
            spread(&total_via, "ms")
        ),
    );
    report.row(
        format!("generation ({label}): added per round (p50)"),
        spread(&added, "ms"),
    );

    let stored = 2 + runs * ROUNDS;
    let (_, list) = mag.get("/api/mcp/conversations?limit=1").await;
    let id = list["conversations"][0]["_id"]
        .as_str()
        .expect("a conversation")
        .to_owned();
    let (mut lists, mut details) = (vec![], vec![]);
    for _ in 0..runs {
        lists.push(read_p50(&http, &format!("{}/api/mcp/conversations", mag.base)).await);
        details.push(read_p50(&http, &format!("{}/api/mcp/conversations/{id}", mag.base)).await);
    }
    report.row(
        format!(
            "generation ({label}): list {} of {stored} conversations (p50)",
            stored.min(200)
        ),
        spread(&lists, "ms"),
    );
    report.row(
        format!("generation ({label}): one conversation (p50)"),
        spread(&details, "ms"),
    );
    report.row(
        format!("generation ({label}): mag-server RSS after {stored} rounds"),
        format!("{:.1} MiB", rss_mib(mag.proc.pid())),
    );
}

/// The generation rows: the embedded store, then MongoDB's wire protocol on SecantusDB
/// (a Python server: its figures are SecantusDB's, not a real MongoDB's).
pub async fn run(report: &mut Report, runs: usize) {
    one_store(report, runs, "embedded", vec![]).await;
    let secantus = Secantus::start();
    let env = vec![
        ("MONGODB_URL".to_owned(), secantus.uri()),
        ("MONGODB_DB".to_owned(), "mag_bench".to_owned()),
    ];
    one_store(report, runs, "MongoDB wire, SecantusDB", env).await;
}
