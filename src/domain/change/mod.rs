//! A change: the transaction it runs in, what it makes stale, its row in the
//! change log and its audit events, the notification that wakes other
//! replicas, and applying it here (at once) and elsewhere ([`follow`]);
//! [`watch`] streams an organization's changes to clients.
//!
//! A writer states what it changed ([`Changed`]); what that invalidates in
//! the caches follows here, as narrowly as the change allows: a grant drops
//! only its subject's set in its workspace (a team's grant: its members'),
//! a team membership only the member's sets where the team holds grants, a
//! custom role only the sets holding it.
//!
//! Committing ([`Tx::commit`]) takes the next revision, appends the log row
//! and the audit events and commits, then drops what the change made stale
//! from this replica's caches before the RPC returns; the revision is then
//! announced to other replicas (PostgreSQL `NOTIFY`, only a hint, sent after
//! the commit). Other replicas read the log in revision order.

pub mod follow;
pub mod watch;

use std::sync::Mutex;

use sea_orm::DatabaseTransaction;
use serde_json::json;

use crate::{
    auth::Caller,
    authz::cache::{Invalidation, PrincipalKind, SetKey, parse_id},
    error::Result,
    state::AppState,
    store::{
        Publication, Store, WriteTx,
        entity::{audit_event, change_log},
        now_ms, teams,
        workspaces::workspace_ids_with_grants,
    },
};

/// The channel replicas `LISTEN` on; a notification carries a revision.
pub const CHANGES_CHANNEL: &str = "portcullis_changes";

/// Most single sets one change names; beyond it the change invalidates the
/// coarser unit (the workspace, the user, the organization) instead.
const MAX_SETS: usize = 1000;

/// What a change touched, as its writer states it.
#[derive(Clone, Copy, Debug)]
pub enum Changed<'a> {
    /// The organization as a whole: its resource types, plan or existence.
    Organization(&'a str),
    /// A workspace as a whole (deleted).
    Workspace(&'a str),
    /// A user's standing: membership, role, removal, keys.
    User(&'a str),
    /// A service account's standing.
    ServiceAccount(&'a str),
    /// One API key.
    Key(&'a str),
    /// The registered resources of a workspace.
    ResourceTags(&'a str),
    /// A custom role's permissions.
    Role(&'a str),
    /// A grant given or taken (`subject_type` as stored).
    Grant {
        workspace_id: &'a str,
        subject_type: &'a str,
        subject_id: &'a str,
    },
    /// A user joined or left a team of `organization_id`.
    TeamMember {
        organization_id: &'a str,
        team_id: &'a str,
        user_id: &'a str,
    },
    /// A team deleted (before its members and grants are).
    Team {
        organization_id: &'a str,
        team_id: &'a str,
    },
}

/// A write transaction with what it invalidates and records.
pub struct Tx {
    inner: WriteTx,
    home: Home,
    pending: Mutex<Pending>,
}

/// Where a change is applied once committed.
enum Home {
    /// This replica: its caches, and its announcer (`follow`).
    Replica(AppState),
    /// A command-line tool without caches: it announces the change itself.
    Detached(Store),
}

#[derive(Default)]
struct Pending {
    invalidations: Vec<Invalidation>,
    events: Vec<audit_event::Model>,
}

impl Tx {
    /// Opens a transaction of `caller`'s whose changes reach the caches of
    /// `state`; it waits for a turn of the caller's organization to write.
    pub async fn begin(state: &AppState, caller: &Caller) -> Result<Self> {
        Ok(Self {
            inner: state.store.write(caller.key.ids.organization).await?,
            home: Home::Replica(state.clone()),
            pending: Mutex::default(),
        })
    }

    /// Opens a transaction of the server's own (a background sweep) in
    /// organization `organization`, whose changes reach the caches of `state`.
    pub async fn system(state: &AppState, organization: u128) -> Result<Self> {
        Ok(Self {
            inner: state.store.write(organization).await?,
            home: Home::Replica(state.clone()),
            pending: Mutex::default(),
        })
    }

    /// Opens a transaction for a command-line tool with no caches of its own
    /// (replicas read its changes from the log).
    pub async fn detached(store: &Store) -> Result<Self> {
        Ok(Self {
            inner: store.write(0).await?,
            home: Home::Detached(store.clone()),
            pending: Mutex::default(),
        })
    }

    /// The transaction, for repository functions.
    pub fn conn(&self) -> &DatabaseTransaction {
        self.inner.conn()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what the change touched; what it invalidates follows (read
    /// inside the transaction where it depends on teams or grants).
    pub async fn changed(&self, what: Changed<'_>) -> Result<()> {
        let found = invalidations(self.conn(), what).await?;
        self.pending().invalidations.extend(found);
        Ok(())
    }

    /// Records an audit event of the change (written on commit, with its revision).
    pub fn record(&self, event: audit_event::Model) {
        self.pending().events.push(event);
    }

    /// Publishes the change under a new revision, then drops what it made
    /// stale from this replica's caches; returns the revision.
    pub async fn commit(self) -> Result<u64> {
        let Pending {
            invalidations,
            events,
        } = self.pending.into_inner().unwrap_or_else(|e| e.into_inner());
        let log = change_log::Model {
            revision: 0,
            organization_id: organization_of(&events),
            created_at: now_ms(),
            invalidations: encode(&invalidations),
            events: describe(&events),
        };
        let revision = self
            .inner
            .commit(Publication { log, audit: events })
            .await?;
        match &self.home {
            Home::Replica(state) => {
                state.invalidate(&invalidations, revision);
                state.log.committed_here(revision);
            }
            Home::Detached(store) => {
                // Only a hint: replicas' polls read the log anyway.
                if let Err(err) = store.notify(CHANGES_CHANNEL, revision).await {
                    tracing::warn!(error = %err, revision, "cannot announce a change");
                }
            }
        }
        Ok(revision)
    }
}

/// What `what` makes stale.
async fn invalidations(conn: &DatabaseTransaction, what: Changed<'_>) -> Result<Vec<Invalidation>> {
    let one =
        |make: fn(u128) -> Invalidation, id: &str| parse_id(id).map(make).into_iter().collect();
    Ok(match what {
        Changed::Organization(id) => one(Invalidation::Organization, id),
        Changed::Workspace(id) => one(Invalidation::Workspace, id),
        Changed::User(id) => one(Invalidation::User, id),
        Changed::ServiceAccount(id) => one(Invalidation::ServiceAccount, id),
        Changed::Key(id) => one(Invalidation::Key, id),
        Changed::ResourceTags(id) => one(Invalidation::ResourceTags, id),
        Changed::Role(id) => one(Invalidation::Role, id),
        Changed::Grant {
            workspace_id,
            subject_type,
            subject_id,
        } => {
            let Some(workspace) = parse_id(workspace_id) else {
                return Ok(Vec::new());
            };
            match subject_type {
                "user" => sets(PrincipalKind::User, [subject_id], [workspace]),
                "service_account" => sets(PrincipalKind::ServiceAccount, [subject_id], [workspace]),
                _ => {
                    let members = teams::team_member_ids(conn, subject_id).await?;
                    if members.len() > MAX_SETS {
                        vec![Invalidation::Workspace(workspace)]
                    } else {
                        sets(
                            PrincipalKind::User,
                            members.iter().map(String::as_str),
                            [workspace],
                        )
                    }
                }
            }
        }
        Changed::TeamMember {
            organization_id,
            team_id,
            user_id,
        } => {
            let reached =
                workspace_ids_with_grants(conn, organization_id, &[("team", team_id)]).await?;
            if reached.len() > MAX_SETS {
                one(Invalidation::User, user_id)
            } else {
                sets(
                    PrincipalKind::User,
                    [user_id],
                    reached.iter().filter_map(|w| parse_id(w)),
                )
            }
        }
        Changed::Team {
            organization_id,
            team_id,
        } => {
            let reached =
                workspace_ids_with_grants(conn, organization_id, &[("team", team_id)]).await?;
            let members = teams::team_member_ids(conn, team_id).await?;
            if reached.len().saturating_mul(members.len()) > MAX_SETS {
                one(Invalidation::Organization, organization_id)
            } else {
                let reached: Vec<_> = reached.iter().filter_map(|w| parse_id(w)).collect();
                sets(
                    PrincipalKind::User,
                    members.iter().map(String::as_str),
                    reached,
                )
            }
        }
    })
}

/// The sets of `principals` (of one kind) in `workspaces`.
fn sets<'a>(
    kind: PrincipalKind,
    principals: impl IntoIterator<Item = &'a str>,
    workspaces: impl IntoIterator<Item = u128> + Clone,
) -> Vec<Invalidation> {
    principals
        .into_iter()
        .filter_map(parse_id)
        .flat_map(|principal| {
            workspaces.clone().into_iter().map(move |workspace| {
                Invalidation::Set(SetKey {
                    kind,
                    principal,
                    workspace,
                })
            })
        })
        .collect()
}

/// The organization a change belongs to: the one all its events name, if
/// they name exactly one; otherwise the platform's (`None`).
fn organization_of(events: &[audit_event::Model]) -> Option<String> {
    let first = events.first()?.organization_id.clone()?;
    events
        .iter()
        .all(|e| e.organization_id.as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// The log's description of a change: what was done to what.
fn describe(events: &[audit_event::Model]) -> String {
    serde_json::Value::from(
        events
            .iter()
            .map(|e| json!({ "action": e.action, "target_type": e.target_type, "target_id": e.target_id }))
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// The log's encoding of invalidations: space separated.
pub fn encode(changes: &[Invalidation]) -> String {
    changes
        .iter()
        .map(Invalidation::encode)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses [`encode`]'s output; a part that does not parse invalidates
/// everything (fails closed).
pub fn decode(encoded: &str) -> Vec<Invalidation> {
    encoded
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| Invalidation::decode(p).unwrap_or(Invalidation::All))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_through_the_log() {
        let changes = vec![
            Invalidation::User(5),
            Invalidation::Workspace(9),
            Invalidation::Set(SetKey {
                kind: PrincipalKind::User,
                principal: 1,
                workspace: 2,
            }),
        ];
        assert_eq!(decode(&encode(&changes)), changes);
        assert_eq!(decode(""), Vec::new());
    }

    #[test]
    fn garbage_in_the_log_invalidates_everything() {
        assert_eq!(
            decode("u00 zzz"),
            vec![Invalidation::User(0), Invalidation::All]
        );
    }

    #[test]
    fn a_change_belongs_to_the_one_organization_its_events_name() {
        let event = |org: Option<&str>| audit_event::Model {
            id: String::new(),
            organization_id: org.map(str::to_owned),
            actor_type: String::new(),
            actor_id: String::new(),
            acting_for_user_id: None,
            action: String::new(),
            target_type: String::new(),
            target_id: String::new(),
            details: String::new(),
            revision: 0,
            created_at: 0,
        };
        assert_eq!(
            organization_of(&[event(Some("a")), event(Some("a"))]),
            Some("a".into())
        );
        assert_eq!(organization_of(&[event(Some("a")), event(Some("b"))]), None);
        assert_eq!(organization_of(&[event(Some("a")), event(None)]), None);
        assert_eq!(organization_of(&[]), None);
    }
}
