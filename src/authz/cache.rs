//! The decision cache: the resolved set of each (principal, workspace) pair,
//! and each organization's catalogue, in moka caches bounded by entries and
//! by memory.
//!
//! A hit is one hash lookup of a `Copy` key built from the ids (no
//! allocation; moka's own housekeeping, run every few hundred reads, is the
//! only allocator on this path), then a bit test. Concurrent misses on one key
//! share one load.
//! Invalidation is targeted (a principal, a workspace, an organization) and
//! immediate: moka never returns an entry a registered predicate invalidates.
//! A load that overlaps an invalidation is not cached (its data may predate
//! the change), so a stale set cannot slip in behind a write.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::{notification::RemovalCause, sync::Cache};
use tokio::sync::OnceCell;

use super::{
    OrgRole,
    catalogue::{Catalogue, PermissionSet},
    engine::Access,
};
use crate::clock::Clock;

/// Cache keys are built from ids in their one canonical spelling.
pub use crate::id::{Id, parse as parse_id};

/// The kind of principal a set is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    User,
    ServiceAccount,
}

/// The key of a resolved set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetKey {
    pub kind: PrincipalKind,
    pub principal: Id,
    pub workspace: Id,
}

/// Everything a decision for one (principal, workspace) needs.
#[derive(Debug)]
pub struct ResolvedSet {
    /// The storage revision the set was loaded at (a lower bound of its freshness).
    pub revision: u64,
    /// The workspace's organization; `None` when the workspace does not exist.
    pub organization: Option<Id>,
    /// The principal's organization role; `None` when it is not a member
    /// (user) or an account (service account) of the organization.
    pub role: Option<OrgRole>,
    /// `role.is_some()`.
    pub active: bool,
    /// The principal is a platform account (shown only to platform callers).
    pub platform_principal: bool,
    pub access: Access,
    pub catalogue: Arc<Catalogue>,
    /// Permissions some unscoped grant holds: allowed on every resource.
    unscoped: PermissionSet,
    /// Permissions some scoped grant holds: allowed depending on tags.
    scoped: PermissionSet,
    /// The instant the earliest of its grants expires (see
    /// [`Access::valid_until`]): the set is not used from then on.
    pub valid_until: Option<i64>,
}

/// What a decision needs to know about the resource's tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Only scoped grants hold the permission: the resource's tags decide.
    NeedsTags,
}

impl ResolvedSet {
    /// A set that allows nothing and belongs to no organization: for an
    /// unknown workspace, stored data that does not parse (fails closed) or
    /// a principal whose key did not authenticate.
    pub fn nothing(revision: u64) -> Self {
        Self::new(
            revision,
            None,
            None,
            Access::default(),
            Arc::new(Catalogue::new([])),
        )
    }

    /// Builds a set and its fast-path unions.
    pub fn new(
        revision: u64,
        organization: Option<Id>,
        role: Option<OrgRole>,
        access: Access,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        let mut unscoped = PermissionSet::default();
        let mut scoped = PermissionSet::default();
        for g in &access.grants {
            if g.scope.is_some() {
                scoped.union_with(&g.permissions);
            } else {
                unscoped.union_with(&g.permissions);
            }
        }
        Self {
            revision,
            organization,
            role,
            active: role.is_some(),
            platform_principal: false,
            valid_until: access.valid_until(),
            access,
            catalogue,
            unscoped,
            scoped,
        }
    }

    /// Answers whether the set is out of date at `now_ms` because one of its
    /// grants has expired since it was resolved.
    #[inline]
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.valid_until.is_some_and(|t| now_ms >= t)
    }

    /// The decision without tags: a bit test on the hot path.
    #[inline]
    pub fn verdict(&self, permission: u16) -> Verdict {
        if !self.active {
            Verdict::Denied
        } else if self.access.org_admin || self.unscoped.contains(permission) {
            Verdict::Allowed
        } else if self.scoped.contains(permission) {
            Verdict::NeedsTags
        } else {
            Verdict::Denied
        }
    }

    /// The decision for a resource with `tags`.
    pub fn allows(&self, permission: u16, tags: &[(String, String)]) -> bool {
        match self.verdict(permission) {
            Verdict::Allowed => true,
            Verdict::Denied => false,
            Verdict::NeedsTags => self.access.allows(permission, tags),
        }
    }

    fn weight(&self) -> u32 {
        let grants: usize = self
            .access
            .grants
            .iter()
            .map(|g| {
                160 + g.grant_id.len()
                    + g.role.len()
                    + g.scope.as_ref().map_or(0, |s| 64 * s.conditions.len())
            })
            .sum();
        u32::try_from(256 + grants).unwrap_or(u32::MAX)
    }
}

/// What changed, for invalidation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Everything (a replica too far behind the change log).
    All,
    /// Every set of an organization (resource types, plan, the organization).
    Organization(Id),
    /// Every set of a workspace (the workspace itself).
    Workspace(Id),
    /// Every set of a user (memberships, keys).
    User(Id),
    /// Every set of a service account.
    ServiceAccount(Id),
    /// One resolved set: a principal in a workspace (its grants, or a team's).
    Set(SetKey),
    /// The sets holding a custom role (its permissions).
    Role(Id),
    /// One API key (revocation, expiry change).
    Key(Id),
    /// The registered resource tags of a workspace.
    ResourceTags(Id),
}

impl Invalidation {
    /// Encodes for the change log: `*`, or a letter and the id in hex (a
    /// set: the kind's letter, the principal and `@` the workspace).
    pub fn encode(&self) -> String {
        let (tag, id) = match self {
            Self::All => return "*".into(),
            Self::Set(key) => {
                let tag = match key.kind {
                    PrincipalKind::User => 'U',
                    PrincipalKind::ServiceAccount => 'S',
                };
                return format!("{tag}{:032x}@{:032x}", key.principal, key.workspace);
            }
            Self::Organization(id) => ('o', id),
            Self::Workspace(id) => ('w', id),
            Self::User(id) => ('u', id),
            Self::ServiceAccount(id) => ('s', id),
            Self::Role(id) => ('r', id),
            Self::Key(id) => ('k', id),
            Self::ResourceTags(id) => ('t', id),
        };
        format!("{tag}{id:032x}")
    }

    /// Decodes [`Invalidation::encode`]'s output.
    pub fn decode(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Self::All);
        }
        let mut chars = s.chars();
        let tag = chars.next()?;
        let rest = chars.as_str();
        let hex = |h: &str| u128::from_str_radix(h, 16).ok();
        if let Some(kind) = match tag {
            'U' => Some(PrincipalKind::User),
            'S' => Some(PrincipalKind::ServiceAccount),
            _ => None,
        } {
            let (principal, workspace) = rest.split_once('@')?;
            return Some(Self::Set(SetKey {
                kind,
                principal: hex(principal)?,
                workspace: hex(workspace)?,
            }));
        }
        let id = hex(rest)?;
        Some(match tag {
            'o' => Self::Organization(id),
            'w' => Self::Workspace(id),
            'u' => Self::User(id),
            's' => Self::ServiceAccount(id),
            'r' => Self::Role(id),
            'k' => Self::Key(id),
            't' => Self::ResourceTags(id),
            _ => return None,
        })
    }
}

/// Sizing of the decision cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Most resolved sets held.
    pub max_entries: u64,
    /// Most bytes (estimated) held by resolved sets.
    pub max_bytes: u64,
    /// Age after which an entry is reloaded whatever happened.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Hit and miss counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    /// Entries dropped to stay within the size bounds.
    pub evicted_size: u64,
    /// Entries dropped when their TTL ran out.
    pub evicted_expired: u64,
    /// Entries dropped because a change made them stale.
    pub invalidated: u64,
}

/// Hit, miss and eviction counters of one cache, shared by its clones.
#[derive(Clone, Debug, Default)]
pub struct CacheCounters {
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    evicted_size: Arc<AtomicU64>,
    evicted_expired: Arc<AtomicU64>,
    invalidated: Arc<AtomicU64>,
}

impl CacheCounters {
    /// One lookup answered from the cache.
    #[inline]
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// One lookup that had to load.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A moka eviction listener counting removals by cause: evictions (size,
    /// expiry) and invalidations (explicit); replacements are neither.
    pub fn eviction_listener<K, V>(
        &self,
    ) -> impl Fn(Arc<K>, V, RemovalCause) + Send + Sync + 'static {
        let size = self.evicted_size.clone();
        let expired = self.evicted_expired.clone();
        let invalidated = self.invalidated.clone();
        move |_, _, cause| {
            match cause {
                RemovalCause::Size => &size,
                RemovalCause::Expired => &expired,
                RemovalCause::Explicit => &invalidated,
                RemovalCause::Replaced => return,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far, with `entries` cached now.
    pub fn stats(&self, entries: u64) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            evicted_size: self.evicted_size.load(Ordering::Relaxed),
            evicted_expired: self.evicted_expired.load(Ordering::Relaxed),
            invalidated: self.invalidated.load(Ordering::Relaxed),
        }
    }
}

/// Why a load could not be cached.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The loader failed.
    Failed(E),
    /// An invalidation ran during the load; the result may be stale.
    Raced,
}

/// Registered tags of a resource, by (workspace, type, id).
pub type ResourceKey = (Id, String, String);

/// What storage holds for a resource: its registered tags, or `None` when it
/// is not registered.
pub type RegisteredTags = Option<Arc<[(String, String)]>>;

type InFlight = Arc<OnceCell<Arc<ResolvedSet>>>;

/// The fewest workspace places cached, whatever the set capacity.
const WORKSPACE_PLACES: u64 = 10_000;

/// Where a workspace lives: all a miss needs of it, the organization to
/// authorize the caller on and the ids to load with. It never changes while
/// the workspace exists; deleting it drops the entry (a workspace
/// invalidation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspacePlace {
    pub id: String,
    pub organization: Id,
    pub organization_id: String,
}

/// The resolved sets and catalogues of one replica.
#[derive(Clone)]
pub struct DecisionCache {
    sets: Cache<SetKey, Arc<ResolvedSet>>,
    loading: Arc<Mutex<HashMap<SetKey, InFlight>>>,
    catalogues: Cache<Id, Arc<Catalogue>>,
    resources: Cache<ResourceKey, RegisteredTags>,
    workspaces: Cache<Id, Arc<WorkspacePlace>>,
    epoch: Arc<AtomicU64>,
    counters: CacheCounters,
    /// What a set's expiry is judged by.
    clock: Clock,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl DecisionCache {
    /// A cache bounded by `config`. Each entry weighs at least
    /// `max_bytes / max_entries`, so the weight bound also bounds the count.
    /// A set is not served once `clock` reaches its earliest grant expiry.
    pub fn new(config: CacheConfig, clock: Clock) -> Self {
        let floor = u32::try_from(config.max_bytes / config.max_entries.max(1))
            .unwrap_or(u32::MAX)
            .max(1);
        let counters = CacheCounters::default();
        let sets = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_k: &SetKey, v: &Arc<ResolvedSet>| v.weight().max(floor))
            .time_to_live(config.ttl)
            .eviction_listener(counters.eviction_listener())
            .support_invalidation_closures()
            .build();
        let catalogues = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(config.ttl)
            .support_invalidation_closures()
            .build();
        let resources = Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.ttl)
            .support_invalidation_closures()
            .build();
        // Far fewer workspaces than sets are active, and a place is small:
        // a cache shrunk to force set misses keeps its workspaces.
        let workspaces = Cache::builder()
            .max_capacity(config.max_entries.max(WORKSPACE_PLACES))
            .time_to_live(config.ttl)
            .support_invalidation_closures()
            .build();
        Self {
            sets,
            loading: Arc::new(Mutex::new(HashMap::new())),
            catalogues,
            resources,
            workspaces,
            epoch: Arc::new(AtomicU64::new(0)),
            counters,
            clock,
        }
    }

    /// The cached set for `key`, if any, at least as fresh as `min_revision`
    /// and with none of its grants expired since it was resolved (the clock
    /// is read only for a set holding an expiring grant).
    #[inline]
    pub fn get(&self, key: &SetKey, min_revision: u64) -> Option<Arc<ResolvedSet>> {
        match self.sets.get(key) {
            Some(set)
                if set.revision >= min_revision
                    && !(set.valid_until.is_some() && set.expired_at(self.clock.now_ms())) =>
            {
                self.counters.hit();
                Some(set)
            }
            _ => None,
        }
    }

    /// Where a known workspace lives, if cached.
    pub fn workspace(&self, id: &Id) -> Option<Arc<WorkspacePlace>> {
        self.workspaces.get(id)
    }

    /// Caches where a workspace lives, unless a change was applied since
    /// `epoch` was read before loading it. Only existing workspaces are
    /// cached: an unknown id is looked up every time.
    pub fn put_workspace(&self, id: Id, place: Arc<WorkspacePlace>, epoch: u64) {
        if self.epoch() == epoch {
            self.workspaces.insert(id, place);
        }
    }

    /// The current invalidation epoch; a load compares it before caching.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Returns the set for `key`, loading it on a miss; concurrent misses on
    /// one key share one load. A cached set older than `min_revision` is
    /// dropped and reloaded. The returned set may still be older than
    /// `min_revision` if storage itself is: the caller decides.
    pub async fn get_or_load<F, E>(
        &self,
        key: SetKey,
        min_revision: u64,
        load: F,
    ) -> Result<Arc<ResolvedSet>, LoadError<E>>
    where
        F: Future<Output = Result<ResolvedSet, E>>,
    {
        if let Some(set) = self.get(&key, min_revision) {
            return Ok(set);
        }
        self.counters.miss();
        // A cached set that is too old, or out of date because a grant of it
        // expired, is dropped so that the load below replaces it.
        if self.sets.get(&key).is_some_and(|s| {
            s.revision < min_revision
                || (s.valid_until.is_some() && s.expired_at(self.clock.now_ms()))
        }) {
            self.sets.invalidate(&key);
        }
        let cell = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(key).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                let epoch = self.epoch();
                let set = load.await.map_err(LoadError::Failed)?;
                if self.epoch() != epoch {
                    // A change landed while loading: the data may predate it.
                    return Err(LoadError::Raced);
                }
                let set = Arc::new(set);
                self.sets.insert(key, set.clone());
                Ok(set)
            })
            .await
            .cloned();
        {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            if loading.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                loading.remove(&key);
            }
        }
        result
    }

    /// The cached catalogue of an organization.
    pub fn catalogue(&self, org: Id) -> Option<Arc<Catalogue>> {
        self.catalogues.get(&org)
    }

    /// Caches an organization's catalogue, unless an invalidation ran since `epoch`.
    pub fn put_catalogue(&self, org: Id, catalogue: Arc<Catalogue>, epoch: u64) {
        if self.epoch() == epoch {
            self.catalogues.insert(org, catalogue);
        }
    }

    /// What the cache knows of a resource's registration, if anything.
    pub fn resource_tags(&self, key: &ResourceKey) -> Option<RegisteredTags> {
        self.resources.get(key)
    }

    /// Caches a resource's registration, unless an invalidation ran since `epoch`.
    pub async fn put_resource_tags(&self, key: ResourceKey, tags: RegisteredTags, epoch: u64) {
        if self.epoch() == epoch {
            self.resources.insert(key, tags);
        }
    }

    /// Drops every entry the change published at `revision` affects,
    /// immediately, but a set loaded at or after that revision: it already
    /// reflects the change (a set's revision is a lower bound of what it
    /// read), as one loaded for a newer `at_least_revision` before this
    /// replica applied the change from the log.
    pub fn invalidate(&self, what: &Invalidation, revision: u64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let older = move |v: &Arc<ResolvedSet>| v.revision < revision;
        let result = match *what {
            Invalidation::All => {
                self.sets.invalidate_all();
                self.catalogues.invalidate_all();
                self.resources.invalidate_all();
                self.workspaces.invalidate_all();
                Ok(())
            }
            Invalidation::Organization(org) => {
                let _ = self.catalogues.invalidate_entries_if(move |k, _| *k == org);
                let _ = self
                    .workspaces
                    .invalidate_entries_if(move |_, v| v.organization == org);
                self.sets
                    .invalidate_entries_if(move |_, v| v.organization == Some(org) && older(v))
                    .map(drop)
            }
            Invalidation::Workspace(ws) => {
                self.workspaces.invalidate(&ws);
                self.sets
                    .invalidate_entries_if(move |k, v| k.workspace == ws && older(v))
                    .map(drop)
            }
            Invalidation::ResourceTags(ws) => self
                .resources
                .invalidate_entries_if(move |k, _| k.0 == ws)
                .map(drop),
            Invalidation::User(id) => self
                .sets
                .invalidate_entries_if(move |k, v| {
                    k.kind == PrincipalKind::User && k.principal == id && older(v)
                })
                .map(drop),
            Invalidation::ServiceAccount(id) => self
                .sets
                .invalidate_entries_if(move |k, v| {
                    k.kind == PrincipalKind::ServiceAccount && k.principal == id && older(v)
                })
                .map(drop),
            Invalidation::Set(key) => {
                // A newer set cached between the two calls is dropped too:
                // one more miss, never a stale answer.
                if self.sets.get(&key).is_none_or(|v| older(&v)) {
                    self.sets.invalidate(&key);
                }
                Ok(())
            }
            Invalidation::Role(role) => self
                .sets
                .invalidate_entries_if(move |_, v| {
                    older(v)
                        && v.access
                            .grants
                            .iter()
                            .any(|g| parse_id(&g.role) == Some(role))
                })
                .map(drop),
            Invalidation::Key(_) => Ok(()),
        };
        if result.is_err() {
            self.sets.invalidate_all();
            self.resources.invalidate_all();
            self.workspaces.invalidate_all();
        }
    }

    /// Hit, miss and eviction counts of the resolved sets, and how many are
    /// cached: moka counts entries in its housekeeping, so that runs first
    /// (on the scrape, never on the request path).
    pub fn stats(&self) -> CacheStats {
        self.sets.run_pending_tasks();
        self.counters.stats(self.sets.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::engine::EffectiveGrant;

    fn set(revision: u64, perms: &[u16]) -> ResolvedSet {
        let mut p = PermissionSet::default();
        for id in perms {
            p.insert(*id);
        }
        let access = Access::at(
            false,
            vec![EffectiveGrant {
                grant_id: "g".into(),
                role: "r".into(),
                via_team: None,
                permissions: p,
                scope: None,
                expires_at: None,
            }],
            0,
        );
        ResolvedSet::new(
            revision,
            Some(7),
            Some(OrgRole::User),
            access,
            Arc::new(Catalogue::new([])),
        )
    }

    fn key(principal: Id, workspace: Id) -> SetKey {
        SetKey {
            kind: PrincipalKind::User,
            principal,
            workspace,
        }
    }

    #[tokio::test]
    async fn a_miss_loads_once_then_hits() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        let loaded = cache
            .get_or_load(key(1, 2), 0, async { Ok::<_, ()>(set(5, &[3])) })
            .await
            .unwrap();
        assert!(loaded.allows(3, &[]));
        assert!(cache.get(&key(1, 2), 0).is_some());
        assert_eq!(cache.stats().misses, 1);
        assert_eq!(cache.stats().hits, 1);
    }

    #[tokio::test]
    async fn a_set_is_not_served_once_its_earliest_grant_expires() {
        let clock = Clock::default();
        let cache = DecisionCache::new(CacheConfig::default(), clock.clone());
        let expires = clock.now_ms() + 60_000;
        let expiring = |now: i64| {
            let mut s = set(1, &[3]);
            let mut g = s.access.grants[0].clone();
            g.expires_at = Some(expires);
            s = ResolvedSet::new(
                1,
                Some(7),
                Some(OrgRole::User),
                Access::at(false, vec![g], now),
                Arc::new(Catalogue::new([])),
            );
            s
        };
        let now = clock.now_ms();
        let loaded = cache
            .get_or_load(key(1, 2), 0, async { Ok::<_, ()>(expiring(now)) })
            .await
            .unwrap();
        assert!(loaded.allows(3, &[]));
        assert!(cache.get(&key(1, 2), 0).is_some(), "before the expiry");
        clock.advance(Duration::from_secs(60));
        assert!(cache.get(&key(1, 2), 0).is_none(), "at the expiry");
        let now = clock.now_ms();
        let reloaded = cache
            .get_or_load(key(1, 2), 0, async { Ok::<_, ()>(expiring(now)) })
            .await
            .unwrap();
        assert!(!reloaded.allows(3, &[]), "resolved after the expiry");
        assert_eq!(reloaded.valid_until, None);
        assert!(cache.get(&key(1, 2), 0).is_some(), "the new set is served");
    }

    #[tokio::test]
    async fn invalidating_a_user_drops_only_their_sets() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        for (p, w) in [(1, 10), (1, 11), (2, 10)] {
            cache
                .get_or_load(key(p, w), 0, async { Ok::<_, ()>(set(1, &[])) })
                .await
                .unwrap();
        }
        cache.invalidate(&Invalidation::User(1), 2);
        assert!(cache.get(&key(1, 10), 0).is_none());
        assert!(cache.get(&key(1, 11), 0).is_none());
        assert!(cache.get(&key(2, 10), 0).is_some());
        cache.invalidate(&Invalidation::Workspace(10), 2);
        assert!(cache.get(&key(2, 10), 0).is_none());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        let loads = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(key(1, 2), 0, async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(set(1, &[]))
                    })
                    .await
                    .is_ok()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_overlaps_an_invalidation_is_not_cached() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        let c2 = cache.clone();
        let result = cache
            .get_or_load(key(1, 2), 0, async move {
                c2.invalidate(&Invalidation::User(1), 2);
                Ok::<_, ()>(set(1, &[]))
            })
            .await;
        assert!(matches!(result, Err(LoadError::Raced)));
        assert!(cache.get(&key(1, 2), 0).is_none());
    }

    #[tokio::test]
    async fn an_older_set_is_reloaded_for_a_newer_revision() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        cache
            .get_or_load(key(1, 2), 0, async { Ok::<_, ()>(set(3, &[])) })
            .await
            .unwrap();
        assert!(cache.get(&key(1, 2), 4).is_none());
        let fresh = cache
            .get_or_load(key(1, 2), 4, async { Ok::<_, ()>(set(4, &[1])) })
            .await
            .unwrap();
        assert_eq!(fresh.revision, 4);
    }

    #[tokio::test]
    async fn a_set_loaded_at_or_after_a_change_survives_applying_it() {
        let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
        for (p, at) in [(1, 5), (2, 5), (3, 5)] {
            cache
                .get_or_load(key(p, 10), 0, async move { Ok::<_, ()>(set(at, &[])) })
                .await
                .unwrap();
        }
        // Changes older than what the sets read, or at their revision.
        cache.invalidate(&Invalidation::Set(key(1, 10)), 5);
        cache.invalidate(&Invalidation::User(2), 4);
        cache.invalidate(&Invalidation::Workspace(10), 3);
        for p in [1, 2, 3] {
            assert!(cache.get(&key(p, 10), 0).is_some(), "set of {p} kept");
        }
        // Newer changes drop them.
        cache.invalidate(&Invalidation::Set(key(1, 10)), 6);
        cache.invalidate(&Invalidation::User(2), 6);
        assert!(cache.get(&key(1, 10), 0).is_none());
        assert!(cache.get(&key(2, 10), 0).is_none());
        assert!(cache.get(&key(3, 10), 0).is_some());
        cache.invalidate(&Invalidation::Workspace(10), 6);
        assert!(cache.get(&key(3, 10), 0).is_none());
    }

    #[test]
    fn invalidations_round_trip_through_their_encoding() {
        for inv in [
            Invalidation::All,
            Invalidation::Organization(1),
            Invalidation::Workspace(u128::MAX),
            Invalidation::User(42),
            Invalidation::ServiceAccount(7),
            Invalidation::Key(9),
            Invalidation::ResourceTags(3),
            Invalidation::Role(11),
            Invalidation::Set(SetKey {
                kind: PrincipalKind::ServiceAccount,
                principal: 5,
                workspace: u128::MAX,
            }),
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        assert_eq!(Invalidation::decode("x12"), None);
        assert_eq!(Invalidation::decode("U12"), None);
    }

    #[test]
    fn inactive_principals_are_denied_even_with_grants() {
        let mut s = set(1, &[3]);
        s.active = false;
        assert_eq!(s.verdict(3), Verdict::Denied);
    }
}
