//! Watching an organization's changes: its rows of the change log after a
//! revision, in order, then each new one as this replica applies the log.
//! Authorized like an admin read (`changes:watch`: organization admins, and
//! their keys that reach the whole organization), again before every batch
//! sent, so a revoked key or a removed admin stops receiving. Only changes
//! whose every event belongs to the organization are its changes; platform
//! accounts' ids read `platform`, as in its audit log.

use tokio::sync::watch;

use crate::{
    auth::Caller,
    authz::OrgPermission,
    domain::{audit::hide_accounts, authorize},
    error::{Error, Result},
    state::AppState,
    store::{StoreError, changes, entity::change_log},
};

/// Most changes sent in one batch.
const BATCH: u64 = 100;
/// Most watches open at once on one replica for one organization.
pub const MAX_WATCHES_PER_ORGANIZATION: usize = 16;

/// One open watch's place among the organization's, given back when dropped.
struct Slot {
    state: AppState,
    org_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.state.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.org_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.org_id);
            }
        }
    }
}

fn take_slot(state: &AppState, org_id: &str) -> Result<Slot> {
    let mut open = state.watches.lock().unwrap_or_else(|e| e.into_inner());
    let n = open.entry(org_id.to_owned()).or_default();
    if *n >= MAX_WATCHES_PER_ORGANIZATION {
        return Err(Error::ResourceExhausted(format!(
            "this organization has {MAX_WATCHES_PER_ORGANIZATION} watches open on this replica, the most it may; close one"
        )));
    }
    *n += 1;
    Ok(Slot {
        state: state.clone(),
        org_id: org_id.to_owned(),
    })
}

/// One thing a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub action: String,
    pub target_type: String,
    pub target_id: String,
}

/// One committed change of the organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub revision: u64,
    pub committed_at_ms: i64,
    pub events: Vec<Event>,
}

/// An open watch.
pub struct Watch {
    state: AppState,
    caller: Caller,
    org_id: String,
    cursor: u64,
    applied: watch::Receiver<u64>,
    _slot: Slot,
}

/// Opens a watch of `org_id` (empty: the caller's) after `after_revision`
/// (0: from now on).
pub async fn start(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    after_revision: u64,
) -> Result<Watch> {
    let org_id = caller.organization(org_id).to_owned();
    let conn = state.store.db();
    authorize::org(conn, caller, &org_id, OrgPermission::WatchChanges).await?;
    let latest = state.store.revision().await?;
    if after_revision > latest {
        return Err(Error::FailedPrecondition(format!(
            "after_revision {after_revision} is ahead of storage (latest revision is {latest})"
        )));
    }
    let cursor = if after_revision == 0 {
        latest
    } else {
        after_revision
    };
    let slot = take_slot(state, &org_id)?;
    let watch = Watch {
        state: state.clone(),
        caller: caller.clone(),
        org_id,
        cursor,
        applied: state.log.subscribe(),
        _slot: slot,
    };
    watch.still_in_log().await?;
    Ok(watch)
}

impl Watch {
    /// The next changes after those already returned; waits for one.
    pub async fn next(&mut self) -> Result<Vec<Watched>> {
        loop {
            let conn = self.state.store.db();
            authorize::org(
                conn,
                &self.caller,
                &self.org_id,
                OrgPermission::WatchChanges,
            )
            .await?;
            self.still_in_log().await?;
            // Seen before reading: a change applied after this is not missed.
            self.applied.borrow_and_update();
            let rows =
                changes::of_organization_after(conn, &self.org_id, self.cursor, BATCH).await?;
            if let Some(last) = rows.last() {
                self.cursor = u64::try_from(last.revision).unwrap_or(u64::MAX);
                let hidden = authorize::hidden_accounts(conn, &self.caller).await?;
                return rows.into_iter().map(|r| watched(r, &hidden)).collect();
            }
            tokio::select! {
                _ = self.applied.changed() => {}
                () = tokio::time::sleep(self.state.settings.revision_poll_interval) => {}
            }
        }
    }

    /// Fails when changes after the cursor were trimmed from the log.
    async fn still_in_log(&self) -> Result<()> {
        let conn = self.state.store.db();
        let oldest = match changes::oldest(conn).await? {
            Some(oldest) => oldest,
            // An empty log: every change up to the latest revision was trimmed.
            None => self.state.store.revision().await? + 1,
        };
        if self.cursor + 1 < oldest {
            return Err(Error::FailedPrecondition(format!(
                "the change log no longer holds the changes after revision {}; the oldest available revision is {oldest} (watch again with after_revision {})",
                self.cursor,
                oldest - 1
            )));
        }
        Ok(())
    }
}

fn watched(row: change_log::Model, hidden: &[String]) -> Result<Watched> {
    let unreadable = || {
        StoreError::Internal(format!(
            "the change log's row of revision {} does not parse",
            row.revision
        ))
    };
    let parsed: Vec<serde_json::Value> =
        serde_json::from_str(&row.events).map_err(|_| unreadable())?;
    let mut events = Vec::with_capacity(parsed.len());
    for e in parsed {
        let field = |name: &str| e.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(action), Some(target_type), Some(mut target_id)) =
            (field("action"), field("target_type"), field("target_id"))
        else {
            return Err(unreadable().into());
        };
        hide_accounts(hidden, [&mut target_id]);
        events.push(Event {
            action,
            target_type,
            target_id,
        });
    }
    Ok(Watched {
        revision: u64::try_from(row.revision).unwrap_or_default(),
        committed_at_ms: row.created_at,
        events,
    })
}
