//! The PostgreSQL store, for several processes: a claim takes due rows with
//! `FOR UPDATE SKIP LOCKED` (two workers claiming at once get different
//! waits, neither blocks), and a provider's rate budget is one token row
//! every process takes from. Its statements are the SQL store's (`sql.rs`);
//! here are how to connect and PostgreSQL's [`Dialect`].

use std::fmt;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};

use super::sql::{Dialect, Migrations, SqlStore, wait_store_on_sql};
use crate::{Error, Result};

/// A [`WaitStore`](super::WaitStore) in a PostgreSQL database (feature `store-postgres`).
#[derive(Clone)]
pub struct PostgresStore {
    sql: SqlStore<Postgres>,
}

impl fmt::Debug for PostgresStore {
    // The URL (and its password) is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and brings its
    /// tables up to date (the tables are named `taskpoll_*`, so the database
    /// can be the application's own).
    pub async fn connect(url: &str) -> Result<Self> {
        // The parse error names no part of the URL, so the password cannot leak through it.
        let options: PgConnectOptions = url.parse().map_err(|e| Error::store("not a PostgreSQL URL", e))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| Error::store("cannot connect to the PostgreSQL store", e))?;
        Ok(Self { sql: SqlStore::new(pool).await? })
    }
}

wait_store_on_sql!(PostgresStore);

impl Dialect for Postgres {
    const MIGRATIONS: Migrations = &[(1, "waits and budgets", include_str!("migrations/postgres/0001_waits.sql"))];
    const BEGIN_MIGRATIONS: &'static str = "BEGIN";
    // A lock held until the transaction ends: 0x7461736b706f6c6c, "taskpoll" in ASCII.
    const LOCK_MIGRATIONS: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(8386110886425619564)");
    const SKIP_LOCKED: &'static str = "FOR UPDATE OF w SKIP LOCKED";
    const LEAST: &'static str = "LEAST";
    const GREATEST: &'static str = "GREATEST";
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const BY_ID_ONLY: &'static str = "";
    const INTEGER: &'static str = "BIGINT";
    const JSON_ELEMENTS: &'static str = "jsonb_array_elements($1::jsonb) AS e(value)";

    fn floor(expr: &str) -> String {
        // A cast alone would round.
        format!("CAST(FLOOR({expr}) AS BIGINT)")
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
