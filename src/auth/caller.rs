//! Resolving an API key to a principal, and building the caller of an RPC
//! from its metadata. What a caller may do is decided in `domain::authorize`.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use tonic::codegen::http::HeaderMap;

use crate::{
    auth::key::{self, KeyKind},
    authz::{
        OrgRole,
        cache::{CacheCounters, CacheStats, Id, Invalidation, parse_id},
        power::{CONFINED_ACCOUNT_ROLE, Reach, Tier},
    },
    error::{Error, Result},
    state::AppState,
    store::{Store, entity::api_key, identity, keys, now_ms},
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
    /// The key belongs to a platform account.
    pub platform: bool,
    /// Where the key may act.
    pub reach: Reach,
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
            _ => false,
        }
    }

    /// Answers whether a change can make any cached key stale: only the
    /// kinds [`ResolvedKey::affected_by`] looks at (the others need no pass
    /// over the keys).
    fn may_affect_keys(change: &Invalidation) -> bool {
        matches!(
            change,
            Invalidation::All
                | Invalidation::Organization(_)
                | Invalidation::Key(_)
                | Invalidation::User(_)
                | Invalidation::ServiceAccount(_)
        )
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

    /// Hit, miss and eviction counts, and how many keys are cached (after
    /// moka's housekeeping, which is what counts them; on the scrape only).
    pub fn stats(&self) -> CacheStats {
        self.keys.run_pending_tasks();
        self.counters.stats(self.keys.entry_count())
    }

    /// Drops the keys a change affects.
    pub fn invalidate(&self, change: &Invalidation) {
        if matches!(change, Invalidation::All) {
            self.keys.invalidate_all();
            return;
        }
        if !ResolvedKey::may_affect_keys(change) {
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
                platform: false,
                reach: Reach::Organization,
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
            let reach = match key.scope.as_deref() {
                Some("workspaces") => Reach::Workspaces(
                    serde_json::from_str(&key.workspace_ids).map_err(|_| stale())?,
                ),
                Some("organization") => Reach::Organization,
                // Stored data that does not parse fails closed.
                _ => return Err(stale()),
            };
            // A confined account's key reaches its workspace and nothing
            // else, whatever the key row says.
            let reach = match &sa.workspace_id {
                Some(ws) => reach.confined_to(ws),
                None => reach,
            };
            // Stored data that breaks the confinement fails closed.
            if sa.workspace_id.is_some() && !org_role.at_most(CONFINED_ACCOUNT_ROLE) {
                return Err(stale());
            }
            ids.principal = parse_id(&sa_id).unwrap_or_default();
            Ok(ResolvedKey {
                ids,
                principal: PrincipalId::ServiceAccount(sa_id),
                org_role,
                platform: sa.platform,
                reach,
                key,
                kind,
            })
        }
    }
}

/// The authenticated caller of an RPC: who presented which key, for whom and
/// where. What it may do is decided in `domain::authorize`, nowhere else.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key the call was made with.
    pub key: Arc<ResolvedKey>,
    /// Who the call is authorized as: the key's principal, or the acted-for user.
    pub principal: PrincipalId,
    /// Set when a platform account acts for a user (`x-act-as-user`).
    pub acting_service_account_id: Option<String>,
    /// The `x-tenant-id` metadata, if given.
    pub tenant: Option<String>,
    /// The instant the call is judged at (ms since the Unix epoch, by the
    /// server's clock when it arrived): a grant or team membership that has
    /// expired by then gives the caller nothing.
    pub at_ms: i64,
}

impl Caller {
    /// Authenticates the metadata of a call.
    pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Self> {
        // One credential, one tenant, one user: a second value of any of them
        // is refused rather than silently ignored (a proxy in front may have
        // checked the other one).
        if headers.get_all("authorization").iter().nth(1).is_some() {
            return Err(Error::Unauthenticated(
                "`authorization` metadata must be sent once".into(),
            ));
        }
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
        let tenant = id_header(headers, TENANT_HEADER)?;
        let act_as = id_header(headers, ACT_AS_HEADER)?;
        let at_ms = state.settings.clock.now_ms();
        let Some(user_id) = act_as else {
            return Ok(Self {
                principal: key.principal.clone(),
                key,
                acting_service_account_id: None,
                tenant,
                at_ms,
            });
        };
        let PrincipalId::ServiceAccount(sa_id) = &key.principal else {
            return Err(Error::PermissionDenied(
                "`x-act-as-user` is a platform power: personal access tokens cannot act for users"
                    .into(),
            ));
        };
        Tier::may_act_for_users(key.platform).map_err(|d| Error::PermissionDenied(d.0))?;
        Ok(Self {
            acting_service_account_id: Some(sa_id.clone()),
            principal: PrincipalId::User(user_id),
            key,
            tenant,
            at_ms,
        })
    }

    /// The calling user, for operations a user does for themself.
    pub fn user_id(&self) -> Result<&str> {
        match &self.principal {
            PrincipalId::User(id) => Ok(id),
            PrincipalId::ServiceAccount(_) => Err(Error::PermissionDenied(
                "only a user may do this: use a personal access token, or a platform key with `x-act-as-user`".into(),
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

    /// Answers whether a platform account acts for a user in this call.
    pub fn is_acting(&self) -> bool {
        self.acting_service_account_id.is_some()
    }

    /// The caller's platform tier, as the cached key says (decisions that
    /// change something confirm it in storage).
    pub fn tier(&self) -> Tier {
        Tier {
            platform_key: self.key.platform,
            acting: self.is_acting(),
            whole_organization: self.key.reach.is_whole_organization(),
        }
    }
}

/// An id named by metadata: absent or empty is `None`; anything but an id in
/// canonical form is refused, naming the header.
fn id_header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::invalid(name, "must be sent once"));
    }
    let s = value
        .to_str()
        .map_err(|_| Error::invalid(name, crate::id::RULE))?
        .trim();
    if s.is_empty() {
        return Ok(None);
    }
    if !crate::id::is_canonical(s) {
        return Err(Error::invalid(name, crate::id::RULE));
    }
    Ok(Some(s.to_owned()))
}
