//! `GET /metrics`: Prometheus metrics of the daemon, in the OpenMetrics text format
//! (which Prometheus scrapes natively), through the official `prometheus-client` crate.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mcp_tool_calls_total` | counter | `server`, `tool` |
//! | `mcp_tool_call_errors_total` | counter | `server`, `tool`, `kind` = `tool_error` \| `timeout` \| `server_gone` \| `server_error` |
//! | `mcp_tool_call_duration_seconds` | histogram (1 ms to ~65 s) | `server`, `tool` |
//! | `mcp_reconnects_total` | counter | `server` |
//! | `mcp_connect_failures_total` | counter | `server`, `kind` = a failed connect's kind (`command_not_found`, `exited_early`, `handshake_timeout`, `refused`, `tls`, `http_status`, `protocol`, `config`, …; see `ConnectError`), cancelled connects not counted |
//! | `mcp_servers_connected` | gauge | |
//!
//! Labels only ever hold names from the config and from the servers' own tool lists (a call
//! to an unknown tool is refused before it is counted), so their number stays bounded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    server: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    server: String,
    tool: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    server: String,
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms, 2 ms, … 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The daemon's metrics; cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<CallLabels, Histogram, fn() -> Histogram>,
    reconnects: Family<ServerLabels, Counter>,
    connect_failures: Family<FailureLabels, Counter>,
    connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency: Family<CallLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let reconnects = Family::<ServerLabels, Counter>::default();
        let connect_failures = Family::<FailureLabels, Counter>::default();
        let connected = Gauge::default();
        registry.register(
            "mcp_tool_calls",
            "Tool calls sent to servers",
            calls.clone(),
        );
        registry.register(
            "mcp_tool_call_errors",
            "Tool calls that failed, by kind (tool_error, timeout, server_gone, server_error)",
            errors.clone(),
        );
        registry.register(
            "mcp_tool_call_duration_seconds",
            "Time from sending a tool call to its answer",
            latency.clone(),
        );
        registry.register(
            "mcp_reconnects",
            "Connections made again after a server was lost",
            reconnects.clone(),
        );
        registry.register(
            "mcp_connect_failures",
            "Connects that failed, by kind (command_not_found, exited_early, handshake_timeout, \
             refused, tls, http_status, protocol, config, ...)",
            connect_failures.clone(),
        );
        registry.register(
            "mcp_servers_connected",
            "Servers connected now",
            connected.clone(),
        );
        Self {
            registry,
            calls,
            errors,
            latency,
            reconnects,
            connect_failures,
            connected,
        }
    }
}

impl Metrics {
    /// Records one tool call: its duration and, if it failed, the kind of failure.
    pub fn call(&self, server: &str, tool: &str, elapsed: Duration, error: Option<&'static str>) {
        let labels = CallLabels {
            server: server.to_string(),
            tool: tool.to_string(),
        };
        self.calls.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            let labels = ErrorLabels {
                server: labels.server,
                tool: labels.tool,
                kind,
            };
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Records a connection made again after the server was lost.
    pub fn reconnect(&self, server: &str) {
        let labels = ServerLabels {
            server: server.to_string(),
        };
        self.reconnects.get_or_create(&labels).inc();
    }

    /// Records a failed connect of `kind` (a `ConnectError` code).
    pub fn connect_failure(&self, server: &str, kind: &'static str) {
        let labels = FailureLabels {
            server: server.to_string(),
            kind,
        };
        self.connect_failures.get_or_create(&labels).inc();
    }

    /// The metrics as OpenMetrics text, with `connected` as the current count of servers.
    pub fn render(&self, connected: usize) -> String {
        self.connected
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
