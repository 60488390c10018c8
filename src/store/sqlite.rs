//! The SQLite store: one file, no server. Several processes on one machine
//! may share it (WAL mode; SQLite serialises writers, so a claim is one
//! atomic `UPDATE … RETURNING`). Its statements are the SQL store's
//! (`sql.rs`); here are how to open it and SQLite's [`Dialect`].

use std::fmt;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous};

use super::sql::{Dialect, Migrations, SqlStore, wait_store_on_sql};
use crate::{Error, Result};

/// A [`WaitStore`](super::WaitStore) in a SQLite file (feature `store-sqlite`).
#[derive(Clone)]
pub struct SqliteStore {
    sql: SqlStore<Sqlite>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store in the file at `path`, and
    /// brings its tables up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::with_options(options).await
    }

    /// Opens the store a `sqlite:PATH` URL names (as `taskpoll wait --store` takes it).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| Error::store("not a SQLite URL", e))?;
        Self::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self> {
        // WAL: readers do not block the writer, and other processes can share
        // the file. NORMAL sync keeps every commit across a process crash (a
        // power loss may lose the last ones).
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| Error::store("cannot open the SQLite store", e))?;
        Ok(Self { sql: SqlStore::new(pool).await? })
    }
}

wait_store_on_sql!(SqliteStore);

impl SqliteStore {
    /// No wake-up hint: workers read deliveries on their next tick.
    fn hints(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

impl Dialect for Sqlite {
    const MIGRATIONS: Migrations = &[
        (1, "waits and budgets", include_str!("migrations/sqlite/0001_waits.sql")),
        (2, "webhook deliveries", include_str!("migrations/sqlite/0002_deliveries.sql")),
        (3, "task durations", include_str!("migrations/sqlite/0003_durations.sql")),
    ];
    // Takes SQLite's write lock at once, so two processes opening a new file
    // do not both apply the migrations.
    const BEGIN_MIGRATIONS: &'static str = "BEGIN IMMEDIATE";
    const LOCK_MIGRATIONS: Option<&'static str> = None;
    const SKIP_LOCKED: &'static str = "";
    // SQLite's MIN and MAX with two arguments are the scalar functions.
    const LEAST: &'static str = "MIN";
    const GREATEST: &'static str = "MAX";
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    // The unary `+` keeps SQLite from scanning the worker's rows through
    // their index instead of looking each batch row up by id (and parsing
    // the array once per row).
    const BY_ID_ONLY: &'static str = "+";
    const INTEGER: &'static str = "INTEGER";
    const JSON_ELEMENTS: &'static str = "json_each($1)";
    const NOTIFY_DELIVERY: Option<&'static str> = None;

    fn floor(expr: &str) -> String {
        // Truncation, which is the floor for the non-negative numbers it is given
        // (SQLite's FLOOR needs its optional math functions).
        format!("CAST({expr} AS INTEGER)")
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}
