//! The store: every row mailsync keeps, in SQLite (default) or PostgreSQL.
//!
//! One code path serves both backends through sqlx's `Any` driver: queries use `$N`
//! placeholders (both dialects accept them), integers are `BIGINT`/`INTEGER` (i64) and
//! flags are 0/1 integers, so no query needs a per-backend variant. Only the migrations
//! differ, one folder per dialect.
//!
//! Architecture invariant: the store does no I/O to mail servers; network code calls
//! these functions and never writes SQL itself.

mod accounts;
mod contact_sync;
mod copy;
mod crm;
mod dialect;
mod drop;
mod ingest;
mod links;
mod mail;
mod orgs;
mod outbox;
mod sql;
mod stats;

pub use accounts::*;
pub use contact_sync::{
    ContactSyncConfig, CrmContact, FlaggedCard, IGNORED, IMPORT_REQUESTED, LINK_REQUESTED, Resolution, SyncItem,
    SyncSettings,
};
pub use copy::{CopySummary, TableCount};
pub use crm::*;
pub use dialect::Backend;
pub use drop::{DropAddress, DropDelivery, DropOutcome, DropReceipt, DropUser};
pub use links::{LinkChange, LinkOrigin, LinkRequest, LinkState, LinkTarget, LinkView, one_entity};
pub use mail::*;
pub use orgs::{AutoCreate, OrgSettings};
pub use outbox::{
    AttemptEnd, NewOutgoing, OutboxEntry, OutboxStatus, OutgoingJob, PendingSentCopy, RecipientResult, RecipientState,
    Sender,
};
pub use stats::{ContactSyncStats, StoreStats};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// The store's schema is not the one this binary was built for.
    #[error("{0}")]
    Schema(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A quota is used up (e.g. the daily send limit); the same request works later.
    #[error("{0}")]
    Limit(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Worth retrying as is: the database was busy or unreachable for a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => {
                matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                    || e.as_database_error().is_some_and(|d| {
                        // SQLITE_BUSY / SQLITE_LOCKED; PostgreSQL serialization or deadlock.
                        matches!(d.code().as_deref(), Some("5" | "6" | "40001" | "40P01"))
                    })
            }
            StoreError::Connect { .. } => true,
            _ => false,
        }
    }

    /// The request itself is wrong and will fail again unchanged.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Invalid(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Set while a [`Store::refresh_statistics`] task runs, so later batches start none.
    analyzing: Arc<AtomicBool>,
}

impl Store {
    /// Opens the database (creating a SQLite file and its directory when missing).
    /// Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Store> {
        install_default_drivers();
        let redacted = redact_url(url);
        let connect_err = |reason: String| StoreError::Connect { url: redacted.clone(), reason };
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if file.is_empty() || file == ":memory:" {
                return Err(connect_err("a SQLite database needs a file path".into()));
            }
            if let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| connect_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else {
            (Backend::Postgres, url.to_string())
        };
        // The pool reports any failure as "timed out"; one direct attempt gives the cause
        // (refused, authentication failed, no such database).
        match tokio::time::timeout(timeout, AnyConnection::connect(&url)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(connect_err(one_line(&e))),
            Err(_) => return Err(connect_err(format!("no answer within {} s", timeout.as_secs()))),
        }
        let mut options = AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(timeout);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    for statement in dialect::SQLITE_CONNECTION_SETUP {
                        conn.execute(statement).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await.map_err(|e| connect_err(one_line(&e)))?;
        Ok(Store { pool, backend, analyzing: Arc::new(AtomicBool::new(false)) })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations of this backend's dialect.
    pub async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.pool).await.map_err(|e| StoreError::Migrate(one_line(&e)))
    }

    /// Checks that the store's schema is exactly this binary's, without changing it: only
    /// `run` and `migrate` migrate, so a newer CLI never upgrades a store under an older
    /// daemon, and an older CLI never writes into a schema it does not know.
    pub async fn check_schema(&self) -> Result<()> {
        let known: std::collections::BTreeSet<i64> =
            self.migrator().iter().filter(|m| m.migration_type.is_up_migration()).map(|m| m.version).collect();
        let applied: std::collections::BTreeSet<i64> =
            match sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(versions) => versions.into_iter().collect(),
                // The database refused the query: no migrations table yet, nothing applied.
                Err(sqlx::Error::Database(_)) => Default::default(),
                Err(e) => return Err(e.into()),
            };
        if let Some(unknown) = applied.difference(&known).last() {
            return Err(StoreError::Schema(format!(
                "the store's schema is newer than this binary (migration {unknown} is unknown to it): \
                 upgrade mailsync to the version the daemon runs"
            )));
        }
        let pending = known.difference(&applied).count();
        if pending > 0 {
            return Err(StoreError::Schema(format!(
                "the store's schema is older than this binary ({pending} of {} migrations pending): \
                 run `mailsync migrate` (the daemon's `mailsync run` also migrates at start)",
                known.len()
            )));
        }
        Ok(())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begins a transaction that will write. Every store transaction does: on SQLite it
    /// takes the write lock at BEGIN (IMMEDIATE), because a deferred transaction that
    /// reads first fails at once with SQLITE_BUSY when another writer got in between,
    /// instead of waiting for the busy timeout.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }

    /// On PostgreSQL, starts analyzing (beside the caller, which need not wait) the ingest
    /// tables that changed by half their size since their last statistics, unless that
    /// already runs. Autovacuum gets there within a minute or so, but an initial sync
    /// doubles these tables every few seconds, and with statistics of a near-empty table
    /// the planner hashed the whole messages table (or worse) for every batch.
    pub(crate) fn refresh_statistics(&self) {
        if !self.backend.is_postgres() || self.analyzing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.analyze_stale_ingest_tables().await {
                tracing::warn!(error = %e, "could not refresh the planner's statistics");
            }
            store.analyzing.store(false, Ordering::Release);
        });
    }

    async fn analyze_stale_ingest_tables(&self) -> Result<()> {
        let stale: Vec<String> = sqlx::query_scalar(dialect::STALE_INGEST_TABLES).fetch_all(&self.pool).await?;
        if !stale.is_empty() {
            let tables = stale.join(", ");
            let started = std::time::Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(dialect::analyze(&tables))).execute(&self.pool).await?;
            tracing::debug!(tables = %tables, elapsed_ms = started.elapsed().as_millis() as u64, "planner statistics refreshed");
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch: the store's unit of time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Removes the password from a database URL so it can be shown.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let sep = if rest.contains('/') { "/" } else { "" };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{masked}@{host}{sep}{path}")
        }
        None => url.to_string(),
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`] with `message`.
fn conflict_or(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Db(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }
}
