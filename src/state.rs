//! The shared state of a running server: the store, the caches and the
//! settings. Cloned into every service; everything in it is cheap to clone.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crate::{
    auth::caller::KeyCache,
    authz::cache::{DecisionCache, Invalidation},
    config::Settings,
    metrics::Metrics,
    store::Store,
};

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Resolved sets and catalogues for decisions.
    pub decisions: DecisionCache,
    /// Resolved API keys.
    pub keys: KeyCache,
    /// Request-path settings.
    pub settings: Arc<Settings>,
    /// Counters exported on the metrics port.
    pub metrics: Arc<Metrics>,
    /// The highest revision whose changes this replica has applied.
    applied_revision: Arc<AtomicU64>,
}

impl AppState {
    /// Bundles a store and settings, with empty caches.
    pub fn new(store: Store, settings: Settings) -> Self {
        Self {
            store,
            decisions: DecisionCache::new(settings.cache),
            keys: KeyCache::new(settings.cache.max_entries, settings.cache.ttl),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            applied_revision: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Applies the invalidations of a committed change (local or from another replica).
    pub fn apply_changes(&self, revision: u64, changes: &[Invalidation]) {
        for change in changes {
            self.decisions.invalidate(change);
            self.keys.invalidate(change);
        }
        self.applied_revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// The highest revision whose changes were applied here.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::Acquire)
    }
}
