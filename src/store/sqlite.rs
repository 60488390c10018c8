//! The SQLite store: one file, no server. Several processes on one machine
//! may share it (WAL mode; SQLite serialises writers, so a claim is one
//! atomic `UPDATE … RETURNING`). Batched writes are one statement over a
//! JSON array (`json_each`), not one statement per row; their joins look
//! rows up by id (the `+` in `+w.worker` keeps SQLite from scanning the
//! worker's rows instead, and parsing the array once per row).

use std::fmt;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};

use super::{
    Claim, ClaimedWait, Migrations, NewWait, OutcomeBody, StoredOutcome, WaitId, WaitStore, db_int, due_at_ms,
    from_db_int, from_json, to_json,
};
use futures_util::future::BoxFuture;

use crate::spec::RateSpec;
use crate::{Error, Result, WaitState};

const MIGRATIONS: Migrations = &[(1, "waits and budgets", include_str!("migrations/sqlite/0001_waits.sql"))];

/// A [`WaitStore`] in a SQLite file (feature `store-sqlite`).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not yet applied, under SQLite's write lock so
    /// two processes opening a new file do not both apply them.
    async fn migrate(&self) -> Result<()> {
        // Hand-written rather than sqlx's Migrator: that one records its
        // versions in `_sqlx_migrations`, which the application's own sqlx
        // migrations use too, and each would take the other's for missing ones.
        let failed = |e| Error::store("cannot bring the SQLite store's tables up to date", e);
        let mut conn = self.pool.acquire().await.map_err(failed)?;
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(failed)?;
        let applied = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS taskpoll_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            let done: Vec<i64> =
                sqlx::query_scalar("SELECT version FROM taskpoll_migrations").fetch_all(&mut *conn).await?;
            for (version, description, sql) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                sqlx::raw_sql(sql).execute(&mut *conn).await?;
                sqlx::query("INSERT INTO taskpoll_migrations (version, description) VALUES (?1, ?2)")
                    .bind(version)
                    .bind(description)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let end = if applied.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(end).execute(&mut *conn).await;
        applied.map_err(failed)?;
        ended.map_err(failed)?;
        Ok(())
    }
}

fn failed(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::store(what, e)
}

impl WaitStore for SqliteStore {
    fn add<'a>(&'a self, waits: &'a [NewWait]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut rows = Vec::with_capacity(waits.len());
            for wait in waits {
                rows.push(serde_json::json!([
                    wait.state.task_ref.provider(),
                    wait.state.task_ref.to_string(),
                    to_json(&wait.options)?,
                    to_json(&wait.state)?,
                    db_int(due_at_ms(&wait.state)),
                ]));
            }
            // One statement over a JSON array: one row per element.
            let done = sqlx::query(
                "INSERT INTO taskpoll_waits (provider, task, options, state, due_at_ms) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?1) WHERE true \
                 ON CONFLICT (task) DO NOTHING",
            )
            .bind(to_json(&rows)?)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot add waits"))?;
            Ok(done.rows_affected())
        })
    }

    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Vec<ClaimedWait>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "UPDATE taskpoll_waits SET worker = ?1 WHERE id IN ( \
                   SELECT w.id FROM taskpoll_waits AS w \
                   WHERE w.provider = ?2 AND w.finished_at_ms IS NULL AND w.due_at_ms <= ?4 \
                     AND (w.worker IS NULL OR NOT EXISTS ( \
                       SELECT 1 FROM taskpoll_workers AS k WHERE k.worker = w.worker AND k.lease_until_ms >= ?3)) \
                   ORDER BY w.due_at_ms LIMIT ?5) \
                 RETURNING id, options, state",
            )
            .bind(&claim.worker)
            .bind(&claim.provider)
            .bind(db_int(claim.now_ms))
            .bind(db_int(claim.due_by_ms))
            .bind(i64::from(claim.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot claim waits"))?;
            rows.iter()
                .map(|row| {
                    Ok(ClaimedWait {
                        id: row.get("id"),
                        options: from_json(row.get("options"), "wait's options")?,
                        state: from_json(row.get("state"), "wait state")?,
                    })
                })
                .collect()
        })
    }

    fn renew<'a>(&'a self, worker: &'a str, now_ms: u64, lease_until_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let failed = failed("cannot renew the lease");
            let mut tx = self.pool.begin().await.map_err(&failed)?;
            // Every statement writes (none reads first), so SQLite takes its
            // write lock at once rather than upgrading a read lock.
            let live = sqlx::query(
                "UPDATE taskpoll_workers SET lease_until_ms = ?1 WHERE worker = ?2 AND lease_until_ms >= ?3",
            )
            .bind(db_int(lease_until_ms))
            .bind(worker)
            .bind(db_int(now_ms))
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
            let kept = if live.rows_affected() == 1 {
                true
            } else {
                // Run out (or new): what it held goes back, and it is not revived
                // over waits another worker may have claimed meanwhile.
                sqlx::query("UPDATE taskpoll_waits SET worker = NULL WHERE worker = ?1 AND finished_at_ms IS NULL")
                    .bind(worker)
                    .execute(&mut *tx)
                    .await
                    .map_err(&failed)?;
                let expired = sqlx::query("UPDATE taskpoll_workers SET lease_until_ms = ?1 WHERE worker = ?2")
                    .bind(db_int(lease_until_ms))
                    .bind(worker)
                    .execute(&mut *tx)
                    .await
                    .map_err(&failed)?;
                if expired.rows_affected() == 0 {
                    sqlx::query("INSERT INTO taskpoll_workers (worker, lease_until_ms) VALUES (?1, ?2)")
                        .bind(worker)
                        .bind(db_int(lease_until_ms))
                        .execute(&mut *tx)
                        .await
                        .map_err(&failed)?;
                }
                expired.rows_affected() == 0
            };
            tx.commit().await.map_err(&failed)?;
            Ok(kept)
        })
    }

    fn save<'a>(&'a self, worker: &'a str, states: &'a [(WaitId, WaitState)]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_states(worker, states, false))
    }

    fn release<'a>(&'a self, worker: &'a str, states: &'a [(WaitId, WaitState)]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_states(worker, states, true))
    }

    fn finish<'a>(&'a self, worker: &'a str, outcomes: &'a [StoredOutcome]) -> BoxFuture<'a, Result<Vec<WaitId>>> {
        Box::pin(async move {
            let mut rows = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                rows.push(serde_json::json!([
                    outcome.id,
                    db_int(outcome.finished_at_ms),
                    OutcomeBody::json(outcome)?,
                    to_json(&outcome.state)?,
                ]));
            }
            sqlx::query_scalar(
                "UPDATE taskpoll_waits AS w SET finished_at_ms = u.at, outcome = u.body, state = u.state \
                 FROM (SELECT value ->> 0 AS id, value ->> 1 AS at, value ->> 2 AS body, value ->> 3 AS state \
                       FROM json_each(?1)) AS u \
                 WHERE w.id = u.id AND +w.worker = ?2 AND +w.finished_at_ms IS NULL RETURNING id",
            )
            .bind(to_json(&rows)?)
            .bind(worker)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot write outcomes"))
        })
    }

    fn outcomes(&self, limit: u32) -> BoxFuture<'_, Result<Vec<StoredOutcome>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, state, outcome, finished_at_ms FROM taskpoll_waits \
                 WHERE finished_at_ms IS NOT NULL AND consumed = 0 ORDER BY finished_at_ms, id LIMIT ?1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot read outcomes"))?;
            rows.iter()
                .map(|row| {
                    let body: OutcomeBody = from_json(row.get("outcome"), "outcome")?;
                    let state = from_json(row.get("state"), "wait state")?;
                    Ok(body.outcome(row.get("id"), state, from_db_int(row.get("finished_at_ms"))))
                })
                .collect()
        })
    }

    fn consume<'a>(&'a self, ids: &'a [WaitId]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE taskpoll_waits SET consumed = 1 \
                 WHERE id IN (SELECT value FROM json_each(?1)) AND finished_at_ms IS NOT NULL AND consumed = 0",
            )
            .bind(to_json(&ids)?)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot mark outcomes consumed"))?;
            Ok(done.rows_affected())
        })
    }

    fn unfinished<'a>(&'a self, providers: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM taskpoll_waits \
                 WHERE finished_at_ms IS NULL AND provider IN (SELECT value FROM json_each(?1))",
            )
            .bind(to_json(&providers)?)
            .fetch_one(&self.pool)
            .await
            .map_err(failed("cannot count waits"))?;
            Ok(from_db_int(count))
        })
    }

    fn take_tokens<'a>(
        &'a self,
        provider: &'a str,
        rate: RateSpec,
        want: u32,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move {
            let burst = f64::from(rate.burst.max(1));
            sqlx::query(
                "INSERT INTO taskpoll_budgets (provider, tokens, refilled_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (provider) DO NOTHING",
            )
            .bind(provider)
            .bind(burst)
            .bind(db_int(now_ms))
            .execute(&self.pool)
            .await
            .map_err(failed("cannot take from the shared rate budget"))?;
            // Every right-hand side reads the row as it was: the refill is
            // computed once per column, and `granted` returns what was taken.
            let granted: i64 = sqlx::query_scalar(
                "UPDATE taskpoll_budgets SET \
                   granted = MIN(?4, CAST(MIN(?2, tokens + MAX(0, ?3 - refilled_at_ms) * ?5 / 1000.0) AS INTEGER)), \
                   tokens = MIN(?2, tokens + MAX(0, ?3 - refilled_at_ms) * ?5 / 1000.0) \
                          - MIN(?4, CAST(MIN(?2, tokens + MAX(0, ?3 - refilled_at_ms) * ?5 / 1000.0) AS INTEGER)), \
                   refilled_at_ms = MAX(refilled_at_ms, ?3) \
                 WHERE provider = ?1 RETURNING granted",
            )
            .bind(provider)
            .bind(burst)
            .bind(db_int(now_ms))
            .bind(i64::from(want))
            .bind(rate.per_second)
            .fetch_one(&self.pool)
            .await
            .map_err(failed("cannot take from the shared rate budget"))?;
            Ok(u32::try_from(granted.max(0)).unwrap_or(0))
        })
    }
}

impl SqliteStore {
    async fn write_states(&self, worker: &str, states: &[(WaitId, WaitState)], release: bool) -> Result<()> {
        let mut rows = Vec::with_capacity(states.len());
        for (id, state) in states {
            rows.push(serde_json::json!([id, to_json(state)?, db_int(due_at_ms(state))]));
        }
        let sql = if release {
            "UPDATE taskpoll_waits AS w SET state = u.state, due_at_ms = u.due, worker = NULL \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS due FROM json_each(?1)) AS u \
             WHERE w.id = u.id AND +w.worker = ?2 AND +w.finished_at_ms IS NULL"
        } else {
            "UPDATE taskpoll_waits AS w SET state = u.state, due_at_ms = u.due \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS due FROM json_each(?1)) AS u \
             WHERE w.id = u.id AND +w.worker = ?2 AND +w.finished_at_ms IS NULL"
        };
        sqlx::query(sql)
            .bind(to_json(&rows)?)
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot save wait states"))?;
        Ok(())
    }
}
