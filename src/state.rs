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
    /// The latest revision committed here, to be announced to other replicas.
    latest_here: AtomicU64,
    announce: Notify,
}

impl Default for LogPosition {
    fn default() -> Self {
        Self {
            applied: AtomicU64::new(0),
            own: Mutex::default(),
            wake: Notify::new(),
            advanced: watch::Sender::new(0),
            latest_here: AtomicU64::new(0),
            announce: Notify::new(),
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
        let mut own = self.own();
        self.settle(&mut own, revision);
    }

    /// A change committed here whose invalidations were applied already.
    /// When it follows the applied revision (with the other changes made
    /// here) the watermark moves on without reading the log; only a gap
    /// before it (a change made elsewhere, or one made here still
    /// committing) asks the reader to read.
    pub fn committed_here(&self, revision: u64) {
        let mut own = self.own();
        let applied = self.applied();
        if revision > applied {
            own.insert(revision);
        }
        self.settle(&mut own, applied);
        if !own.is_empty() {
            self.wake.notify_one();
        }
        drop(own);
        self.latest_here.fetch_max(revision, Ordering::AcqRel);
        self.announce.notify_one();
    }

    /// Waits until a change commits here after the last call.
    pub async fn committed(&self) {
        self.announce.notified().await;
    }

    /// The latest revision committed here.
    pub fn latest_here(&self) -> u64 {
        self.latest_here.load(Ordering::Acquire)
    }

    /// Moves the watermark to `revision` and over the changes made here
    /// that follow it without a gap; called with the set of those changes
    /// locked, so the watermark and the set move together.
    fn settle(&self, own: &mut BTreeSet<u64>, revision: u64) {
        let mut applied = self.applied().max(revision);
        *own = own.split_off(&(applied + 1));
        while own.first() == Some(&(applied + 1)) {
            own.pop_first();
            applied += 1;
        }
        let before = self.applied.fetch_max(applied, Ordering::AcqRel);
        if applied > before {
            self.advanced.send_replace(applied);
        }
    }

    fn own(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `revision` was committed (and applied) here.
    pub fn is_own(&self, revision: u64) -> bool {
        self.own().contains(&revision)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LogPosition;

    async fn was_woken(log: &LogPosition) -> bool {
        tokio::time::timeout(Duration::from_millis(1), log.woken())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_made_here_right_after_the_applied_revision_needs_no_read() {
        let log = LogPosition::default();
        log.advance_to(4);
        log.committed_here(5);
        assert_eq!(log.applied(), 5);
        assert!(!was_woken(&log).await);
        assert!(!log.is_own(5));
    }

    #[tokio::test]
    async fn changes_made_here_out_of_order_move_the_watermark_when_the_gap_closes() {
        let log = LogPosition::default();
        log.advance_to(4);
        log.committed_here(6);
        assert_eq!(log.applied(), 4);
        assert!(log.is_own(6));
        assert!(was_woken(&log).await);
        log.committed_here(5);
        assert_eq!(log.applied(), 6);
        assert!(!was_woken(&log).await);
        assert!(!log.is_own(6));
    }

    #[tokio::test]
    async fn a_change_made_elsewhere_is_read_before_the_watermark_passes_it() {
        let log = LogPosition::default();
        log.advance_to(4);
        // Revision 5 was committed by another replica; 6 and 7 here.
        log.committed_here(6);
        log.committed_here(7);
        assert_eq!(log.applied(), 4);
        assert!(was_woken(&log).await);
        // The reader applies 5 (it skips 6 and 7, applied here already).
        log.advance_to(5);
        assert_eq!(log.applied(), 7);
        assert_eq!(*log.subscribe().borrow(), 7);
    }

    #[tokio::test]
    async fn changes_committed_before_an_announcement_share_it() {
        let log = LogPosition::default();
        log.committed_here(3);
        log.committed_here(5);
        log.committed_here(4);
        tokio::time::timeout(Duration::from_millis(1), log.committed())
            .await
            .expect("a commit is waiting to be announced");
        assert_eq!(log.latest_here(), 5);
        // One announcement covers the three.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), log.committed())
                .await
                .is_err()
        );
    }
}
