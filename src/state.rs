//! The shared state of a running server: the store, the caches and the
//! settings. Cloned into every service and every call: one reference count.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{Notify, watch};

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
    /// Where this replica stands in the change log (`domain::change` moves it).
    pub log: LogPosition,
    /// Open watches by organization (`domain::change::watch` counts them).
    pub watches: Mutex<HashMap<String, usize>>,
}

impl AppState {
    /// Bundles a store and settings, with empty caches.
    pub fn new(store: Store, settings: Settings) -> Self {
        Self(Arc::new(Shared {
            store,
            decisions: DecisionCache::new(settings.cache, settings.clock.clone()),
            keys: KeyCache::new(settings.cache.max_entries, settings.cache.ttl),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            log: LogPosition::default(),
            watches: Mutex::default(),
        }))
    }
}

impl Shared {
    /// Drops what the change published at `revision` makes stale from
    /// every cache, at once ([`Self::flush`] drops everything).
    pub fn invalidate(&self, changes: &[Invalidation], revision: u64) {
        for change in changes {
            self.decisions.invalidate(change, revision);
            self.keys.invalidate(change);
        }
    }

    /// Drops every cached decision and key.
    pub fn flush(&self) {
        self.invalidate(&[Invalidation::All], u64::MAX);
    }

    /// The revision up to which every change was applied here.
    pub fn applied_revision(&self) -> u64 {
        self.log.applied()
    }
}

/// How far this replica has applied the change log: every change up to
/// `applied`, and some of its own beyond it (applied when they committed).
#[derive(Debug)]
pub struct LogPosition {
    applied: AtomicU64,
    own: Mutex<BTreeSet<u64>>,
    wake: Notify,
    advanced: watch::Sender<u64>,
}

impl Default for LogPosition {
    fn default() -> Self {
        Self {
            applied: AtomicU64::new(0),
            own: Mutex::default(),
            wake: Notify::new(),
            advanced: watch::Sender::new(0),
        }
    }
}

impl LogPosition {
    /// The revision up to which every change was applied here.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Every change up to `revision` is applied here.
    pub fn advance_to(&self, revision: u64) {
        let before = self.applied.fetch_max(revision, Ordering::AcqRel);
        if revision > before {
            if let Ok(mut own) = self.own.lock() {
                *own = own.split_off(&(revision + 1));
            }
            self.advanced.send_replace(revision);
        }
    }

    /// A change committed here whose invalidations were applied already.
    pub fn committed_here(&self, revision: u64) {
        if let Ok(mut own) = self.own.lock()
            && revision > self.applied()
        {
            own.insert(revision);
        }
        self.wake.notify_one();
    }

    /// Whether `revision` was committed (and applied) here.
    pub fn is_own(&self, revision: u64) -> bool {
        self.own.lock().is_ok_and(|own| own.contains(&revision))
    }

    /// Asks the change log's reader to read now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until asked to read.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Follows the applied revision (watch streams wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.advanced.subscribe()
    }
}
