//! Storage: sea-orm entities, migrations and the repository functions that are
//! the only place SQL is built. One code path serves SQLite and PostgreSQL.
//!
//! Every change runs in one [`WriteTx`], whose first statement advances the
//! global revision. Taking the revision row first serializes writers in commit
//! order (PostgreSQL row lock, SQLite write lock), so a reader that sees
//! revision `r` sees every change up to `r`.

pub mod audit;
pub mod entity;
pub mod identity;
pub mod keys;
pub mod migration;
pub mod roles;
pub mod teams;
pub mod workspaces;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, RuntimeErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::metrics::StorageErrorKind;

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timed out).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken by a concurrent change.
    #[error("{0}")]
    Conflict(String),
    /// Anything else; details are logged, never sent to clients.
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
            return Self::Conflict("the object already exists".into());
        }
        let unavailable = match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                is_connection_error(e)
            }
            _ => false,
        };
        if unavailable {
            crate::metrics::record_storage_error(StorageErrorKind::Unavailable);
            Self::Unavailable(err.to_string())
        } else {
            crate::metrics::record_storage_error(StorageErrorKind::Internal);
            Self::Internal(err.to_string())
        }
    }
}

/// Whether `err` says the database went away rather than refused the statement:
/// I/O and pool failures, and PostgreSQL's connection exceptions (class 08) and
/// operator interventions (class 57: shutdown, terminated backend).
fn is_connection_error(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Io(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_)
        | E::Tls(_) => true,
        E::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// The advisory lock key migrations hold on PostgreSQL ("portcullis" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// The result type of repository functions.
pub type StoreResult<T> = Result<T, StoreError>;

/// The database: a pool of connections to SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    url: String,
}

/// What a connection reads for: an answer (the pool) or a change (its
/// transaction). A change's reads of the rows its authorization depends on
/// lock them (`FOR SHARE` on PostgreSQL; SQLite has one writer at a time and
/// the revision row already serializes writers), so no other change can
/// remove a membership or an account between the decision and the commit.
pub trait Reads: ConnectionTrait {
    /// Reads through this connection belong to a change.
    const FOR_CHANGE: bool;
}

impl Reads for DatabaseConnection {
    const FOR_CHANGE: bool = false;
}

impl Reads for DatabaseTransaction {
    const FOR_CHANGE: bool = true;
}

/// A transaction that has already advanced the revision; commit to publish it.
pub struct WriteTx {
    txn: DatabaseTransaction,
    revision: u64,
}

impl Store {
    /// Connects to `url` (`sqlite://file?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        if url.starts_with("sqlite:") {
            // WAL lets readers run beside the single writer; the busy timeout
            // makes a second writer wait for the lock instead of failing.
            opts.max_connections(8).map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        } else {
            opts.max_connections(32);
        }
        let db = Database::connect(opts).await?;
        Ok(Self {
            db,
            url: url.to_owned(),
        })
    }

    /// Applies every pending migration. On PostgreSQL, replicas starting
    /// together take turns: a session advisory lock, held on a connection of
    /// its own, serializes them, and each finds what the others applied.
    pub async fn migrate(&self) -> StoreResult<()> {
        if self.backend() != DbBackend::Postgres {
            migration::Migrator::up(&self.db, None).await?;
            return Ok(());
        }
        let mut opts = ConnectOptions::new(self.url.clone());
        opts.sqlx_logging(false)
            .max_connections(1)
            .connect_timeout(Duration::from_secs(5));
        let lock = Database::connect(opts).await?;
        lock.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .await?;
        let result = migration::Migrator::up(&self.db, None).await;
        // Closing the session releases the lock whatever happened.
        let _ = lock
            .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await;
        let _ = lock.close().await;
        result?;
        Ok(())
    }

    /// The connection pool, for reads.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The URL the store was opened with (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend behind this store.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Opens a write transaction and advances the revision as its first statement.
    pub async fn write(&self) -> StoreResult<WriteTx> {
        let txn = self.db.begin().await?;
        let backend = txn.get_database_backend();
        txn.execute_raw(Statement::from_string(
            backend,
            "UPDATE revision SET value = value + 1 WHERE id = 1",
        ))
        .await?;
        let revision = read_revision(&txn).await?;
        Ok(WriteTx { txn, revision })
    }

    /// The latest committed revision.
    pub async fn revision(&self) -> StoreResult<u64> {
        read_revision(&self.db).await
    }

    /// Answers whether the database responds.
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await?;
        Ok(())
    }
}

async fn read_revision<C: ConnectionTrait>(conn: &C) -> StoreResult<u64> {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT value FROM revision WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| StoreError::Internal("revision row is missing".into()))?;
    let value: i64 = row.try_get("", "value")?;
    u64::try_from(value).map_err(|_| StoreError::Internal("negative revision".into()))
}

impl WriteTx {
    /// The revision this transaction publishes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The transaction, for repository functions.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Commits and returns the published revision.
    pub async fn commit(self) -> StoreResult<u64> {
        self.txn.commit().await?;
        Ok(self.revision)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A fresh random identifier.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Page size bounds shared by every list RPC.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Larger requested page sizes are lowered to this.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The effective page size for a requested one (0 means the default).
pub fn page_size(requested: u32) -> u64 {
    match u64::from(requested) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Splits one extra fetched row off a page: returns the page and the next token.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    size: u64,
    token_of: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        let token = rows.last().map(&token_of).unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}
