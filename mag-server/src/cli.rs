//! The `mag-server` program: its settings, the log, the runtime and the signals; the
//! binary only calls [`main`]. (Here rather than in `main.rs`, so the daemon is compiled
//! once, in the library, not again in the binary.)

use std::process::ExitCode;

use crate::settings::{Cli, Settings};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Reads the settings and runs mag-server until SIGTERM or SIGINT.
pub fn main() -> ExitCode {
    let settings = match Settings::resolve(Cli::parse()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mag-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&settings.log_dir) {
        eprintln!(
            "mag-server: cannot create the log dir {}: {e}",
            settings.log_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let _flush_on_exit =
        mag_common::logging::init_tracing(&settings.log_dir, "mag-server.log", "info");

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mag-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Installed before anything starts, so a signal never finds the default action.
        let shutdown = shutdown_signal();
        let listener = crate::bind(settings.listen).await?;
        let addr = listener.local_addr().map_err(|source| crate::Error::Io {
            context: "cannot read the bound address".into(),
            source,
        })?;
        if !addr.ip().is_loopback() && settings.api_token.is_none() {
            tracing::warn!(%addr, "the API listens beyond loopback without MAG_API_TOKEN");
        }
        crate::run(settings, listener, Box::pin(shutdown)).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mag-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
