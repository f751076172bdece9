//! Repository functions for custom roles and organization resource types.

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{Set, Unchanged},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{
    StoreResult,
    entity::{resource_type, role},
};

/// The resource types an organization registered.
pub async fn resource_types<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
) -> StoreResult<Vec<resource_type::Model>> {
    Ok(resource_type::Entity::find()
        .filter(resource_type::Column::OrganizationId.eq(org_id))
        .order_by_asc(resource_type::Column::Name)
        .all(conn)
        .await?)
}

/// Replaces the actions of a registered type.
pub async fn set_resource_type_actions<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    name: &str,
    actions: String,
) -> StoreResult<()> {
    let row = resource_type::ActiveModel {
        organization_id: Unchanged(org_id.to_owned()),
        name: Unchanged(name.to_owned()),
        actions: Set(actions),
        ..Default::default()
    };
    row.update(conn).await?;
    Ok(())
}

/// A custom role by id.
pub async fn role<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Option<role::Model>> {
    Ok(role::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// A custom role of an organization by name.
pub async fn role_by_name<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    name: &str,
) -> StoreResult<Option<role::Model>> {
    Ok(role::Entity::find()
        .filter(role::Column::OrganizationId.eq(org_id))
        .filter(role::Column::Name.eq(name))
        .one(conn)
        .await?)
}

/// Custom roles of an organization ordered by id.
pub async fn roles<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<role::Model>> {
    Ok(role::Entity::find()
        .filter(role::Column::OrganizationId.eq(org_id))
        .filter(role::Column::Id.gt(after))
        .order_by_asc(role::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Custom roles with these ids.
pub async fn roles_by_ids<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    ids: &[String],
) -> StoreResult<Vec<role::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(role::Entity::find()
        .filter(role::Column::OrganizationId.eq(org_id))
        .filter(role::Column::Id.is_in(ids.iter().cloned()))
        .all(conn)
        .await?)
}

/// Writes a role's name, description and permissions.
pub async fn update_role<C: ConnectionTrait>(conn: &C, r: role::Model) -> StoreResult<()> {
    let row = role::ActiveModel {
        id: Unchanged(r.id),
        name: Set(r.name),
        description: Set(r.description),
        permissions: Set(r.permissions),
        updated_at: Set(r.updated_at),
        ..Default::default()
    };
    row.update(conn).await?;
    Ok(())
}

/// Deletes a role.
pub async fn delete_role<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<()> {
    role::Entity::delete_by_id(id.to_owned()).exec(conn).await?;
    Ok(())
}
