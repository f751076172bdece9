//! Repository functions for teams and their members.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    StoreResult,
    entity::{grant, team, team_member},
};

/// A team by id.
pub async fn team<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Option<team::Model>> {
    Ok(team::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// A team of an organization by name.
pub async fn team_by_name<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    name: &str,
) -> StoreResult<Option<team::Model>> {
    Ok(team::Entity::find()
        .filter(team::Column::OrganizationId.eq(org_id))
        .filter(team::Column::Name.eq(name))
        .one(conn)
        .await?)
}

/// Deletes a team, its memberships and the grants naming it.
pub async fn delete_team<C: ConnectionTrait>(conn: &C, org_id: &str, id: &str) -> StoreResult<()> {
    team_member::Entity::delete_many()
        .filter(team_member::Column::TeamId.eq(id))
        .exec(conn)
        .await?;
    grant::Entity::delete_many()
        .filter(grant::Column::OrganizationId.eq(org_id))
        .filter(grant::Column::SubjectType.eq("team"))
        .filter(grant::Column::SubjectId.eq(id))
        .exec(conn)
        .await?;
    team::Entity::delete_by_id(id.to_owned()).exec(conn).await?;
    Ok(())
}

/// Teams of an organization ordered by id, each with its member user ids.
pub async fn teams<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<(team::Model, Vec<String>)>> {
    let teams = team::Entity::find()
        .filter(team::Column::OrganizationId.eq(org_id))
        .filter(team::Column::Id.gt(after))
        .order_by_asc(team::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for m in team_member::Entity::find()
        .filter(team_member::Column::TeamId.is_in(teams.iter().map(|t| t.id.clone())))
        .order_by_asc(team_member::Column::UserId)
        .all(conn)
        .await?
    {
        members.entry(m.team_id).or_default().push(m.user_id);
    }
    Ok(teams
        .into_iter()
        .map(|t| {
            let ids = members.remove(&t.id).unwrap_or_default();
            (t, ids)
        })
        .collect())
}

/// The user ids of a team's members.
pub async fn team_member_ids<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
) -> StoreResult<Vec<String>> {
    Ok(team_member::Entity::find()
        .filter(team_member::Column::TeamId.eq(team_id))
        .order_by_asc(team_member::Column::UserId)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| m.user_id)
        .collect())
}

/// Answers whether a user is in a team.
pub async fn is_team_member<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
    user_id: &str,
) -> StoreResult<bool> {
    Ok(
        team_member::Entity::find_by_id((team_id.to_owned(), user_id.to_owned()))
            .one(conn)
            .await?
            .is_some(),
    )
}

/// Removes a user from a team.
pub async fn delete_team_member<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
    user_id: &str,
) -> StoreResult<()> {
    team_member::Entity::delete_by_id((team_id.to_owned(), user_id.to_owned()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Removes a user from every team of an organization.
pub async fn delete_user_from_teams<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<()> {
    team_member::Entity::delete_many()
        .filter(team_member::Column::OrganizationId.eq(org_id))
        .filter(team_member::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}
