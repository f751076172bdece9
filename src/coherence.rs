//! Keeping this replica's caches coherent with changes made elsewhere.
//!
//! * PostgreSQL: every change `NOTIFY`s its revision and invalidations on
//!   [`CHANGES_CHANNEL`] in its own transaction; here a listener applies them.
//!   A dropped listener connection may lose notifications, so listening again
//!   invalidates everything.
//! * Every backend: the storage revision is polled. A revision that stays
//!   unapplied for a whole poll interval means a notification was lost (or
//!   another process wrote to SQLite): everything is invalidated.
//! * While the poll cannot reach storage, cached decisions are still served
//!   for the unavailable grace (`--unavailable-grace`) after the last
//!   successful poll; then everything is invalidated, so Checks fail closed
//!   (a replica cut off from a database others still write to cannot hear of
//!   their revocations).
//! * The cache TTL bounds staleness if all else fails.

use std::time::{Duration, Instant};

use sea_orm::{DbBackend, sqlx::postgres::PgListener};

use crate::{
    authz::cache::Invalidation,
    domain::tx::{CHANGES_CHANNEL, parse_payload},
    state::AppState,
};

/// Runs the listener (PostgreSQL) and the revision poll until dropped.
pub async fn run(state: AppState) {
    if let Ok(revision) = state.store.revision().await {
        state.apply_changes(revision, &[]);
    }
    let poll = poll_revision(state.clone());
    if state.store.backend() == DbBackend::Postgres {
        tokio::join!(listen(state.clone()), poll);
    } else {
        poll.await;
    }
}

async fn poll_revision(state: AppState) {
    let every = state.settings.revision_poll_interval;
    let grace = state.settings.unavailable_grace;
    let mut pending: Option<u64> = None;
    let mut last_contact = Instant::now();
    let mut dropped = false;
    loop {
        tokio::time::sleep(every).await;
        let Ok(latest) = state.store.revision().await else {
            if !dropped && last_contact.elapsed() > grace {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "storage unreachable beyond the grace; dropping cached decisions (checks fail closed)"
                );
                state.apply_changes(state.applied_revision(), &[Invalidation::All]);
                dropped = true;
            }
            continue;
        };
        last_contact = Instant::now();
        dropped = false;
        if let Some(seen) = pending
            && state.applied_revision() < seen
        {
            tracing::warn!(
                revision = seen,
                "change notification missed; invalidating all cached decisions"
            );
            state.apply_changes(seen, &[Invalidation::All]);
        }
        pending = (latest > state.applied_revision()).then_some(latest);
    }
}

async fn listen(state: AppState) {
    loop {
        match PgListener::connect(state.store.url()).await {
            Ok(mut listener) => {
                if let Err(err) = listener.listen(CHANGES_CHANNEL).await {
                    tracing::warn!(error = %err, "cannot LISTEN for changes");
                } else {
                    // Whatever happened while not listening is unknown.
                    let latest = state.store.revision().await.unwrap_or(0);
                    state.apply_changes(latest, &[Invalidation::All]);
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

/// Applies notifications until the connection is lost.
async fn receive(state: &AppState, listener: &mut PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let (revision, changes) = parse_payload(notification.payload());
                // A change this replica made was applied when it committed:
                // applying its echo again would only evict sets loaded since.
                if revision.is_some_and(|r| state.take_own_revision(r)) {
                    continue;
                }
                state.apply_changes(revision.unwrap_or(0), &changes);
            }
            Ok(None) => {
                // Listening again invalidates everything; until then the
                // revision poll and the unavailable grace bound staleness.
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
