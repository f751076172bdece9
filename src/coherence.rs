//! Keeping this replica's caches coherent with changes made elsewhere.
//!
//! * PostgreSQL: every change `NOTIFY`s its revision and invalidations on
//!   [`CHANGES_CHANNEL`] in its own transaction; here a listener applies them.
//!   A dropped listener connection may lose notifications, so reconnecting
//!   invalidates everything.
//! * Every backend: the storage revision is polled. A revision that stays
//!   unapplied for a whole poll interval means a notification was lost (or
//!   another process wrote to SQLite): everything is invalidated.
//! * The cache TTL bounds staleness if all else fails.

use std::time::Duration;

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
    let mut pending: Option<u64> = None;
    loop {
        tokio::time::sleep(every).await;
        let Ok(latest) = state.store.revision().await else {
            continue;
        };
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
                    receive(&state, &mut listener).await;
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
                state.apply_changes(revision.unwrap_or(0), &changes);
            }
            Ok(None) => {
                tracing::warn!(
                    "change listener connection lost; invalidating all cached decisions"
                );
                let latest = state.store.revision().await.unwrap_or(0);
                state.apply_changes(latest, &[Invalidation::All]);
            }
            Err(err) => {
                tracing::warn!(error = %err, "change listener failed");
                return;
            }
        }
    }
}
