//! Storage: sea-orm entities, migrations and the repository functions that are
//! the only place SQL is built. One code path serves SQLite and PostgreSQL.
//!
//! Every change runs in one [`WriteTx`] and is published by
//! [`WriteTx::commit`]: it advances the global revision, appends the change's
//! row to the change log (and its audit events), and commits. On PostgreSQL
//! the revision row is taken only there, so it is locked from the advance to
//! the commit and no longer: writers do their work side by side and take
//! turns only to publish. SQLite has one writer at a time anyway; there the
//! row is advanced first, which takes the write lock before anything is read
//! (a transaction that read first could not become a writer). Either way
//! revisions commit in their order, without gaps, so a reader that sees
//! revision `r` sees every change up to `r`.

pub mod audit;
pub mod changes;
pub mod entity;
pub mod identity;
pub mod keys;
pub mod migration;
pub mod roles;
pub mod settings;
pub mod signing_keys;
pub mod standing;
pub mod teams;
pub mod workspaces;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, RuntimeErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::StorageErrorKind;

/// What went wrong talking to the database.
#[derive(Clone, Debug, thiserror::Error)]
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
    gate: Arc<WriteGate>,
    standings: Arc<standing::StandingReader>,
}

/// Connections of the pool: for PostgreSQL, and for SQLite (one writer at a
/// time, readers beside it in WAL mode).
const POSTGRES_CONNECTIONS: u32 = 32;
/// A pooled connection idle at least this long is pinged before use; one in
/// steady use is not (a ping is a round trip to the database on every
/// transaction and every read otherwise). A connection that broke while in
/// use fails its statement, and the pool closes it when it comes back.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);
const SQLITE_CONNECTIONS: u32 = 8;
/// WAL pages past which a committing SQLite writer checkpoints itself (the
/// default is 1,000: about every hundred single-row changes, each paying an
/// fsync of the database file).
const WAL_BACKSTOP_PAGES: u32 = 16_000;
/// How often SQLite's WAL is checkpointed beside the writers.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Hashed slots of the per-tenant write gates.
const TENANT_GATES: usize = 1024;

/// Admission of write transactions. Writers take turns on the revision row
/// to publish (for the whole transaction on SQLite); a writer waiting for
/// its turn waits here, in the process, not on the database with a
/// connection of the pool that reads need. At most half of the pool writes
/// at once on PostgreSQL, one writer on SQLite, and each tenant
/// (organization) has at most a few writers past the gate, so one tenant's
/// queue of writes neither drains the pool nor stands in front of every
/// other tenant's: the shared gate is first come, first served among at most
/// a few writers per tenant. Tenants hashing to the same slot share it.
#[derive(Debug)]
struct WriteGate {
    all: Arc<Semaphore>,
    tenants: Vec<Arc<Semaphore>>,
    load: Arc<WriteLoad>,
    publishing: Arc<tokio::sync::Mutex<()>>,
}

/// How many writers wait for a turn, and how many hold one.
#[derive(Debug, Default)]
pub struct WriteLoad {
    waiting: AtomicI64,
    writing: AtomicI64,
}

impl WriteLoad {
    /// Writers waiting for a turn at the write gate.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Writers holding a turn: in a write transaction, or beginning one.
    pub fn writing(&self) -> i64 {
        self.writing.load(Ordering::Relaxed)
    }
}

impl WriteGate {
    /// At most `all` writers at once, half of them (at least one) of one
    /// tenant.
    fn new(all: usize) -> Self {
        let all = all.max(1);
        let per_tenant = (all / 2).max(1);
        Self {
            all: Arc::new(Semaphore::new(all)),
            tenants: (0..TENANT_GATES)
                .map(|_| Arc::new(Semaphore::new(per_tenant)))
                .collect(),
            load: Arc::default(),
            publishing: Arc::default(),
        }
    }

    /// Waits for a turn of `tenant` to write.
    async fn enter(&self, tenant: u128) -> StoreResult<WritePermit> {
        let folded = (tenant as u64) ^ ((tenant >> 64) as u64);
        let slot = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % TENANT_GATES;
        let closed = |_| StoreError::Internal("the write gate is closed".into());
        // Counted as waiting until the turn is taken, on every path (a
        // dropped call stops waiting too).
        let waiting = Counted::new(self.load.clone(), |l| &l.waiting);
        let tenant = self.tenants[slot]
            .clone()
            .acquire_owned()
            .await
            .map_err(closed)?;
        let all = self.all.clone().acquire_owned().await.map_err(closed)?;
        drop(waiting);
        Ok(WritePermit {
            _all: all,
            _tenant: tenant,
            _counted: Counted::new(self.load.clone(), |l| &l.writing),
            publishing: self.publishing.clone(),
        })
    }
}

/// One unit of a [`WriteLoad`] gauge, given back when dropped.
#[derive(Debug)]
struct Counted {
    load: Arc<WriteLoad>,
    gauge: fn(&WriteLoad) -> &AtomicI64,
}

impl Counted {
    fn new(load: Arc<WriteLoad>, gauge: fn(&WriteLoad) -> &AtomicI64) -> Self {
        gauge(&load).fetch_add(1, Ordering::Relaxed);
        Self { load, gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.gauge)(&self.load).fetch_sub(1, Ordering::Relaxed);
    }
}

/// A writer's turn, held until its transaction ends.
#[derive(Debug)]
struct WritePermit {
    _all: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
    _counted: Counted,
    /// This replica's turn on the revision row (PostgreSQL), held from the
    /// publishing statement to the commit: one writer at a time gets there
    /// and the others wait here, first come, first served, instead of on
    /// the row lock in the database, where every commit woke every waiter
    /// to compete for the row again.
    publishing: Arc<tokio::sync::Mutex<()>>,
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

/// A write transaction; [`WriteTx::commit`] publishes it under a new revision.
pub struct WriteTx {
    txn: DatabaseTransaction,
    _turn: WritePermit,
}

/// What a committed change publishes besides its data: its change-log row
/// (the revision is filled in) and its audit events (each given the revision).
#[derive(Debug)]
pub struct Publication {
    /// The log row; `revision` is set on commit.
    pub log: entity::change_log::Model,
    /// Audit events; `revision` is set on commit.
    pub audit: Vec<entity::audit_event::Model>,
}

impl Store {
    /// Connects to `url` (`sqlite://file?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
        let connections = if url.starts_with("sqlite:") {
            SQLITE_CONNECTIONS
        } else {
            POSTGRES_CONNECTIONS
        };
        if url.starts_with("sqlite:") {
            // WAL lets readers run beside the single writer; the busy timeout
            // makes a second writer wait for the lock instead of failing.
            opts.max_connections(connections).map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Checkpoints run beside the writers (`checkpoints`);
                    // a committing writer checkpoints only past this many
                    // WAL pages, if they fell behind.
                    .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
            });
        } else {
            opts.max_connections(connections);
        }
        let db = Database::connect(opts).await?;
        Ok(Self {
            db,
            url: url.to_owned(),
            // SQLite has one writer at a time: a second one past the gate
            // would only sleep in SQLite's busy handler, where the gate's
            // queue is first come, first served and wakes it at once.
            gate: Arc::new(WriteGate::new(if url.starts_with("sqlite:") {
                1
            } else {
                connections as usize / 2
            })),
            standings: Arc::default(),
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

    /// How many writers wait at the write gate and how many write.
    pub fn write_load(&self) -> &WriteLoad {
        &self.gate.load
    }

    /// The connection pool, for reads.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// What a principal of `org_id` holds in a workspace (`(organization id,
    /// principal id, workspace id)`), read in one round trip shared with the
    /// misses waiting beside it; `None` when it is no member or account of
    /// the organization.
    pub async fn standing(
        &self,
        table: standing::PrincipalTable,
        wanted: (&str, &str, &str),
    ) -> StoreResult<Option<standing::Standing>> {
        self.standings.read(&self.db, table, wanted).await
    }

    /// The URL the store was opened with (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend behind this store.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Opens a write transaction of `tenant` (an organization's id; 0 for
    /// the command-line tools) once the write gate lets it. On SQLite the
    /// revision is advanced as the first statement (see the module's notes).
    pub async fn write(&self, tenant: u128) -> StoreResult<WriteTx> {
        let turn = self.gate.enter(tenant).await?;
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DbBackend::Sqlite {
            txn.execute_raw(Statement::from_string(DbBackend::Sqlite, ADVANCE_REVISION))
                .await?;
        }
        Ok(WriteTx { txn, _turn: turn })
    }

    /// Checkpoints SQLite's WAL into the database file every
    /// [`CHECKPOINT_EVERY`], passively (never waiting for readers or
    /// writers), so that writers do not pay for it on commit; runs until
    /// dropped. Nothing to do on PostgreSQL.
    pub async fn checkpoints(self) {
        if self.backend() != DbBackend::Sqlite {
            return;
        }
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(err) = self
                .db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(error = %err, "cannot checkpoint the SQLite WAL");
            }
        }
    }

    /// Tells the replicas listening on `channel` that `revision` committed
    /// (PostgreSQL `NOTIFY`, outside any change: a notification sent inside
    /// the committing transaction made every commit take the notification
    /// queue's lock and signal the listeners while the revision row was held,
    /// which cost more than half of a single-row change's time there).
    /// Nothing to do on SQLite.
    pub async fn notify(&self, channel: &str, revision: u64) -> StoreResult<()> {
        if self.backend() != DbBackend::Postgres {
            return Ok(());
        }
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), revision.to_string().into()],
            ))
            .await?;
        Ok(())
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

/// Advances the revision row (`RETURNING` the new value on PostgreSQL).
const ADVANCE_REVISION: &str = "UPDATE revision SET value = value + 1 WHERE id = 1";

impl WriteTx {
    /// The transaction, for repository functions.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Publishes the change: advances the revision, appends its log row and
    /// audit events, commits; returns the revision. On PostgreSQL all but
    /// the commit is one statement, so the revision row is locked for one
    /// round trip and the commit, no longer, and this replica's writers take
    /// turns for it in the process.
    pub async fn commit(self, mut publication: Publication) -> StoreResult<u64> {
        let Self { txn, _turn: turn } = self;
        if txn.get_database_backend() == DbBackend::Postgres {
            let _publishing = turn.publishing.lock().await;
            let revision = publish_postgres(&txn, publication).await?;
            txn.commit().await?;
            return Ok(revision);
        }
        let revision = read_revision(&txn).await?;
        let signed = i64::try_from(revision).unwrap_or(i64::MAX);
        for event in &mut publication.audit {
            event.revision = signed;
        }
        audit::insert_all(&txn, publication.audit).await?;
        publication.log.revision = signed;
        changes::append(&txn, publication.log).await?;
        txn.commit().await?;
        Ok(revision)
    }
}

/// Advances the revision and writes what a change publishes in one
/// statement (data-modifying CTEs); returns the revision.
async fn publish_postgres(txn: &DatabaseTransaction, p: Publication) -> StoreResult<u64> {
    use sea_orm::Value;
    let mut values: Vec<Value> = vec![
        p.log.organization_id.into(),
        p.log.created_at.into(),
        p.log.invalidations.into(),
        p.log.events.into(),
    ];
    let mut sql = format!(
        "WITH r AS ({ADVANCE_REVISION} RETURNING value), \
         l AS (INSERT INTO change_log (revision, organization_id, created_at, invalidations, events) \
               SELECT value, $1, $2, $3, $4 FROM r)"
    );
    if !p.audit.is_empty() {
        let mut rows = Vec::with_capacity(p.audit.len());
        for e in p.audit {
            let n = values.len();
            rows.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}::bigint)",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8,
                n + 9,
                n + 10
            ));
            values.extend([
                e.id.into(),
                e.organization_id.into(),
                e.actor_type.into(),
                e.actor_id.into(),
                e.acting_for_user_id.into(),
                e.action.into(),
                e.target_type.into(),
                e.target_id.into(),
                e.details.into(),
                e.created_at.into(),
            ]);
        }
        sql.push_str(&format!(
            ", a AS (INSERT INTO audit_events (id, organization_id, actor_type, actor_id, \
               acting_for_user_id, action, target_type, target_id, details, created_at, revision) \
               SELECT v.*, r.value FROM r, (VALUES {}) AS v)",
            rows.join(", ")
        ));
    }
    sql.push_str(" SELECT value FROM r");
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
        .ok_or_else(|| StoreError::Internal("revision row is missing".into()))?;
    let value: i64 = row.try_get("", "value")?;
    u64::try_from(value).map_err(|_| StoreError::Internal("negative revision".into()))
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
