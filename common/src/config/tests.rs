use super::*;

fn parse(text: &str) -> Result<McpConfig, ConfigError> {
    McpConfig::parse(text)
}

#[test]
fn infers_transport_and_reads_every_field() {
    let config = parse(
        r#"{"mcpServers": {
            "a": {"command": "npx", "args": ["-y", "x"], "env": {"K": "v"}, "cwd": "/tmp",
                  "disabled": true, "timeout": 2.5, "autoApprove": ["t"], "autoConnect": true,
                  "ai_generated": true, "maxConcurrency": 4},
            "b": {"url": "http://127.0.0.1:1/mcp", "headers": {"X": "y"}},
            "c": {"type": "sse", "url": "http://127.0.0.1:1/sse"},
            "d": {"transportType": "streamable-http", "url": "https://h/mcp"},
            "e": {"type": "http", "url": "https://h/mcp"}
        }}"#,
    )
    .unwrap();
    let a = &config.servers["a"];
    assert_eq!(a.transport, TransportType::Stdio);
    assert_eq!(a.args, ["-y", "x"]);
    assert_eq!(a.env["K"], "v");
    assert_eq!(a.cwd.as_deref(), Some(std::path::Path::new("/tmp")));
    assert!(a.disabled && a.auto_connect && a.ai_generated);
    assert_eq!(a.timeout, Duration::from_millis(2500));
    assert_eq!(a.auto_approve, ["t"]);
    assert_eq!(a.max_concurrency, Some(4));
    assert_eq!(config.servers["b"].transport, TransportType::StreamableHttp);
    assert_eq!(config.servers["b"].timeout, DEFAULT_TIMEOUT);
    assert_eq!(config.servers["c"].transport, TransportType::Sse);
    assert_eq!(config.servers["d"].transport, TransportType::StreamableHttp);
    assert_eq!(config.servers["e"].transport, TransportType::StreamableHttp);
}

#[test]
fn keeps_unknown_fields() {
    let config =
        parse(r#"{"x": 1, "mcpServers": {"a": {"command": "c", "note": {"k": [1]}}}}"#).unwrap();
    assert_eq!(config.extra["x"], 1);
    assert_eq!(
        config.servers["a"].extra["note"],
        serde_json::json!({"k": [1]})
    );
}

#[test]
fn an_empty_server_list_is_valid_a_missing_one_is_not() {
    assert!(parse(r#"{"mcpServers": {}}"#).unwrap().servers.is_empty());
    for text in ["{}", r#"{"mcpservers": {"a": {"command": "x"}}}"#] {
        let err = parse(text).unwrap_err();
        assert!(err.message.contains("no \"mcpServers\""), "{text}: {err:?}");
        assert_eq!(err.line, 1, "{err:?}");
    }
    assert!(McpConfig::from_value(serde_json::json!({})).is_err());
}

#[test]
fn duplicate_keys_are_refused_at_the_top_and_in_entries() {
    let twice = "{\"mcpServers\": {}, \"mcpServers\": {\"a\": {\"command\": \"x\"}}}";
    assert!(parse(twice).unwrap_err().message.contains("twice"));
    let extra = r#"{"mcpServers": {}, "x": 1, "x": 2}"#;
    assert!(parse(extra).unwrap_err().message.contains("twice"));
    let field = r#"{"mcpServers": {"a": {"command": "x", "command": "y"}}}"#;
    let err = parse(field).unwrap_err();
    assert!(
        err.message.contains("\"command\" is given twice"),
        "{err:?}"
    );
}

#[test]
fn positions_are_shown_only_when_known() {
    assert_eq!(ConfigError::whole("bad").to_string(), "bad");
    let err = parse("{").unwrap_err();
    assert!(err.to_string().contains("(line 1, column 1)"), "{err}");
}

#[test]
fn secret_values_are_the_expanded_references() {
    let config = parse(
        r#"{"mcpServers": {
            "a": {"url": "http://h/${KEY}?t=${TOKEN}", "headers": {"A": "Bearer ${TOKEN}"}},
            "b": {"command": "x", "args": ["--k=${ARG}"], "env": {"E": "${UNSET}"}}
        }}"#,
    )
    .unwrap();
    let lookup = |name: &str| (name != "UNSET").then(|| format!("value-of-{name}"));
    assert_eq!(
        config.secret_values(lookup),
        [
            ("value-of-ARG".to_string(), "${ARG}".to_string()),
            ("value-of-KEY".to_string(), "${KEY}".to_string()),
            ("value-of-TOKEN".to_string(), "${TOKEN}".to_string()),
        ]
    );
}

#[test]
fn only_regular_files_within_the_limit_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcp.json");
    std::fs::write(&file, "{}").unwrap();
    assert_eq!(read_regular_file(&file, 10).unwrap(), b"{}");
    let err = read_regular_file(&file, 1).unwrap_err();
    assert!(
        err.to_string().contains("over the config size limit"),
        "{err}"
    );
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert_eq!(read_regular_file(&link, 10).unwrap(), b"{}");
    let fifo = dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = read_regular_file(&fifo, 10).unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");
    let err = read_regular_file(std::path::Path::new("/dev/zero"), 10).unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
    let err = read_regular_file(dir.path(), 10).unwrap_err();
    assert!(err.to_string().contains("folder"), "{err}");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let err = parse("{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\",}\n").unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.column > 0, "{err:?}");
    assert!(!err.message.contains(" at line "), "{err:?}");
}

#[test]
fn validation_errors_name_the_server_and_have_a_position() {
    let cases = [
        (r#"{"mcpServers": {"a": {}}}"#, "needs \"command\""),
        (
            r#"{"mcpServers": {"a": {"type": "ws", "url": "http://h"}}}"#,
            "unknown transportType",
        ),
        (
            r#"{"mcpServers": {"a": {"type": "stdio", "url": "http://h"}}}"#,
            "non-empty \"command\"",
        ),
        (
            r#"{"mcpServers": {"a": {"type": "sse", "command": "x"}}}"#,
            "needs a \"url\"",
        ),
        (r#"{"mcpServers": {"a": {"url": "ftp://h"}}}"#, "not http"),
        (
            r#"{"mcpServers": {"a": {"command": "x", "timeout": 0}}}"#,
            "timeout",
        ),
        (
            r#"{"mcpServers": {"a": {"command": "x", "maxConcurrency": 0}}}"#,
            "maxConcurrency",
        ),
        (
            r#"{"mcpServers": {"a": {"command": "x", "args": ["${OPEN"]}}}"#,
            "malformed",
        ),
    ];
    for (text, needle) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.message.contains(needle), "{text}: {err:?}");
        assert!(err.message.contains("server \"a\""), "{text}: {err:?}");
        assert_eq!(err.line, 1, "{text}: {err:?}");
        assert!(err.column > 0, "{text}: {err:?}");
    }
}

#[test]
fn wrong_types_are_reported_at_their_place() {
    let err =
        parse("{\"mcpServers\": {\"a\": {\n\"command\": \"x\",\n\"args\": \"-v\"}}}").unwrap_err();
    assert_eq!(err.line, 3, "{err:?}");
    assert!(err.message.contains("invalid type"), "{err:?}");
    let err = parse(r#"{"mcpServers": []}"#).unwrap_err();
    assert!(err.message.contains("server entries"), "{err:?}");
}

#[test]
fn names_that_would_escape_the_log_dir_are_refused() {
    for name in ["", "../x", "a/b", "..", ".hidden", "a\\b", "a\u{0}b"] {
        let text = serde_json::json!({"mcpServers": {name: {"command": "x"}}}).to_string();
        assert!(parse(&text).is_err(), "{name:?} accepted");
    }
    assert!(validate_server_name("time-server_2.v1").is_ok());
}

#[test]
fn duplicate_names_are_refused() {
    let err =
        parse(r#"{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}"#).unwrap_err();
    assert!(err.message.contains("defined twice"), "{err:?}");
}

#[test]
fn from_value_validates_without_position() {
    let err =
        McpConfig::from_value(serde_json::json!({"mcpServers": {"a": {"args": []}}})).unwrap_err();
    assert_eq!((err.line, err.column), (0, 0));
    assert!(err.message.contains("server \"a\""), "{err:?}");
}

#[test]
fn expands_variables() {
    let lookup = |name: &str| (name == "HOME_X").then(|| "/h".to_string());
    assert_eq!(
        expand_vars("a${HOME_X}b${HOME_X}", lookup).unwrap(),
        "a/hb/h"
    );
    assert_eq!(
        expand_vars("plain $HOME_X", lookup).unwrap(),
        "plain $HOME_X"
    );
    assert_eq!(
        expand_vars("${NOPE}", lookup),
        Err(ExpandError::Unset("NOPE".into()))
    );
    assert!(matches!(
        expand_vars("${1X}", lookup),
        Err(ExpandError::Malformed(_))
    ));
    assert!(matches!(
        expand_vars("${X", lookup),
        Err(ExpandError::Malformed(_))
    ));
}

#[test]
fn revision_changes_with_the_bytes() {
    assert_eq!(revision(b"a"), revision(b"a"));
    assert_ne!(revision(b"a"), revision(b"b"));
    assert_eq!(revision(b"a").len(), 16);
}

#[test]
fn oauth_settings_are_read_and_checked() {
    let config = parse(
        r#"{"mcpServers": {
            "gh": {"url": "https://h/mcp", "oauth": {"client_id": "app", "client_secret": "${GH_SECRET}"}},
            "cc": {"url": "https://h/mcp", "oauth": {"grant_type": "client_credentials",
                   "client_id": "svc", "private_key_file": "/k.pem"}},
            "open": {"url": "https://h/mcp", "oauth": {}}
        }}"#,
    )
    .unwrap();
    let gh = config.servers["gh"].oauth.as_ref().unwrap();
    assert_eq!(gh.client_id.as_deref(), Some("app"));
    assert_eq!(gh.grant_type, GrantType::AuthorizationCode);
    let cc = config.servers["cc"].oauth.as_ref().unwrap();
    assert_eq!(cc.grant_type, GrantType::ClientCredentials);
    assert!(
        config.servers["gh"].extra.is_empty(),
        "oauth is a known field"
    );
    let secrets = config.secret_values(|name| (name == "GH_SECRET").then(|| "s3cret".into()));
    assert_eq!(
        secrets,
        [("s3cret".to_string(), "${GH_SECRET}".to_string())]
    );

    for (entry, why) in [
        (
            r#"{"command": "x", "oauth": {}}"#,
            "needs a streamable_http",
        ),
        (
            r#"{"url": "https://h", "oauth": {"client_id": " "}}"#,
            "must not be empty",
        ),
        (
            r#"{"url": "https://h", "oauth": {"grant_type": "client_credentials", "client_id": "a"}}"#,
            "client_credentials needs",
        ),
        (
            r#"{"url": "https://h", "oauth": {"grant_type": "implicit"}}"#,
            "unknown variant",
        ),
        (
            r#"{"url": "https://h", "oauth": {"scope": "x"}}"#,
            "unknown field",
        ),
    ] {
        let error = parse(&format!(r#"{{"mcpServers": {{"s": {entry}}}}}"#)).unwrap_err();
        assert!(error.to_string().contains(why), "{entry}: {error}");
    }
}

#[test]
fn remote_keys_are_known_and_a_stdio_entry_may_ask_for_one() {
    let config = parse(
        r#"{"mcpServers": {
            "gh": {"url": "https://h/mcp?k=${URL_KEY}", "headers": {"Authorization": "Bearer ${HDR_KEY}"},
                   "oauth": {"client_id": "a", "client_secret": "${OAUTH_KEY}"}},
            "local": {"command": "x", "env": {"TOKEN": "${HDR_KEY}"}, "args": ["--k", "${ARG_KEY}"]}
        }}"#,
    )
    .unwrap();
    let names: Vec<String> = config.remote_secret_names().into_iter().collect();
    assert_eq!(names, ["HDR_KEY", "OAUTH_KEY", "URL_KEY"]);
    let local = &config.servers["local"];
    assert!(local.asks_for("HDR_KEY") && local.asks_for("ARG_KEY"));
    assert!(!local.asks_for("URL_KEY"));
}
