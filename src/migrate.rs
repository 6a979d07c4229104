//! Schema migrations: the plain SQL files in migrations/, applied in order by
//! refinery, each once (refinery records them in `refinery_schema_history`).
//!
//! The database is created when it does not exist, and an advisory lock keeps two
//! processes migrating at once from racing.

use anyhow::Context;
use tokio_postgres::{NoTls, error::SqlState};

use crate::config::Config;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Any constant shared by every herdgate process; "hgmigrat" in ASCII.
const MIGRATION_LOCK: i64 = 0x6867_6d69_6772_6174;

/// Applies the pending migrations; returns the names of those applied now.
pub async fn run(pg: &tokio_postgres::Config) -> anyhow::Result<Vec<String>> {
    ensure_database(pg).await?;
    let (mut client, connection) = pg.connect(NoTls).await.context("failed to connect")?;
    let connection = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("failed to take the migration lock")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("migration failed");
    drop(client);
    let _ = connection.await;
    Ok(report?
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// `herdgate migrate`.
pub async fn run_cli(config: &Config) -> anyhow::Result<()> {
    let applied = run(&config.pg.pg_config()).await?;
    if applied.is_empty() {
        println!("migrate: schema is up to date");
    }
    for name in applied {
        println!("migrate: applied {name}");
    }
    Ok(())
}

/// Creates the configured database when it is missing.
async fn ensure_database(pg: &tokio_postgres::Config) -> anyhow::Result<()> {
    let err = match pg.connect(NoTls).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => e,
        Err(e) => return Err(e).context("failed to connect to PostgreSQL (DATABASE_URL)"),
    };
    let name = pg.get_dbname().context("DATABASE_URL names no database")?;
    tracing::info!(database = name, cause = %err, "creating database");
    let mut maintenance = pg.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance
        .connect(NoTls)
        .await
        .context("failed to connect to the postgres database to create ours")?;
    tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Err(e) if e.code() != Some(&SqlState::DUPLICATE_DATABASE) => {
            Err(e).with_context(|| format!("failed to create database {name}"))
        }
        _ => Ok(()),
    }
}
