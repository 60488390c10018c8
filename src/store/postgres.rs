//! The PostgreSQL store, for several processes: a claim takes due rows with
//! `FOR UPDATE SKIP LOCKED` (two workers claiming at once get different
//! waits, neither blocks), and a provider's rate budget is one token row
//! every process takes from. Its statements are the SQL store's (`sql.rs`);
//! here are how to connect and PostgreSQL's [`Dialect`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult};
use tokio::sync::watch;

use super::sql::{Dialect, Migrations, SqlStore, wait_store_on_sql};
use crate::{Error, Result};

/// A [`WaitStore`](super::WaitStore) in a PostgreSQL database (feature `store-postgres`).
///
/// A delivery's write also sends `NOTIFY taskpoll_deliveries`, and a
/// [`StoredWaiter`](super::StoredWaiter) on it `LISTEN`s, to apply deliveries
/// sooner than its next regular read; the hint is never needed for
/// correctness, and [`PostgresStore::notify_deliveries`] turns it off.
#[derive(Clone)]
pub struct PostgresStore {
    sql: SqlStore<Postgres>,
    notify: bool,
    /// The listener's hints, while someone reads them.
    hints: Arc<Mutex<Option<watch::Sender<u64>>>>,
}

/// The channel of delivery hints.
const CHANNEL: &str = "taskpoll_deliveries";

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
        Ok(Self { sql: SqlStore::new(pool).await?, notify: true, hints: Arc::default() })
    }

    /// Whether deliveries send `NOTIFY` and workers `LISTEN` for it (default:
    /// yes). Off, workers find deliveries on their next read of the table
    /// (every 250 ms): no notification traffic and no listening connection.
    pub fn notify_deliveries(mut self, on: bool) -> Self {
        self.notify = on;
        self.sql.set_notify(on);
        self
    }

    /// Hints from a listener task, started on first use (and again once
    /// nobody read the last one's); none without a tokio runtime or with hints off.
    fn hints(&self) -> Option<watch::Receiver<u64>> {
        if !self.notify {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut slot = self.hints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = slot.as_ref().filter(|sender| !sender.is_closed()) {
            return Some(sender.subscribe());
        }
        let (sender, receiver) = watch::channel(0);
        drop(runtime.spawn(listen(self.sql.pool().clone(), sender.clone())));
        *slot = Some(sender);
        Some(receiver)
    }
}

/// Listens for delivery hints until nobody reads them, reconnecting with
/// backoff when the database goes away (hints missed meanwhile only delay).
async fn listen(pool: sqlx::PgPool, hints: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            // Deliveries may have come while not listening.
            hints.send_modify(|n| *n += 1);
            loop {
                listener.recv().await?;
                hints.send_modify(|n| *n += 1);
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = hints.closed() => return,
            result = listening => {
                if let Err(error) = result {
                    tracing::debug!(%error, "wait store: delivery hints: listening again after {backoff:?}");
                }
            }
        }
        tokio::select! {
            () = hints.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

wait_store_on_sql!(PostgresStore);

impl Dialect for Postgres {
    const MIGRATIONS: Migrations = &[
        (1, "waits and budgets", include_str!("migrations/postgres/0001_waits.sql")),
        (2, "webhook deliveries", include_str!("migrations/postgres/0002_deliveries.sql")),
        (3, "task durations", include_str!("migrations/postgres/0003_durations.sql")),
    ];
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
    const NOTIFY_DELIVERY: Option<&'static str> = Some("SELECT pg_notify('taskpoll_deliveries', $1)");
    // A delivery's insert, due time and hint in one statement. Binds: provider, task id,
    // task, now (ms), notify (1: yes); returns the deliveries kept (0 or 1), the finished
    // waits of the task (0 or 1) and the hints sent. The writing CTEs run whether read or
    // not; the hint's (a SELECT of a volatile function) runs as the final count reads it.
    const DELIVER: Option<&'static str> = Some(
        "WITH late AS ( \
           SELECT 1 FROM taskpoll_waits WHERE provider = $1 AND task_id = $2 AND finished_at_ms IS NOT NULL LIMIT 1 \
         ), kept AS ( \
           INSERT INTO taskpoll_deliveries (provider, task_id, task, received_at_ms) \
           SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM late) \
           ON CONFLICT (provider, task_id) DO NOTHING RETURNING seq \
         ), due AS ( \
           UPDATE taskpoll_waits SET due_at_ms = LEAST(due_at_ms, $4) \
           WHERE provider = $1 AND task_id = $2 AND finished_at_ms IS NULL AND EXISTS (SELECT 1 FROM kept) \
         ), hint AS ( \
           SELECT pg_notify('taskpoll_deliveries', $1) FROM kept WHERE $5 = 1 \
         ) \
         SELECT (SELECT COUNT(*) FROM kept), (SELECT COUNT(*) FROM late), (SELECT COUNT(*) FROM hint)",
    );
    // The trim and its count in one statement (so in one transaction). Binds: provider,
    // capacity.
    const TRIM_DELIVERIES: Option<&'static str> = Some(
        "WITH over AS ( \
           DELETE FROM taskpoll_deliveries WHERE provider = $1 AND seq <= ( \
             SELECT seq FROM taskpoll_deliveries WHERE provider = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2) \
           RETURNING 1 \
         ) \
         INSERT INTO taskpoll_delivery_drops (provider, over_capacity, expired) \
         SELECT $1, COUNT(*), 0 FROM over HAVING COUNT(*) > 0 \
         ON CONFLICT (provider) DO UPDATE \
           SET over_capacity = taskpoll_delivery_drops.over_capacity + excluded.over_capacity",
    );

    fn floor(expr: &str) -> String {
        // A cast alone would round.
        format!("CAST(FLOOR({expr}) AS BIGINT)")
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
