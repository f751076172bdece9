//! Shares of the concurrency limit: in-flight calls per principal, and per
//! organization, counted without a lock or an allocation.

use std::sync::atomic::{AtomicU32, Ordering};

/// log2 of the number of principal share counters.
const SHARE_SLOTS_LOG2: u32 = 12;
/// The number of principal share counters: 4096, 16 KiB.
const SHARE_SLOTS: usize = 1 << SHARE_SLOTS_LOG2;

/// In-flight calls per id (a principal's, or an organization's), in a fixed
/// table of counters indexed by a hash of the id: counting takes no lock and
/// allocates nothing, and the table never grows however many ids call. Ids
/// that hash to the same counter share one budget; with 4096 counters that is
/// rare, and when it happens the two are still bounded together, never shed
/// below the share while alone.
pub(super) struct Shares {
    share: u32,
    slots: Box<[AtomicU32; SHARE_SLOTS]>,
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shares")
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl Shares {
    /// A table in which each principal may have `share` calls in flight.
    pub(super) fn new(share: usize) -> Self {
        Self {
            share: u32::try_from(share).unwrap_or(u32::MAX),
            slots: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
        }
    }

    /// The counter of `principal`. Ids are UUIDs (v7: a timestamp in the high
    /// half, random bits in the low half); folding the halves and multiplying
    /// by 2^64/φ (Fibonacci hashing) moves every bit into the top ones, which
    /// pick the counter.
    fn slot_of(principal: u128) -> usize {
        let folded = (principal as u64) ^ ((principal >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARE_SLOTS_LOG2)) as usize
    }

    /// Counts one more call of `principal`, or `None` when it is at its share.
    /// The call is counted until the guard is dropped, on whatever path.
    pub(super) fn try_enter(&self, principal: u128) -> Option<ShareGuard<'_>> {
        let slot = &self.slots[Self::slot_of(principal)];
        // Compare and swap rather than add and undo: an undone add could
        // shed another call of the same principal that had room.
        slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < self.share).then_some(n + 1)
        })
        .ok()?;
        Some(ShareGuard(slot))
    }
}

/// One call counted against a principal's share, until dropped.
pub(super) struct ShareGuard<'a>(&'a AtomicU32);

impl Drop for ShareGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_is_held_to_its_share_until_a_call_ends() {
        let shares = Shares::new(2);
        let (a, b) = (
            uuid::Uuid::now_v7().as_u128(),
            uuid::Uuid::now_v7().as_u128(),
        );
        let first = shares.try_enter(a).expect("within the share");
        let _second = shares.try_enter(a).expect("within the share");
        assert!(shares.try_enter(a).is_none(), "beyond the share");
        if Shares::slot_of(a) != Shares::slot_of(b) {
            assert!(
                shares.try_enter(b).is_some(),
                "another principal has its own"
            );
        }
        drop(first);
        assert!(
            shares.try_enter(a).is_some(),
            "a finished call frees its place"
        );
    }

    #[test]
    fn principal_ids_spread_over_the_counters() {
        // Ids that differ only in their timestamp half, only in their random
        // half, and random ones: few land on a counter another already took.
        let distinct = |ids: &mut dyn Iterator<Item = u128>| {
            ids.map(Shares::slot_of)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(distinct(&mut (0..1000u128).map(|i| i << 80)) > 900);
        assert!(distinct(&mut (0..1000u128)) > 900);
        assert!(distinct(&mut (0..1000).map(|_| uuid::Uuid::new_v4().as_u128())) > 800);
    }
}
