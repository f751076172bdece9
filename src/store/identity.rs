//! Repository functions for organizations, users, memberships, workspaces,
//! grants and invites.

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{Set, Unchanged},
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{
    Reads, StoreResult,
    entity::{grant, invite, membership, organization, user, workspace},
};

/// Inserts a row built in full by the caller.
pub async fn insert<C, A>(conn: &C, row: A) -> StoreResult<()>
where
    C: ConnectionTrait,
    A: ActiveModelTrait + Send,
{
    <A::Entity as EntityTrait>::insert(row)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// An organization by id.
pub async fn organization<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> StoreResult<Option<organization::Model>> {
    Ok(organization::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?)
}

/// The personal organization of a user.
pub async fn personal_organization<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
) -> StoreResult<Option<organization::Model>> {
    Ok(organization::Entity::find()
        .filter(organization::Column::PersonalOwnerUserId.eq(user_id))
        .one(conn)
        .await?)
}

/// Writes every field of an organization.
pub async fn update_organization<C: ConnectionTrait>(
    conn: &C,
    org: organization::Model,
) -> StoreResult<()> {
    let row = organization::ActiveModel {
        id: Unchanged(org.id),
        name: Set(org.name),
        name_key: Set(org.name_key),
        plan: Set(org.plan),
        personal: Set(org.personal),
        personal_owner_user_id: Set(org.personal_owner_user_id),
        pat_creation_disabled: Set(org.pat_creation_disabled),
        created_at: Set(org.created_at),
    };
    row.update(conn).await?;
    Ok(())
}

/// The organizations a user belongs to, ordered by id, after `after`.
pub async fn organizations_of_user<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<organization::Model>> {
    let ids: Vec<String> = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .filter(membership::Column::OrganizationId.gt(after))
        .order_by_asc(membership::Column::OrganizationId)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| m.organization_id)
        .collect();
    Ok(organization::Entity::find()
        .filter(organization::Column::Id.is_in(ids))
        .order_by_asc(organization::Column::Id)
        .all(conn)
        .await?)
}

/// A user by id.
pub async fn user<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// A user by identity-provider subject.
pub async fn user_by_subject<C: ConnectionTrait>(
    conn: &C,
    subject: &str,
) -> StoreResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::ExternalSubject.eq(subject))
        .one(conn)
        .await?)
}

/// A user by (lower-cased) email.
pub async fn user_by_email<C: ConnectionTrait>(
    conn: &C,
    email: &str,
) -> StoreResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(conn)
        .await?)
}

/// The membership of a user in an organization.
pub async fn membership<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<Option<membership::Model>> {
    Ok(
        membership::Entity::find_by_id((org_id.to_owned(), user_id.to_owned()))
            .one(conn)
            .await?,
    )
}

/// The membership a decision depends on; locked when read for a change.
pub async fn membership_held<C: Reads>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<Option<membership::Model>> {
    let query = membership::Entity::find_by_id((org_id.to_owned(), user_id.to_owned()));
    let query = if C::FOR_CHANGE {
        query.lock_shared()
    } else {
        query
    };
    Ok(query.one(conn).await?)
}

/// Changes a member's organization role.
pub async fn set_member_role<C: ConnectionTrait>(
    conn: &C,
    member: membership::Model,
    role: &str,
) -> StoreResult<membership::Model> {
    let mut row = member.into_active_model();
    row.role = Set(role.to_owned());
    Ok(row.update(conn).await?)
}

/// Deletes a membership.
pub async fn delete_membership<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<()> {
    membership::Entity::delete_by_id((org_id.to_owned(), user_id.to_owned()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Counts the organizations a user belongs to.
pub async fn count_memberships_of_user<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
) -> StoreResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .count(conn)
        .await?)
}

/// Counts the members of an organization holding `role`.
pub async fn count_members_with_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
) -> StoreResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(org_id))
        .filter(membership::Column::Role.eq(role))
        .count(conn)
        .await?)
}

/// Counts the members of an organization not holding `role`.
pub async fn count_members_without_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
) -> StoreResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(org_id))
        .filter(membership::Column::Role.ne(role))
        .count(conn)
        .await?)
}

/// Members of an organization with their user rows, ordered by user id.
pub async fn members<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    after_user_id: &str,
    limit: u64,
) -> StoreResult<Vec<(membership::Model, user::Model)>> {
    let rows = membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(org_id))
        .filter(membership::Column::UserId.gt(after_user_id))
        .order_by_asc(membership::Column::UserId)
        .limit(limit)
        .all(conn)
        .await?;
    let mut users: std::collections::HashMap<String, user::Model> = user::Entity::find()
        .filter(user::Column::Id.is_in(rows.iter().map(|m| m.user_id.clone())))
        .all(conn)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|m| users.remove(&m.user_id).map(|u| (m, u)))
        .collect())
}

/// A workspace by id.
pub async fn workspace<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> StoreResult<Option<workspace::Model>> {
    Ok(workspace::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?)
}

/// The default workspace a user has (or had) in an organization.
pub async fn default_workspace<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
) -> StoreResult<Option<workspace::Model>> {
    Ok(workspace::Entity::find()
        .filter(workspace::Column::OrganizationId.eq(org_id))
        .filter(workspace::Column::OwnerUserId.eq(user_id))
        .filter(workspace::Column::IsDefault.eq(true))
        .one(conn)
        .await?)
}

/// How many of `ids` are workspaces of the organization.
pub async fn count_workspaces_in_org<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    ids: &[String],
) -> StoreResult<u64> {
    Ok(workspace::Entity::find()
        .filter(workspace::Column::OrganizationId.eq(org_id))
        .filter(workspace::Column::Id.is_in(ids.iter().cloned()))
        .count(conn)
        .await?)
}

/// Deletes every grant naming a subject in an organization; returns how many.
pub async fn delete_grants_of_subject<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    subject_type: &str,
    subject_id: &str,
) -> StoreResult<u64> {
    let res = grant::Entity::delete_many()
        .filter(grant::Column::OrganizationId.eq(org_id))
        .filter(grant::Column::SubjectType.eq(subject_type))
        .filter(grant::Column::SubjectId.eq(subject_id))
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// An invite by id.
pub async fn invite<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Option<invite::Model>> {
    Ok(invite::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// The pending invite of an email to an organization.
pub async fn invite_by_email<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    email: &str,
) -> StoreResult<Option<invite::Model>> {
    Ok(invite::Entity::find()
        .filter(invite::Column::OrganizationId.eq(org_id))
        .filter(invite::Column::Email.eq(email))
        .one(conn)
        .await?)
}

/// Pending invites of an organization, ordered by id; only the invites into
/// one workspace when `workspace_id` is set.
pub async fn invites<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    workspace_id: Option<&str>,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<invite::Model>> {
    let mut query = invite::Entity::find().filter(invite::Column::OrganizationId.eq(org_id));
    if let Some(ws) = workspace_id {
        query = query.filter(invite::Column::WorkspaceId.eq(ws));
    }
    Ok(query
        .filter(invite::Column::Id.gt(after))
        .order_by_asc(invite::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Deletes an invite.
pub async fn delete_invite<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<()> {
    invite::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// Deletes the pending invites into a workspace; returns how many.
pub async fn delete_workspace_invites<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
) -> StoreResult<u64> {
    Ok(invite::Entity::delete_many()
        .filter(invite::Column::WorkspaceId.eq(workspace_id))
        .exec(conn)
        .await?
        .rows_affected)
}

/// How many organizations exist.
pub async fn count_organizations<C: ConnectionTrait>(conn: &C) -> StoreResult<u64> {
    Ok(organization::Entity::find().count(conn).await?)
}

/// The user ids of an organization's members holding `role`.
pub async fn member_ids_with_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
) -> StoreResult<Vec<String>> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(org_id))
        .filter(membership::Column::Role.eq(role))
        .order_by_asc(membership::Column::UserId)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| m.user_id)
        .collect())
}
