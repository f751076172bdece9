//! Applications and resource tags.
//!
//! Backends register a resource's tags (or pass them inline in Check); an
//! application is a named value of the `Application` tag.

use std::collections::BTreeMap;

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    access::{catalogue, scope_from_json},
    audit::{self, Actor, Change},
    authorize,
    change::{Changed, Tx},
    rules,
};
use crate::{
    auth::Caller,
    authz::{catalogue::is_builtin_type, engine::APPLICATION_TAG},
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{application, resource, workspace},
        finish_page, identity, now_ms, page_size, workspaces,
    },
};

pub use super::rules::MAX_TAGS;

/// Creates an application in a workspace (`applications:create`).
pub async fn create_application(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    name: &str,
) -> Result<(application::Model, u64)> {
    let name = rules::tag_value("name", name)?;
    let tx = Tx::begin(state, caller).await?;
    let (ws, _) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "applications:create").await?;
    if workspaces::application(tx.conn(), &ws.id, &name)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "application `{name}` already exists"
        )));
    }
    let row = application::Model {
        workspace_id: ws.id.clone(),
        name,
        created_at: now_ms(),
    };
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "application.create",
            target_type: "application",
            target_id: &row.name,
            details: json!({ "workspace_id": ws.id }),
        },
    );
    Ok((row, tx.commit().await?))
}

/// Applications of a workspace (`applications:read`).
pub async fn list_applications(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    page: Page<'_>,
) -> Result<(Vec<application::Model>, String)> {
    let (ws, _) =
        authorize::workspace_action(state.store.db(), caller, workspace_id, "applications:read")
            .await?;
    let size = page_size(page.size);
    let rows = workspaces::applications(state.store.db(), &ws.id, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |a| a.name.clone()))
}

/// Deletes an application (`applications:delete`); refused while grants are scoped to it.
pub async fn delete_application(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    name: &str,
) -> Result<u64> {
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let (ws, _) =
        authorize::workspace_action(conn, caller, workspace_id, "applications:delete").await?;
    if workspaces::application(conn, &ws.id, name).await?.is_none() {
        return Err(Error::NotFound(format!("application `{name}` not found")));
    }
    let scoped = workspaces::all_grants(conn, &ws.id)
        .await?
        .into_iter()
        .filter(|g| {
            g.scope.as_deref().is_some_and(|s| {
                scope_from_json(s)
                    .conditions
                    .iter()
                    .any(|c| c.key == APPLICATION_TAG && c.values.iter().any(|v| v == name))
            })
        })
        .count();
    if scoped > 0 {
        return Err(Error::FailedPrecondition(format!(
            "application `{name}` scopes {scoped} grant(s); revoke them first"
        )));
    }
    workspaces::delete_application(conn, &ws.id, name).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "application.delete",
            target_type: "application",
            target_id: name,
            details: json!({ "workspace_id": ws.id }),
        },
    );
    tx.commit().await
}

async fn check_resource_ref(
    tx: &Tx,
    ws: &workspace::Model,
    resource_type: &str,
    resource_id: &str,
) -> Result<()> {
    // A built-in type needs no read of the organization's own types.
    if !is_builtin_type(resource_type)
        && !catalogue(tx.conn(), &ws.organization_id)
            .await?
            .has_type(resource_type)
    {
        return Err(Error::invalid(
            "resource_type",
            format!(
                "unknown resource type `{resource_type}`; register it with RolesService.RegisterResourceType"
            ),
        ));
    }
    rules::resource_id("resource_id", resource_id)
}

/// Registers a resource's tags, replacing any it had (`resource_tags:update`).
/// An `Application` tag must name an existing application.
pub async fn set_resource_tags(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    resource_type: &str,
    resource_id: &str,
    tags: Vec<(String, String)>,
) -> Result<u64> {
    rules::check_tags("tags", &tags)?;
    let map: BTreeMap<String, String> = tags.into_iter().collect();
    let tx = Tx::begin(state, caller).await?;
    let (ws, _) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "resource_tags:update")
            .await?;
    check_resource_ref(&tx, &ws, resource_type, resource_id).await?;
    if let Some(app) = map.get(APPLICATION_TAG)
        && workspaces::application(tx.conn(), &ws.id, app)
            .await?
            .is_none()
    {
        return Err(Error::FailedPrecondition(format!(
            "application `{app}` does not exist in the workspace; create it first"
        )));
    }
    let row = resource::Model {
        workspace_id: ws.id.clone(),
        resource_type: resource_type.to_owned(),
        resource_id: resource_id.to_owned(),
        tags: serde_json::to_string(&map).unwrap_or_else(|_| "{}".into()),
        updated_at: now_ms(),
    };
    workspaces::put_resource(tx.conn(), row).await?;
    tx.changed(Changed::ResourceTags(&ws.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "resource.set_tags",
            target_type: resource_type,
            target_id: resource_id,
            details: json!({ "workspace_id": ws.id, "tags": map }),
        },
    );
    tx.commit().await
}

/// Decodes stored tags into sorted (key, value) pairs.
pub fn tags_from_json(json: &str) -> Vec<(String, String)> {
    serde_json::from_str::<BTreeMap<String, String>>(json)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The tags of a registered resource (`resource_tags:read`).
pub async fn get_resource_tags(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<Vec<(String, String)>> {
    let (ws, _) =
        authorize::workspace_action(state.store.db(), caller, workspace_id, "resource_tags:read")
            .await?;
    let row = workspaces::resource(state.store.db(), &ws.id, resource_type, resource_id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "resource `{resource_type}/{resource_id}` is not registered"
            ))
        })?;
    Ok(tags_from_json(&row.tags))
}

/// Forgets a registered resource (`resource_tags:delete`).
pub async fn delete_resource(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<u64> {
    let tx = Tx::begin(state, caller).await?;
    let (ws, _) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "resource_tags:delete")
            .await?;
    tx.changed(Changed::ResourceTags(&ws.id)).await?;
    if !workspaces::delete_resource(tx.conn(), &ws.id, resource_type, resource_id).await? {
        return Err(Error::NotFound(format!(
            "resource `{resource_type}/{resource_id}` is not registered"
        )));
    }
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "resource.delete",
            target_type: resource_type,
            target_id: resource_id,
            details: json!({ "workspace_id": ws.id }),
        },
    );
    tx.commit().await
}
