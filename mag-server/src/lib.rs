//! mag-server: the control plane (SPEC §5). It supervises mcp-client (adopts a running one
//! or spawns its own, restarts it with backoff behind a crash-loop guard, reconnects its
//! servers), edits `mcp.json` without ever losing an edit, and forwards MAG's `/api/mcp`
//! management API to it.
//!
//! Modules by concern: [`settings`] (CLI, `MAG_*` env and TOML merged), [`supervisor`]
//! (the mcp-client process), [`client`] (typed HTTP client to mcp-client with timeouts),
//! [`config_store`] (`mcp.json`: revision, atomic writes under a lock), [`control`] (every
//! operation, without HTTP), [`api`] (thin HTTP handlers), [`error`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config_store;
pub mod control;
pub mod error;
pub mod generation;
pub mod llm;
pub mod settings;
pub mod store;
pub mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

use crate::api::AppState;
use crate::client::McpClient;
use crate::config_store::ConfigStore;
use crate::control::ControlPlane;
use crate::generation::Generator;
use crate::generation::install::Toolsmith;
use crate::settings::Settings;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::supervisor::Supervisor;

/// How long requests in flight may take to finish once shutdown began; mcp-client's stop
/// (its grace period) runs meanwhile.
pub const DRAIN_BOUND: Duration = Duration::from_secs(5);

/// Runs mag-server on `listener` until `shutdown` resolves: supervises mcp-client and
/// serves the API; then stops taking requests, stops the mcp-client it spawned (an adopted
/// one is left running) and returns.
///
/// Once the data dir is locked and the store open, just before it serves, it prints one
/// line on stdout, `mag-server listening on http://ADDR`, for whoever started it (tests,
/// scripts): a mag-server that cannot start never prints it.
///
/// # Errors
/// Another mag-server holds the data dir, the store cannot be opened, the HTTP client
/// cannot be built.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<()> {
    if let Err(e) = std::fs::create_dir_all(&settings.data_dir) {
        tracing::warn!(
            "cannot create the data dir {}: {e}",
            settings.data_dir.display()
        );
    }
    let _data_dir_lock = lock_data_dir(&settings.data_dir)?;
    register_secrets(&settings);
    let conversations = open_store(&settings).await?;
    let smith = Toolsmith {
        tools_dir: settings.data_dir.join("tools"),
        log_dir: settings.log_dir.join("tools"),
        python: settings.python.clone(),
    };
    let store = Arc::new(ConfigStore::new(
        settings.mcp_config.clone(),
        settings.config_limit,
    ));
    // Installs a crash interrupted: kept when mcp.json lists them, else removed.
    match store.read().await {
        Ok(file) => smith.sweep(&file.servers()),
        Err(e) => tracing::warn!("interrupted tool installs are left as they are: {e}"),
    }
    let addr = listener.local_addr().map_err(|source| Error::Io {
        context: "cannot read the bound address".into(),
        source,
    })?;
    let client = McpClient::new(settings.client_listen)?;
    // Authorization servers send the browser back to mag-server, which forwards it.
    let oauth_redirect = settings
        .oauth_redirect_uri
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/oauth/callback"));
    let supervisor = Supervisor::new(&settings, client.clone(), store.clone(), oauth_redirect);
    supervisor.start();
    let plane = ControlPlane::new(
        store,
        client,
        supervisor.clone(),
        settings.connect_concurrency,
        smith.tools_dir.clone(),
    );
    let generator =
        match Generator::new(conversations, settings.models.clone(), plane.clone(), smith) {
            Ok(generator) => generator,
            Err(e) => {
                supervisor.shutdown().await;
                return Err(e);
            }
        };
    let edge = mag_common::http_edge::Edge {
        listen: addr,
        token: settings.api_token.as_ref().map(|t| t.expose().into()),
        bearer: settings.jwt.as_ref().map(|jwt| {
            crate::auth::JwtScheme::new(jwt) as Arc<dyn mag_common::http_edge::BearerScheme>
        }),
        open_paths: &["/health", "/oauth/callback"],
        allowed_origins: settings.allowed_origins.clone(),
        allowed_hosts: settings.allowed_hosts.clone(),
        body_limit: settings.body_limit,
    };
    let app = api::router(
        AppState {
            generator,
            plane,
            body_limit: settings.body_limit,
        },
        edge,
    );

    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    let max_connections = settings.max_connections;
    println!("mag-server listening on http://{addr}");
    tracing::info!(
        %addr,
        pid = std::process::id(),
        settings_file = ?settings.settings_file,
        mcp_config = %settings.mcp_config.display(),
        client = %settings.client_listen,
        "mag-server listening"
    );
    let mut server = tokio::spawn(mag_common::http_edge::serve(
        listener,
        app,
        max_connections,
        stopped,
    ));
    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            // The server ended by itself: an error.
            supervisor.shutdown().await;
            return match result {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Io { context: "the HTTP server task failed".into(), source: std::io::Error::other(e) }),
            };
        }
    }
    tracing::info!("shutting down: stopping mcp-client and the API");
    stop.cancel();
    let drain = async {
        match tokio::time::timeout(DRAIN_BOUND, &mut server).await {
            Ok(Err(e)) => tracing::error!("the HTTP server task failed: {e}"),
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!("requests still running after {DRAIN_BOUND:?}; dropping them");
                server.abort();
            }
        }
    };
    tokio::join!(drain, supervisor.shutdown());
    tracing::info!("stopped");
    Ok(())
}

/// Makes mag-server's secrets unprintable ([`mag_common::secrets`]): the API token, the
/// store's URL (it may hold a password), the JWT secret and the models' keys, as they are
/// in the environment.
fn register_secrets(settings: &Settings) {
    let mut values: Vec<String> = settings
        .secret_env()
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    // The store's password on its own too: a driver's error may name it without the URL.
    if let Some(url) = &settings.mongodb_url {
        values.extend(crate::store::url_secrets(url.expose()));
    }
    let values = values.into_iter().map(|value| (value, "***".to_string()));
    mag_common::secrets::global().set("mag-server", values);
}

/// The data dir's lock file, held (`flock`) for mag-server's life: one mag-server per data
/// dir, and a token file found at start belongs to a mag-server that has ended (the kernel
/// drops the lock of a process that died, even by SIGKILL). `None` (with a warning) when
/// the file cannot be opened or locked for another reason.
///
/// # Errors
/// [`Error::DataDirInUse`] when another mag-server holds it.
pub fn lock_data_dir(data_dir: &std::path::Path) -> Result<Option<std::fs::File>> {
    use std::fs::TryLockError;
    let path = data_dir.join(DATA_DIR_LOCK);
    let locked = std::fs::File::create(&path)
        .map_err(TryLockError::Error)
        .and_then(|file| file.try_lock().map(|()| file));
    match locked {
        Ok(file) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::DataDirInUse(data_dir.to_path_buf())),
        Err(TryLockError::Error(e)) => {
            tracing::warn!(
                "cannot lock {}: {e}; not locking the data dir",
                path.display()
            );
            Ok(None)
        }
    }
}

/// The data dir's lock file (see [`lock_data_dir`]).
pub const DATA_DIR_LOCK: &str = "mag-server.lock";

/// The conversation store: MongoDB when `MONGODB_URL` is set, else the embedded one in
/// `DATA_DIR/conversations.sqlite3`.
///
/// # Errors
/// [`Error::Store`]: the URL does not parse, the embedded file cannot be opened, or
/// `MONGODB_URL` is set in a build without the `mongodb` feature.
pub async fn open_store(settings: &Settings) -> Result<Store> {
    let store: Store = match &settings.mongodb_url {
        #[cfg(feature = "mongodb")]
        Some(url) => Arc::new(
            crate::store::mongo::MongoStore::connect(url.expose(), &settings.mongodb_db).await?,
        ),
        #[cfg(not(feature = "mongodb"))]
        Some(_) => {
            return Err(Error::Store(crate::store::StoreError::Unavailable(
                "MONGODB_URL is set, but this mag-server was built without MongoDB support: \
                 build it with the `mongodb` feature (the default; without \
                 --no-default-features)"
                    .into(),
            )));
        }
        None => Arc::new(EmbeddedStore::open(
            &settings.data_dir.join(EMBEDDED_STORE_FILE),
        )?),
    };
    tracing::info!(
        "conversations are kept in the {} store: {}",
        store.backend(),
        store.location()
    );
    Ok(store)
}

/// The embedded store's file, in the data dir.
pub const EMBEDDED_STORE_FILE: &str = "conversations.sqlite3";

/// Binds the API's listener, with a message that names the address on failure.
///
/// # Errors
/// [`Error::Io`]: the address is in use or not available.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("cannot listen on {addr}"),
        source,
    })
}
