//! The one SQL store behind [`super::SqliteStore`] and [`super::PostgresStore`]:
//! every statement and the migration runner are written here once, generic
//! over the sqlx driver; what the engines spell differently is a [`Dialect`]
//! (`sqlite.rs`, `postgres.rs`). Both bind parameters as `$1`, `$2`, … (sqlx's
//! SQLite driver takes them too), and a batch is one statement over a JSON
//! array bound as text, one row per element, not one statement per row.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row as _, Type};

use super::{
    Claim, ClaimedWait, DeliveryLimits, DeliveryStats, DeliveryWrite, NewWait, OutcomeBody, SeenDuration,
    StoredOutcome, WaitId, db_int, due_at_ms, from_db_int, from_json, to_json,
};
use crate::error::StoreFault;
use crate::spec::RateSpec;
use crate::{Error, Result, Task, TaskRef, WaitState};

/// Migrations shipped with the crate: (version, description, SQL).
pub(super) type Migrations = &'static [(i64, &'static str, &'static str)];

/// What one SQL engine spells its own way.
pub(super) trait Dialect: Database {
    /// The engine's migrations (`migrations/<engine>/`).
    const MIGRATIONS: Migrations;
    /// Begins the migrations' transaction.
    const BEGIN_MIGRATIONS: &'static str;
    /// Run first in that transaction when beginning it does not already keep
    /// other processes from migrating at the same time.
    const LOCK_MIGRATIONS: Option<&'static str>;
    /// Ends a claim's choice of rows so that concurrent claims skip the rows
    /// each other chose instead of waiting for them (empty: writers are serialised anyway).
    const SKIP_LOCKED: &'static str;
    /// The two-argument minimum and maximum.
    const LEAST: &'static str;
    /// See [`Dialect::LEAST`].
    const GREATEST: &'static str;
    /// `consumed`'s values, spelt as its partial index spells them (so the index is used).
    const TRUE: &'static str;
    /// See [`Dialect::TRUE`].
    const FALSE: &'static str;
    /// Put before a column of a batched write's join so the planner looks
    /// rows up by id rather than through that column's index.
    const BY_ID_ONLY: &'static str;
    /// The type integers are cast to.
    const INTEGER: &'static str;
    /// A table of the elements of the JSON array bound at `$1`, each in column `value`.
    const JSON_ELEMENTS: &'static str;
    /// Sent in a delivery's transaction to wake the workers sooner (PostgreSQL's `NOTIFY`), if any.
    const NOTIFY_DELIVERY: Option<&'static str>;
    /// A delivery's insert, due time and hint as one statement, when the
    /// engine can (see [`SqlStore::deliver`] for its binds and what it
    /// returns); else one statement per step.
    const DELIVER: Option<&'static str> = None;
    /// The trim of a provider's deliveries over the capacity and its count
    /// of drops as one statement, when the engine can; else a transaction of two.
    const TRIM_DELIVERIES: Option<&'static str> = None;

    /// The largest integer at most `expr` (a non-negative number).
    fn floor(expr: &str) -> String;

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A column of a batch, by the type of its values.
#[derive(Clone, Copy)]
enum BatchColumn {
    Integer(&'static str),
    Text(&'static str),
}

/// A table `u` of the rows of the JSON array of arrays bound at `$1`,
/// element `i` of each in column `columns[i]`.
fn batch<DB: Dialect>(columns: &[BatchColumn]) -> String {
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| match column {
            BatchColumn::Integer(name) => format!("CAST(value ->> {i} AS {}) AS {name}", DB::INTEGER),
            BatchColumn::Text(name) => format!("value ->> {i} AS {name}"),
        })
        .collect();
    format!("(SELECT {} FROM {}) AS u", values.join(", "), DB::JSON_ELEMENTS)
}

/// A database error met while doing `what`, classified, its message saying
/// what the fault means for whoever reads it (the driver's words stay in the source).
pub(super) fn failed(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        let fault = fault_of(&e);
        Error::store_fault(explained(what, fault), fault, e)
    }
}

/// What was being done, and what the fault means (README, "When the database fails").
fn explained(what: &str, fault: StoreFault) -> String {
    let why = match fault {
        StoreFault::Unavailable => "the database cannot be reached",
        StoreFault::Locked => {
            "the database is locked: another process held its write lock for longer than the busy timeout \
             (`busy_timeout_ms` in the store's URL)"
        }
        StoreFault::ReadOnly => "the database is read-only (check the permissions of its file and directory)",
        StoreFault::Full => "the disk is full, or a file-size limit is reached",
        StoreFault::Other => return what.to_string(),
    };
    format!("{what}: {why}")
}

/// What kind of fault a database error is, from its SQLSTATE (PostgreSQL)
/// or result code (SQLite), so a caller can tell a passing fault from one
/// that needs a person (README, "When the database fails").
pub(super) fn fault_of(error: &sqlx::Error) -> StoreFault {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreFault::Unavailable,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return StoreFault::Other };
            // A SQLSTATE has five characters; SQLite's codes have at most four digits.
            if code.len() == 5 {
                // 08 connection exception, 57P shut down or starting, 53 out of resources.
                return match code.as_ref() {
                    c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => StoreFault::Unavailable,
                    "25006" => StoreFault::ReadOnly,
                    "53100" => StoreFault::Full,
                    _ => StoreFault::Other,
                };
            }
            sqlite_fault(&code)
        }
        _ => StoreFault::Other,
    }
}

/// A SQLite result code's kind (its primary code is the low byte).
fn sqlite_fault(code: &str) -> StoreFault {
    match code.parse::<i64>() {
        // SQLITE_BUSY, SQLITE_LOCKED.
        Ok(n) if matches!(n & 0xff, 5 | 6) => StoreFault::Locked,
        // SQLITE_READONLY.
        Ok(n) if n & 0xff == 8 => StoreFault::ReadOnly,
        // SQLITE_FULL, and SQLITE_IOERR_WRITE: a write past the file-size
        // limit (EFBIG) or a failing disk.
        Ok(13 | 778) => StoreFault::Full,
        // SQLITE_CANTOPEN.
        Ok(n) if n & 0xff == 14 => StoreFault::Unavailable,
        _ => StoreFault::Other,
    }
}

/// Adds to a provider's counts of dropped deliveries.
async fn count_drops<'c, DB, E>(executor: E, provider: &str, over_capacity: u64, expired: u64) -> sqlx::Result<()>
where
    DB: Dialect,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    if over_capacity == 0 && expired == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO taskpoll_delivery_drops (provider, over_capacity, expired) VALUES ($1, $2, $3) \
         ON CONFLICT (provider) DO UPDATE SET over_capacity = taskpoll_delivery_drops.over_capacity + excluded.over_capacity, \
           expired = taskpoll_delivery_drops.expired + excluded.expired",
    )
    .bind(provider)
    .bind(db_int(over_capacity))
    .bind(db_int(expired))
    .execute(executor)
    .await?;
    Ok(())
}

/// A store on one SQL engine: a pool of connections to it.
pub(super) struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    /// Whether a delivery's write also sends the dialect's wake-up hint.
    notify: bool,
}

// Derived, it would ask for `DB: Clone`.
impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), notify: self.notify }
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// The store on `pool`, its tables brought up to date.
    pub(super) async fn new(pool: Pool<DB>) -> Result<Self> {
        let store = Self { pool, notify: DB::NOTIFY_DELIVERY.is_some() };
        store.migrate().await?;
        store.fill_task_ids().await?;
        Ok(store)
    }

    /// The pool (PostgreSQL's listener connects through it).
    #[cfg_attr(not(feature = "store-postgres"), allow(dead_code))]
    pub(super) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Sends (or not) the wake-up hint with each delivery.
    #[cfg_attr(not(feature = "store-postgres"), allow(dead_code))]
    pub(super) fn set_notify(&mut self, notify: bool) {
        self.notify = notify && DB::NOTIFY_DELIVERY.is_some();
    }

    /// Fills in the task id of unfinished waits added before deliveries were
    /// kept (migration 2), so deliveries find them too. Nothing to do after that.
    async fn fill_task_ids(&self) -> Result<()> {
        let failed = failed("cannot fill in task ids");
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, task FROM taskpoll_waits WHERE task_id IS NULL AND finished_at_ms IS NULL")
                .fetch_all(&self.pool)
                .await
                .map_err(&failed)?;
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|(id, task)| task.parse::<TaskRef>().ok().map(|task| serde_json::json!([id, task.id()])))
            .collect();
        let sql = format!(
            "UPDATE taskpoll_waits AS w SET task_id = u.task_id FROM {} WHERE w.id = u.wait_id",
            batch::<DB>(&[BatchColumn::Integer("wait_id"), BatchColumn::Text("task_id")])
        );
        sqlx::query(&sql).bind(to_json(&rows)?).execute(&self.pool).await.map_err(&failed)?;
        Ok(())
    }

    /// Applies the migrations not yet applied, one process at a time.
    async fn migrate(&self) -> Result<()> {
        // Hand-written rather than sqlx's Migrator: that one records its
        // versions in `_sqlx_migrations`, which the application's own sqlx
        // migrations use too, and each would take the other's for missing ones.
        let failed = failed("cannot bring the store's tables up to date");
        let mut tx = self.pool.begin_with(DB::BEGIN_MIGRATIONS).await.map_err(&failed)?;
        if let Some(lock) = DB::LOCK_MIGRATIONS {
            sqlx::raw_sql(lock).execute(&mut *tx).await.map_err(&failed)?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS taskpoll_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        let done: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM taskpoll_migrations").fetch_all(&mut *tx).await.map_err(&failed)?;
        for (version, description, sql) in DB::MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(&failed)?;
            sqlx::query("INSERT INTO taskpoll_migrations (version, description) VALUES ($1, $2)")
                .bind(*version)
                .bind(*description)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
        }
        tx.commit().await.map_err(&failed)
    }

    pub(super) async fn add(&self, waits: &[NewWait]) -> Result<u64> {
        let mut rows = Vec::with_capacity(waits.len());
        for wait in waits {
            rows.push(serde_json::json!([
                wait.state.task_ref.provider(),
                wait.state.task_ref.to_string(),
                wait.state.task_ref.id(),
                to_json(&wait.options)?,
                to_json(&wait.state)?,
                db_int(due_at_ms(&wait.state)),
            ]));
        }
        let columns = [
            BatchColumn::Text("provider"),
            BatchColumn::Text("task"),
            BatchColumn::Text("task_id"),
            BatchColumn::Text("options"),
            BatchColumn::Text("state"),
            BatchColumn::Integer("due"),
        ];
        // `WHERE true` tells SQLite's parser the `ON CONFLICT` is the upsert's.
        // A wait whose task's delivery came first is due at once: whoever
        // claims it ends it with the delivery.
        let sql = format!(
            "INSERT INTO taskpoll_waits (provider, task, task_id, options, state, due_at_ms) \
             SELECT u.provider, u.task, u.task_id, u.options, u.state, \
               CASE WHEN EXISTS (SELECT 1 FROM taskpoll_deliveries AS d \
                 WHERE d.provider = u.provider AND d.task_id = u.task_id) THEN 0 ELSE u.due END \
             FROM {} WHERE true ON CONFLICT (task) DO NOTHING",
            batch::<DB>(&columns)
        );
        let done =
            sqlx::query(&sql).bind(to_json(&rows)?).execute(&self.pool).await.map_err(failed("cannot add waits"))?;
        Ok(DB::rows_affected(&done))
    }

    pub(super) async fn claim(&self, claim: &Claim) -> Result<Vec<ClaimedWait>> {
        let sql = format!(
            "UPDATE taskpoll_waits SET worker = $1 WHERE id IN ( \
               SELECT w.id FROM taskpoll_waits AS w \
               WHERE w.provider = $2 AND w.finished_at_ms IS NULL AND w.due_at_ms <= $4 \
                 AND (w.worker IS NULL OR NOT EXISTS ( \
                   SELECT 1 FROM taskpoll_workers AS k WHERE k.worker = w.worker AND k.lease_until_ms >= $3)) \
               ORDER BY w.due_at_ms LIMIT $5 {}) \
             RETURNING id, options, state",
            DB::SKIP_LOCKED
        );
        let rows = sqlx::query(&sql)
            .bind(claim.worker.as_str())
            .bind(claim.provider.as_str())
            .bind(db_int(claim.now_ms))
            .bind(db_int(claim.due_by_ms))
            .bind(i64::from(claim.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot claim waits"))?;
        let read = failed("cannot read claimed waits");
        rows.iter()
            .map(|row| {
                Ok(ClaimedWait {
                    id: row.try_get("id").map_err(&read)?,
                    options: from_json(row.try_get("options").map_err(&read)?, "wait's options")?,
                    state: from_json(row.try_get("state").map_err(&read)?, "wait state")?,
                })
            })
            .collect()
    }

    pub(super) async fn renew(&self, worker: &str, now_ms: u64, lease_until_ms: u64) -> Result<bool> {
        let failed = failed("cannot renew the lease");
        let mut tx = self.pool.begin().await.map_err(&failed)?;
        // Every statement writes (none reads first), so SQLite takes its
        // write lock at once rather than upgrading a read lock.
        let live =
            sqlx::query("UPDATE taskpoll_workers SET lease_until_ms = $1 WHERE worker = $2 AND lease_until_ms >= $3")
                .bind(db_int(lease_until_ms))
                .bind(worker)
                .bind(db_int(now_ms))
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
        let kept = if DB::rows_affected(&live) == 1 {
            true
        } else {
            // Run out (or new): what it held goes back, and it is not revived
            // over waits another worker may have claimed meanwhile.
            sqlx::query("UPDATE taskpoll_waits SET worker = NULL WHERE worker = $1 AND finished_at_ms IS NULL")
                .bind(worker)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
            let expired = sqlx::query("UPDATE taskpoll_workers SET lease_until_ms = $1 WHERE worker = $2")
                .bind(db_int(lease_until_ms))
                .bind(worker)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
            let new = DB::rows_affected(&expired) == 0;
            if new {
                sqlx::query("INSERT INTO taskpoll_workers (worker, lease_until_ms) VALUES ($1, $2)")
                    .bind(worker)
                    .bind(db_int(lease_until_ms))
                    .execute(&mut *tx)
                    .await
                    .map_err(&failed)?;
            }
            new
        };
        tx.commit().await.map_err(&failed)?;
        Ok(kept)
    }

    /// Saves the states of waits `worker` holds and, with `release`, gives them back.
    pub(super) async fn write_states(&self, worker: &str, states: &[(WaitId, WaitState)], release: bool) -> Result<()> {
        let mut rows = Vec::with_capacity(states.len());
        for (id, state) in states {
            rows.push(serde_json::json!([id, to_json(state)?, db_int(due_at_ms(state))]));
        }
        let sql = format!(
            "UPDATE taskpoll_waits AS w SET state = u.state, due_at_ms = u.due{} FROM {} \
             WHERE w.id = u.wait_id AND {by_id}w.worker = $2 AND {by_id}w.finished_at_ms IS NULL",
            if release { ", worker = NULL" } else { "" },
            batch::<DB>(&[BatchColumn::Integer("wait_id"), BatchColumn::Text("state"), BatchColumn::Integer("due")]),
            by_id = DB::BY_ID_ONLY,
        );
        sqlx::query(&sql)
            .bind(to_json(&rows)?)
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot save wait states"))?;
        Ok(())
    }

    pub(super) async fn finish(&self, worker: &str, outcomes: &[StoredOutcome]) -> Result<Vec<WaitId>> {
        let mut rows = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            rows.push(serde_json::json!([
                outcome.id,
                db_int(outcome.finished_at_ms),
                OutcomeBody::json(outcome)?,
                to_json(&outcome.state)?,
            ]));
        }
        let sql = format!(
            "UPDATE taskpoll_waits AS w SET finished_at_ms = u.at, outcome = u.body, state = u.state FROM {} \
             WHERE w.id = u.wait_id AND {by_id}w.worker = $2 AND {by_id}w.finished_at_ms IS NULL RETURNING id",
            batch::<DB>(&[
                BatchColumn::Integer("wait_id"),
                BatchColumn::Integer("at"),
                BatchColumn::Text("body"),
                BatchColumn::Text("state")
            ]),
            by_id = DB::BY_ID_ONLY,
        );
        sqlx::query_scalar(&sql)
            .bind(to_json(&rows)?)
            .bind(worker)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot write outcomes"))
    }

    pub(super) async fn outcomes(&self, limit: u32) -> Result<Vec<StoredOutcome>> {
        let sql = format!(
            "SELECT id, state, outcome, finished_at_ms FROM taskpoll_waits \
             WHERE finished_at_ms IS NOT NULL AND consumed = {} ORDER BY finished_at_ms, id LIMIT $1",
            DB::FALSE
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("cannot read outcomes"))?;
        let read = failed("cannot read outcomes");
        rows.iter()
            .map(|row| {
                let body: OutcomeBody = from_json(row.try_get("outcome").map_err(&read)?, "outcome")?;
                let state = from_json(row.try_get("state").map_err(&read)?, "wait state")?;
                let finished_at_ms = from_db_int(row.try_get("finished_at_ms").map_err(&read)?);
                Ok(body.outcome(row.try_get("id").map_err(&read)?, state, finished_at_ms))
            })
            .collect()
    }

    pub(super) async fn consume(&self, ids: &[WaitId]) -> Result<u64> {
        let rows: Vec<[WaitId; 1]> = ids.iter().map(|&id| [id]).collect();
        let sql = format!(
            "UPDATE taskpoll_waits SET consumed = {true_} \
             WHERE id IN (SELECT wait_id FROM {}) AND finished_at_ms IS NOT NULL AND consumed = {false_}",
            batch::<DB>(&[BatchColumn::Integer("wait_id")]),
            true_ = DB::TRUE,
            false_ = DB::FALSE,
        );
        let done = sqlx::query(&sql)
            .bind(to_json(&rows)?)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot mark outcomes consumed"))?;
        Ok(DB::rows_affected(&done))
    }

    pub(super) async fn unfinished(&self, providers: &[&str]) -> Result<u64> {
        let rows: Vec<[&str; 1]> = providers.iter().map(|&provider| [provider]).collect();
        let sql = format!(
            "SELECT COUNT(*) FROM taskpoll_waits \
             WHERE finished_at_ms IS NULL AND provider IN (SELECT provider FROM {})",
            batch::<DB>(&[BatchColumn::Text("provider")])
        );
        let count: i64 = sqlx::query_scalar(&sql)
            .bind(to_json(&rows)?)
            .fetch_one(&self.pool)
            .await
            .map_err(failed("cannot count waits"))?;
        Ok(from_db_int(count))
    }

    /// Writes a verified delivery of a finished task (see [`super::WaitStore::deliver`]).
    pub(super) async fn deliver(&self, task: &Task, now_ms: u64, limits: &DeliveryLimits) -> Result<DeliveryWrite> {
        if !task.is_terminal() {
            return Ok(DeliveryWrite::NotFinished);
        }
        let failed = failed("cannot write a webhook delivery");
        let provider = task.task_ref().provider();
        let task_id = task.task_ref().id();
        let written = match DB::DELIVER {
            // One round trip to the hint: the write is on every delivery's path to its wait.
            Some(sql) => {
                let (kept, late, _hints): (i64, i64, i64) = sqlx::query_as(sql)
                    .bind(provider)
                    .bind(task_id)
                    .bind(to_json(task)?)
                    .bind(db_int(now_ms))
                    .bind(i64::from(self.notify))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(&failed)?;
                if kept == 0 {
                    return Ok(if late > 0 { DeliveryWrite::WaitFinished } else { DeliveryWrite::AlreadyKept });
                }
                true
            }
            None => self.deliver_by_steps(task, now_ms).await?,
        };
        if written {
            // Over the capacity: the oldest go (through the (provider, seq) index), counted
            // in the same transaction so that no drop goes uncounted. Each delivery trims
            // after its own insert has committed, and the last trim sees every insert before
            // it: a provider holds one more per delivery in flight, never more once they are
            // written (DeliveryLimits says so). A trim that fails is made by the next delivery.
            let capacity = i64::from(limits.capacity_per_provider.max(1));
            if let Some(sql) = DB::TRIM_DELIVERIES {
                sqlx::query(sql).bind(provider).bind(capacity).execute(&self.pool).await.map_err(&failed)?;
            } else {
                let sql = "DELETE FROM taskpoll_deliveries WHERE provider = $1 AND seq <= ( \
                     SELECT seq FROM taskpoll_deliveries WHERE provider = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)";
                let mut tx = self.pool.begin().await.map_err(&failed)?;
                let dropped =
                    sqlx::query(sql).bind(provider).bind(capacity).execute(&mut *tx).await.map_err(&failed)?;
                count_drops(&mut *tx, provider, DB::rows_affected(&dropped), 0).await.map_err(&failed)?;
                tx.commit().await.map_err(&failed)?;
            }
        }
        Ok(if written {
            DeliveryWrite::Written
        } else {
            // Either the same task's delivery is kept already, or its wait has finished.
            let late: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM taskpoll_waits WHERE provider = $1 AND task_id = $2 AND finished_at_ms IS NOT NULL",
            )
            .bind(provider)
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(&failed)?;
            if late.is_some() { DeliveryWrite::WaitFinished } else { DeliveryWrite::AlreadyKept }
        })
    }

    /// A delivery's insert, due time and hint, one statement each, no
    /// transaction (each step stands alone; expired deliveries are dropped by
    /// the sweeps): whether it was kept. A late delivery (the task's wait has
    /// finished) is not kept: its outcome is written already.
    async fn deliver_by_steps(&self, task: &Task, now_ms: u64) -> Result<bool> {
        let failed = failed("cannot write a webhook delivery");
        let provider = task.task_ref().provider();
        let task_id = task.task_ref().id();
        let inserted = sqlx::query(
            "INSERT INTO taskpoll_deliveries (provider, task_id, task, received_at_ms) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM taskpoll_waits AS w \
               WHERE w.provider = $1 AND w.task_id = $2 AND w.finished_at_ms IS NOT NULL) \
             ON CONFLICT (provider, task_id) DO NOTHING",
        )
        .bind(provider)
        .bind(task_id)
        .bind(to_json(task)?)
        .bind(db_int(now_ms))
        .execute(&self.pool)
        .await
        .map_err(&failed)?;
        if DB::rows_affected(&inserted) != 1 {
            return Ok(false);
        }
        // The wait (if any) is due now, so a worker claims it at once when nobody holds it.
        let sql = format!(
            "UPDATE taskpoll_waits SET due_at_ms = {}(due_at_ms, $3) \
             WHERE provider = $1 AND task_id = $2 AND finished_at_ms IS NULL",
            DB::LEAST
        );
        sqlx::query(&sql)
            .bind(provider)
            .bind(task_id)
            .bind(db_int(now_ms))
            .execute(&self.pool)
            .await
            .map_err(&failed)?;
        if self.notify
            && let Some(notify) = DB::NOTIFY_DELIVERY
        {
            sqlx::query(notify).bind(provider).execute(&self.pool).await.map_err(&failed)?;
        }
        Ok(true)
    }

    /// The deliveries kept for unfinished waits `worker` holds.
    pub(super) async fn deliveries(&self, worker: &str, limit: u32) -> Result<Vec<Task>> {
        let failed = failed("cannot read webhook deliveries");
        let tasks: Vec<String> = sqlx::query_scalar(
            "SELECT d.task FROM taskpoll_waits AS w JOIN taskpoll_deliveries AS d \
               ON d.provider = w.provider AND d.task_id = w.task_id \
             WHERE w.worker = $1 AND w.finished_at_ms IS NULL LIMIT $2",
        )
        .bind(worker)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(&failed)?;
        tasks.iter().map(|task| from_json(task, "webhook delivery")).collect()
    }

    /// Drops expired deliveries (counted) and those of finished waits, and
    /// forgets workers whose lease ran out before `gone_before_ms` and that hold no wait.
    pub(super) async fn sweep(&self, now_ms: u64, limits: &DeliveryLimits, gone_before_ms: u64) -> Result<()> {
        let failed = failed("cannot clean up the store");
        let expired_before = db_int(now_ms.saturating_sub(super::millis(limits.keep_for)));
        let mut tx = self.pool.begin().await.map_err(&failed)?;
        let expired: Vec<String> =
            sqlx::query_scalar("DELETE FROM taskpoll_deliveries WHERE received_at_ms < $1 RETURNING provider")
                .bind(expired_before)
                .fetch_all(&mut *tx)
                .await
                .map_err(&failed)?;
        let mut by_provider: Vec<(String, u64)> = Vec::new();
        for provider in expired {
            match by_provider.iter_mut().find(|(p, _)| *p == provider) {
                Some((_, n)) => *n += 1,
                None => by_provider.push((provider, 1)),
            }
        }
        for (provider, n) in by_provider {
            count_drops(&mut *tx, &provider, 0, n).await.map_err(&failed)?;
        }
        // Applied (or late): their outcome is written.
        sqlx::query(
            "DELETE FROM taskpoll_deliveries WHERE EXISTS (SELECT 1 FROM taskpoll_waits AS w \
               WHERE w.provider = taskpoll_deliveries.provider AND w.task_id = taskpoll_deliveries.task_id \
                 AND w.finished_at_ms IS NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        sqlx::query(
            "DELETE FROM taskpoll_workers WHERE lease_until_ms < $1 AND NOT EXISTS ( \
               SELECT 1 FROM taskpoll_waits AS w WHERE w.worker = taskpoll_workers.worker AND w.finished_at_ms IS NULL)",
        )
        .bind(db_int(gone_before_ms))
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)
    }

    /// Deliveries kept and dropped, per provider.
    pub(super) async fn delivery_stats(&self) -> Result<Vec<DeliveryStats>> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.provider, \
               (SELECT COUNT(*) FROM taskpoll_deliveries AS d WHERE d.provider = p.provider), \
               COALESCE(x.over_capacity, 0), COALESCE(x.expired, 0) \
             FROM (SELECT provider FROM taskpoll_deliveries UNION SELECT provider FROM taskpoll_delivery_drops) AS p \
             LEFT JOIN taskpoll_delivery_drops AS x ON x.provider = p.provider ORDER BY p.provider",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(failed("cannot read delivery counts"))?;
        Ok(rows
            .into_iter()
            .map(|(provider, kept, over_capacity, expired)| DeliveryStats {
                provider,
                kept: from_db_int(kept),
                dropped_over_capacity: from_db_int(over_capacity),
                expired: from_db_int(expired),
            })
            .collect())
    }

    pub(super) async fn keep_durations(&self, seen: &[SeenDuration], keep: u32) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let failed = failed("cannot keep task durations");
        let rows: Vec<serde_json::Value> =
            seen.iter().map(|d| serde_json::json!([d.provider, d.key, db_int(d.after_ms), db_int(d.by_ms)])).collect();
        let sql = format!(
            "INSERT INTO taskpoll_durations (provider, duration_key, after_ms, by_ms) \
             SELECT u.provider, u.duration_key, u.after_ms, u.by_ms FROM {}",
            batch::<DB>(&[
                BatchColumn::Text("provider"),
                BatchColumn::Text("duration_key"),
                BatchColumn::Integer("after_ms"),
                BatchColumn::Integer("by_ms"),
            ])
        );
        sqlx::query(&sql).bind(to_json(&rows)?).execute(&self.pool).await.map_err(&failed)?;
        // Each lane written to keeps its newest `keep` (through the lane's index).
        let mut lanes: Vec<(&str, &str)> = seen.iter().map(|d| (d.provider.as_str(), d.key.as_str())).collect();
        lanes.sort_unstable();
        lanes.dedup();
        for (provider, key) in lanes {
            sqlx::query(
                "DELETE FROM taskpoll_durations WHERE provider = $1 AND duration_key = $2 AND seq <= ( \
                   SELECT seq FROM taskpoll_durations WHERE provider = $1 AND duration_key = $2 \
                   ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            )
            .bind(provider)
            .bind(key)
            .bind(i64::from(keep))
            .execute(&self.pool)
            .await
            .map_err(&failed)?;
        }
        Ok(())
    }

    pub(super) async fn durations(&self) -> Result<Vec<SeenDuration>> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT provider, duration_key, after_ms, by_ms FROM taskpoll_durations ORDER BY seq")
                .fetch_all(&self.pool)
                .await
                .map_err(failed("cannot read task durations"))?;
        Ok(rows
            .into_iter()
            .map(|(provider, key, after, by)| SeenDuration::new(provider, key, from_db_int(after), from_db_int(by)))
            .collect())
    }

    pub(super) async fn take_tokens(&self, provider: &str, rate: RateSpec, want: u32, now_ms: u64) -> Result<u32> {
        let failed = failed("cannot take from the shared rate budget");
        let burst = f64::from(rate.burst.max(1));
        sqlx::query(
            "INSERT INTO taskpoll_budgets (provider, tokens, refilled_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (provider) DO NOTHING",
        )
        .bind(provider)
        .bind(burst)
        .bind(db_int(now_ms))
        .execute(&self.pool)
        .await
        .map_err(&failed)?;
        // The token bucket: $2 the burst, $3 now, $4 the tokens wanted, $5
        // the refill per second. Every right-hand side reads the row as it
        // was (in PostgreSQL its lock serialises concurrent takes), so the
        // refill is computed once per column, and `granted` returns what was taken.
        let (least, greatest) = (DB::LEAST, DB::GREATEST);
        let refilled = format!("{least}($2, tokens + {greatest}(0, $3 - refilled_at_ms) * $5 / 1000.0)");
        let granted = format!("{least}($4, {})", DB::floor(&refilled));
        let sql = format!(
            "UPDATE taskpoll_budgets SET granted = {granted}, tokens = {refilled} - {granted}, \
             refilled_at_ms = {greatest}(refilled_at_ms, $3) WHERE provider = $1 RETURNING granted"
        );
        let granted: i64 = sqlx::query_scalar(&sql)
            .bind(provider)
            .bind(burst)
            .bind(db_int(now_ms))
            .bind(i64::from(want))
            .bind(rate.per_second)
            .fetch_one(&self.pool)
            .await
            .map_err(&failed)?;
        Ok(u32::try_from(granted.max(0)).unwrap_or(0))
    }
}

/// Implements [`super::WaitStore`] for a public store that keeps its
/// [`SqlStore`] in field `sql`.
macro_rules! wait_store_on_sql {
    ($store:ty) => {
        impl $crate::store::WaitStore for $store {
            fn add<'a>(
                &'a self,
                waits: &'a [$crate::store::NewWait],
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<u64>> {
                Box::pin(self.sql.add(waits))
            }

            fn claim<'a>(
                &'a self,
                claim: &'a $crate::store::Claim,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<Vec<$crate::store::ClaimedWait>>> {
                Box::pin(self.sql.claim(claim))
            }

            fn renew<'a>(
                &'a self,
                worker: &'a str,
                now_ms: u64,
                lease_until_ms: u64,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<bool>> {
                Box::pin(self.sql.renew(worker, now_ms, lease_until_ms))
            }

            fn save<'a>(
                &'a self,
                worker: &'a str,
                states: &'a [($crate::store::WaitId, $crate::WaitState)],
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<()>> {
                Box::pin(self.sql.write_states(worker, states, false))
            }

            fn release<'a>(
                &'a self,
                worker: &'a str,
                states: &'a [($crate::store::WaitId, $crate::WaitState)],
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<()>> {
                Box::pin(self.sql.write_states(worker, states, true))
            }

            fn finish<'a>(
                &'a self,
                worker: &'a str,
                outcomes: &'a [$crate::store::StoredOutcome],
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<Vec<$crate::store::WaitId>>> {
                Box::pin(self.sql.finish(worker, outcomes))
            }

            fn outcomes(
                &self,
                limit: u32,
            ) -> $crate::spec::BoxFuture<'_, $crate::Result<Vec<$crate::store::StoredOutcome>>> {
                Box::pin(self.sql.outcomes(limit))
            }

            fn consume<'a>(
                &'a self,
                ids: &'a [$crate::store::WaitId],
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<u64>> {
                Box::pin(self.sql.consume(ids))
            }

            fn unfinished<'a>(&'a self, providers: &'a [&'a str]) -> $crate::spec::BoxFuture<'a, $crate::Result<u64>> {
                Box::pin(self.sql.unfinished(providers))
            }

            fn take_tokens<'a>(
                &'a self,
                provider: &'a str,
                rate: $crate::spec::RateSpec,
                want: u32,
                now_ms: u64,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<u32>> {
                Box::pin(self.sql.take_tokens(provider, rate, want, now_ms))
            }

            fn deliver<'a>(
                &'a self,
                task: &'a $crate::Task,
                now_ms: u64,
                limits: &'a $crate::store::DeliveryLimits,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<$crate::store::DeliveryWrite>> {
                Box::pin(self.sql.deliver(task, now_ms, limits))
            }

            fn deliveries<'a>(
                &'a self,
                worker: &'a str,
                limit: u32,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<Vec<$crate::Task>>> {
                Box::pin(self.sql.deliveries(worker, limit))
            }

            fn sweep<'a>(
                &'a self,
                now_ms: u64,
                limits: &'a $crate::store::DeliveryLimits,
                gone_before_ms: u64,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<()>> {
                Box::pin(self.sql.sweep(now_ms, limits, gone_before_ms))
            }

            fn delivery_stats(&self) -> $crate::spec::BoxFuture<'_, $crate::Result<Vec<$crate::store::DeliveryStats>>> {
                Box::pin(self.sql.delivery_stats())
            }

            fn keep_durations<'a>(
                &'a self,
                seen: &'a [$crate::store::SeenDuration],
                keep: u32,
            ) -> $crate::spec::BoxFuture<'a, $crate::Result<()>> {
                Box::pin(self.sql.keep_durations(seen, keep))
            }

            fn durations(&self) -> $crate::spec::BoxFuture<'_, $crate::Result<Vec<$crate::store::SeenDuration>>> {
                Box::pin(self.sql.durations())
            }

            fn delivery_hints(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
                self.hints()
            }
        }
    };
}
pub(super) use wait_store_on_sql;
