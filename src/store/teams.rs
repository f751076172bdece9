//! Repository functions for teams and their members.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

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

/// Teams of an organization ordered by id, each with its memberships
/// ordered by user id.
pub async fn teams<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<(team::Model, Vec<team_member::Model>)>> {
    let teams = team::Entity::find()
        .filter(team::Column::OrganizationId.eq(org_id))
        .filter(team::Column::Id.gt(after))
        .order_by_asc(team::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    let mut members: HashMap<String, Vec<team_member::Model>> = HashMap::new();
    for m in team_member::Entity::find()
        .filter(team_member::Column::TeamId.is_in(teams.iter().map(|t| t.id.clone())))
        .order_by_asc(team_member::Column::UserId)
        .all(conn)
        .await?
    {
        members.entry(m.team_id.clone()).or_default().push(m);
    }
    Ok(teams
        .into_iter()
        .map(|t| {
            let ms = members.remove(&t.id).unwrap_or_default();
            (t, ms)
        })
        .collect())
}

/// A team's memberships, ordered by user id, expired ones included.
pub async fn team_members<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
) -> StoreResult<Vec<team_member::Model>> {
    Ok(team_member::Entity::find()
        .filter(team_member::Column::TeamId.eq(team_id))
        .order_by_asc(team_member::Column::UserId)
        .all(conn)
        .await?)
}

/// A user's membership of a team, if any.
pub async fn team_member<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
    user_id: &str,
) -> StoreResult<Option<team_member::Model>> {
    Ok(
        team_member::Entity::find_by_id((team_id.to_owned(), user_id.to_owned()))
            .one(conn)
            .await?,
    )
}

/// Sets when a membership expires (`None`: never).
pub async fn set_team_member_expiry<C: ConnectionTrait>(
    conn: &C,
    team_id: &str,
    user_id: &str,
    expires_at: Option<i64>,
) -> StoreResult<()> {
    team_member::Entity::update_many()
        .col_expr(team_member::Column::ExpiresAt, Expr::value(expires_at))
        .filter(team_member::Column::TeamId.eq(team_id))
        .filter(team_member::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
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

/// Up to `limit` team memberships (of organization `org_id`, when given)
/// whose expiry is at or before `now_ms`, oldest expiry first.
pub async fn expired_team_members<C: ConnectionTrait>(
    conn: &C,
    org_id: Option<&str>,
    now_ms: i64,
    limit: u64,
) -> StoreResult<Vec<team_member::Model>> {
    let mut query = team_member::Entity::find().filter(team_member::Column::ExpiresAt.lte(now_ms));
    if let Some(org_id) = org_id {
        query = query.filter(team_member::Column::OrganizationId.eq(org_id));
    }
    Ok(query
        .order_by_asc(team_member::Column::ExpiresAt)
        .limit(limit)
        .all(conn)
        .await?)
}
