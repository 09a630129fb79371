//! What mcp-client and mag-server share, so that they compile against one contract: the
//! `mcp.json` types ([`config`], SPEC §3), mcp-client's API on the wire ([`wire`], SPEC §4),
//! the HTTP edge every request of either daemon passes ([`http_edge`], SPEC §6), secret
//! redaction ([`secrets`]), atomic file writes ([`fs`]), the daemons' log ([`logging`]), `/proc` ([`procfs`]) and process
//! groups ([`process_group`]).

pub mod config;
pub mod fs;
pub mod http_edge;
pub mod logging;
pub mod process_group;
pub mod procfs;
pub mod secrets;
pub mod wire;

/// An error and its sources, joined by `: ` (reqwest's own text hides the cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a `T` is in `error`'s cause chain, looking also inside `io::Error`s (whose
/// `source` skips the error they wrap: rustls's errors reach reqwest as one).
pub fn has_cause<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        if cause.is::<T>() {
            return true;
        }
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && has_cause::<T>(inner)
        {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Installs ring as the process's TLS provider (reqwest is built without a default one).
/// Idempotent; call before building any `reqwest::Client`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
