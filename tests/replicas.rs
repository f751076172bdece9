//! Two server processes on one PostgreSQL: a change made through one replica
//! is seen by the other through LISTEN/NOTIFY, not only after the cache TTL
//! or the revision poll (both are set far beyond the test's patience here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;

use std::time::{Duration, Instant};

use harness::{Backend, TestDb};
use portcullis::proto::v1::{
    self as pb, check_service_client::CheckServiceClient,
    identity_service_client::IdentityServiceClient,
    workspace_service_client::WorkspaceServiceClient,
};
use processes::{
    Serve, authed, bootstrap, check, check_request, create_workspace, grant, new_member, revoke,
};
use tonic::transport::Channel;

/// Slow fallbacks, so only notifications can explain a prompt invalidation.
const SLOW_FALLBACKS: &[&str] = &["--revision-poll", "10m", "--cache-ttl", "10m"];

struct Setup {
    db: TestDb,
    key: String,
    a: Serve,
    b: Serve,
}

async fn two_replicas() -> Setup {
    let db = TestDb::new(Backend::Postgres).await;
    let boot = bootstrap(&db, &["--organization-name", "replicas"]);
    let key = boot["key"].as_str().unwrap().to_owned();
    let a = Serve::start(&db, SLOW_FALLBACKS);
    let b = Serve::start(&db, SLOW_FALLBACKS);
    Setup { db, key, a, b }
}

async fn allowed(
    client: &mut CheckServiceClient<Channel>,
    key: &str,
    req: pb::CheckRequest,
) -> bool {
    check(client, key, req).await.allowed
}

/// Polls `probe` until it returns `want`, for at most 10 s; returns how long it took.
async fn until<F, Fut>(want: bool, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the other replica never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_on_one_replica_is_denied_on_the_other() {
    let s = two_replicas().await;
    let (ca, cb) = (s.a.channel().await, s.b.channel().await);
    let mut identity_a = IdentityServiceClient::new(ca.clone());
    let mut workspaces_a = WorkspaceServiceClient::new(ca.clone());
    let mut check_b = CheckServiceClient::new(cb.clone());

    let (ann, _) = new_member(&mut identity_a, &s.key, "ann").await;
    let ws = create_workspace(&mut workspaces_a, &s.key, "shared").await;
    let grant = grant(&mut workspaces_a, &s.key, &ws.id, &ann, "WORKSPACE_VIEWER").await;

    // B caches Ann's set: allowed, and again from the cache.
    let req = check_request(&ann, &ws.id, "datasets:read");
    let first = check_b
        .check(authed(
            pb::CheckRequest {
                at_least_revision: grant.revision,
                ..req.clone()
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(first.allowed);
    assert!(first.revision >= grant.revision);
    assert!(allowed(&mut check_b, &s.key, req.clone()).await);

    revoke(&mut workspaces_a, &s.key, &ws.id, grant).await;
    let took = until(false, || {
        let mut c = check_b.clone();
        let (key, req) = (s.key.clone(), req.clone());
        async move { allowed(&mut c, &key, req).await }
    })
    .await;
    eprintln!("revocation seen on the other replica after {took:?}");
    drop((s.a, s.b));
    drop(s.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_replica_stops_working_on_the_other() {
    let s = two_replicas().await;
    let (ca, cb) = (s.a.channel().await, s.b.channel().await);
    let mut identity_a = IdentityServiceClient::new(ca.clone());
    let identity_b = IdentityServiceClient::new(cb.clone());

    let (ann, _) = new_member(&mut identity_a, &s.key, "bea").await;
    let pat = identity_a
        .create_personal_access_token(authed(
            pb::CreatePersonalAccessTokenRequest::default(),
            &s.key,
            &[("x-act-as-user", &ann)],
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = pat.key.clone();
    let who = |mut c: IdentityServiceClient<Channel>, secret: String| async move {
        c.who_am_i(authed(pb::WhoAmIRequest {}, &secret, &[]))
            .await
            .is_ok()
    };
    assert!(
        who(identity_b.clone(), secret.clone()).await,
        "the PAT works on B"
    );

    identity_a
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest {
                api_key_id: pat.api_key.unwrap().id,
                ..Default::default()
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap();
    until(false, || who(identity_b.clone(), secret.clone())).await;
    let err = identity_b
        .clone()
        .who_am_i(authed(pb::WhoAmIRequest {}, &secret, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    drop((s.a, s.b));
    drop(s.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_on_one_replica_denies_on_the_other() {
    let s = two_replicas().await;
    let (ca, cb) = (s.a.channel().await, s.b.channel().await);
    let mut identity_a = IdentityServiceClient::new(ca.clone());
    let mut check_b = CheckServiceClient::new(cb.clone());

    let (cy, home) = new_member(&mut identity_a, &s.key, "cy").await;
    let req = check_request(&cy, &home, "prompts:delete");
    assert!(
        allowed(&mut check_b, &s.key, req.clone()).await,
        "admin of their default workspace"
    );

    identity_a
        .remove_member(authed(
            pb::RemoveMemberRequest {
                user_id: cy.clone(),
                ..Default::default()
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap();
    until(false, || {
        let mut c = check_b.clone();
        let (key, req) = (s.key.clone(), req.clone());
        async move { allowed(&mut c, &key, req).await }
    })
    .await;
    drop((s.a, s.b));
    drop(s.db);
}

/// A replica's metrics.
async fn scrape(serve: &Serve) -> String {
    let (status, body) = harness::http_get(serve.metrics_addr.parse().unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_change_listener_under_load_flushes_nothing() {
    let s = two_replicas().await;
    let (ca, cb) = (s.a.channel().await, s.b.channel().await);
    let mut identity_a = IdentityServiceClient::new(ca.clone());
    let mut workspaces_a = WorkspaceServiceClient::new(ca.clone());
    let mut check_b = CheckServiceClient::new(cb.clone());

    let (ann, _) = new_member(&mut identity_a, &s.key, "dee").await;
    let (bob, bob_home) = new_member(&mut identity_a, &s.key, "eve").await;
    let ws = create_workspace(&mut workspaces_a, &s.key, "listened").await;
    let grant = grant(&mut workspaces_a, &s.key, &ws.id, &ann, "WORKSPACE_VIEWER").await;
    let ann_req = check_request(&ann, &ws.id, "datasets:read");
    let fresh = pb::CheckRequest {
        at_least_revision: grant.revision,
        ..ann_req.clone()
    };
    assert!(allowed(&mut check_b, &s.key, fresh).await);
    let bob_req = check_request(&bob, &bob_home, "prompts:delete");
    assert!(allowed(&mut check_b, &s.key, bob_req.clone()).await);

    // Load on B: Bob's set, from the cache, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (mut c, key, req, stop) = (
            check_b.clone(),
            s.key.clone(),
            bob_req.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(allowed(&mut c, &key, req.clone()).await);
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = scrape(&s.b).await;

    // Every listener's backend goes away; the replicas reconnect.
    let db = sea_orm::Database::connect(&s.db.url).await.unwrap();
    use sea_orm::ConnectionTrait;
    let killed = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert!(killed >= 1, "the listeners' backends were found");
    revoke(&mut workspaces_a, &s.key, &ws.id, grant).await;
    // The poll is 10 minutes: only a wake-up (the dying listener's last
    // notification, or the reconnected listener's catch-up) and a read of
    // the log can explain this.
    let took = until(false, || {
        let mut c = check_b.clone();
        let (key, req) = (s.key.clone(), ann_req.clone());
        async move { allowed(&mut c, &key, req).await }
    })
    .await;
    eprintln!("revocation seen after the listener's reconnect in {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.await.unwrap();
    let after = scrape(&s.b).await;
    let at = |scrape: &str, series: &str| harness::sample(scrape, series);
    for reason in ["trimmed", "unreachable"] {
        let series = format!("portcullis_cache_flushes_total{{reason=\"{reason}\"}}");
        assert_eq!(at(&after, &series), 0.0, "{series}");
    }
    let misses = "portcullis_cache_misses_total{cache=\"decision\"}";
    assert_eq!(
        at(&after, misses) - at(&before, misses),
        1.0,
        "only the revoked set was loaded again ({served} checks of the other set were served)"
    );
    // `pg_terminate_backend` only signals: the old backend may still have
    // delivered the revocation's notification, and the reconnect may come
    // after it. It must come.
    harness::wait_until(
        "the change listener listens again",
        Duration::from_secs(10),
        || scrape(&s.b),
        |m| at(m, "portcullis_change_listener_up") == 1.0,
    )
    .await;
    drop((s.a, s.b));
    drop(s.db);
}
