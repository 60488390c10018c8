//! The PostgreSQL store, for several processes: a claim takes due rows with
//! `FOR UPDATE SKIP LOCKED` (two workers claiming at once get different
//! waits, neither blocks), batched writes are one statement over arrays
//! (`UNNEST`), and a provider's rate budget is one token row every process
//! takes from.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};

use super::{
    Claim, ClaimedWait, Migrations, NewWait, OutcomeBody, StoredOutcome, WaitId, WaitStore, db_int, due_at_ms,
    from_db_int, from_json, to_json,
};
use futures_util::future::BoxFuture;

use crate::spec::RateSpec;
use crate::{Error, Result, WaitState};

const MIGRATIONS: Migrations = &[(1, "waits and budgets", include_str!("migrations/postgres/0001_waits.sql"))];

/// The advisory lock that serialises migrations across processes ("taskpoll" in ASCII).
const MIGRATION_LOCK: i64 = 0x7461_736b_706f_6c6c;

/// A [`WaitStore`] in a PostgreSQL database (feature `store-postgres`).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not yet applied, one process at a time.
    async fn migrate(&self) -> Result<()> {
        // Hand-written rather than sqlx's Migrator: see the SQLite store.
        let failed = |e| Error::store("cannot bring the PostgreSQL store's tables up to date", e);
        let mut tx = self.pool.begin().await.map_err(failed)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(failed)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS taskpoll_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        let done: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM taskpoll_migrations").fetch_all(&mut *tx).await.map_err(failed)?;
        for (version, description, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(failed)?;
            sqlx::query("INSERT INTO taskpoll_migrations (version, description) VALUES ($1, $2)")
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    async fn write_states(&self, worker: &str, states: &[(WaitId, WaitState)], release: bool) -> Result<()> {
        let mut ids = Vec::with_capacity(states.len());
        let mut texts = Vec::with_capacity(states.len());
        let mut dues = Vec::with_capacity(states.len());
        for (id, state) in states {
            ids.push(*id);
            texts.push(to_json(state)?);
            dues.push(db_int(due_at_ms(state)));
        }
        let sql = if release {
            "UPDATE taskpoll_waits w SET state = u.state, due_at_ms = u.due, worker = NULL \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS u(id, state, due) \
             WHERE w.id = u.id AND w.worker = $4 AND w.finished_at_ms IS NULL"
        } else {
            "UPDATE taskpoll_waits w SET state = u.state, due_at_ms = u.due \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS u(id, state, due) \
             WHERE w.id = u.id AND w.worker = $4 AND w.finished_at_ms IS NULL"
        };
        sqlx::query(sql)
            .bind(ids)
            .bind(texts)
            .bind(dues)
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot save wait states"))?;
        Ok(())
    }
}

fn failed(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::store(what, e)
}

impl WaitStore for PostgresStore {
    fn add<'a>(&'a self, waits: &'a [NewWait]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let (mut providers, mut tasks, mut options, mut states, mut dues) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for wait in waits {
                providers.push(wait.state.task_ref.provider().to_string());
                tasks.push(wait.state.task_ref.to_string());
                options.push(to_json(&wait.options)?);
                states.push(to_json(&wait.state)?);
                dues.push(db_int(due_at_ms(&wait.state)));
            }
            let done = sqlx::query(
                "INSERT INTO taskpoll_waits (provider, task, options, state, due_at_ms) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                 ON CONFLICT (task) DO NOTHING",
            )
            .bind(providers)
            .bind(tasks)
            .bind(options)
            .bind(states)
            .bind(dues)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot add waits"))?;
            Ok(done.rows_affected())
        })
    }

    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Vec<ClaimedWait>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "UPDATE taskpoll_waits SET worker = $1 WHERE id IN ( \
                   SELECT w.id FROM taskpoll_waits AS w \
                   WHERE w.provider = $2 AND w.finished_at_ms IS NULL AND w.due_at_ms <= $4 \
                     AND (w.worker IS NULL OR NOT EXISTS ( \
                       SELECT 1 FROM taskpoll_workers AS k WHERE k.worker = w.worker AND k.lease_until_ms >= $3)) \
                   ORDER BY w.due_at_ms LIMIT $5 \
                   FOR UPDATE OF w SKIP LOCKED) \
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
                "UPDATE taskpoll_workers SET lease_until_ms = $1 WHERE worker = $2 AND lease_until_ms >= $3",
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
                if expired.rows_affected() == 0 {
                    sqlx::query("INSERT INTO taskpoll_workers (worker, lease_until_ms) VALUES ($1, $2)")
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
            let (mut ids, mut bodies, mut states, mut ats) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for outcome in outcomes {
                ids.push(outcome.id);
                bodies.push(OutcomeBody::json(outcome)?);
                states.push(to_json(&outcome.state)?);
                ats.push(db_int(outcome.finished_at_ms));
            }
            sqlx::query_scalar(
                "UPDATE taskpoll_waits w SET finished_at_ms = u.at, outcome = u.body, state = u.state \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, body, state, at) \
                 WHERE w.id = u.id AND w.worker = $5 AND w.finished_at_ms IS NULL RETURNING w.id",
            )
            .bind(ids)
            .bind(bodies)
            .bind(states)
            .bind(ats)
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
                 WHERE finished_at_ms IS NOT NULL AND NOT consumed ORDER BY finished_at_ms, id LIMIT $1",
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
                "UPDATE taskpoll_waits SET consumed = TRUE \
                 WHERE id = ANY($1) AND finished_at_ms IS NOT NULL AND NOT consumed",
            )
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(failed("cannot mark outcomes consumed"))?;
            Ok(done.rows_affected())
        })
    }

    fn unfinished<'a>(&'a self, providers: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM taskpoll_waits WHERE finished_at_ms IS NULL AND provider = ANY($1)",
            )
            .bind(providers)
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
                "INSERT INTO taskpoll_budgets (provider, tokens, refilled_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider) DO NOTHING",
            )
            .bind(provider)
            .bind(burst)
            .bind(db_int(now_ms))
            .execute(&self.pool)
            .await
            .map_err(failed("cannot take from the shared rate budget"))?;
            // The row lock serialises concurrent takes; every right-hand side
            // reads the row as it was, and `granted` returns what was taken.
            let granted: i64 = sqlx::query_scalar(
                "UPDATE taskpoll_budgets SET \
                   granted = LEAST($4, FLOOR(LEAST($2, tokens + GREATEST(0, $3 - refilled_at_ms) * $5 / 1000.0)))::bigint, \
                   tokens = LEAST($2, tokens + GREATEST(0, $3 - refilled_at_ms) * $5 / 1000.0) \
                          - LEAST($4, FLOOR(LEAST($2, tokens + GREATEST(0, $3 - refilled_at_ms) * $5 / 1000.0))), \
                   refilled_at_ms = GREATEST(refilled_at_ms, $3) \
                 WHERE provider = $1 RETURNING granted",
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
