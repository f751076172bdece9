//! The shared state of a running server: the store, the caches and the
//! settings. Cloned into every service and every call: one reference count.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    auth::caller::KeyCache,
    authz::cache::{DecisionCache, Invalidation},
    config::Settings,
    metrics::Metrics,
    store::Store,
};

/// What every request handler shares: a handle to [`Shared`], cloned with
/// one atomic increment (the front layer clones it for every call).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The store, the caches, the settings and the metrics of one server.
#[derive(Debug)]
pub struct Shared {
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
    applied_revision: AtomicU64,
    /// Revisions this replica committed and applied itself, whose change
    /// notifications (echoed back by the listener) need not be applied again.
    own_revisions: Mutex<VecDeque<u64>>,
}

/// How many of its own recent revisions a replica remembers.
const OWN_REVISIONS: usize = 1024;

impl AppState {
    /// Bundles a store and settings, with empty caches.
    pub fn new(store: Store, settings: Settings) -> Self {
        Self(Arc::new(Shared {
            store,
            decisions: DecisionCache::new(settings.cache),
            keys: KeyCache::new(settings.cache.max_entries, settings.cache.ttl),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            applied_revision: AtomicU64::new(0),
            own_revisions: Mutex::default(),
        }))
    }
}

impl Shared {
    /// Applies the invalidations of a committed change (local or from another replica).
    pub fn apply_changes(&self, revision: u64, changes: &[Invalidation]) {
        for change in changes {
            self.decisions.invalidate(change);
            self.keys.invalidate(change);
        }
        self.applied_revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Applies the invalidations of a change this replica just committed.
    pub fn apply_own_changes(&self, revision: u64, changes: &[Invalidation]) {
        if let Ok(mut own) = self.own_revisions.lock() {
            if own.len() == OWN_REVISIONS {
                own.pop_front();
            }
            own.push_back(revision);
        }
        self.apply_changes(revision, changes);
    }

    /// Whether `revision` is one this replica committed and applied itself
    /// (then its notification is an echo); forgets it.
    pub fn take_own_revision(&self, revision: u64) -> bool {
        let Ok(mut own) = self.own_revisions.lock() else {
            return false;
        };
        match own.iter().position(|r| *r == revision) {
            Some(i) => {
                own.remove(i);
                true
            }
            None => false,
        }
    }

    /// The highest revision whose changes were applied here.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::Acquire)
    }
}
