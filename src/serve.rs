//! Running herdgate: `serve` (everything in one process), `gateway` (HTTP,
//! inventory, relay and sweeper) and `writer` (RabbitMQ to PostgreSQL) as separate
//! processes, so each half scales on its own.

use std::sync::{Arc, atomic::Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    app::App, broker::Broker, config::Config, holds::Store, http, relay::Relay, shutdown,
    sweeper::Sweeper, writer::Writer,
};

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Gateway and writer together: the single-machine default.
    All,
    /// HTTP API, inventory loader, relay and sweeper.
    Gateway,
    /// Consumes hold events and writes them to PostgreSQL.
    Writer,
}

/// Runs `role` until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config, role: Role) -> anyhow::Result<()> {
    let stop = shutdown::signal();
    if role == Role::Writer {
        let addr = config.writer.metrics_addr;
        let metrics = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr} (HERDGATE_METRICS_ADDR)"))?;
        return run_writer_with_metrics(config, metrics, stop).await;
    }
    if config.uses_dev_secret() {
        tracing::warn!(
            "HERDGATE_TOKEN_SECRET is not set: tokens are signed with the public development secret"
        );
    }
    // Every connection holds a socket; the usual soft limit of 1,024 is far too few.
    let sockets = config.http.max_connections.max(config.http.max_in_flight);
    if let Err(e) = crate::limits::raise_open_files(sockets) {
        tracing::warn!(
            error = format!("{e:#}"),
            "the open-files limit caps connections"
        );
    }
    let addr = config.http.addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr} (HERDGATE_ADDR)"))?;
    run(config, role, listener, stop).await
}

/// Serves on `listener` until `stop` resolves, then drains HTTP and stops the
/// background parts. Tests call this with their own listener and stop future.
pub async fn run(
    config: Config,
    role: Role,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = Arc::new(App::connect(config).await?);
    if let Err(e) = app.inventory.sync().await {
        // Not fatal: the inventory task retries, and reads answer 404 or 503 meanwhile.
        tracing::warn!(error = format!("{e:#}"), "initial inventory load failed");
    }
    match app.users.reload().await {
        Ok(count) => tracing::info!(count, "user ids loaded"),
        // Not fatal: unknown ids are looked up on first use, and reloads retry.
        Err(e) => tracing::warn!(error = %e, "initial user id load failed"),
    }
    let token = CancellationToken::new();
    // Background tasks stop even when this future is dropped rather than finished.
    let _stop_tasks = token.clone().drop_guard();
    let tasks = TaskTracker::new();
    let config = &app.config;
    tasks.spawn(
        app.inventory
            .clone()
            .run(config.inventory_interval, token.clone()),
    );
    tasks
        .spawn(Relay::new(app.store.clone(), app.broker.clone(), &config.holds).run(token.clone()));
    tasks.spawn(app.users.clone().run(config.users_interval, token.clone()));
    let metrics = app.metrics;
    let upkeep = token.clone();
    tasks.spawn(async move {
        // Histograms drain into their buckets here, not on the request path.
        while !upkeep.is_cancelled() {
            tokio::select! {
                _ = upkeep.cancelled() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => metrics.run_upkeep(),
            }
        }
    });
    tasks.spawn(
        Sweeper::new(
            app.store.clone(),
            config.holds.sweep_interval,
            config.holds.scan_interval,
        )
        .run(token.clone()),
    );
    if role == Role::All {
        tasks.spawn(
            Writer::new(
                app.pg.clone(),
                app.broker.clone(),
                app.store.clone(),
                config.writer.clone(),
            )
            .run(token.clone()),
        );
    }
    tracing::info!(addr = %listener.local_addr()?, ?role, "herdgate listening");
    let drain_delay = config.http.drain_delay;
    let app_draining = app.clone();
    let stop = async move {
        stop.await;
        if !drain_delay.is_zero() {
            // A load balancer polling /readyz sees 503 and stops sending new requests.
            app_draining.draining.store(true, Ordering::Relaxed);
            tracing::info!(?drain_delay, "not ready any more; draining after the delay");
            tokio::time::sleep(drain_delay).await;
        }
    };
    http::serve(listener, app.clone(), stop).await;
    token.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("herdgate stopped");
    Ok(())
}

/// `herdgate writer` as started from the command line: the writer, and its
/// `/metrics` on `metrics` (it has no API to serve them on).
pub async fn run_writer_with_metrics(
    config: Config,
    metrics: TcpListener,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let handle = crate::metric::install();
    let token = CancellationToken::new();
    let _stop_tasks = token.clone().drop_guard();
    tracing::info!(addr = %metrics.local_addr()?, "herdgate writer serving /metrics");
    let server = tokio::spawn(http::metrics_only::serve(metrics, handle, token.clone()));
    let upkeep = token.clone();
    tokio::spawn(async move {
        while !upkeep.is_cancelled() {
            tokio::select! {
                _ = upkeep.cancelled() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => handle.run_upkeep(),
            }
        }
    });
    let result = run_writer(config, stop).await;
    token.cancel();
    let _ = server.await;
    result
}

/// `herdgate writer`: only the RabbitMQ-to-PostgreSQL half.
pub async fn run_writer(config: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let pg = config
        .pg
        .pool()
        .context("failed to set up PostgreSQL pool")?;
    let broker = Arc::new(Broker::new(&config.amqp));
    // Redis only takes the outbox entries of committed events: it may come later.
    let store = Store::connect_in_background(&config.redis)?;
    let token = CancellationToken::new();
    let writer =
        tokio::spawn(Writer::new(pg, broker, store, config.writer.clone()).run(token.clone()));
    tracing::info!("herdgate writer running");
    stop.await;
    token.cancel();
    writer.await.context("writer task panicked")?;
    tracing::info!("herdgate writer stopped");
    Ok(())
}
