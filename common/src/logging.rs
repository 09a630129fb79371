//! The daemons' own log: to stderr and to a daily-rolling file in the log dir
//! (tracing-appender), every line redacted ([`crate::secrets`]).

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::secrets::Redacting;

/// What no `RUST_LOG` turns up: rmcp's OAuth code logs authorization codes and token
/// responses at debug level.
const CAPPED: &str = "rmcp::transport::auth=info";

/// Logs to stderr and to `LOG_DIR/FILE_PREFIX.YYYY-MM-DD` (rolling daily), filtered by
/// `RUST_LOG` or else `default_filter` (with rmcp's OAuth module never below info), every
/// line passed through [`crate::secrets::global`]'s redaction. Keep the returned guard
/// alive: dropping it flushes.
pub fn init_tracing(
    log_dir: &Path,
    file_prefix: &str,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    let file = tracing_appender::rolling::daily(log_dir, file_prefix);
    let (file, guard) = tracing_appender::non_blocking(file);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let filter = match CAPPED.parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(Redacting(std::io::stderr)))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Redacting(file)),
        )
        .init();
    guard
}
