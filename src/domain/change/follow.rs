//! Following the change log: this replica applies every change committed
//! anywhere, in revision order, dropping only what each change made stale.
//!
//! * The reader reads the log after the revision applied here, every
//!   `--revision-poll`, and at once when woken: by a `NOTIFY` from another
//!   replica (PostgreSQL, a hint only), or by a change committed here that
//!   does not directly follow the revision applied here.
//!   Whatever is missed — a lost notification, a listener that reconnects, a
//!   pooler in transaction mode, a database without `LISTEN` — the next read
//!   catches up precisely: nothing is flushed.
//! * Changes committed here are announced (`NOTIFY` with the latest
//!   revision) after they commit, by one task, at most every
//!   [`ANNOUNCE_SPACING`]: changes committed meanwhile share one
//!   announcement, so a burst of writes costs the listeners a few wake-ups,
//!   not one per change; an isolated change is announced at once.
//! * Only a replica so far behind that the log it needs was trimmed drops
//!   everything (a warning and `portcullis_cache_flushes_total{reason="trimmed"}`).
//! * While the log cannot be read, cached decisions are still served for the
//!   unavailable grace (`--unavailable-grace`) after the last successful
//!   read; then everything is dropped, so Checks fail closed (a replica cut
//!   off from a database others still write to cannot hear of their
//!   revocations).
//! * Every replica trims the log (`--change-log-retention`,
//!   `--change-log-max-entries`); trimming is idempotent.
//! * The cache TTL bounds staleness if all else fails.

use std::time::{Duration, Instant};

use sea_orm::{DbBackend, sqlx::postgres::PgListener};

use super::{CHANGES_CHANNEL, decode};
use crate::{
    metrics::FlushReason,
    state::AppState,
    store::{StoreResult, changes, now_ms},
};

/// Most log rows read at once.
const READ_BATCH: u64 = 1000;
/// Least time between two announcements of changes committed here.
const ANNOUNCE_SPACING: Duration = Duration::from_millis(2);
/// Least time between two trims of the log.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Follows the log (and listens, on PostgreSQL) until dropped.
pub async fn run(state: AppState) {
    if let Ok(revision) = state.store.revision().await {
        state.log.advance_to(revision);
    }
    let read = read_log(state.clone());
    if state.store.backend() != DbBackend::Postgres {
        read.await;
    } else if state.settings.listen_for_changes {
        tokio::join!(listen(state.clone()), announce(state.clone()), read);
    } else {
        tokio::join!(announce(state.clone()), read);
    }
}

/// Announces the changes committed here to the other replicas.
async fn announce(state: AppState) {
    let mut sent = 0;
    let mut last: Option<Instant> = None;
    loop {
        state.log.committed().await;
        if let Some(wait) = last.and_then(|t| ANNOUNCE_SPACING.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        let revision = state.log.latest_here();
        if revision <= sent {
            continue;
        }
        last = Some(Instant::now());
        match state.store.notify(CHANGES_CHANNEL, revision).await {
            Ok(()) => sent = revision,
            // Only a hint: the other replicas' polls read the log anyway.
            Err(err) => tracing::warn!(error = %err, revision, "cannot announce a change"),
        }
    }
}

async fn read_log(state: AppState) {
    let every = state.settings.revision_poll_interval;
    let grace = state.settings.unavailable_grace;
    let mut last_contact = Instant::now();
    let mut dropped = false;
    let mut last_trim: Option<Instant> = None;
    loop {
        tokio::select! {
            () = state.log.woken() => {}
            () = tokio::time::sleep(every) => {}
        }
        match catch_up(&state).await {
            Ok(()) => {
                last_contact = Instant::now();
                dropped = false;
            }
            Err(err) => {
                if !dropped && last_contact.elapsed() > grace {
                    tracing::warn!(
                        error = %err,
                        grace_ms = grace.as_millis() as u64,
                        "storage unreachable beyond the grace; dropping cached decisions (checks fail closed)"
                    );
                    state.metrics.record_flush(FlushReason::Unreachable);
                    state.flush();
                    dropped = true;
                }
                continue;
            }
        }
        if last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY.max(every)) {
            last_trim = Some(Instant::now());
            if let Err(err) = trim(&state).await {
                tracing::warn!(error = %err, "cannot trim the change log");
            }
        }
    }
}

/// Applies every change in the log after the revision applied here.
async fn catch_up(state: &AppState) -> StoreResult<()> {
    loop {
        let applied = state.log.applied();
        let rows = changes::after(state.store.db(), applied, READ_BATCH).await?;
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let first = u64::try_from(first.revision).unwrap_or(0);
        if first != applied + 1 {
            // Revisions commit in order without gaps: the missing ones were
            // trimmed before this replica read them.
            tracing::warn!(
                applied,
                oldest_in_log = first,
                "the change log no longer holds changes this replica has not applied; dropping every cached decision"
            );
            state.metrics.record_flush(FlushReason::Trimmed);
            state.flush();
        }
        let read = rows.len();
        let mut last = applied;
        for row in rows {
            let revision = u64::try_from(row.revision).unwrap_or(0);
            // A change made here was applied when it committed: applying it
            // again would only drop sets loaded since.
            if !state.log.is_own(revision) {
                state.invalidate(&decode(&row.invalidations), revision);
            }
            state.metrics.record_change_applied();
            last = revision;
        }
        state.log.advance_to(last);
        if read < READ_BATCH as usize {
            return Ok(());
        }
    }
}

/// Deletes what the log no longer keeps.
async fn trim(state: &AppState) -> StoreResult<()> {
    let keep = state.settings.change_log_max_entries;
    let through = state.log.applied().saturating_sub(keep);
    let retention =
        i64::try_from(state.settings.change_log_retention.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(retention);
    let trimmed = changes::trim(state.store.db(), through, before).await?;
    state.metrics.record_log_trimmed(trimmed);
    Ok(())
}

async fn listen(state: AppState) {
    loop {
        match PgListener::connect(state.store.url()).await {
            Ok(mut listener) => {
                if let Err(err) = listener.listen(CHANGES_CHANNEL).await {
                    tracing::warn!(error = %err, "cannot LISTEN for changes");
                } else {
                    // What was missed while not listening is in the log.
                    state.log.wake();
                    state.metrics.set_listener_up(true);
                    receive(&state, &mut listener).await;
                    state.metrics.set_listener_up(false);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot connect the change listener"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Wakes the log's reader on every notification until the connection is lost.
async fn receive(state: &AppState, listener: &mut PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let ahead = notification
                    .payload()
                    .parse::<u64>()
                    .map_or(true, |r| r > state.log.applied());
                if ahead {
                    state.log.wake();
                }
            }
            Ok(None) => {
                // Until listening again, the poll reads the log.
                tracing::warn!("change listener connection lost; reconnecting");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "change listener failed");
                return;
            }
        }
    }
}
