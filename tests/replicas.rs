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
use processes::{Serve, authed, bootstrap};
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

async fn new_member(
    identity: &mut IdentityServiceClient<Channel>,
    key: &str,
    name: &str,
) -> (String, String) {
    let user = identity
        .create_user(authed(
            pb::CreateUserRequest {
                external_subject: format!("idp|{name}"),
                email: format!("{name}@replicas.test"),
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let member = identity
        .add_member(authed(
            pb::AddMemberRequest {
                user_id: user.id.clone(),
                role: pb::OrgRole::OrgUser as i32,
                ..Default::default()
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    (user.id, member.default_workspace_id)
}

fn check_request(user: &str, workspace: &str, permission: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user.to_owned())),
        }),
        workspace_id: workspace.to_owned(),
        permission: permission.to_owned(),
        ..Default::default()
    }
}

async fn allowed(
    check: &mut CheckServiceClient<Channel>,
    key: &str,
    req: pb::CheckRequest,
) -> bool {
    check
        .check(authed(req, key, &[]))
        .await
        .unwrap()
        .into_inner()
        .allowed
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
    let ws = workspaces_a
        .create_workspace(authed(
            pb::CreateWorkspaceRequest {
                key: "shared".into(),
                ..Default::default()
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap();
    let grant = workspaces_a
        .grant_access(authed(
            pb::GrantAccessRequest {
                workspace_id: ws.id.clone(),
                subject: Some(pb::Subject {
                    kind: Some(pb::subject::Kind::UserId(ann.clone())),
                }),
                role: "WORKSPACE_VIEWER".into(),
                scope: None,
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();

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

    workspaces_a
        .revoke_access(authed(
            pb::RevokeAccessRequest {
                workspace_id: ws.id.clone(),
                grant_id: grant.grant.unwrap().id,
            },
            &s.key,
            &[],
        ))
        .await
        .unwrap();
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
