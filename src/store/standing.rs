//! What principals hold in workspaces, read for the check path's misses.
//!
//! A miss is one statement: the principal's standing in the organization
//! (membership or service account), the grants reaching it in the workspace
//! (its own and, for a user, its teams') and the custom roles they name.
//! Misses that arrive together share that statement: four readers each take
//! every miss waiting (up to [`MAX_BATCH`]) and answer them in one round
//! trip, so a refill after a flush costs one round trip per batch rather
//! than per set. A miss that finds a reader free is read at once, alone.

use std::sync::{Arc, Mutex};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};
use tokio::sync::{Semaphore, oneshot};

use super::{StoreError, StoreResult};

/// A grant reaching a principal in one workspace, with its custom role's
/// stored permissions (`None` for a system role, or for a custom role that
/// does not exist in the organization).
#[derive(Clone, Debug)]
pub struct HeldGrant {
    pub id: String,
    pub subject_type: String,
    pub subject_id: String,
    pub role: String,
    pub scope: Option<String>,
    pub custom_permissions: Option<String>,
    /// The grant's own expiry (ms since the Unix epoch), if any.
    pub expires_at: Option<i64>,
    /// Through a team: the membership's expiry, if any.
    pub membership_expires_at: Option<i64>,
}

/// What a principal holds in one workspace: its organization role (and
/// whether it is a platform account) and every grant reaching it there,
/// ordered by grant id.
#[derive(Clone, Debug)]
pub struct Standing {
    pub role: String,
    pub platform: bool,
    pub grants: Vec<HeldGrant>,
}

/// Who a standing is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalTable {
    /// A user, through their membership and their teams.
    User,
    /// A service account of the organization.
    ServiceAccount,
}

/// One standing asked for: organization id, principal id, workspace id.
pub type Wanted = (String, String, String);

/// Most misses read by one statement.
pub const MAX_BATCH: usize = 64;

/// Statements read at once, for both kinds of principal together; misses
/// beyond them wait and join the next batch. Half of SQLite's pool (8
/// connections) at most, so writes and other reads keep connections.
const READERS: usize = 4;

/// The statement reading `count` standings of `table`'s principals: one
/// `VALUES` row per miss (`n`, organization, principal, workspace). Its
/// first part is the principal's standing (no row: no such member or account
/// in that organization); its second, the grants naming a subject the
/// principal acts as (itself and, for a user, its teams), each looked up by
/// the full grant index, with the custom role they name and the expiries of
/// the grant and (through a team) of the membership: expired rows are read
/// too, the domain tells them apart. `CROSS JOIN` keeps
/// the subjects as the outer loop on SQLite, whose planner otherwise may
/// scan every grant against an automatic index of the few subjects (seen with
/// 100,000 grants: 9 ms a miss instead of 20 µs); PostgreSQL plans it as the
/// inner join it is.
fn statement_sql(table: PrincipalTable, count: usize) -> String {
    let values: Vec<String> = (0..count)
        .map(|i| {
            let b = i * 4;
            format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect();
    let (principal, platform, subjects) = match table {
        PrincipalTable::User => (
            "memberships p ON p.organization_id = w.org AND p.user_id = w.principal",
            "FALSE",
            "SELECT w.n, w.org, w.ws, 'user' AS subject_type, w.principal AS subject_id, \
             CAST(NULL AS BIGINT) AS member_expires_at \
             FROM wanted w \
             UNION ALL \
             SELECT w.n, w.org, w.ws, 'team', tm.team_id, tm.expires_at FROM wanted w \
             JOIN team_members tm ON tm.user_id = w.principal AND tm.organization_id = w.org",
        ),
        PrincipalTable::ServiceAccount => (
            "service_accounts p ON p.organization_id = w.org AND p.id = w.principal",
            "p.platform",
            "SELECT w.n, w.org, w.ws, 'service_account' AS subject_type, \
             w.principal AS subject_id, CAST(NULL AS BIGINT) AS member_expires_at \
             FROM wanted w",
        ),
    };
    format!(
        "WITH wanted (n, org, principal, ws) AS (VALUES {values}) \
         SELECT w.n, 0 AS part, p.role AS principal_role, {platform} AS platform, \
                NULL AS grant_id, NULL AS subject_type, NULL AS subject_id, \
                NULL AS grant_role, NULL AS scope, NULL AS custom_permissions, \
                CAST(NULL AS BIGINT) AS expires_at, \
                CAST(NULL AS BIGINT) AS membership_expires_at \
         FROM wanted w JOIN {principal} \
         UNION ALL \
         SELECT s.n, 1, NULL, FALSE, g.id, g.subject_type, g.subject_id, g.role, g.scope, \
                r.permissions, g.expires_at, s.member_expires_at \
         FROM ({subjects}) s CROSS JOIN grants g \
         LEFT JOIN roles r ON r.id = g.role AND r.organization_id = s.org \
         WHERE g.workspace_id = s.ws AND g.subject_type = s.subject_type \
              AND g.subject_id = s.subject_id AND g.organization_id = s.org \
         ORDER BY 1, 2, 5",
        values = values.join(", ")
    )
}

/// Reads the standings of `wanted` in one statement; the answer is in the
/// order asked. Batches are padded to a power of two with rows that match
/// nothing, so few statement shapes exist to be prepared.
pub async fn standings<C: ConnectionTrait>(
    conn: &C,
    table: PrincipalTable,
    wanted: &[Wanted],
) -> StoreResult<Vec<Option<Standing>>> {
    let mut answers: Vec<Option<Standing>> = vec![None; wanted.len()];
    if wanted.is_empty() {
        return Ok(answers);
    }
    let shape = wanted.len().next_power_of_two();
    let mut values: Vec<Value> = Vec::with_capacity(shape * 4);
    for i in 0..shape {
        values.push(Value::from(i as i64));
        match wanted.get(i) {
            Some((org, principal, ws)) => {
                values.extend([
                    org.as_str().into(),
                    principal.as_str().into(),
                    ws.as_str().into(),
                ]);
            }
            // Padding: NULL equals nothing, so these rows match no row of any table.
            None => values.extend([
                Value::String(None),
                Value::String(None),
                Value::String(None),
            ]),
        }
    }
    let statement = Statement::from_sql_and_values(
        conn.get_database_backend(),
        statement_sql(table, shape),
        values,
    );
    for row in conn.query_all_raw(statement).await? {
        let n: i64 = row.try_get("", "n")?;
        let Some(answer) = usize::try_from(n).ok().and_then(|n| answers.get_mut(n)) else {
            return Err(StoreError::Internal(format!(
                "standing for unasked row {n}"
            )));
        };
        // The standing row comes first; a grant row with no standing before
        // it belongs to no member and is not used.
        let Some(id) = row.try_get::<Option<String>>("", "grant_id")? else {
            *answer = Some(Standing {
                role: row.try_get("", "principal_role")?,
                platform: row.try_get("", "platform")?,
                grants: Vec::new(),
            });
            continue;
        };
        let Some(held) = answer else {
            continue;
        };
        held.grants.push(HeldGrant {
            id,
            subject_type: row.try_get("", "subject_type")?,
            subject_id: row.try_get("", "subject_id")?,
            role: row.try_get("", "grant_role")?,
            scope: row.try_get("", "scope")?,
            custom_permissions: row.try_get("", "custom_permissions")?,
            expires_at: row.try_get("", "expires_at")?,
            membership_expires_at: row.try_get("", "membership_expires_at")?,
        });
    }
    Ok(answers)
}

/// A miss waiting for its batch.
struct Miss {
    wanted: Wanted,
    reply: oneshot::Sender<StoreResult<Option<Standing>>>,
}

/// Misses of one kind of principal waiting to be read, and the readers.
#[derive(Debug)]
struct Batcher {
    table: PrincipalTable,
    waiting: Mutex<Vec<Miss>>,
    readers: Arc<Semaphore>,
}

impl std::fmt::Debug for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miss")
            .field("wanted", &self.wanted)
            .finish()
    }
}

impl Batcher {
    fn new(table: PrincipalTable, readers: Arc<Semaphore>) -> Self {
        Self {
            table,
            waiting: Mutex::default(),
            readers,
        }
    }

    /// Reads one standing, in a batch with the misses waiting beside it.
    async fn read(&self, db: &DatabaseConnection, wanted: Wanted) -> StoreResult<Option<Standing>> {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Miss { wanted, reply });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answered(answer),
                reader = self.readers.clone().acquire_owned() => {
                    let reader = reader.map_err(|_| StoreError::Internal("standing readers closed".into()))?;
                    let batch: Vec<Miss> = {
                        let mut waiting = self.lock();
                        // Misses whose caller went away are dropped unread.
                        waiting.retain(|m| !m.reply.is_closed());
                        let n = waiting.len().min(MAX_BATCH);
                        waiting.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // Another reader took this miss: its answer is on the way.
                        drop(reader);
                        return answered(answer.await);
                    }
                    // The batch runs on its own so that a caller going away
                    // does not abandon the misses it took.
                    let db = db.clone();
                    let table = self.table;
                    tokio::spawn(async move {
                        let (wanted, replies): (Vec<Wanted>, Vec<_>) =
                            batch.into_iter().map(|m| (m.wanted, m.reply)).unzip();
                        let result = standings(&db, table, &wanted).await;
                        drop(reader);
                        match result {
                            Ok(answers) => {
                                for (reply, answer) in replies.into_iter().zip(answers) {
                                    let _ = reply.send(Ok(answer));
                                }
                            }
                            Err(e) => {
                                for reply in replies {
                                    let _ = reply.send(Err(e.clone()));
                                }
                            }
                        }
                    });
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Miss>> {
        // A poisoned queue still holds valid misses: the lock guards no invariant a panic breaks.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn answered(
    answer: Result<StoreResult<Option<Standing>>, oneshot::error::RecvError>,
) -> StoreResult<Option<Standing>> {
    answer.unwrap_or_else(|_| Err(StoreError::Internal("standing read abandoned".into())))
}

/// The batching readers of standings: a queue per kind of principal, and
/// [`READERS`] statements at once between them.
#[derive(Debug)]
pub struct StandingReader {
    users: Batcher,
    service_accounts: Batcher,
}

impl Default for StandingReader {
    fn default() -> Self {
        let readers = Arc::new(Semaphore::new(READERS));
        Self {
            users: Batcher::new(PrincipalTable::User, readers.clone()),
            service_accounts: Batcher::new(PrincipalTable::ServiceAccount, readers),
        }
    }
}

impl StandingReader {
    /// What the principal (`table`, `principal_id`) of `org_id` holds in
    /// workspace `workspace_id`; `None` when it is no member or account of
    /// the organization.
    pub async fn read(
        &self,
        db: &DatabaseConnection,
        table: PrincipalTable,
        (org_id, principal_id, workspace_id): (&str, &str, &str),
    ) -> StoreResult<Option<Standing>> {
        let batcher = match table {
            PrincipalTable::User => &self.users,
            PrincipalTable::ServiceAccount => &self.service_accounts,
        };
        batcher
            .read(
                db,
                (
                    org_id.to_owned(),
                    principal_id.to_owned(),
                    workspace_id.to_owned(),
                ),
            )
            .await
    }
}
