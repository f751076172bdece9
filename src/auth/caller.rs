//! Resolving an API key to a principal, and the caller of an RPC.
//!
//! A key acts only inside its own organization. The one exception is
//! `x-act-as-user`: a service account allowed to act for users (the product's
//! backend, which signed the user in) names a user, and the call is then
//! authorized exactly as that user, in whichever organizations they belong to.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use tonic::codegen::http::HeaderMap;

use crate::{
    auth::key::{self, KeyKind},
    authz::{
        OrgPermission, OrgRole,
        cache::{CacheCounters, CacheStats, Id, Invalidation, parse_id},
    },
    error::{Error, Result},
    state::AppState,
    store::{
        Store,
        entity::{api_key, workspace},
        identity, keys, now_ms,
    },
};

/// Metadata naming the workspace a call acts in.
pub const TENANT_HEADER: &str = "x-tenant-id";
/// Metadata naming the user a service account acts for.
pub const ACT_AS_HEADER: &str = "x-act-as-user";

/// A principal: the subject permissions are evaluated for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalId {
    User(String),
    ServiceAccount(String),
}

/// Where a key may act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// A personal access token: wherever its user may act in the organization.
    User,
    /// A service key for every workspace of the organization.
    Organization,
    /// A service key for these workspaces only.
    Workspaces(Vec<String>),
}

/// A valid key and what it stands for.
#[derive(Clone, Debug)]
pub struct ResolvedKey {
    pub key: api_key::Model,
    /// The ids above as numbers, for cache invalidation.
    pub ids: KeyIds,
    pub kind: KeyKind,
    pub principal: PrincipalId,
    /// The principal's role in the key's organization.
    pub org_role: OrgRole,
    /// The key's service account may act for users.
    pub act_for_users: bool,
    pub scope: KeyScope,
}

/// Numeric ids of a key, its organization and its principal.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyIds {
    pub key: Id,
    pub organization: Id,
    pub principal: Id,
}

impl ResolvedKey {
    /// The key's organization.
    pub fn organization_id(&self) -> &str {
        &self.key.organization_id
    }

    /// Answers whether a change makes this cached key stale.
    fn affected_by(&self, change: &Invalidation) -> bool {
        match *change {
            Invalidation::All => true,
            Invalidation::Organization(id) => self.ids.organization == id,
            Invalidation::Key(id) => self.ids.key == id,
            Invalidation::User(id) => {
                matches!(self.principal, PrincipalId::User(_)) && self.ids.principal == id
            }
            Invalidation::ServiceAccount(id) => {
                matches!(self.principal, PrincipalId::ServiceAccount(_)) && self.ids.principal == id
            }
            Invalidation::Workspace(_) | Invalidation::ResourceTags(_) => false,
        }
    }
}

/// Resolved keys by the SHA-256 of their secret. Only valid keys are cached;
/// revocation, removal and deletion invalidate them at once, and expiry is
/// checked on every use.
#[derive(Clone)]
pub struct KeyCache {
    keys: Cache<[u8; 32], Arc<ResolvedKey>>,
    counters: CacheCounters,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.keys.entry_count())
            .finish()
    }
}

impl KeyCache {
    /// A cache of at most `capacity` keys, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let counters = CacheCounters::default();
        Self {
            keys: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(counters.eviction_listener())
                .support_invalidation_closures()
                .build(),
            counters,
        }
    }

    /// Hit, miss and eviction counts, and how many keys are cached.
    pub fn stats(&self) -> CacheStats {
        self.counters.stats(self.keys.entry_count())
    }

    /// Drops the keys a change affects.
    pub fn invalidate(&self, change: &Invalidation) {
        if matches!(change, Invalidation::All) {
            self.keys.invalidate_all();
            return;
        }
        let change = change.clone();
        if self
            .keys
            .invalidate_entries_if(move |_, v| v.affected_by(&change))
            .is_err()
        {
            self.keys.invalidate_all();
        }
    }
}

/// Resolves a presented key: format first (no storage for garbage), then the
/// cache, then storage. Every failure is `UNAUTHENTICATED` with the reason.
pub async fn resolve_key(state: &AppState, secret: &str) -> Result<Arc<ResolvedKey>> {
    let kind = key::parse(secret).map_err(|e| Error::Unauthenticated(e.to_string()))?;
    let digest = key::digest(secret);
    let resolved = match state.keys.keys.get(&digest) {
        Some(hit) => {
            state.keys.counters.hit();
            hit
        }
        None => {
            state.keys.counters.miss();
            let epoch = state.decisions.epoch();
            let loaded = Arc::new(load_key(&state.store, kind, &digest).await?);
            if state.decisions.epoch() == epoch {
                state.keys.keys.insert(digest, loaded.clone());
            }
            loaded
        }
    };
    if resolved.key.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::Unauthenticated("api key has expired".into()));
    }
    Ok(resolved)
}

async fn load_key(store: &Store, kind: KeyKind, digest: &[u8; 32]) -> Result<ResolvedKey> {
    let conn = store.db();
    let key = keys::api_key_by_hash(conn, &key::hex(digest))
        .await?
        .ok_or_else(|| Error::Unauthenticated("unknown api key".into()))?;
    if !key::verify(&key.key_hash, digest) || KeyKind::from_db(&key.kind) != Some(kind) {
        return Err(Error::Unauthenticated("unknown api key".into()));
    }
    if key.revoked_at.is_some() {
        return Err(Error::Unauthenticated("api key has been revoked".into()));
    }
    if key.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::Unauthenticated("api key has expired".into()));
    }
    let stale = || Error::Unauthenticated("api key has been revoked".into());
    let mut ids = KeyIds {
        key: parse_id(&key.id).unwrap_or_default(),
        organization: parse_id(&key.organization_id).unwrap_or_default(),
        principal: 0,
    };
    match kind {
        KeyKind::PersonalAccessToken => {
            let user_id = key.user_id.clone().ok_or_else(stale)?;
            let member = identity::membership(conn, &key.organization_id, &user_id)
                .await?
                .ok_or_else(stale)?;
            let org_role = OrgRole::from_db(&member.role).ok_or_else(stale)?;
            ids.principal = parse_id(&user_id).unwrap_or_default();
            Ok(ResolvedKey {
                ids,
                principal: PrincipalId::User(user_id),
                org_role,
                act_for_users: false,
                scope: KeyScope::User,
                key,
                kind,
            })
        }
        KeyKind::ServiceKey => {
            let sa_id = key.service_account_id.clone().ok_or_else(stale)?;
            let sa = keys::service_account(conn, &sa_id)
                .await?
                .ok_or_else(stale)?;
            let org_role = OrgRole::from_db(&sa.role).ok_or_else(stale)?;
            let scope = match key.scope.as_deref() {
                Some("workspaces") => KeyScope::Workspaces(
                    serde_json::from_str(&key.workspace_ids).map_err(|_| stale())?,
                ),
                _ => KeyScope::Organization,
            };
            ids.principal = parse_id(&sa_id).unwrap_or_default();
            Ok(ResolvedKey {
                ids,
                principal: PrincipalId::ServiceAccount(sa_id),
                org_role,
                act_for_users: sa.act_for_users,
                scope,
                key,
                kind,
            })
        }
    }
}

/// The authenticated caller of an RPC.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key the call was made with.
    pub key: Arc<ResolvedKey>,
    /// Who the call is authorized as: the key's principal, or the acted-for user.
    pub principal: PrincipalId,
    /// Set when a service account acts for a user.
    pub acting_service_account_id: Option<String>,
    /// The `x-tenant-id` metadata, if given.
    pub tenant: Option<String>,
}

impl Caller {
    /// Authenticates the metadata of a call.
    pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Self> {
        let value = headers.get("authorization").ok_or_else(|| {
            Error::Unauthenticated(
                "missing `authorization` metadata: expected `authorization: Bearer <api key>`"
                    .into(),
            )
        })?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated("`authorization` metadata must be `Bearer <api key>`".into())
            })?;
        let key = resolve_key(state, secret).await?;
        let tenant = header_str(headers, TENANT_HEADER)?;
        let act_as = header_str(headers, ACT_AS_HEADER)?;
        let Some(user_id) = act_as else {
            return Ok(Self {
                principal: key.principal.clone(),
                key,
                acting_service_account_id: None,
                tenant,
            });
        };
        let PrincipalId::ServiceAccount(sa_id) = &key.principal else {
            return Err(Error::PermissionDenied(
                "`x-act-as-user` is only for service keys allowed to act for users".into(),
            ));
        };
        if !key.act_for_users {
            return Err(Error::PermissionDenied(
                "this service account may not act for users (`x-act-as-user`)".into(),
            ));
        }
        if identity::user(state.store.db(), &user_id).await?.is_none() {
            return Err(Error::NotFound(format!(
                "x-act-as-user: user `{user_id}` not found"
            )));
        }
        Ok(Self {
            acting_service_account_id: Some(sa_id.clone()),
            principal: PrincipalId::User(user_id),
            key,
            tenant,
        })
    }

    /// The calling user, for operations a user does for themself.
    pub fn user_id(&self) -> Result<&str> {
        match &self.principal {
            PrincipalId::User(id) => Ok(id),
            PrincipalId::ServiceAccount(_) => Err(Error::PermissionDenied(
                "only a user may do this: use a personal access token, or a service key with `x-act-as-user`".into(),
            )),
        }
    }

    /// The organization a request means: the given id, or the key's own.
    pub fn organization<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() {
            self.key.organization_id()
        } else {
            requested
        }
    }

    /// Answers whether the caller may act for users.
    pub fn may_act_for_users(&self) -> bool {
        self.acting_service_account_id.is_none() && self.key.act_for_users
    }

    /// The caller's role in an organization.
    pub async fn org_role(&self, store: &Store, org_id: &str) -> Result<OrgRole> {
        if self.acting_service_account_id.is_none() {
            if org_id != self.key.organization_id() {
                return Err(Error::PermissionDenied(format!(
                    "the api key belongs to another organization than `{org_id}`"
                )));
            }
            return Ok(self.key.org_role);
        }
        let user_id = self.user_id()?;
        let member = identity::membership(store.db(), org_id, user_id)
            .await?
            .ok_or_else(|| {
                Error::PermissionDenied(format!(
                    "user `{user_id}` is not a member of organization `{org_id}`"
                ))
            })?;
        OrgRole::from_db(&member.role)
            .ok_or_else(|| Error::PermissionDenied("unknown organization role".into()))
    }

    /// Authorizes an organization-level action; returns the caller's role.
    pub async fn authorize_org(
        &self,
        store: &Store,
        org_id: &str,
        permission: OrgPermission,
    ) -> Result<OrgRole> {
        let role = self.org_role(store, org_id).await?;
        if !role.allows(permission) {
            return Err(Error::PermissionDenied(format!(
                "{} lacks the organization permission `{}`",
                role.as_str(),
                permission.name()
            )));
        }
        Ok(role)
    }

    /// Resolves the workspace a call acts in: `requested` (a request field),
    /// else `x-tenant-id`, else the key's default.
    pub async fn workspace(&self, store: &Store, requested: &str) -> Result<workspace::Model> {
        let named = if requested.is_empty() {
            self.tenant.as_deref()
        } else {
            Some(requested)
        };
        let conn = store.db();
        let Some(id) = named else {
            return self.default_workspace(store).await;
        };
        let ws = identity::workspace(conn, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("workspace `{id}` not found")))?;
        if let Some(_sa) = &self.acting_service_account_id {
            let user_id = self.user_id()?;
            if identity::membership(conn, &ws.organization_id, user_id)
                .await?
                .is_none()
            {
                return Err(Error::PermissionDenied(format!(
                    "user `{user_id}` is not a member of the organization of workspace `{id}`"
                )));
            }
            return Ok(ws);
        }
        if ws.organization_id != self.key.organization_id() {
            return Err(Error::PermissionDenied(format!(
                "workspace `{id}` belongs to another organization than the api key"
            )));
        }
        if let KeyScope::Workspaces(allowed) = &self.key.scope
            && !allowed.iter().any(|w| w == id)
        {
            return Err(Error::PermissionDenied(format!(
                "the service key is not scoped to workspace `{id}`"
            )));
        }
        Ok(ws)
    }

    async fn default_workspace(&self, store: &Store) -> Result<workspace::Model> {
        let missing = || {
            Error::PermissionDenied(
                "x-tenant-id is required: name the target workspace (organization-scoped service keys have no default workspace)".into(),
            )
        };
        let conn = store.db();
        let id = match (&self.principal, &self.key.scope) {
            (PrincipalId::User(user_id), _) => {
                identity::membership(conn, self.key.organization_id(), user_id)
                    .await?
                    .ok_or_else(missing)?
                    .default_workspace_id
            }
            (PrincipalId::ServiceAccount(_), KeyScope::Workspaces(ids)) if ids.len() == 1 => {
                ids[0].clone()
            }
            _ => return Err(missing()),
        };
        identity::workspace(conn, &id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("workspace `{id}` not found")))
    }
}

fn header_str(headers: &HeaderMap, name: &'static str) -> Result<Option<String>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| Error::invalid(name, "must be ASCII"))?
                .trim();
            if s.is_empty() {
                Ok(None)
            } else {
                Ok(Some(s.to_owned()))
            }
        }
    }
}
