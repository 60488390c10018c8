//! The stores the store tests run on: a SQLite file always, PostgreSQL when
//! `TASKPOLL_TEST_POSTGRES_URL` names a server (`.ci/run` starts one; the
//! README says how to start one locally).
#![allow(dead_code)]

use std::sync::Arc;

use sqlx::Connection as _;
use taskpoll::store::{PostgresStore, SqliteStore, WaitStore};

pub(crate) const POSTGRES_ENV: &str = "TASKPOLL_TEST_POSTGRES_URL";

/// The server's URL; `None` (with a note) when it is not set, except in CI,
/// where a PostgreSQL test that cannot run fails.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {POSTGRES_ENV} is not: .ci/run starts PostgreSQL and sets it (see README)")
        }
        _ => {
            eprintln!("skipped: set {POSTGRES_ENV} (see README) to run the PostgreSQL half of this test");
            None
        }
    }
}

/// A new, empty database on the test server, so tests do not see each other's waits.
pub(crate) async fn fresh_postgres(url: &str) -> Result<String, Box<dyn std::error::Error>> {
    let name = format!("taskpoll_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    conn.close().await?;
    let mut fresh = reqwest::Url::parse(url)?;
    fresh.set_path(&format!("/{name}"));
    Ok(fresh.to_string())
}

/// A store under test: its name (for messages), its URL and the store.
pub(crate) struct TestStore {
    pub name: &'static str,
    pub url: String,
    pub store: Arc<dyn WaitStore>,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn sqlite() -> Result<TestStore, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("waits.db").display());
    let store = Arc::new(SqliteStore::connect(&url).await?);
    Ok(TestStore { name: "sqlite", url, store, _dir: Some(dir) })
}

pub(crate) async fn postgres() -> Result<Option<TestStore>, Box<dyn std::error::Error>> {
    let Some(url) = postgres_url() else { return Ok(None) };
    let url = fresh_postgres(&url).await?;
    let store = Arc::new(PostgresStore::connect(&url).await?);
    Ok(Some(TestStore { name: "postgres", url, store, _dir: None }))
}

/// Every store that can run here.
pub(crate) async fn every_store() -> Result<Vec<TestStore>, Box<dyn std::error::Error>> {
    let mut stores = vec![sqlite().await?];
    stores.extend(postgres().await?);
    Ok(stores)
}
