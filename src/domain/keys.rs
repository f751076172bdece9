//! Service accounts and API keys: who may create which key, what a key may
//! reach, and the life of a key (expiry is final, revocation immediate).
//! Platform accounts and their keys are invisible to organizations: to
//! anyone but a platform caller they do not exist.

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    audit::{self, Actor, Change},
    authorize::{self, KeyChange},
    change::{Changed, Tx},
    rules,
};
use crate::{
    auth::{
        Caller, ResolvedKey,
        caller::resolve_key,
        key::{self, KeyKind},
    },
    authz::{
        OrgPermission, OrgRole,
        power::{self, PlatformPower, Reach},
    },
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{api_key, service_account, workspace},
        finish_page, identity,
        keys::{self, KeyFilter},
        new_id, now_ms, page_size,
    },
};

/// Creates a service account (admins only), with a role no higher than the
/// caller's. Only a platform account may create another platform account;
/// it belongs to the platform tier, and its creation to the platform log.
///
/// With `workspace_id`, the account is confined to that workspace: a
/// workspace admin of it may create it, it is `ORG_VIEWER` (no organization
/// power), it may hold grants only there and its keys reach only there.
pub async fn create_service_account(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    name: &str,
    role: Option<OrgRole>,
    platform: bool,
    workspace_id: &str,
) -> Result<(service_account::Model, u64)> {
    let name = rules::name("name", name)?;
    let confined = !workspace_id.is_empty();
    if confined && platform {
        return Err(Error::invalid(
            "platform",
            "a platform account acts across organizations and cannot be confined to a workspace",
        ));
    }
    let role = if confined {
        power::confined_account_role(role).map_err(|d| Error::PermissionDenied(d.0))?
    } else {
        role.unwrap_or(OrgRole::Viewer)
    };
    let tx = Tx::begin(state, caller).await?;
    let (org_id, power, workspace) = if confined {
        let (ws, power) = authorize::workspace_admin(tx.conn(), caller, workspace_id).await?;
        if !org_id.is_empty() && org_id != ws.organization_id {
            return Err(authorize::unreachable_workspace(&ws.id));
        }
        (ws.organization_id.clone(), power, Some(ws.id))
    } else {
        let org_id = caller.organization(org_id).to_owned();
        let power = authorize::org(
            tx.conn(),
            caller,
            &org_id,
            OrgPermission::ManageServiceAccounts,
        )
        .await?;
        (org_id, power, None)
    };
    if platform {
        authorize::platform(tx.conn(), caller, PlatformPower::ManagePlatformAccounts).await?;
    }
    authorize::may_give_role(&power, role)?;
    let org = identity::organization(tx.conn(), &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    rules::check_account_role(state.settings.deployment_mode, &org, role)?;
    if keys::service_account_by_name(tx.conn(), &org_id, &name)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "a service account named `{name}` already exists"
        )));
    }
    let sa = service_account::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        name,
        role: role.as_str().into(),
        platform,
        workspace_id: workspace,
        created_at: now_ms(),
    };
    identity::insert(tx.conn(), sa.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: (!platform).then_some(org_id.as_str()),
            action: "service_account.create",
            target_type: "service_account",
            target_id: &sa.id,
            details: json!({
                "name": sa.name,
                "role": sa.role,
                "platform": platform,
                "workspace_id": sa.workspace_id,
            }),
        },
    );
    Ok((sa, tx.commit().await?))
}

/// Service accounts of an organization, for those who manage them (admins);
/// platform accounts only for platform callers. With `workspace_id`, the
/// accounts confined to that workspace, for its workspace admins.
pub async fn list_service_accounts(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    workspace_id: &str,
    page: Page<'_>,
) -> Result<(Vec<service_account::Model>, String)> {
    let conn = state.store.db();
    let size = page_size(page.size);
    if !workspace_id.is_empty() {
        let (ws, _) = authorize::workspace_admin(conn, caller, workspace_id).await?;
        if !org_id.is_empty() && org_id != ws.organization_id {
            return Err(authorize::unreachable_workspace(&ws.id));
        }
        let rows = keys::service_accounts(
            conn,
            &ws.organization_id,
            false,
            Some(&ws.id),
            page.token,
            size + 1,
        )
        .await?;
        return Ok(finish_page(rows, size, |s| s.id.clone()));
    }
    let org_id = caller.organization(org_id);
    authorize::org(conn, caller, org_id, OrgPermission::ManageServiceAccounts).await?;
    let platform = authorize::is_platform(conn, caller).await?;
    let rows = keys::service_accounts(conn, org_id, platform, None, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |s| s.id.clone()))
}

/// The service account `service_account_id` of `org_id`, if there is one,
/// for deciding whether the caller may manage it.
async fn account_in(
    tx: &Tx,
    org_id: &str,
    service_account_id: &str,
) -> Result<Option<service_account::Model>> {
    let sa_id = rules::id("service_account_id", service_account_id)?;
    Ok(keys::service_account(tx.conn(), sa_id)
        .await?
        .filter(|s| s.organization_id == org_id))
}

/// A service account of `org_id` the caller may manage: platform accounts
/// only for platform callers; to anyone else they do not exist.
async fn managed_account(
    tx: &Tx,
    caller: &Caller,
    org_id: &str,
    service_account_id: &str,
) -> Result<service_account::Model> {
    let sa_id = rules::id("service_account_id", service_account_id)?;
    let not_found = || Error::NotFound(format!("service account `{sa_id}` not found"));
    let sa = keys::service_account(tx.conn(), sa_id)
        .await?
        .filter(|s| s.organization_id == org_id)
        .ok_or_else(not_found)?;
    if sa.platform && !authorize::is_platform(tx.conn(), caller).await? {
        return Err(not_found());
    }
    Ok(sa)
}

/// Deletes a service account and revokes its keys (admins; for an account
/// confined to a workspace, also the workspace's admins).
pub async fn delete_service_account(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    service_account_id: &str,
) -> Result<u64> {
    let org_id = caller.organization(org_id).to_owned();
    let tx = Tx::begin(state, caller).await?;
    let candidate = account_in(&tx, &org_id, service_account_id).await?;
    authorize::may_manage_account(
        tx.conn(),
        caller,
        &org_id,
        candidate.as_ref(),
        OrgPermission::ManageServiceAccounts,
    )
    .await?;
    let sa = managed_account(&tx, caller, &org_id, service_account_id).await?;
    let conn = tx.conn();
    let revoked = keys::revoke_service_account_keys(conn, &sa.id, now_ms()).await?;
    identity::delete_grants_of_subject(conn, &org_id, "service_account", &sa.id).await?;
    keys::delete_service_account(conn, &sa.id).await?;
    tx.changed(Changed::ServiceAccount(&sa.id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: (!sa.platform).then_some(org_id.as_str()),
            action: "service_account.delete",
            target_type: "service_account",
            target_id: &sa.id,
            details: json!({ "name": sa.name, "revoked_keys": revoked }),
        },
    );
    tx.commit().await
}

/// A key just created: the listing row and the secret, shown once.
pub struct CreatedKey {
    pub key: api_key::Model,
    pub secret: String,
    pub revision: u64,
}

fn check_expiry(expires_at: Option<i64>) -> Result<()> {
    if expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::invalid("expires_at", "must be in the future"));
    }
    Ok(())
}

fn generate(kind: KeyKind) -> Result<key::NewKey> {
    key::generate(kind).map_err(|e| {
        Error::Store(crate::store::StoreError::Internal(format!(
            "random source failed: {e}"
        )))
    })
}

/// Creates a personal access token for the calling user. The token acts
/// with the user's power in the whole organization, so the calling key must
/// reach it all, and the token lives no longer than the calling key.
pub async fn create_pat(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    description: &str,
    expires_at: Option<i64>,
) -> Result<CreatedKey> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = caller.user_id()?.to_owned();
    let description = rules::description("description", description)?;
    check_expiry(expires_at)?;
    let tx = Tx::begin(state, caller).await?;
    let power = authorize::org(tx.conn(), caller, &org_id, OrgPermission::CreatePat).await?;
    authorize::may_mint(caller, &power, &Reach::Organization, expires_at)?;
    let org = identity::organization(tx.conn(), &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    if org.pat_creation_disabled {
        return Err(Error::FailedPrecondition(
            "personal access token creation is disabled for this organization".into(),
        ));
    }
    let new = generate(KeyKind::PersonalAccessToken)?;
    let row = api_key::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        kind: KeyKind::PersonalAccessToken.as_str().into(),
        key_hash: new.hash,
        prefix: KeyKind::PersonalAccessToken.prefix().into(),
        last_chars: new.last_chars,
        description,
        user_id: Some(user_id),
        service_account_id: None,
        scope: None,
        workspace_ids: "[]".into(),
        workspace_id: None,
        expires_at,
        revoked_at: None,
        created_at: now_ms(),
    };
    store_key(tx, caller, row, new.secret, true).await
}

/// Which workspaces a new service key may reach.
pub enum ServiceKeyScope {
    Organization,
    Workspaces(Vec<String>),
}

/// Most workspaces one service key may be scoped to.
pub const MAX_KEY_WORKSPACES: usize = 100;

/// Creates a service key for a service account (admins only; for an account
/// confined to a workspace, also the workspace's admins): it reaches no
/// more than the calling key and lives no longer. A key of a confined
/// account reaches its workspace only (`scope` may then be left out).
pub async fn create_service_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    service_account_id: &str,
    description: &str,
    scope: Option<ServiceKeyScope>,
    expires_at: Option<i64>,
) -> Result<CreatedKey> {
    let org_id = caller.organization(org_id).to_owned();
    let description = rules::description("description", description)?;
    check_expiry(expires_at)?;
    let requested = match scope {
        None => None,
        Some(ServiceKeyScope::Organization) => Some(Reach::Organization),
        Some(ServiceKeyScope::Workspaces(mut ids)) => {
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return Err(Error::invalid(
                    "workspace_ids",
                    "must name at least one workspace for a workspaces-scoped key",
                ));
            }
            if ids.len() > MAX_KEY_WORKSPACES {
                return Err(Error::invalid(
                    "workspace_ids",
                    format!("at most {MAX_KEY_WORKSPACES} workspaces per key"),
                ));
            }
            Some(Reach::Workspaces(ids))
        }
    };
    let tx = Tx::begin(state, caller).await?;
    let candidate = account_in(&tx, &org_id, service_account_id).await?;
    let power = authorize::may_manage_account(
        tx.conn(),
        caller,
        &org_id,
        candidate.as_ref(),
        OrgPermission::ManageApiKeys,
    )
    .await?;
    let sa = managed_account(&tx, caller, &org_id, service_account_id).await?;
    let reach = match &sa.workspace_id {
        Some(ws) => power::confined_key_reach(requested.as_ref(), ws)
            .map_err(|d| Error::PermissionDenied(d.0))?,
        None => requested.ok_or_else(|| {
            Error::invalid(
                "scope",
                "must be SERVICE_KEY_SCOPE_ORGANIZATION or SERVICE_KEY_SCOPE_WORKSPACES",
            )
        })?,
    };
    authorize::may_mint(caller, &power, &reach, expires_at)?;
    let (scope_name, workspace_ids) = match &reach {
        Reach::Organization => ("organization", Vec::new()),
        Reach::Workspaces(ids) => {
            let found = identity::count_workspaces_in_org(tx.conn(), &org_id, ids).await?;
            if usize::try_from(found).ok() != Some(ids.len()) {
                return Err(Error::NotFound(
                    "workspace_ids: some workspace is not in the organization".into(),
                ));
            }
            ("workspaces", ids.clone())
        }
    };
    let new = generate(KeyKind::ServiceKey)?;
    let row = api_key::Model {
        id: new_id(),
        organization_id: org_id,
        kind: KeyKind::ServiceKey.as_str().into(),
        key_hash: new.hash,
        prefix: KeyKind::ServiceKey.prefix().into(),
        last_chars: new.last_chars,
        description,
        user_id: None,
        service_account_id: Some(sa.id.clone()),
        scope: Some(scope_name.into()),
        workspace_ids: serde_json::Value::from(workspace_ids).to_string(),
        workspace_id: sa.workspace_id.clone(),
        expires_at,
        revoked_at: None,
        created_at: now_ms(),
    };
    store_key(tx, caller, row, new.secret, !sa.platform).await
}

async fn store_key(
    tx: Tx,
    caller: &Caller,
    row: api_key::Model,
    secret: String,
    in_organization_log: bool,
) -> Result<CreatedKey> {
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: in_organization_log.then_some(row.organization_id.as_str()),
            action: "api_key.create",
            target_type: "api_key",
            target_id: &row.id,
            details: json!({
                "kind": row.kind,
                "last_chars": row.last_chars,
                "scope": row.scope,
                "expires_at": row.expires_at,
            }),
        },
    );
    let revision = tx.commit().await?;
    Ok(CreatedKey {
        key: row,
        secret,
        revision,
    })
}

/// Keys of an organization: all of them (platform accounts' keys only for
/// platform callers) for those who manage keys, one's own PATs otherwise.
/// With `workspace_id`, the keys of the accounts confined to that
/// workspace, for its workspace admins.
pub async fn list_api_keys(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    workspace_id: &str,
    page: Page<'_>,
) -> Result<(Vec<api_key::Model>, String)> {
    let conn = state.store.db();
    let size = page_size(page.size);
    if !workspace_id.is_empty() {
        let (ws, _) = authorize::workspace_admin(conn, caller, workspace_id).await?;
        if !org_id.is_empty() && org_id != ws.organization_id {
            return Err(authorize::unreachable_workspace(&ws.id));
        }
        let rows = keys::api_keys(
            conn,
            &ws.organization_id,
            KeyFilter::Workspace(&ws.id),
            false,
            page.token,
            size + 1,
        )
        .await?;
        return Ok(finish_page(rows, size, |k| k.id.clone()));
    }
    let org_id = caller.organization(org_id);
    let power = authorize::power(conn, caller, org_id).await?;
    let only = match authorize::listed_keys(caller, &power)? {
        Some(user) => KeyFilter::User(user),
        None => KeyFilter::All,
    };
    let platform = authorize::is_platform(conn, caller).await?;
    let rows = keys::api_keys(conn, org_id, only, platform, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |k| k.id.clone()))
}

/// Loads a key the caller may change, inside the change's transaction.
async fn managed_key(
    tx: &Tx,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
    change: KeyChange,
) -> Result<api_key::Model> {
    let key_id = rules::id("api_key_id", key_id)?;
    let conn = tx.conn();
    let power = authorize::power(conn, caller, org_id).await?;
    let key = keys::api_key(conn, key_id)
        .await?
        .filter(|k| k.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("api key `{key_id}` not found")))?;
    authorize::may_change_key(conn, caller, &power, &key, change).await?;
    Ok(key)
}

/// Answers whether a key's changes go to its organization's log (not a platform account's).
async fn in_organization_log(tx: &Tx, key: &api_key::Model) -> Result<bool> {
    Ok(match &key.service_account_id {
        Some(sa) => !keys::service_account(tx.conn(), sa)
            .await?
            .is_some_and(|a| a.platform),
        None => true,
    })
}

/// Revokes a key at once; revoking a revoked key changes nothing.
pub async fn revoke_api_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
) -> Result<(api_key::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let tx = Tx::begin(state, caller).await?;
    let mut key = managed_key(&tx, caller, &org_id, key_id, KeyChange::Revoke).await?;
    if key.revoked_at.is_some() {
        drop(tx);
        return Ok((key, state.store.revision().await?));
    }
    key.revoked_at = Some(now_ms());
    let key = keys::update_api_key(tx.conn(), key).await?;
    tx.changed(Changed::Key(&key.id)).await?;
    let organization_log = in_organization_log(&tx, &key).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: organization_log.then_some(org_id.as_str()),
            action: "api_key.revoke",
            target_type: "api_key",
            target_id: &key.id,
            details: json!({ "kind": key.kind, "last_chars": key.last_chars }),
        },
    );
    Ok((key, tx.commit().await?))
}

/// What UpdateApiKey may change.
#[derive(Debug, Default)]
pub struct KeyUpdate {
    pub description: Option<String>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<i64>>,
}

/// Changes a live key's description or expiry. An expired key stays expired
/// forever and a revoked key stays revoked: neither can be changed. A new
/// expiry is no later than the calling key's own.
pub async fn update_api_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
    update: KeyUpdate,
) -> Result<(api_key::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let description = update
        .description
        .as_deref()
        .map(|d| rules::description("description", d))
        .transpose()?;
    if let Some(Some(t)) = update.expires_at {
        check_expiry(Some(t))?;
    }
    let tx = Tx::begin(state, caller).await?;
    let mut key = managed_key(&tx, caller, &org_id, key_id, KeyChange::Update).await?;
    if key.revoked_at.is_some() {
        return Err(Error::FailedPrecondition(
            "the api key is revoked and cannot be changed".into(),
        ));
    }
    if key.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::FailedPrecondition(
            "the api key has expired; an expired key cannot be reactivated or re-dated".into(),
        ));
    }
    if let Some(expires_at) = update.expires_at {
        authorize::may_outlive(caller, expires_at)?;
        let extends = match (key.expires_at, expires_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(now), Some(then)) => then > now,
        };
        // Extending a token is making a new one: the organization's
        // security setting applies to it as to creation.
        if extends
            && key.user_id.is_some()
            && identity::organization(tx.conn(), &org_id)
                .await?
                .is_some_and(|o| o.pat_creation_disabled)
        {
            return Err(Error::FailedPrecondition(
                "personal access token creation is disabled for this organization: tokens cannot be extended either".into(),
            ));
        }
    }
    let before = json!({ "description": key.description, "expires_at": key.expires_at });
    if let Some(d) = description {
        key.description = d;
    }
    if let Some(e) = update.expires_at {
        key.expires_at = e;
    }
    let key = keys::update_api_key(tx.conn(), key).await?;
    tx.changed(Changed::Key(&key.id)).await?;
    let organization_log = in_organization_log(&tx, &key).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: organization_log.then_some(org_id.as_str()),
            action: "api_key.update",
            target_type: "api_key",
            target_id: &key.id,
            details: json!({ "before": before, "after": { "description": key.description, "expires_at": key.expires_at } }),
        },
    );
    Ok((key, tx.commit().await?))
}

/// A key resolved with the workspace it acts in.
pub struct Authenticated {
    pub key: std::sync::Arc<ResolvedKey>,
    pub workspace: Option<workspace::Model>,
}

/// Resolves another key and its effective workspace. Callers may resolve
/// keys of their own organization (a key limited to workspaces only keys
/// acting inside them); platform accounts keys of any organization.
pub async fn authenticate(
    state: &AppState,
    caller: &Caller,
    secret: &str,
    tenant: &str,
) -> Result<Authenticated> {
    if secret.is_empty() {
        return Err(Error::invalid("api_key", "is required"));
    }
    let conn = state.store.db();
    let key = resolve_key(state, secret).await?;
    let caller_power = authorize::may_resolve_key(conn, caller, &key).await?;
    let subject = Caller {
        principal: key.principal.clone(),
        key,
        acting_service_account_id: None,
        tenant: (!tenant.is_empty()).then(|| tenant.to_owned()),
        at_ms: caller.at_ms,
    };
    let workspace = match authorize::workspace(conn, &subject, "").await {
        Ok((ws, _)) => Some(ws),
        Err(Error::PermissionDenied(_)) if tenant.is_empty() => None,
        Err(e) => return Err(e),
    };
    authorize::may_see_resolved(caller_power.as_ref(), workspace.as_ref())?;
    Ok(Authenticated {
        key: subject.key,
        workspace,
    })
}

/// What WhoAmI says of the caller beyond its key.
pub struct WhoAmI {
    /// The workspace the call acts in, if one applies.
    pub workspace_id: Option<String>,
    /// The organization role the call is authorized with in the key's organization.
    pub org_role: Option<OrgRole>,
    /// The caller is a platform account acting as itself.
    pub platform: bool,
}

/// Describes the caller: its effective workspace and role.
pub async fn who_am_i(state: &AppState, caller: &Caller) -> Result<WhoAmI> {
    let conn = state.store.db();
    let workspace_id = match authorize::workspace(conn, caller, "").await {
        Ok((ws, _)) => Some(ws.id),
        Err(Error::PermissionDenied(_)) if caller.tenant.is_none() => None,
        Err(e) => return Err(e),
    };
    let org_role = match authorize::power(conn, caller, caller.key.organization_id()).await {
        Ok(power) => Some(power.role),
        Err(Error::PermissionDenied(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(WhoAmI {
        workspace_id,
        org_role,
        platform: authorize::is_platform(conn, caller).await?,
    })
}
