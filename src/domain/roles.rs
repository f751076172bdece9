//! The permission catalogue and workspace roles: built-in immutable system
//! roles, and custom roles organization admins define (enterprise plan in
//! `saas` mode). A role still used by grants is only deleted together with
//! them, on explicit request.

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    access::catalogue,
    audit::{self, Actor, Change},
    authorize,
    change::{Changed, Tx},
    rules::{self, Plan},
};
use sea_orm::ConnectionTrait;

use crate::{
    auth::Caller,
    authz::{
        OrgPermission,
        catalogue::{Permission, SystemRole, is_builtin_type, valid_identifier},
    },
    config::DeploymentMode,
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{resource_type, role},
        finish_page, identity, new_id, now_ms, page_size, roles, workspaces,
    },
};

/// A role as the API shows it.
#[derive(Clone, Debug)]
pub struct RoleView {
    pub id: String,
    /// `None` for system roles.
    pub organization_id: Option<String>,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub system: bool,
    pub aliases: Vec<String>,
}

fn system_view(role: SystemRole, permissions: Vec<String>) -> RoleView {
    RoleView {
        id: role.as_str().into(),
        organization_id: None,
        name: role.as_str().into(),
        description: role.description().into(),
        permissions,
        system: true,
        aliases: vec![role.alias().into()],
    }
}

fn custom_view(r: role::Model) -> RoleView {
    RoleView {
        permissions: serde_json::from_str(&r.permissions).unwrap_or_default(),
        id: r.id,
        organization_id: Some(r.organization_id),
        name: r.name,
        description: r.description,
        system: false,
        aliases: Vec::new(),
    }
}

/// The catalogue of the caller's organization.
pub async fn list_permissions(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
) -> Result<Vec<Permission>> {
    let org_id = caller.organization(org_id);
    authorize::org(state.store.db(), caller, org_id, OrgPermission::ViewRoles).await?;
    Ok(catalogue(state.store.db(), org_id)
        .await?
        .permissions()
        .to_vec())
}

/// Most resource types one organization may register.
pub const MAX_RESOURCE_TYPES: usize = 256;

/// Registers an organization's own resource type (admins only); registering
/// an existing type adds the new actions.
pub async fn register_resource_type(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    name: &str,
    actions: &[String],
) -> Result<(Vec<Permission>, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    if !valid_identifier(name) {
        return Err(Error::invalid(
            "resource_type",
            "must be lower_snake_case: a letter, then letters, digits or `_` (at most 63)",
        ));
    }
    if is_builtin_type(name) {
        return Err(Error::AlreadyExists(format!(
            "`{name}` is a built-in resource type"
        )));
    }
    if actions.is_empty() || actions.len() > 32 {
        return Err(Error::invalid("actions", "must name 1 to 32 actions"));
    }
    if let Some(bad) = actions.iter().find(|a| !valid_identifier(a)) {
        return Err(Error::invalid(
            "actions",
            format!("action `{bad}` must be lower_snake_case"),
        ));
    }
    let tx = Tx::begin(state, caller).await?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageRoles).await?;
    let conn = tx.conn();
    let types = roles::resource_types(conn, &org_id).await?;
    let existing = types.iter().find(|t| t.name == name).cloned();
    if existing.is_none() && types.len() >= MAX_RESOURCE_TYPES {
        return Err(Error::FailedPrecondition(format!(
            "an organization may register at most {MAX_RESOURCE_TYPES} resource types"
        )));
    }
    let mut all: Vec<String> = existing
        .as_ref()
        .map(|t| serde_json::from_str(&t.actions).unwrap_or_default())
        .unwrap_or_default();
    for a in actions {
        if !all.contains(a) {
            all.push(a.clone());
        }
    }
    let encoded = serde_json::Value::from(all.clone()).to_string();
    tx.changed(Changed::Organization(&org_id)).await?;
    if existing.is_some() {
        roles::set_resource_type_actions(conn, &org_id, name, encoded).await?;
    } else {
        let row = resource_type::Model {
            organization_id: org_id.clone(),
            name: name.to_owned(),
            actions: encoded,
            created_at: now_ms(),
        };
        identity::insert(conn, row.into_active_model()).await?;
    }
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "resource_type.register",
            target_type: "resource_type",
            target_id: name,
            details: json!({ "actions": all }),
        },
    );
    let revision = tx.commit().await?;
    let permissions = catalogue(state.store.db(), &org_id)
        .await?
        .permissions()
        .iter()
        .filter(|p| p.resource_type == name)
        .cloned()
        .collect();
    Ok((permissions, revision))
}

async fn check_custom_roles_allowed(tx: &Tx, state: &AppState, org_id: &str) -> Result<()> {
    if state.settings.deployment_mode != DeploymentMode::Saas {
        return Ok(());
    }
    let org = identity::organization(tx.conn(), org_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("organization `{org_id}` not found")))?;
    if Plan::of(&org) < Plan::Enterprise {
        return Err(Error::FailedPrecondition(format!(
            "custom roles need the enterprise plan; the organization is on the {} plan",
            Plan::of(&org).as_str()
        )));
    }
    Ok(())
}

fn role_name(value: &str) -> Result<String> {
    let name = rules::name("name", value)?;
    if SystemRole::parse(&name).is_some() {
        return Err(Error::invalid(
            "name",
            format!("`{name}` is reserved for a system role"),
        ));
    }
    Ok(name)
}

/// Most permissions one custom role may list.
pub const MAX_ROLE_PERMISSIONS: usize = 1024;

async fn validate_permissions(
    tx: &Tx,
    org_id: &str,
    permissions: &[String],
) -> Result<Vec<String>> {
    if permissions.is_empty() {
        return Err(Error::invalid(
            "permissions",
            "must name at least one permission",
        ));
    }
    if permissions.len() > MAX_ROLE_PERMISSIONS {
        return Err(Error::invalid(
            "permissions",
            format!("at most {MAX_ROLE_PERMISSIONS} permissions per role"),
        ));
    }
    let catalogue = catalogue(tx.conn(), org_id).await?;
    catalogue
        .set_of(permissions.iter().map(String::as_str))
        .map_err(|bad| Error::invalid("permissions", format!("unknown permission `{bad}`")))?;
    let mut names = permissions.to_vec();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Creates a custom role (admins only; enterprise plan in `saas` mode).
pub async fn create_role(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<(RoleView, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let name = role_name(name)?;
    let description = rules::description("description", description)?;
    let tx = Tx::begin(state, caller).await?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageRoles).await?;
    check_custom_roles_allowed(&tx, state, &org_id).await?;
    let permissions = validate_permissions(&tx, &org_id, permissions).await?;
    if roles::role_by_name(tx.conn(), &org_id, &name)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "a role named `{name}` already exists"
        )));
    }
    let now = now_ms();
    let row = role::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        name,
        description,
        permissions: serde_json::Value::from(permissions.clone()).to_string(),
        created_at: now,
        updated_at: now,
    };
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "role.create",
            target_type: "role",
            target_id: &row.id,
            details: json!({ "name": row.name, "permissions": permissions }),
        },
    );
    Ok((custom_view(row), tx.commit().await?))
}

async fn system_role_view(state: &AppState, org_id: &str, role: SystemRole) -> Result<RoleView> {
    let catalogue = catalogue(state.store.db(), org_id).await?;
    Ok(system_view(
        role,
        catalogue.names_of(&catalogue.system_role(role)),
    ))
}

async fn custom_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role_id: &str,
) -> Result<role::Model> {
    let role_id = rules::id("role_id", role_id)?;
    roles::role(conn, role_id)
        .await?
        .filter(|r| r.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("role `{role_id}` not found")))
}

/// Reads a role: a system role by name or alias, a custom role by id.
pub async fn get_role(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    role_id: &str,
) -> Result<RoleView> {
    let org_id = caller.organization(org_id).to_owned();
    authorize::org(state.store.db(), caller, &org_id, OrgPermission::ViewRoles).await?;
    if let Some(role) = SystemRole::parse(role_id) {
        return system_role_view(state, &org_id, role).await;
    }
    Ok(custom_view(
        custom_role(state.store.db(), &org_id, role_id).await?,
    ))
}

/// The system roles (on the first page) and the organization's custom roles.
pub async fn list_roles(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<RoleView>, String)> {
    let org_id = caller.organization(org_id).to_owned();
    authorize::org(state.store.db(), caller, &org_id, OrgPermission::ViewRoles).await?;
    let size = page_size(page.size);
    let mut views = Vec::new();
    if page.token.is_empty() {
        for role in SystemRole::ALL {
            views.push(system_role_view(state, &org_id, role).await?);
        }
    }
    let custom = roles::roles(state.store.db(), &org_id, page.token, size + 1).await?;
    let (custom, next) = finish_page(custom, size, |r| r.id.clone());
    views.extend(custom.into_iter().map(custom_view));
    Ok((views, next))
}

/// What UpdateRole may change.
#[derive(Debug, Default)]
pub struct RoleUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

/// Changes a custom role; system roles are immutable.
pub async fn update_role(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    role_id: &str,
    update: RoleUpdate,
) -> Result<(RoleView, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let name = update.name.as_deref().map(role_name).transpose()?;
    let description = update
        .description
        .as_deref()
        .map(|d| rules::description("description", d))
        .transpose()?;
    let tx = Tx::begin(state, caller).await?;
    authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageRoles).await?;
    if SystemRole::parse(role_id).is_some() {
        return Err(Error::FailedPrecondition(format!(
            "system role `{role_id}` cannot be changed"
        )));
    }
    check_custom_roles_allowed(&tx, state, &org_id).await?;
    let mut row = custom_role(tx.conn(), &org_id, role_id).await?;
    let before = json!({ "name": row.name, "permissions": serde_json::from_str::<serde_json::Value>(&row.permissions).unwrap_or_default() });
    if let Some(name) = name {
        row.name = name;
    }
    if let Some(description) = description {
        row.description = description;
    }
    if let Some(perms) = &update.permissions {
        let perms = validate_permissions(&tx, &org_id, perms).await?;
        row.permissions = serde_json::Value::from(perms).to_string();
    }
    row.updated_at = now_ms();
    if let Some(other) = roles::role_by_name(tx.conn(), &org_id, &row.name).await?
        && other.id != row.id
    {
        return Err(Error::AlreadyExists(format!(
            "a role named `{}` already exists",
            row.name
        )));
    }
    roles::update_role(tx.conn(), row.clone()).await?;
    tx.changed(Changed::Role(&row.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "role.update",
            target_type: "role",
            target_id: &row.id,
            details: json!({ "before": before, "after": { "name": row.name, "permissions": serde_json::from_str::<serde_json::Value>(&row.permissions).unwrap_or_default() } }),
        },
    );
    Ok((custom_view(row), tx.commit().await?))
}

/// Deletes a custom role. While grants use it the deletion is refused, unless
/// `revoke_grants` asks to delete those grants with it.
pub async fn delete_role(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    role_id: &str,
    revoke_grants: bool,
) -> Result<(u64, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    authorize::org(conn, caller, &org_id, OrgPermission::ManageRoles).await?;
    if SystemRole::parse(role_id).is_some() {
        return Err(Error::FailedPrecondition(format!(
            "system role `{role_id}` cannot be deleted"
        )));
    }
    let row = custom_role(conn, &org_id, role_id).await?;
    let in_use = workspaces::grants_with_role(conn, &org_id, &row.id)
        .await?
        .len();
    if in_use > 0 && !revoke_grants {
        return Err(Error::FailedPrecondition(format!(
            "role `{}` is used by {in_use} grant(s); revoke them first, or set revoke_grants to delete them with the role",
            row.name
        )));
    }
    let revoked = workspaces::delete_grants_with_role(conn, &org_id, &row.id).await?;
    roles::delete_role(conn, &row.id).await?;
    tx.changed(Changed::Role(&row.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "role.delete",
            target_type: "role",
            target_id: &row.id,
            details: json!({ "name": row.name, "revoked_grants": revoked }),
        },
    );
    Ok((tx.commit().await?, revoked))
}
