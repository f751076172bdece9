//! Repository functions for workspaces, grants, applications, tagged
//! resources (a workspace's settings are in [`super::settings`]).

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{Set, Unchanged},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::Expr,
};

use super::{
    StoreResult,
    entity::{api_key, application, grant, resource, team_member, workspace, workspace_settings},
};

/// Workspaces of an organization ordered by id; only `ids` when given.
pub async fn workspaces<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    only: Option<&[String]>,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<workspace::Model>> {
    let mut query = workspace::Entity::find()
        .filter(workspace::Column::OrganizationId.eq(org_id))
        .filter(workspace::Column::Id.gt(after));
    if let Some(ids) = only {
        query = query.filter(workspace::Column::Id.is_in(ids.iter().cloned()));
    }
    Ok(query
        .order_by_asc(workspace::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Counts the workspaces of an organization.
pub async fn count_workspaces<C: ConnectionTrait>(conn: &C, org_id: &str) -> StoreResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(workspace::Entity::find()
        .filter(workspace::Column::OrganizationId.eq(org_id))
        .count(conn)
        .await?)
}

/// The workspace of an organization with this key.
pub async fn workspace_by_key<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    key: &str,
) -> StoreResult<Option<workspace::Model>> {
    Ok(workspace::Entity::find()
        .filter(workspace::Column::OrganizationId.eq(org_id))
        .filter(workspace::Column::Key.eq(key))
        .one(conn)
        .await?)
}

/// Writes a workspace's key and name.
pub async fn update_workspace<C: ConnectionTrait>(
    conn: &C,
    ws: workspace::Model,
) -> StoreResult<()> {
    let row = workspace::ActiveModel {
        id: Unchanged(ws.id),
        key: Set(ws.key),
        name: Set(ws.name),
        ..Default::default()
    };
    row.update(conn).await?;
    Ok(())
}

/// Deletes a workspace with its grants, applications, resources and settings.
pub async fn delete_workspace<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<()> {
    grant::Entity::delete_many()
        .filter(grant::Column::WorkspaceId.eq(id))
        .exec(conn)
        .await?;
    application::Entity::delete_many()
        .filter(application::Column::WorkspaceId.eq(id))
        .exec(conn)
        .await?;
    resource::Entity::delete_many()
        .filter(resource::Column::WorkspaceId.eq(id))
        .exec(conn)
        .await?;
    workspace_settings::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    workspace::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// The live workspaces-scoped service keys of an organization.
pub async fn workspace_scoped_keys<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
) -> StoreResult<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::OrganizationId.eq(org_id))
        .filter(api_key::Column::Scope.eq("workspaces"))
        .filter(api_key::Column::RevokedAt.is_null())
        .all(conn)
        .await?)
}

/// Writes a key's workspace list and revocation.
pub async fn set_key_workspaces<C: ConnectionTrait>(
    conn: &C,
    key: api_key::Model,
    workspace_ids: String,
    revoked_at: Option<i64>,
) -> StoreResult<()> {
    let row = api_key::ActiveModel {
        id: Unchanged(key.id),
        workspace_ids: Set(workspace_ids),
        revoked_at: Set(revoked_at),
        ..Default::default()
    };
    row.update(conn).await?;
    Ok(())
}

/// A user's team memberships within an organization, expired ones included.
pub async fn memberships_of_user<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<Vec<team_member::Model>> {
    Ok(team_member::Entity::find()
        .filter(team_member::Column::OrganizationId.eq(org_id))
        .filter(team_member::Column::UserId.eq(user_id))
        .all(conn)
        .await?)
}

fn subjects_condition(subjects: &[(&str, &str)]) -> Condition {
    subjects.iter().fold(Condition::any(), |cond, (ty, id)| {
        cond.add(
            Condition::all()
                .add(grant::Column::SubjectType.eq(*ty))
                .add(grant::Column::SubjectId.eq(*id)),
        )
    })
}

/// Grants in a workspace naming any of `subjects` (type, id).
pub async fn grants_of_subjects<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    subjects: &[(&str, &str)],
) -> StoreResult<Vec<grant::Model>> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    Ok(grant::Entity::find()
        .filter(grant::Column::WorkspaceId.eq(workspace_id))
        .filter(subjects_condition(subjects))
        .order_by_asc(grant::Column::Id)
        .all(conn)
        .await?)
}

/// The grants of an organization naming any of `subjects`, expired ones included.
pub async fn org_grants_of_subjects<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    subjects: &[(&str, &str)],
) -> StoreResult<Vec<grant::Model>> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    Ok(grant::Entity::find()
        .filter(grant::Column::OrganizationId.eq(org_id))
        .filter(subjects_condition(subjects))
        .all(conn)
        .await?)
}

/// The ids of the workspaces of an organization where any of `subjects`
/// holds a grant, expired or not (what caches to drop after a change).
pub async fn workspace_ids_with_grants<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    subjects: &[(&str, &str)],
) -> StoreResult<Vec<String>> {
    let mut ids: Vec<String> = org_grants_of_subjects(conn, org_id, subjects)
        .await?
        .into_iter()
        .map(|g| g.workspace_id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Grants of a workspace ordered by id, optionally only those naming `subjects`.
pub async fn grants<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    subjects: Option<&[(&str, &str)]>,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<grant::Model>> {
    let mut query = grant::Entity::find()
        .filter(grant::Column::WorkspaceId.eq(workspace_id))
        .filter(grant::Column::Id.gt(after));
    if let Some(subjects) = subjects {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        query = query.filter(subjects_condition(subjects));
    }
    Ok(query
        .order_by_asc(grant::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// A grant by id.
pub async fn grant<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Option<grant::Model>> {
    Ok(grant::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Deletes a grant.
pub async fn delete_grant<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<()> {
    grant::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// Sets when a grant expires (`None`: never).
pub async fn set_grant_expiry<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    expires_at: Option<i64>,
) -> StoreResult<()> {
    grant::Entity::update_many()
        .col_expr(grant::Column::ExpiresAt, Expr::value(expires_at))
        .filter(grant::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Up to `limit` grants (of organization `org_id`, when given) whose
/// expiry is at or before `now_ms`, oldest expiry first.
pub async fn expired_grants<C: ConnectionTrait>(
    conn: &C,
    org_id: Option<&str>,
    now_ms: i64,
    limit: u64,
) -> StoreResult<Vec<grant::Model>> {
    let mut query = grant::Entity::find().filter(grant::Column::ExpiresAt.lte(now_ms));
    if let Some(org_id) = org_id {
        query = query.filter(grant::Column::OrganizationId.eq(org_id));
    }
    Ok(query
        .order_by_asc(grant::Column::ExpiresAt)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Grants of an organization that use a role.
pub async fn grants_with_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
) -> StoreResult<Vec<grant::Model>> {
    Ok(grant::Entity::find()
        .filter(grant::Column::OrganizationId.eq(org_id))
        .filter(grant::Column::Role.eq(role))
        .all(conn)
        .await?)
}

/// Deletes the grants of an organization that use a role; returns how many.
pub async fn delete_grants_with_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
) -> StoreResult<u64> {
    let res = grant::Entity::delete_many()
        .filter(grant::Column::OrganizationId.eq(org_id))
        .filter(grant::Column::Role.eq(role))
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// An application of a workspace.
pub async fn application<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    name: &str,
) -> StoreResult<Option<application::Model>> {
    Ok(
        application::Entity::find_by_id((workspace_id.to_owned(), name.to_owned()))
            .one(conn)
            .await?,
    )
}

/// Applications of a workspace ordered by name.
pub async fn applications<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<application::Model>> {
    Ok(application::Entity::find()
        .filter(application::Column::WorkspaceId.eq(workspace_id))
        .filter(application::Column::Name.gt(after))
        .order_by_asc(application::Column::Name)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Deletes an application.
pub async fn delete_application<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    name: &str,
) -> StoreResult<()> {
    application::Entity::delete_by_id((workspace_id.to_owned(), name.to_owned()))
        .exec(conn)
        .await?;
    Ok(())
}

/// A registered resource.
pub async fn resource<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    resource_type: &str,
    resource_id: &str,
) -> StoreResult<Option<resource::Model>> {
    Ok(resource::Entity::find_by_id((
        workspace_id.to_owned(),
        resource_type.to_owned(),
        resource_id.to_owned(),
    ))
    .one(conn)
    .await?)
}

/// Registers a resource or replaces its tags.
pub async fn put_resource<C: ConnectionTrait>(conn: &C, row: resource::Model) -> StoreResult<()> {
    use sea_orm::sea_query::OnConflict;
    resource::Entity::insert(row.into_active_model())
        .on_conflict(
            OnConflict::columns([
                resource::Column::WorkspaceId,
                resource::Column::ResourceType,
                resource::Column::ResourceId,
            ])
            .update_columns([resource::Column::Tags, resource::Column::UpdatedAt])
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Forgets a resource; returns whether it existed.
pub async fn delete_resource<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    resource_type: &str,
    resource_id: &str,
) -> StoreResult<bool> {
    let res = resource::Entity::delete_by_id((
        workspace_id.to_owned(),
        resource_type.to_owned(),
        resource_id.to_owned(),
    ))
    .exec(conn)
    .await?;
    Ok(res.rows_affected > 0)
}

/// Every grant of a workspace.
pub async fn all_grants<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
) -> StoreResult<Vec<grant::Model>> {
    Ok(grant::Entity::find()
        .filter(grant::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(grant::Column::Id)
        .all(conn)
        .await?)
}
