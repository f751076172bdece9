//! Teams: groups of organization members that workspace grants can name.

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    audit::{self, Actor, Change},
    authorize,
    change::{Changed, Tx},
    rules,
};
use crate::{
    auth::Caller,
    authz::OrgPermission,
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{team, team_member},
        finish_page, identity, new_id, now_ms, page_size, teams,
    },
};

/// A team with its memberships (expired ones included until swept).
pub type TeamWithMembers = (team::Model, Vec<team_member::Model>);

async fn team_in_org(tx: &Tx, org_id: &str, team_id: &str) -> Result<team::Model> {
    let team_id = rules::id("team_id", team_id)?;
    teams::team(tx.conn(), team_id)
        .await?
        .filter(|t| t.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("team `{team_id}` not found")))
}

/// Creates a team (admins only).
pub async fn create_team(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    name: &str,
) -> Result<(team::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let name = rules::name("name", name)?;
    let tx = Tx::begin(state, caller).await?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageTeams).await?;
    if teams::team_by_name(tx.conn(), &org_id, &name)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "a team named `{name}` already exists"
        )));
    }
    let team = team::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        name,
        created_at: now_ms(),
    };
    identity::insert(tx.conn(), team.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "team.create",
            target_type: "team",
            target_id: &team.id,
            details: json!({ "name": team.name }),
        },
    );
    Ok((team, tx.commit().await?))
}

/// Deletes a team, its memberships and its grants (admins only).
pub async fn delete_team(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    team_id: &str,
) -> Result<u64> {
    let org_id = caller.organization(org_id).to_owned();
    let tx = Tx::begin(state, caller).await?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageTeams).await?;
    let team = team_in_org(&tx, &org_id, team_id).await?;
    // Read before the members and grants go.
    tx.changed(Changed::Team {
        organization_id: &org_id,
        team_id: &team.id,
    })
    .await?;
    teams::delete_team(tx.conn(), &org_id, &team.id).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "team.delete",
            target_type: "team",
            target_id: &team.id,
            details: json!({ "name": team.name }),
        },
    );
    tx.commit().await
}

/// Teams of an organization, for anyone who may view members.
pub async fn list_teams(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<TeamWithMembers>, String)> {
    let org_id = caller.organization(org_id);
    authorize::org(state.store.db(), caller, org_id, OrgPermission::ViewMembers).await?;
    let size = page_size(page.size);
    let rows = teams::teams(state.store.db(), org_id, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |(t, _)| t.id.clone()))
}

/// Adds an organization member to a team (admins only), until
/// `expires_at` if given.
pub async fn add_team_member(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    team_id: &str,
    user_id: &str,
    expires_at: Option<i64>,
) -> Result<(TeamWithMembers, u64)> {
    let tx = Tx::begin(state, caller).await?;
    let changed = add_team_member_in(&tx, caller, org_id, team_id, user_id, expires_at).await?;
    Ok((changed, tx.commit().await?))
}

/// Adds a team member inside the change `tx` (see [`add_team_member`]).
/// Adding a member again sets the new expiry on their membership, or makes
/// it permanent: extending is adding again.
pub async fn add_team_member_in(
    tx: &Tx,
    caller: &Caller,
    org_id: &str,
    team_id: &str,
    user_id: &str,
    expires_at: Option<i64>,
) -> Result<TeamWithMembers> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = rules::id("user_id", user_id)?;
    let expires_at = rules::expiry("expires_at", expires_at, caller.at_ms)?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageTeams).await?;
    let conn = tx.conn();
    let team = team_in_org(tx, &org_id, team_id).await?;
    if identity::membership(conn, &org_id, user_id)
        .await?
        .is_none()
    {
        return Err(Error::FailedPrecondition(format!(
            "user `{user_id}` is not a member of the organization; add them first"
        )));
    }
    let (action, details) = match teams::team_member(conn, &team.id, user_id).await? {
        Some(m) if m.expires_at.is_none() && expires_at.is_none() => {
            return Err(Error::AlreadyExists(format!(
                "user `{user_id}` is already in team `{}`",
                team.name
            )));
        }
        Some(m) => {
            teams::set_team_member_expiry(conn, &team.id, user_id, expires_at).await?;
            (
                "team.set_member_expiry",
                json!({
                    "user_id": user_id,
                    "expires_at": expires_at,
                    "previous_expires_at": m.expires_at,
                }),
            )
        }
        None => {
            let row = team_member::Model {
                team_id: team.id.clone(),
                user_id: user_id.to_owned(),
                organization_id: org_id.clone(),
                created_at: now_ms(),
                expires_at,
            };
            identity::insert(conn, row.into_active_model()).await?;
            (
                "team.add_member",
                json!({ "user_id": user_id, "expires_at": expires_at }),
            )
        }
    };
    tx.changed(Changed::TeamMember {
        organization_id: &org_id,
        team_id: &team.id,
        user_id,
    })
    .await?;
    audit::record(
        tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action,
            target_type: "team",
            target_id: &team.id,
            details,
        },
    );
    let members = teams::team_members(conn, &team.id).await?;
    Ok((team, members))
}

/// Removes a user from a team (admins only); grants through the team go with it.
pub async fn remove_team_member(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    team_id: &str,
    user_id: &str,
) -> Result<(TeamWithMembers, u64)> {
    let tx = Tx::begin(state, caller).await?;
    let changed = remove_team_member_in(&tx, caller, org_id, team_id, user_id).await?;
    Ok((changed, tx.commit().await?))
}

/// Removes a team member inside the change `tx` (see [`remove_team_member`]).
pub async fn remove_team_member_in(
    tx: &Tx,
    caller: &Caller,
    org_id: &str,
    team_id: &str,
    user_id: &str,
) -> Result<TeamWithMembers> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = rules::id("user_id", user_id)?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageTeams).await?;
    let conn = tx.conn();
    let team = team_in_org(tx, &org_id, team_id).await?;
    if !teams::is_team_member(conn, &team.id, user_id).await? {
        return Err(Error::NotFound(format!(
            "user `{user_id}` is not in team `{}`",
            team.name
        )));
    }
    teams::delete_team_member(conn, &team.id, user_id).await?;
    tx.changed(Changed::TeamMember {
        organization_id: &org_id,
        team_id: &team.id,
        user_id,
    })
    .await?;
    audit::record(
        tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "team.remove_member",
            target_type: "team",
            target_id: &team.id,
            details: json!({ "user_id": user_id }),
        },
    );
    let members = teams::team_members(conn, &team.id).await?;
    Ok((team, members))
}
