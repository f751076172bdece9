//! The sweep of expired access. A grant or team membership stops applying
//! at its expiry by itself (a resolved set knows its earliest expiry and is
//! not used past it, see [`crate::authz::engine::live_at`]); the sweep only
//! removes the expired rows afterwards, each removal audited and published
//! like a revocation, one change per organization.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;

use super::{
    audit::{self, Actor, Change},
    change::{Changed, Tx},
    workspaces::grant_changed,
};
use crate::{
    authz::cache::parse_id,
    error::Result,
    state::AppState,
    store::{teams, workspaces},
};

/// Most rows of each kind one change removes.
const BATCH: u64 = 200;

/// Most changes one pass makes; the next pass goes on.
const MAX_CHANGES_PER_PASS: usize = 100;

/// The actor the sweep's audit events name.
const SWEEP_ACTOR: &str = "expiry-sweep";

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub grants: usize,
    pub team_members: usize,
}

/// Removes what has expired by now: looks on the read pool first, so a pass
/// that finds nothing writes nothing.
pub async fn sweep(state: &AppState) -> Result<Swept> {
    let now = state.settings.clock.now_ms();
    let db = state.store.db();
    let mut swept = Swept::default();
    let mut changes = 0;
    while changes < MAX_CHANGES_PER_PASS {
        let grants = workspaces::expired_grants(db, None, now, BATCH).await?;
        let members = teams::expired_team_members(db, None, now, BATCH).await?;
        let organizations: BTreeSet<String> = grants
            .iter()
            .map(|g| g.organization_id.clone())
            .chain(members.iter().map(|m| m.organization_id.clone()))
            .collect();
        if organizations.is_empty() {
            break;
        }
        for org in organizations {
            let one = sweep_organization(state, &org, now).await?;
            swept.grants += one.grants;
            swept.team_members += one.team_members;
            changes += 1;
        }
        if (grants.len() as u64) < BATCH && (members.len() as u64) < BATCH {
            break;
        }
    }
    Ok(swept)
}

/// Removes, in one change, what of organization `org_id` had expired by
/// `now`, as read inside the change (a grant extended meanwhile stays).
async fn sweep_organization(state: &AppState, org_id: &str, now: i64) -> Result<Swept> {
    let tx = Tx::system(state, parse_id(org_id).unwrap_or_default()).await?;
    let actor = Actor::system(SWEEP_ACTOR);
    let grants = workspaces::expired_grants(tx.conn(), Some(org_id), now, BATCH).await?;
    let members = teams::expired_team_members(tx.conn(), Some(org_id), now, BATCH).await?;
    for g in &grants {
        workspaces::delete_grant(tx.conn(), &g.id).await?;
        grant_changed(
            &tx,
            &actor,
            g,
            "grant.expire",
            json!({ "expires_at": g.expires_at }),
        )
        .await?;
    }
    for m in &members {
        // Invalidation first: it reads where the team holds grants.
        tx.changed(Changed::TeamMember {
            organization_id: org_id,
            team_id: &m.team_id,
            user_id: &m.user_id,
        })
        .await?;
        teams::delete_team_member(tx.conn(), &m.team_id, &m.user_id).await?;
        audit::record(
            &tx,
            &actor,
            Change {
                organization_id: Some(org_id),
                action: "team.member_expire",
                target_type: "team",
                target_id: &m.team_id,
                details: json!({ "user_id": m.user_id, "expires_at": m.expires_at }),
            },
        );
    }
    let swept = Swept {
        grants: grants.len(),
        team_members: members.len(),
    };
    if swept != Swept::default() {
        tx.commit().await?;
    }
    Ok(swept)
}

/// Sweeps every `every` until dropped; a failed pass is logged and retried
/// at the next tick.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&state).await {
            Ok(swept) if swept != Swept::default() => tracing::info!(
                grants = swept.grants,
                team_members = swept.team_members,
                "removed expired access"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot remove expired access"),
        }
    }
}
