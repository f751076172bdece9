//! Service accounts and API keys: who may create which key, what a key may
//! reach, and the life of a key (expiry is final, revocation immediate).

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    audit::{self, Actor, Change},
    rules,
    tx::{Target, Tx},
};
use crate::{
    auth::{
        Caller, PrincipalId, ResolvedKey,
        caller::resolve_key,
        key::{self, KeyKind},
    },
    authz::{OrgPermission, OrgRole},
    error::{Error, Result},
    state::AppState,
    store::{
        entity::{api_key, service_account, workspace},
        finish_page, identity, keys, new_id, now_ms, page_size,
    },
};

/// Creates a service account (admins only). Only a caller that may act for
/// users can create another account with that power.
pub async fn create_service_account(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    name: &str,
    role: Option<OrgRole>,
    act_for_users: bool,
) -> Result<(service_account::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    caller
        .authorize_org(&state.store, &org_id, OrgPermission::ManageServiceAccounts)
        .await?;
    if act_for_users && !caller.may_act_for_users() {
        return Err(Error::PermissionDenied(
            "act_for_users: only a service account that acts for users may create another".into(),
        ));
    }
    let name = rules::name("name", name)?;
    let role = role.unwrap_or(OrgRole::Viewer);
    let tx = Tx::begin(state).await?;
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
        act_for_users,
        created_at: now_ms(),
    };
    identity::insert(tx.conn(), sa.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "service_account.create",
            target_type: "service_account",
            target_id: &sa.id,
            details: json!({ "name": sa.name, "role": sa.role, "act_for_users": act_for_users }),
        },
    )
    .await?;
    Ok((sa, tx.commit().await?))
}

/// Service accounts of an organization, for anyone who may view members.
pub async fn list_service_accounts(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<service_account::Model>, String)> {
    let org_id = caller.organization(org_id);
    caller
        .authorize_org(&state.store, org_id, OrgPermission::ViewMembers)
        .await?;
    let size = page_size(page.size);
    let rows = keys::service_accounts(state.store.db(), org_id, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |s| s.id.clone()))
}

/// Deletes a service account and revokes its keys (admins only).
pub async fn delete_service_account(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    service_account_id: &str,
) -> Result<u64> {
    let org_id = caller.organization(org_id).to_owned();
    caller
        .authorize_org(&state.store, &org_id, OrgPermission::ManageServiceAccounts)
        .await?;
    let sa_id = rules::id("service_account_id", service_account_id)?;
    let tx = Tx::begin(state).await?;
    let conn = tx.conn();
    let sa = keys::service_account(conn, sa_id)
        .await?
        .filter(|s| s.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("service account `{sa_id}` not found")))?;
    let revoked = keys::revoke_service_account_keys(conn, &sa.id, now_ms()).await?;
    identity::delete_grants_of_subject(conn, &org_id, "service_account", &sa.id).await?;
    keys::delete_service_account(conn, &sa.id).await?;
    tx.invalidate(Target::ServiceAccount, &sa.id);
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "service_account.delete",
            target_type: "service_account",
            target_id: &sa.id,
            details: json!({ "name": sa.name, "revoked_keys": revoked }),
        },
    )
    .await?;
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

/// Creates a personal access token for the calling user.
pub async fn create_pat(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    description: &str,
    expires_at: Option<i64>,
) -> Result<CreatedKey> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = caller.user_id()?.to_owned();
    caller
        .authorize_org(&state.store, &org_id, OrgPermission::CreatePat)
        .await?;
    check_expiry(expires_at)?;
    let org = identity::organization(state.store.db(), &org_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("organization `{org_id}` not found")))?;
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
        description: description.trim().to_owned(),
        user_id: Some(user_id),
        service_account_id: None,
        scope: None,
        workspace_ids: "[]".into(),
        expires_at,
        revoked_at: None,
        created_at: now_ms(),
    };
    store_key(state, caller, row, new.secret).await
}

/// Which workspaces a new service key may reach.
pub enum ServiceKeyScope {
    Organization,
    Workspaces(Vec<String>),
}

/// Creates a service key for a service account (admins only).
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
    caller
        .authorize_org(&state.store, &org_id, OrgPermission::ManageApiKeys)
        .await?;
    let sa_id = rules::id("service_account_id", service_account_id)?;
    let scope = scope.ok_or_else(|| {
        Error::invalid(
            "scope",
            "must be SERVICE_KEY_SCOPE_ORGANIZATION or SERVICE_KEY_SCOPE_WORKSPACES",
        )
    })?;
    check_expiry(expires_at)?;
    let conn = state.store.db();
    keys::service_account(conn, sa_id)
        .await?
        .filter(|s| s.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("service account `{sa_id}` not found")))?;
    let (scope_name, workspace_ids) = match scope {
        ServiceKeyScope::Organization => ("organization", Vec::new()),
        ServiceKeyScope::Workspaces(mut ids) => {
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return Err(Error::invalid(
                    "workspace_ids",
                    "must name at least one workspace for a workspaces-scoped key",
                ));
            }
            let found = identity::count_workspaces_in_org(conn, &org_id, &ids).await?;
            if usize::try_from(found).ok() != Some(ids.len()) {
                return Err(Error::NotFound(
                    "workspace_ids: some workspace is not in the organization".into(),
                ));
            }
            ("workspaces", ids)
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
        description: description.trim().to_owned(),
        user_id: None,
        service_account_id: Some(sa_id.to_owned()),
        scope: Some(scope_name.into()),
        workspace_ids: serde_json::Value::from(workspace_ids).to_string(),
        expires_at,
        revoked_at: None,
        created_at: now_ms(),
    };
    store_key(state, caller, row, new.secret).await
}

async fn store_key(
    state: &AppState,
    caller: &Caller,
    row: api_key::Model,
    secret: String,
) -> Result<CreatedKey> {
    let tx = Tx::begin(state).await?;
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&row.organization_id),
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
    )
    .await?;
    let revision = tx.commit().await?;
    Ok(CreatedKey {
        key: row,
        secret,
        revision,
    })
}

/// Keys of an organization: all of them for admins, one's own PATs otherwise.
pub async fn list_api_keys(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<api_key::Model>, String)> {
    let org_id = caller.organization(org_id);
    let role = caller.org_role(&state.store, org_id).await?;
    let only_user = if role.allows(OrgPermission::ManageApiKeys) {
        None
    } else {
        Some(caller.user_id()?)
    };
    let size = page_size(page.size);
    let rows = keys::api_keys(state.store.db(), org_id, only_user, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |k| k.id.clone()))
}

/// Loads a key the caller may manage: their own PAT, or any key for admins.
async fn managed_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
) -> Result<api_key::Model> {
    let key_id = rules::id("api_key_id", key_id)?;
    let role = caller.org_role(&state.store, org_id).await?;
    let key = keys::api_key(state.store.db(), key_id)
        .await?
        .filter(|k| k.organization_id == org_id)
        .ok_or_else(|| Error::NotFound(format!("api key `{key_id}` not found")))?;
    let own =
        matches!(&caller.principal, PrincipalId::User(u) if key.user_id.as_deref() == Some(u));
    if !own && !role.allows(OrgPermission::ManageApiKeys) {
        return Err(Error::PermissionDenied(format!(
            "{} may manage only its own personal access tokens (`{}` needed for others)",
            role.as_str(),
            OrgPermission::ManageApiKeys.name()
        )));
    }
    Ok(key)
}

/// Revokes a key at once; revoking a revoked key changes nothing.
pub async fn revoke_api_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
) -> Result<(api_key::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let mut key = managed_key(state, caller, &org_id, key_id).await?;
    if key.revoked_at.is_some() {
        return Ok((key, state.store.revision().await?));
    }
    let tx = Tx::begin(state).await?;
    key.revoked_at = Some(now_ms());
    let key = keys::update_api_key(tx.conn(), key).await?;
    tx.invalidate(Target::Key, &key.id);
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "api_key.revoke",
            target_type: "api_key",
            target_id: &key.id,
            details: json!({ "kind": key.kind, "last_chars": key.last_chars }),
        },
    )
    .await?;
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
/// forever and a revoked key stays revoked: neither can be changed.
pub async fn update_api_key(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    key_id: &str,
    update: KeyUpdate,
) -> Result<(api_key::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let mut key = managed_key(state, caller, &org_id, key_id).await?;
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
    if let Some(Some(t)) = update.expires_at {
        check_expiry(Some(t))?;
    }
    let before = json!({ "description": key.description, "expires_at": key.expires_at });
    if let Some(d) = update.description {
        key.description = d.trim().to_owned();
    }
    if let Some(e) = update.expires_at {
        key.expires_at = e;
    }
    let tx = Tx::begin(state).await?;
    let key = keys::update_api_key(tx.conn(), key).await?;
    tx.invalidate(Target::Key, &key.id);
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "api_key.update",
            target_type: "api_key",
            target_id: &key.id,
            details: json!({ "before": before, "after": { "description": key.description, "expires_at": key.expires_at } }),
        },
    )
    .await?;
    Ok((key, tx.commit().await?))
}

/// A key resolved with the workspace it acts in.
pub struct Authenticated {
    pub key: std::sync::Arc<ResolvedKey>,
    pub workspace: Option<workspace::Model>,
}

/// Resolves another key and its effective workspace. Callers may resolve keys
/// of their own organization; identity-provider service accounts any key.
pub async fn authenticate(
    state: &AppState,
    caller: &Caller,
    secret: &str,
    tenant: &str,
) -> Result<Authenticated> {
    if secret.is_empty() {
        return Err(Error::invalid("api_key", "is required"));
    }
    let key = resolve_key(state, secret).await?;
    if key.organization_id() != caller.key.organization_id() && !caller.may_act_for_users() {
        return Err(Error::PermissionDenied(
            "the api key belongs to another organization".into(),
        ));
    }
    let subject = Caller {
        principal: key.principal.clone(),
        key,
        acting_service_account_id: None,
        tenant: (!tenant.is_empty()).then(|| tenant.to_owned()),
    };
    let workspace = match subject.workspace(&state.store, "").await {
        Ok(ws) => Some(ws),
        Err(Error::PermissionDenied(_)) if tenant.is_empty() => None,
        Err(e) => return Err(e),
    };
    Ok(Authenticated {
        key: subject.key,
        workspace,
    })
}
