//! The transaction every change runs in. It advances the revision first (see
//! `store::WriteTx`), collects what the change invalidates, and on commit
//! publishes it: `NOTIFY` to other replicas inside the transaction (delivered
//! only if it commits), then the local caches before the RPC returns.

use std::sync::Mutex;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use crate::{
    auth::Caller,
    authz::cache::{Invalidation, parse_id},
    error::Result,
    state::AppState,
    store::{Store, WriteTx},
};

/// The channel replicas `LISTEN` on.
pub const CHANGES_CHANNEL: &str = "portcullis_changes";
/// Longest `NOTIFY` payload sent; a longer change invalidates everything.
const MAX_PAYLOAD: usize = 7000;

/// A write transaction with its invalidations.
pub struct Tx {
    inner: WriteTx,
    state: Option<AppState>,
    changes: Mutex<Vec<Invalidation>>,
}

/// What kind of id an invalidation names.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Organization,
    Workspace,
    User,
    ServiceAccount,
    Key,
    ResourceTags,
}

impl Tx {
    /// Opens a transaction of `caller`'s whose changes reach the caches of
    /// `state`; it waits for a turn of the caller's organization to write.
    pub async fn begin(state: &AppState, caller: &Caller) -> Result<Self> {
        Ok(Self {
            inner: state.store.write(caller.key.ids.organization).await?,
            state: Some(state.clone()),
            changes: Mutex::new(Vec::new()),
        })
    }

    /// Opens a transaction for a command-line tool with no caches of its own
    /// (other replicas are still notified).
    pub async fn detached(store: &Store) -> Result<Self> {
        Ok(Self {
            inner: store.write(0).await?,
            state: None,
            changes: Mutex::new(Vec::new()),
        })
    }

    /// The transaction, for repository functions.
    pub fn conn(&self) -> &DatabaseTransaction {
        self.inner.conn()
    }

    /// The revision this transaction publishes.
    pub fn revision(&self) -> u64 {
        self.inner.revision()
    }

    /// Records that cached data about `id` is stale once this commits.
    /// An id that is not a UUID cannot be cached, so it needs nothing.
    pub fn invalidate(&self, target: Target, id: &str) {
        let Some(id) = parse_id(id) else { return };
        let change = match target {
            Target::Organization => Invalidation::Organization(id),
            Target::Workspace => Invalidation::Workspace(id),
            Target::User => Invalidation::User(id),
            Target::ServiceAccount => Invalidation::ServiceAccount(id),
            Target::Key => Invalidation::Key(id),
            Target::ResourceTags => Invalidation::ResourceTags(id),
        };
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
    }

    /// Commits, then applies the invalidations locally; returns the revision.
    pub async fn commit(self) -> Result<u64> {
        let revision = self.inner.revision();
        let changes = self
            .changes
            .into_inner()
            .unwrap_or_else(|_| vec![Invalidation::All]);
        if self.inner.conn().get_database_backend() == DbBackend::Postgres {
            let payload = notify_payload(revision, &changes);
            self.inner
                .conn()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [CHANGES_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
        self.inner.commit().await?;
        if let Some(state) = &self.state {
            state.apply_own_changes(revision, &changes);
        }
        Ok(revision)
    }
}

/// `<revision> <invalidation> <invalidation> ...`
pub fn notify_payload(revision: u64, changes: &[Invalidation]) -> String {
    let mut payload = revision.to_string();
    for c in changes {
        payload.push(' ');
        payload.push_str(&c.encode());
    }
    if payload.len() > MAX_PAYLOAD {
        return format!("{revision} *");
    }
    payload
}

/// Parses [`notify_payload`]'s output; unknown parts invalidate everything.
pub fn parse_payload(payload: &str) -> (Option<u64>, Vec<Invalidation>) {
    let mut parts = payload.split(' ');
    let revision = parts.next().and_then(|r| r.parse().ok());
    let changes = parts
        .map(|p| Invalidation::decode(p).unwrap_or(Invalidation::All))
        .collect();
    (revision, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let changes = vec![Invalidation::User(5), Invalidation::Workspace(9)];
        let payload = notify_payload(42, &changes);
        assert_eq!(parse_payload(&payload), (Some(42), changes));
    }

    #[test]
    fn oversized_changes_become_invalidate_all() {
        let changes: Vec<_> = (0..1000).map(Invalidation::User).collect();
        let payload = notify_payload(7, &changes);
        assert_eq!(parse_payload(&payload), (Some(7), vec![Invalidation::All]));
    }

    #[test]
    fn garbage_invalidates_everything() {
        assert_eq!(parse_payload("3 zzz"), (Some(3), vec![Invalidation::All]));
    }
}
