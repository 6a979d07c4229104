//! `herdgate serve`: the whole gateway in one process.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{app::App, config::Config, http, shutdown};

/// Binds HERDGATE_ADDR and serves until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let stop = shutdown::signal();
    if config.uses_dev_secret() {
        tracing::warn!(
            "HERDGATE_TOKEN_SECRET is not set: tokens are signed with the public development secret"
        );
    }
    let addr = config.http.addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr} (HERDGATE_ADDR)"))?;
    run(config, listener, stop).await
}

/// Serves on `listener` until `stop` resolves, then drains and stops the
/// background tasks. Tests call this with their own listener and stop future.
pub async fn run(
    config: Config,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = Arc::new(App::connect(config).await?);
    if let Err(e) = app.inventory.sync().await {
        // Not fatal: the inventory task retries, and reads answer 404 or 503 meanwhile.
        tracing::warn!(error = format!("{e:#}"), "initial inventory load failed");
    }
    let token = CancellationToken::new();
    // Background tasks stop even when this future is dropped rather than finished.
    let _stop_tasks = token.clone().drop_guard();
    let tasks = TaskTracker::new();
    tasks.spawn(
        app.inventory
            .clone()
            .run(app.config.inventory_interval, token.clone()),
    );
    tracing::info!(addr = %listener.local_addr()?, "herdgate listening");
    http::serve(listener, app, stop).await;
    token.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("herdgate stopped");
    Ok(())
}
