//! `mcp.json`: the server list in the format of Claude Desktop, Cursor and MAG (SPEC §3).
//!
//! ```json
//! {"mcpServers": {"NAME": {"command": "npx", "args": ["-y", "pkg"], "env": {"K": "${K}"}}}}
//! ```
//!
//! Parsing keeps every field it does not know (on the file and on each entry) so a rewrite
//! loses nothing, reports every syntax and validation error with the line and column where it
//! was found, and never half-applies: a file either parses into a whole [`McpConfig`] or into
//! one [`ConfigError`]. `${VAR}` references are checked here and expanded at connect time by
//! [`expand_vars`], so a value never sits in the parsed config, a log line or an API answer.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Default for an entry's `timeout`: the connect handshake and each tool call, 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How mcp-client reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportType {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout
    /// (MCP spec 2025-11-25, Transports § stdio).
    Stdio,
    /// Legacy HTTP+SSE: GET an event stream whose `endpoint` event names the POST URL
    /// (MCP spec 2024-11-05, Transports § HTTP with SSE).
    Sse,
    /// Streamable HTTP: one endpoint taking POSTs, answering JSON or SSE
    /// (MCP spec 2025-03-26 and later, Transports § Streamable HTTP).
    StreamableHttp,
}

impl TransportType {
    /// Parses `transportType` / `type`: `stdio`, `sse`, `streamable_http`, and the aliases
    /// `streamable-http`, `streamableHttp` and `http`. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stdio" => Some(Self::Stdio),
            "sse" => Some(Self::Sse),
            "streamable_http" | "streamable-http" | "streamableHttp" | "http" => {
                Some(Self::StreamableHttp)
            }
            _ => None,
        }
    }

    /// The canonical name, as `/servers` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Sse => "sse",
            Self::StreamableHttp => "streamable_http",
        }
    }
}

/// One validated `mcpServers` entry.
///
/// Strings may hold `${VAR}` references (in `args`, `env`, `url`, `headers`); they are kept
/// unexpanded here. Two entries are equal when every field, unknown ones included, is equal:
/// that is what hot reload compares to decide whether a server changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    /// From `transportType` or its alias `type`; inferred when absent (`command` → stdio,
    /// `url` → streamable HTTP).
    pub transport: TransportType,
    /// stdio: the program, run without a shell (looked up on `PATH` when it has no `/`).
    pub command: Option<String>,
    /// stdio: its arguments.
    pub args: Vec<String>,
    /// stdio: variables added to the daemon's environment for the child.
    pub env: BTreeMap<String, String>,
    /// stdio: the child's working directory (default: the daemon's).
    pub cwd: Option<PathBuf>,
    /// sse / streamable_http: the endpoint (`http://` or `https://`).
    pub url: Option<String>,
    /// sse / streamable_http: headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// A disabled server is listed but never connected.
    pub disabled: bool,
    /// Bound on the connect handshake and on each tool call (`timeout`, seconds; default 60).
    pub timeout: Duration,
    /// `autoApprove`: tool names, kept and reported; mcp-client itself never asks.
    pub auto_approve: Vec<String>,
    /// `autoConnect`: connect when the daemon starts or when the entry is added.
    pub auto_connect: bool,
    /// `ai_generated`: the tool was written by MCP generation (SPEC §5).
    pub ai_generated: bool,
    /// `maxConcurrency`: at most this many calls in flight on the connection (default: no cap).
    pub max_concurrency: Option<usize>,
    /// `cancelOnDisconnect`: a REST caller that goes away mid-call cancels the call on the
    /// server (`notifications/cancelled`). Default `false`: the call runs to its end or its
    /// timeout and the result is dropped, since servers on older SDKs (Python `mcp` 1.9)
    /// crash on a cancellation of a call in flight, failing everyone's calls.
    pub cancel_on_disconnect: bool,
    /// `allowedTools`: when given, only these of the server's tools are exposed, on the MCP
    /// gateway and on the REST API (SPEC §8, tool filters).
    pub allowed_tools: Option<Vec<String>>,
    /// `disabledTools`: these tools are never exposed (applied after `allowedTools`).
    pub disabled_tools: Vec<String>,
    /// `oauth`: how mcp-client identifies itself to a remote server's authorization server
    /// (SPEC §10). Without it, a server that answers 401 is still authorized, with a
    /// registered or metadata-document client identity.
    pub oauth: Option<OAuthSettings>,
    /// Every other field, kept as written.
    pub extra: Map<String, Value>,
}

/// An entry's `oauth` object (SPEC §10): `{"client_id", "client_secret"?, "grant_type"?,
/// "private_key_file"?}`. `client_secret` may be a `${VAR}` reference (expanded at connect
/// time, never shown).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// A client id registered with the authorization server beforehand (`client_id`).
    /// Required for `client_credentials`; otherwise, without one, the client registers
    /// itself (a client ID metadata document, else RFC 7591 dynamic registration).
    pub client_id: Option<String>,
    /// Its secret, for `client_secret_basic` / `client_secret_post` (`client_secret`).
    pub client_secret: Option<String>,
    /// `authorization_code` (default: a user approves in a browser) or
    /// `client_credentials` (no user: RFC 6749 §4.4).
    #[serde(default)]
    pub grant_type: GrantType,
    /// `client_credentials` with `private_key_jwt` (RFC 7523): a PEM file holding the
    /// client's EC P-256 (ES256) or RSA (RS256) private key (`private_key_file`).
    pub private_key_file: Option<PathBuf>,
}

/// The OAuth grant an entry's `oauth.grant_type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// Authorization code with PKCE (RFC 6749 §4.1, RFC 7636): a user approves once.
    #[default]
    AuthorizationCode,
    /// Client credentials (RFC 6749 §4.4): the client authenticates as itself.
    ClientCredentials,
}

impl ServerEntry {
    /// Whether the entry's own `args` or `env` reference `${name}`: a stdio server that asks
    /// for a variable gets it (see [`McpConfig::remote_secret_names`]).
    pub fn asks_for(&self, name: &str) -> bool {
        self.local_texts()
            .any(|text| references(text).contains(&name))
    }

    /// The entry's texts that may reference `${VAR}`s for the server's own process: `args`
    /// and `env` values.
    fn local_texts(&self) -> impl Iterator<Item = &String> {
        self.args.iter().chain(self.env.values())
    }

    /// The entry's texts that may reference `${VAR}`s sent to a remote server: `headers`
    /// values, `url`, `oauth.client_secret`.
    fn remote_texts(&self) -> impl Iterator<Item = &String> {
        self.headers
            .values()
            .chain(self.url.iter())
            .chain(self.oauth.iter().filter_map(|o| o.client_secret.as_ref()))
    }

    /// Whether the tool named `tool` is exposed: listed in `allowedTools` when that is
    /// given, and not in `disabledTools`.
    pub fn exposes(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|name| name == tool))
            && !self.disabled_tools.iter().any(|name| name == tool)
    }

    /// Whether changing this entry into `new` needs a new session with the server. Fields
    /// read at each call (the tool filters, `autoApprove`, `cancelOnDisconnect`,
    /// `autoConnect`, `ai_generated`) change without one; any other field needs one.
    pub fn needs_reconnect(&self, new: &ServerEntry) -> bool {
        fn session_fields(entry: &ServerEntry) -> ServerEntry {
            ServerEntry {
                allowed_tools: None,
                disabled_tools: Vec::new(),
                auto_approve: Vec::new(),
                cancel_on_disconnect: false,
                auto_connect: false,
                ai_generated: false,
                ..entry.clone()
            }
        }
        session_fields(self) != session_fields(new)
    }
}

/// A whole `mcp.json`: the servers by name (sorted) and the file's other top-level fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpConfig {
    /// `mcpServers`, validated.
    pub servers: BTreeMap<String, ServerEntry>,
    /// Top-level fields other than `mcpServers`, kept as written.
    pub extra: Map<String, Value>,
}

/// Why a config was refused: the message and, when it came from text, where (1-based;
/// `line` and `column` are 0 when the config did not come from text, e.g. `/load_config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}{}", position(*.line, *.column))]
pub struct ConfigError {
    /// What is wrong, naming the server and field where there is one.
    pub message: String,
    /// 1-based line of the error, 0 if unknown.
    pub line: usize,
    /// 1-based column of the error, 0 if unknown.
    pub column: usize,
}

/// " (line L, column C)", or nothing for a config that did not come from text.
fn position(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (line {line}, column {column})")
    }
}

impl ConfigError {
    /// An error about the config as a whole, with no position in it.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: 0,
            column: 0,
        }
    }
}

impl From<serde_json::Error> for ConfigError {
    fn from(error: serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to the message; keep the position apart.
        let text = error.to_string();
        let message = match text.rfind(" at line ") {
            Some(at) if error.line() > 0 => text[..at].to_string(),
            _ => text,
        };
        Self {
            message,
            line: error.line(),
            column: error.column(),
        }
    }
}

impl McpConfig {
    /// Parses and validates the text of an `mcp.json`.
    ///
    /// # Errors
    /// The first syntax or validation error, with its line and column.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config = ConfigSeed.deserialize(&mut de)?;
        de.end()?;
        Ok(config)
    }

    /// Validates an already-parsed JSON document (e.g. the body of `/load_config`).
    ///
    /// # Errors
    /// The first validation error; `line` and `column` are 0.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        Ok(ConfigSeed.deserialize(value)?)
    }
}

/// An opaque revision of a config file's bytes: 16 hex digits of their SHA-256.
/// Equal bytes give equal revisions; mag-server uses it for optimistic concurrency.
pub fn revision(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..8])
}

/// A `${VAR}` reference that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The variable is not set in the daemon's environment.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// `${` without a closing `}`, or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("malformed variable reference: {0}")]
    Malformed(String),
}

/// Expands every `${VAR}` in `text` with `lookup` (normally `std::env::var`).
///
/// # Errors
/// [`ExpandError::Unset`] when `lookup` has no value, [`ExpandError::Malformed`] for `${`
/// without `}` or a bad name. Error texts name the variable, never a value.
pub fn expand_vars(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ExpandError::Malformed(rest[start..].to_string()))?;
        let name = &after[..end];
        if !is_var_name(name) {
            return Err(ExpandError::Malformed(format!("${{{name}}}")));
        }
        out.push_str(&lookup(name).ok_or_else(|| ExpandError::Unset(name.to_string()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable names `text` references as `${VAR}` (well-formed ones only).
pub fn references(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        if is_var_name(&after[..end]) {
            names.push(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    names
}

impl McpConfig {
    /// The variables whose values are meant for remote servers: those `${VAR}` references
    /// in any entry's `url`, `headers` or `oauth.client_secret` name. mcp-client keeps them
    /// from stdio servers that do not reference them themselves ([`ServerEntry::asks_for`]).
    pub fn remote_secret_names(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for entry in self.servers.values() {
            let texts = entry.remote_texts();
            names.extend(texts.flat_map(|text| references(text)).map(str::to_string));
        }
        names
    }

    /// What the `${VAR}` references of every entry (in `args`, `env`, `url`, `headers`,
    /// `oauth.client_secret`) expand to with `lookup`, each with the reference it is shown as (`${VAR}`): the
    /// secrets to redact from every log line and answer ([`crate::secrets`]).
    pub fn secret_values(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut found = std::collections::BTreeMap::new();
        for entry in self.servers.values() {
            let texts = entry.local_texts().chain(entry.remote_texts());
            for name in texts.flat_map(|text| references(text)) {
                if let Some(value) = lookup(name) {
                    found.insert(value, format!("${{{name}}}"));
                }
            }
        }
        found.into_iter().collect()
    }
}

/// The longest a config file read may take before it counts as failed (a file on a hung
/// network filesystem); the watcher goes on either way.
pub const CONFIG_READ_BOUND: Duration = Duration::from_secs(5);

/// Default limit on the size of a config file, in bytes (4 MiB; `--config-limit`).
pub const DEFAULT_CONFIG_LIMIT: u64 = 4 * 1024 * 1024;

/// Reads a config file that must be a regular file (after following symlinks) of at most
/// `limit` bytes. Blocking: call it off the async threads. It never blocks on what is not a
/// regular file: the file is opened non-blocking and checked on the opened descriptor, so a
/// FIFO or a device swapped in between is refused, not waited on.
///
/// # Errors
/// `NotFound` and the other OS errors; `InvalidData` for a FIFO, a device, a folder or a
/// file over the limit, with a message saying which.
pub fn read_regular_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(invalid(format!(
                "{} is not a regular file (a {}); only a regular file is read as a config",
                path.display(),
                kind_of(meta.file_type())
            )));
        }
        if meta.len() > limit {
            return Err(invalid(format!(
                "{} is {} bytes, over the config size limit of {limit} bytes",
                path.display(),
                meta.len()
            )));
        }
        Ok(())
    };
    check(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    check(&file.metadata()?)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "{} grew over the config size limit of {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "folder"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Checks a server name that becomes part of a file name (`logs/servers/NAME.stderr.log`):
/// non-empty, at most 128 bytes, no `/`, `\`, NUL or `..`, not starting with `.`.
///
/// # Errors
/// A sentence saying what is wrong with it.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("server name is empty".into());
    }
    if name.len() > 128 {
        return Err(format!("server name {name:?} is longer than 128 bytes"));
    }
    if name.contains(['/', '\\', '\0']) || name.contains("..") || name.starts_with('.') {
        return Err(format!(
            "server name {name:?} may not contain '/', '\\', NUL or '..', nor start with '.'"
        ));
    }
    Ok(())
}

struct ConfigSeed;

impl<'de> DeserializeSeed<'de> for ConfigSeed {
    type Value = McpConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<McpConfig, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConfigSeed {
    type Value = McpConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object like {"mcpServers": {...}}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<McpConfig, A::Error> {
        let mut config = McpConfig::default();
        let mut servers = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "mcpServers" {
                if servers.is_some() {
                    return Err(de::Error::custom("\"mcpServers\" is given twice"));
                }
                servers = Some(map.next_value_seed(ServersSeed)?);
            } else {
                let value = map.next_value::<Value>()?;
                if config.extra.insert(key.clone(), value).is_some() {
                    return Err(de::Error::custom(format!("{key:?} is given twice")));
                }
            }
        }
        // A config without the key is a typo (`mcpservers`) or a mistake (`{}`), never a
        // wish to remove every server: that is `{"mcpServers": {}}`.
        config.servers = servers.ok_or_else(|| {
            de::Error::custom(
                "no \"mcpServers\" object (the servers go under it, spelled so: \
                 {\"mcpServers\": {...}}; an empty one removes every server)",
            )
        })?;
        Ok(config)
    }
}

struct ServersSeed;

impl<'de> DeserializeSeed<'de> for ServersSeed {
    type Value = BTreeMap<String, ServerEntry>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ServersSeed {
    type Value = BTreeMap<String, ServerEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of server entries by name")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut servers = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            validate_server_name(&name).map_err(de::Error::custom)?;
            let raw = map.next_value_seed(RawEntrySeed)?;
            let entry = raw
                .validate()
                .map_err(|e| de::Error::custom(format!("server {name:?}: {e}")))?;
            if servers.insert(name.clone(), entry).is_some() {
                return Err(de::Error::custom(format!(
                    "server {name:?} is defined twice"
                )));
            }
        }
        Ok(servers)
    }
}

/// An entry as written, before the rules that tie fields together are checked.
#[derive(Default)]
struct RawEntry {
    transport: Option<String>,
    command: Option<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    headers: BTreeMap<String, String>,
    disabled: bool,
    timeout: Option<f64>,
    auto_approve: Vec<String>,
    auto_connect: bool,
    ai_generated: bool,
    max_concurrency: Option<usize>,
    cancel_on_disconnect: bool,
    allowed_tools: Option<Vec<String>>,
    disabled_tools: Vec<String>,
    oauth: Option<OAuthSettings>,
    extra: Map<String, Value>,
}

impl RawEntry {
    fn validate(self) -> Result<ServerEntry, String> {
        let transport = match &self.transport {
            Some(name) => TransportType::parse(name).ok_or_else(|| {
                format!(
                    "unknown transportType {name:?} (expected stdio, sse, streamable_http, \
                     streamable-http or http)"
                )
            })?,
            None if self.command.is_some() => TransportType::Stdio,
            None if self.url.is_some() => TransportType::StreamableHttp,
            None => return Err("needs \"command\" (stdio) or \"url\" (remote)".into()),
        };
        match transport {
            TransportType::Stdio => match &self.command {
                Some(command) if !command.trim().is_empty() => {}
                _ => return Err("a stdio server needs a non-empty \"command\"".into()),
            },
            TransportType::Sse | TransportType::StreamableHttp => match &self.url {
                Some(url)
                    if url.starts_with("http://")
                        || url.starts_with("https://")
                        || url.starts_with("${") => {}
                Some(url) => return Err(format!("url {url:?} is not http:// or https://")),
                None => {
                    return Err(format!("a {} server needs a \"url\"", transport.as_str()));
                }
            },
        }
        let timeout = match self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => {
                Duration::from_secs_f64(secs)
            }
            Some(secs) => {
                return Err(format!(
                    "timeout {secs} is not a number of seconds in (0, 86400]"
                ));
            }
        };
        if self.max_concurrency == Some(0) {
            return Err("maxConcurrency must be at least 1".into());
        }
        if let Some(oauth) = &self.oauth {
            if transport != TransportType::StreamableHttp {
                return Err("\"oauth\" needs a streamable_http server".into());
            }
            let clean = |text: &Option<String>| text.as_ref().is_none_or(|t| !t.trim().is_empty());
            if !clean(&oauth.client_id) || !clean(&oauth.client_secret) {
                return Err("oauth: client_id and client_secret must not be empty".into());
            }
            if oauth.grant_type == GrantType::ClientCredentials
                && (oauth.client_id.is_none()
                    || (oauth.client_secret.is_none() && oauth.private_key_file.is_none()))
            {
                return Err(
                    "oauth: client_credentials needs client_id and client_secret or \
                            private_key_file"
                        .into(),
                );
            }
        }
        let entry = ServerEntry {
            transport,
            command: self.command,
            args: self.args,
            env: self.env,
            cwd: self.cwd,
            url: self.url,
            headers: self.headers,
            disabled: self.disabled,
            timeout,
            auto_approve: self.auto_approve,
            auto_connect: self.auto_connect,
            ai_generated: self.ai_generated,
            max_concurrency: self.max_concurrency,
            cancel_on_disconnect: self.cancel_on_disconnect,
            allowed_tools: self.allowed_tools,
            disabled_tools: self.disabled_tools,
            oauth: self.oauth,
            extra: self.extra,
        };
        for text in entry.local_texts().chain(entry.remote_texts()) {
            if let Err(ExpandError::Malformed(what)) = expand_vars(text, |_| Some(String::new())) {
                return Err(format!("malformed variable reference {what}"));
            }
        }
        Ok(entry)
    }
}

struct RawEntrySeed;

impl<'de> DeserializeSeed<'de> for RawEntrySeed {
    type Value = RawEntry;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawEntry, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawEntrySeed {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a server entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let mut raw = RawEntry::default();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("field {key:?} is given twice")));
            }
            match key.as_str() {
                "transportType" | "type" => raw.transport = Some(map.next_value()?),
                "command" => raw.command = Some(map.next_value()?),
                "args" => raw.args = map.next_value()?,
                "env" => raw.env = map.next_value()?,
                "cwd" => raw.cwd = map.next_value()?,
                "url" => raw.url = Some(map.next_value()?),
                "headers" => raw.headers = map.next_value()?,
                "disabled" => raw.disabled = map.next_value()?,
                "timeout" => raw.timeout = map.next_value()?,
                "autoApprove" => raw.auto_approve = map.next_value()?,
                "autoConnect" => raw.auto_connect = map.next_value()?,
                "ai_generated" => raw.ai_generated = map.next_value()?,
                "maxConcurrency" => raw.max_concurrency = map.next_value()?,
                "cancelOnDisconnect" => raw.cancel_on_disconnect = map.next_value()?,
                "allowedTools" => raw.allowed_tools = Some(map.next_value()?),
                "disabledTools" => raw.disabled_tools = map.next_value()?,
                "oauth" => raw.oauth = Some(map.next_value()?),
                _ => {
                    let value = map.next_value::<Value>()?;
                    raw.extra.insert(key, value);
                }
            }
        }
        Ok(raw)
    }
}

// `Deserialize` for callers that embed an entry in their own types (mag-server's add).
impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawEntrySeed
            .deserialize(deserializer)?
            .validate()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
