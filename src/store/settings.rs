//! Repository functions for settings: a workspace's own values and its
//! organization's defaults.

use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel};

use super::{
    StoreResult,
    entity::{organization_settings, workspace_settings},
};

/// A workspace's own settings, if ever written.
pub async fn workspace<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
) -> StoreResult<Option<workspace_settings::Model>> {
    Ok(
        workspace_settings::Entity::find_by_id(workspace_id.to_owned())
            .one(conn)
            .await?,
    )
}

/// Writes a workspace's own settings.
pub async fn put_workspace<C: ConnectionTrait>(
    conn: &C,
    row: workspace_settings::Model,
) -> StoreResult<()> {
    workspace_settings::Entity::delete_by_id(row.workspace_id.clone())
        .exec(conn)
        .await?;
    workspace_settings::Entity::insert(row.into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// An organization's defaults, if ever written.
pub async fn organization<C: ConnectionTrait>(
    conn: &C,
    organization_id: &str,
) -> StoreResult<Option<organization_settings::Model>> {
    Ok(
        organization_settings::Entity::find_by_id(organization_id.to_owned())
            .one(conn)
            .await?,
    )
}

/// Writes an organization's defaults.
pub async fn put_organization<C: ConnectionTrait>(
    conn: &C,
    row: organization_settings::Model,
) -> StoreResult<()> {
    organization_settings::Entity::delete_by_id(row.organization_id.clone())
        .exec(conn)
        .await?;
    organization_settings::Entity::insert(row.into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}
