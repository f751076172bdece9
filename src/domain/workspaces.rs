//! Workspaces and grants: the trust boundary inside an organization and who
//! holds which role in it. The creator of a workspace becomes its admin; a
//! member's default workspace can never be deleted.

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    access::{self, scope_to_json, subjects_of},
    audit::{self, Actor, Change},
    authorize::{self, GrantChange},
    change::{Changed, Tx},
    rules::{self, Plan},
};
use crate::{
    auth::{Caller, PrincipalId},
    authz::{
        OrgPermission,
        catalogue::SystemRole,
        engine::{APPLICATION_TAG, Scope, TagCondition, live_at},
        power::Reach,
    },
    config::DeploymentMode,
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{grant, organization, workspace},
        finish_page, identity, keys, new_id, now_ms, page_size, roles, teams, workspaces,
    },
};

fn check_workspace_plan(state: &AppState, org: &organization::Model) -> Result<()> {
    if state.settings.deployment_mode == DeploymentMode::Saas && Plan::of(org) < Plan::Plus {
        return Err(Error::FailedPrecondition(format!(
            "creating or updating workspaces needs the plus plan or higher; the organization is on the {} plan",
            Plan::of(org).as_str()
        )));
    }
    Ok(())
}

fn subject_of_principal(p: &PrincipalId) -> (&'static str, String) {
    match p {
        PrincipalId::User(id) => ("user", id.clone()),
        PrincipalId::ServiceAccount(id) => ("service_account", id.clone()),
    }
}

/// Creates a workspace (organization admins only); the creator becomes its admin.
pub async fn create_workspace(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key: &str,
    name: &str,
) -> Result<(workspace::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let key = rules::workspace_key("key", key)?;
    let name = if name.trim().is_empty() {
        key.clone()
    } else {
        rules::name("name", name)?
    };
    let tx = Tx::begin(state, caller).await?;
    let power = authorize::org(tx.conn(), caller, &org_id, OrgPermission::CreateWorkspaces).await?;
    let org = identity::organization(tx.conn(), &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    if org.personal {
        return Err(Error::FailedPrecondition(
            "a personal organization holds at most one workspace".into(),
        ));
    }
    check_workspace_plan(state, &org)?;
    let conn = tx.conn();
    if workspaces::workspace_by_key(conn, &org_id, &key)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "a workspace with key `{key}` already exists in the organization"
        )));
    }
    let now = now_ms();
    let ws = workspace::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        key,
        name,
        is_default: false,
        owner_user_id: None,
        created_at: now,
    };
    identity::insert(conn, ws.clone().into_active_model()).await?;
    // The creator becomes its admin; a platform account is admin of every
    // workspace already and holds no grant an organization could see.
    if !power.platform {
        let (subject_type, subject_id) = subject_of_principal(&caller.principal);
        let creator = grant::Model {
            id: new_id(),
            organization_id: org_id.clone(),
            workspace_id: ws.id.clone(),
            subject_type: subject_type.into(),
            subject_id,
            role: SystemRole::Admin.as_str().into(),
            scope: None,
            created_at: now,
            expires_at: None,
        };
        identity::insert(conn, creator.into_active_model()).await?;
    }
    tx.changed(Changed::Workspace(&ws.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "workspace.create",
            target_type: "workspace",
            target_id: &ws.id,
            details: json!({ "key": ws.key, "name": ws.name }),
        },
    );
    Ok((ws, tx.commit().await?))
}

/// Reads a workspace the caller may read.
pub async fn get_workspace(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
) -> Result<workspace::Model> {
    let (ws, _) =
        authorize::workspace_action(state.store.db(), caller, workspace_id, "workspace:read")
            .await?;
    Ok(ws)
}

/// The workspaces the caller may see: all of them for organization admins,
/// else those where the caller (or one of their teams) holds a grant.
pub async fn list_workspaces(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<workspace::Model>, String)> {
    let org_id = caller.organization(org_id).to_owned();
    let conn = state.store.db();
    let power = authorize::power(conn, caller, &org_id).await?;
    let mut only: Option<Vec<String>> = if power.admin_of_reached_workspaces() {
        None
    } else {
        let subjects = subjects_of(conn, &org_id, &caller.principal, caller.at_ms).await?;
        let refs: Vec<(&str, &str)> = subjects.iter().map(|(t, id)| (*t, id.as_str())).collect();
        let mut ids: Vec<String> = workspaces::org_grants_of_subjects(conn, &org_id, &refs)
            .await?
            .into_iter()
            .filter(|g| live_at(g.expires_at, caller.at_ms))
            .map(|g| g.workspace_id)
            .collect();
        ids.sort();
        ids.dedup();
        Some(ids)
    };
    if let Reach::Workspaces(reached) = &power.reach {
        only = Some(match only {
            Some(ids) => ids
                .into_iter()
                .filter(|id| power.reach.includes(id))
                .collect(),
            None => reached.clone(),
        });
    }
    let size = page_size(page.size);
    let rows = workspaces::workspaces(conn, &org_id, only.as_deref(), page.token, size + 1).await?;
    Ok(finish_page(rows, size, |w| w.id.clone()))
}

/// Changes a workspace's key or name (`workspace:update`).
pub async fn update_workspace(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    key: Option<&str>,
    name: Option<&str>,
) -> Result<(workspace::Model, u64)> {
    let key = key.map(|k| rules::workspace_key("key", k)).transpose()?;
    let name = name.map(|n| rules::name("name", n)).transpose()?;
    let tx = Tx::begin(state, caller).await?;
    let (mut ws, _) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "workspace:update").await?;
    let org = identity::organization(tx.conn(), &ws.organization_id)
        .await?
        .ok_or_else(|| authorize::unreachable_workspace(&ws.id))?;
    check_workspace_plan(state, &org)?;
    let before = json!({ "key": ws.key, "name": ws.name });
    if let Some(key) = key {
        ws.key = key;
    }
    if let Some(name) = name {
        ws.name = name;
    }
    if let Some(other) =
        workspaces::workspace_by_key(tx.conn(), &ws.organization_id, &ws.key).await?
        && other.id != ws.id
    {
        return Err(Error::AlreadyExists(format!(
            "a workspace with key `{}` already exists in the organization",
            ws.key
        )));
    }
    workspaces::update_workspace(tx.conn(), ws.clone()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "workspace.update",
            target_type: "workspace",
            target_id: &ws.id,
            details: json!({ "before": before, "after": { "key": ws.key, "name": ws.name } }),
        },
    );
    Ok((ws, tx.commit().await?))
}

/// Deletes a workspace with everything in it (`workspace:delete`). Default
/// workspaces cannot be deleted, not even by their owner. Service keys scoped
/// to it lose it; a key left with no workspace is revoked. Service accounts
/// confined to it and invites into it are deleted with it.
pub async fn delete_workspace(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
) -> Result<u64> {
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let (ws, _) =
        authorize::workspace_action(conn, caller, workspace_id, "workspace:delete").await?;
    if ws.is_default {
        return Err(Error::FailedPrecondition(
            "a default workspace cannot be deleted, not even by its owner".into(),
        ));
    }
    let now = now_ms();
    let mut revoked_keys = 0;
    for key in workspaces::workspace_scoped_keys(conn, &ws.organization_id).await? {
        let ids: Vec<String> = serde_json::from_str(&key.workspace_ids).unwrap_or_default();
        if !ids.contains(&ws.id) {
            continue;
        }
        let rest: Vec<String> = ids.into_iter().filter(|i| *i != ws.id).collect();
        let revoked = rest.is_empty().then_some(now);
        revoked_keys += u32::from(revoked.is_some());
        let key_id = key.id.clone();
        workspaces::set_key_workspaces(
            conn,
            key,
            serde_json::Value::from(rest).to_string(),
            revoked,
        )
        .await?;
        tx.changed(Changed::Key(&key_id)).await?;
    }
    // The accounts confined to the workspace go with it (their keys were
    // revoked above: they reached it alone), and so do invites into it.
    let confined = keys::confined_account_ids(conn, &ws.id).await?;
    for account in &confined {
        identity::delete_grants_of_subject(conn, &ws.organization_id, "service_account", account)
            .await?;
        keys::delete_service_account(conn, account).await?;
        tx.changed(Changed::ServiceAccount(account)).await?;
    }
    let invites = identity::delete_workspace_invites(conn, &ws.id).await?;
    workspaces::delete_workspace(conn, &ws.id).await?;
    tx.changed(Changed::Workspace(&ws.id)).await?;
    tx.changed(Changed::ResourceTags(&ws.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "workspace.delete",
            target_type: "workspace",
            target_id: &ws.id,
            details: json!({
                "key": ws.key,
                "revoked_keys": revoked_keys,
                "deleted_service_accounts": confined,
                "deleted_invites": invites,
            }),
        },
    );
    tx.commit().await
}

/// Who a grant names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Team(String),
    ServiceAccount(String),
}

impl Subject {
    /// The stored (type, id).
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::User(id) => ("user", id),
            Self::Team(id) => ("team", id),
            Self::ServiceAccount(id) => ("service_account", id),
        }
    }
}

/// A requested scope, before validation.
#[derive(Clone, Debug, Default)]
pub struct ScopeInput {
    pub conditions: Vec<(String, Vec<String>)>,
    pub application: String,
}

/// Validates a requested scope: bounded conditions on valid tag keys and
/// values, applications that exist in `ws`; `None` for an empty one.
pub async fn validate_scope(
    tx: &Tx,
    ws: &workspace::Model,
    input: ScopeInput,
) -> Result<Option<Scope>> {
    if input.conditions.is_empty() && input.application.is_empty() {
        return Ok(None);
    }
    if input.conditions.len() > 16 {
        return Err(Error::invalid("scope.conditions", "at most 16 conditions"));
    }
    let mut conditions = Vec::new();
    for (key, values) in input.conditions {
        let key = rules::tag_key("scope.conditions.key", &key)?;
        if values.is_empty() || values.len() > 32 {
            return Err(Error::invalid(
                "scope.conditions.values",
                format!("condition on `{key}` must list 1 to 32 values"),
            ));
        }
        let mut checked = Vec::new();
        for v in values {
            checked.push(rules::tag_value("scope.conditions.values", &v)?);
        }
        if conditions.iter().any(|c: &TagCondition| c.key == key) {
            return Err(Error::invalid(
                "scope.conditions",
                format!("key `{key}` appears twice"),
            ));
        }
        conditions.push(TagCondition {
            key,
            values: checked,
        });
    }
    let mut apps: Vec<String> = conditions
        .iter()
        .filter(|c| c.key == APPLICATION_TAG)
        .flat_map(|c| c.values.clone())
        .collect();
    if !input.application.is_empty() {
        if conditions.iter().any(|c| c.key == APPLICATION_TAG) {
            return Err(Error::invalid(
                "scope.application",
                "give the application either here or as an `Application` condition, not both",
            ));
        }
        let app = rules::tag_value("scope.application", &input.application)?;
        apps.push(app.clone());
        conditions.push(TagCondition {
            key: APPLICATION_TAG.into(),
            values: vec![app],
        });
    }
    for app in apps {
        if workspaces::application(tx.conn(), &ws.id, &app)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "application `{app}` does not exist in workspace `{}`",
                ws.key
            )));
        }
    }
    conditions.sort_by(|a, b| a.key.cmp(&b.key));
    let scope = Scope { conditions };
    if scope_to_json(&scope).len() > MAX_SCOPE_BYTES {
        return Err(Error::invalid(
            "scope",
            format!("at most {MAX_SCOPE_BYTES} bytes of conditions and values in all"),
        ));
    }
    Ok(Some(scope))
}

/// Most bytes a grant's scope takes, encoded: every answer that lists grants
/// (ExplainCheck, ListPrincipalPermissions, ListAccess) stays readable.
pub const MAX_SCOPE_BYTES: usize = 4096;

/// Most grants one subject holds in one workspace.
pub const MAX_GRANTS_PER_SUBJECT: usize = 100;

/// Checks that a grant's subject is of the organization (and, for a service
/// account confined to a workspace, that this is its workspace). Platform accounts
/// are not the organization's to give roles to: to anyone but a platform
/// caller they do not exist.
async fn validate_subject(
    tx: &Tx,
    caller: &Caller,
    ws: &workspace::Model,
    subject: &Subject,
) -> Result<()> {
    let conn = tx.conn();
    let org_id = ws.organization_id.as_str();
    match subject {
        Subject::User(id) => {
            if identity::membership(conn, org_id, id).await?.is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "user `{id}` is not a member of the organization"
                )));
            }
        }
        Subject::Team(id) => {
            teams::team(conn, id)
                .await?
                .filter(|t| t.organization_id == org_id)
                .ok_or_else(|| Error::NotFound(format!("team `{id}` not found")))?;
        }
        Subject::ServiceAccount(id) => {
            let not_found = || Error::NotFound(format!("service account `{id}` not found"));
            let account = keys::service_account(conn, id)
                .await?
                .filter(|s| s.organization_id == org_id)
                .ok_or_else(not_found)?;
            if account.platform && !authorize::is_platform(conn, caller).await? {
                return Err(not_found());
            }
            authorize::may_hold_grant_in(&account, ws)?;
        }
    }
    Ok(())
}

/// The stored id of a role named in a grant: a system role's name (aliases
/// accepted) or a custom role's id or name; `field` names it in refusals.
pub(super) async fn resolve_role(
    tx: &Tx,
    org_id: &str,
    field: &'static str,
    role: &str,
) -> Result<String> {
    if role.is_empty() {
        return Err(Error::invalid(
            field,
            "is required: WORKSPACE_ADMIN, WORKSPACE_EDITOR, WORKSPACE_VIEWER (or Owner, Contributor, Reader) or a custom role",
        ));
    }
    if let Some(system) = SystemRole::parse(role) {
        return Ok(system.as_str().into());
    }
    let conn = tx.conn();
    if let Some(r) = roles::role(conn, role)
        .await?
        .filter(|r| r.organization_id == org_id)
    {
        return Ok(r.id);
    }
    if let Some(r) = roles::role_by_name(conn, org_id, role).await? {
        return Ok(r.id);
    }
    Err(Error::invalid(field, format!("unknown role `{role}`")))
}

/// Grants a role, optionally scoped, to a user, team or service account (`roles:manage`).
pub async fn grant_access(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    subject: Option<Subject>,
    role: &str,
    scope: ScopeInput,
    expires_at: Option<i64>,
) -> Result<(grant::Model, u64)> {
    let tx = Tx::begin(state, caller).await?;
    let row = grant_in(&tx, caller, workspace_id, subject, role, scope, expires_at).await?;
    Ok((row, tx.commit().await?))
}

/// Grants a role inside the change `tx` (see [`grant_access`]), until
/// `expires_at` if given. Granting what the subject already holds (same
/// role, same scope) sets the new expiry on that grant, or makes it
/// permanent: extending is granting again.
pub async fn grant_in(
    tx: &Tx,
    caller: &Caller,
    workspace_id: &str,
    subject: Option<Subject>,
    role: &str,
    scope: ScopeInput,
    expires_at: Option<i64>,
) -> Result<grant::Model> {
    let subject = subject
        .ok_or_else(|| Error::invalid("subject", "must name a user, team or service account"))?;
    if subject.parts().1.is_empty() {
        return Err(Error::invalid("subject", "id is required"));
    }
    let expires_at = rules::expiry("expires_at", expires_at, caller.at_ms)?;
    let (ws, power) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "roles:manage").await?;
    validate_subject(tx, caller, &ws, &subject).await?;
    let role = resolve_role(tx, &ws.organization_id, "role", role).await?;
    let scope = validate_scope(tx, &ws, scope).await?;
    let (subject_type, subject_id) = subject.parts();
    authorize::may_give_grant(
        tx.conn(),
        caller,
        &ws,
        &power,
        (subject_type, subject_id),
        &role,
        scope.as_ref(),
        expires_at,
    )
    .await?;
    let scope_json = scope.as_ref().map(scope_to_json);
    let existing =
        workspaces::grants_of_subjects(tx.conn(), &ws.id, &[(subject_type, subject_id)]).await?;
    if let Some(same) = existing
        .iter()
        .find(|g| g.role == role && g.scope == scope_json)
        .cloned()
    {
        if same.expires_at.is_none() && expires_at.is_none() {
            return Err(Error::AlreadyExists(format!(
                "{subject_type} `{subject_id}` already holds this role with this scope"
            )));
        }
        if expires_at.is_some() && is_owners_own_access(&ws, &same) {
            return Err(Error::FailedPrecondition(
                "expires_at: the owner's access to their default workspace cannot expire".into(),
            ));
        }
        return set_grant_expiry(tx, caller, same, expires_at).await;
    }
    if existing.len() >= MAX_GRANTS_PER_SUBJECT {
        return Err(Error::FailedPrecondition(format!(
            "{subject_type} `{subject_id}` already holds {MAX_GRANTS_PER_SUBJECT} grants in this workspace, the most one subject may"
        )));
    }
    let row = grant::Model {
        id: new_id(),
        organization_id: ws.organization_id.clone(),
        workspace_id: ws.id.clone(),
        subject_type: subject_type.into(),
        subject_id: subject_id.into(),
        role,
        scope: scope_json,
        created_at: now_ms(),
        expires_at,
    };
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    grant_changed(
        tx,
        &Actor::of(caller),
        &row,
        "grant.create",
        json!({
            "scope": row.scope.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
            "expires_at": row.expires_at,
        }),
    )
    .await?;
    Ok(row)
}

/// Gives an existing grant a new expiry (`None`: permanent), in `tx`.
async fn set_grant_expiry(
    tx: &Tx,
    caller: &Caller,
    mut row: grant::Model,
    expires_at: Option<i64>,
) -> Result<grant::Model> {
    workspaces::set_grant_expiry(tx.conn(), &row.id, expires_at).await?;
    grant_changed(
        tx,
        &Actor::of(caller),
        &row,
        "grant.set_expiry",
        json!({ "expires_at": expires_at, "previous_expires_at": row.expires_at }),
    )
    .await?;
    row.expires_at = expires_at;
    Ok(row)
}

/// Records a change to grant `row` (given, re-timed, taken or expired by
/// `action`): what it invalidates, and its audit event naming the grant's
/// workspace, subject and role, with `details` besides.
pub(super) async fn grant_changed(
    tx: &Tx,
    actor: &Actor,
    row: &grant::Model,
    action: &str,
    details: serde_json::Value,
) -> Result<()> {
    tx.changed(Changed::Grant {
        workspace_id: &row.workspace_id,
        subject_type: &row.subject_type,
        subject_id: &row.subject_id,
    })
    .await?;
    let mut all = json!({
        "workspace_id": row.workspace_id,
        "subject": format!("{}:{}", row.subject_type, row.subject_id),
        "role": row.role,
    });
    if let (Some(all), serde_json::Value::Object(details)) = (all.as_object_mut(), details) {
        all.extend(details);
    }
    audit::record(
        tx,
        actor,
        Change {
            organization_id: Some(&row.organization_id),
            action,
            target_type: "grant",
            target_id: &row.id,
            details: all,
        },
    );
    Ok(())
}

/// Answers whether `grant` is the owner's unscoped grant on their default
/// workspace: private to them, it can be neither revoked nor made to expire.
fn is_owners_own_access(ws: &workspace::Model, grant: &grant::Model) -> bool {
    ws.is_default
        && grant.subject_type == "user"
        && ws.owner_user_id.as_deref() == Some(grant.subject_id.as_str())
        && grant.scope.is_none()
}

/// Revokes a grant (`roles:manage`). The owner's admin grant on their default
/// workspace stays: default workspaces are private to their owner.
pub async fn revoke_access(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    grant_id: &str,
) -> Result<u64> {
    let tx = Tx::begin(state, caller).await?;
    revoke_in(&tx, caller, workspace_id, grant_id).await?;
    tx.commit().await
}

/// Revokes a grant inside the change `tx` (see [`revoke_access`]).
pub async fn revoke_in(tx: &Tx, caller: &Caller, workspace_id: &str, grant_id: &str) -> Result<()> {
    let grant_id = rules::id("grant_id", grant_id)?;
    let (ws, power) =
        authorize::workspace_action(tx.conn(), caller, workspace_id, "roles:manage").await?;
    let hidden = authorize::hidden_accounts(tx.conn(), caller).await?;
    let row = workspaces::grant(tx.conn(), grant_id)
        .await?
        .filter(|g| g.workspace_id == ws.id)
        .filter(|g| !(g.subject_type == "service_account" && hidden.contains(&g.subject_id)))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "grant `{grant_id}` not found in workspace `{}`",
                ws.key
            ))
        })?;
    let scope = row.scope.as_deref().map(access::scope_from_json);
    authorize::may_change_grant(
        tx.conn(),
        caller,
        &ws,
        &power,
        &row.role,
        scope.as_ref(),
        GrantChange::Take,
    )
    .await?;
    if is_owners_own_access(&ws, &row) {
        return Err(Error::FailedPrecondition(
            "the owner's access to their default workspace cannot be revoked".into(),
        ));
    }
    workspaces::delete_grant(tx.conn(), &row.id).await?;
    grant_changed(tx, &Actor::of(caller), &row, "grant.delete", json!({})).await?;
    Ok(())
}

/// Grants of a workspace (`members:read`). Filtered by a user, it lists the
/// grants that reach the user: their own and their teams'.
pub async fn list_access(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    subject: Option<Subject>,
    page: Page<'_>,
) -> Result<(Vec<grant::Model>, String)> {
    let conn = state.store.db();
    let (ws, _) = authorize::workspace_action(conn, caller, workspace_id, "members:read").await?;
    let subjects: Option<Vec<(&'static str, String)>> = match &subject {
        None => None,
        Some(Subject::User(id)) => Some(
            subjects_of(
                conn,
                &ws.organization_id,
                &PrincipalId::User(id.clone()),
                caller.at_ms,
            )
            .await?,
        ),
        Some(other) => {
            let (t, id) = other.parts();
            Some(vec![(t, id.to_owned())])
        }
    };
    let refs: Option<Vec<(&str, &str)>> = subjects
        .as_ref()
        .map(|s| s.iter().map(|(t, id)| (*t, id.as_str())).collect());
    let size = page_size(page.size);
    let hidden = authorize::hidden_accounts(conn, caller).await?;
    let rows = workspaces::grants(conn, &ws.id, refs.as_deref(), page.token, size + 1).await?;
    let (rows, next) = finish_page(rows, size, |g| g.id.clone());
    let rows = rows
        .into_iter()
        .filter(|g| !(g.subject_type == "service_account" && hidden.contains(&g.subject_id)))
        .collect();
    Ok((rows, next))
}
