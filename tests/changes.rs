//! The change log: what a change drops from the cache (only the sets it can
//! affect), the log a replica catches up from, and `WatchService.Watch`:
//! in order, resumable, refused for trimmed revisions, confined to one
//! organization and to its admins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::{collections::BTreeSet, time::Duration};

use harness::{
    Backend, TestServer, as_user, assert_code, req, start, start_with_settings, team, user,
};
use portcullis::{
    authz::cache::{PrincipalKind, SetKey, parse_id},
    config::Settings,
    proto::v1::{self as pb, watch_service_client::WatchServiceClient},
};
use tonic::{Code, Streaming};

/// The cache key of a user's set in a workspace.
fn set_of(user: &str, workspace: &str) -> SetKey {
    SetKey {
        kind: PrincipalKind::User,
        principal: parse_id(user).unwrap(),
        workspace: parse_id(workspace).unwrap(),
    }
}

/// Whether the server holds the user's set in the workspace.
fn cached(s: &TestServer, user: &str, workspace: &str) -> bool {
    s.state.decisions.get(&set_of(user, workspace), 0).is_some()
}

/// Checks once so the set is loaded and cached.
async fn warm(s: &TestServer, user: &str, workspace: &str) {
    s.allowed(user, workspace, "datasets:read", &[]).await;
    assert!(cached(s, user, workspace), "a checked set is cached");
}

async fn a_user_grant_drops_only_that_users_set_in_that_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let other = s.workspace("other").await;
    for (u, w) in [
        (&ann.user_id, &ws),
        (&bob.user_id, &ws),
        (&ann.user_id, &other),
    ] {
        warm(&s, u, w).await;
    }
    s.grant(&ws, user(&ann.user_id), "WORKSPACE_VIEWER", None)
        .await;
    assert!(
        !cached(&s, &ann.user_id, &ws),
        "the grant's own set is dropped"
    );
    assert!(cached(&s, &bob.user_id, &ws), "another user's set stays");
    assert!(
        cached(&s, &ann.user_id, &other),
        "the user's other workspace stays"
    );
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
}

async fn a_team_grant_drops_only_its_members_sets(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let crew = s.team("crew", &[&ann.user_id]).await;
    warm(&s, &ann.user_id, &ws).await;
    warm(&s, &bob.user_id, &ws).await;
    s.grant(&ws, team(&crew), "WORKSPACE_VIEWER", None).await;
    assert!(!cached(&s, &ann.user_id, &ws), "a member's set is dropped");
    assert!(cached(&s, &bob.user_id, &ws), "a non-member's set stays");
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
    assert!(!s.allowed(&bob.user_id, &ws, "datasets:read", &[]).await);
}

async fn a_team_membership_drops_the_members_sets_where_the_team_holds_grants(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let elsewhere = s.workspace("elsewhere").await;
    let crew = s.team("crew", &[]).await;
    s.grant(&ws, team(&crew), "WORKSPACE_VIEWER", None).await;
    warm(&s, &ann.user_id, &ws).await;
    warm(&s, &ann.user_id, &elsewhere).await;
    s.identity()
        .add_team_member(req(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: crew.clone(),
                user_id: ann.user_id.clone(),
                expires_at: None,
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !cached(&s, &ann.user_id, &ws),
        "where the team holds a grant"
    );
    assert!(cached(&s, &ann.user_id, &elsewhere), "where it holds none");
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
}

async fn a_custom_role_edit_drops_only_the_sets_holding_it(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let role = s
        .roles()
        .create_role(req(
            pb::CreateRoleRequest {
                organization_id: String::new(),
                name: "dataset-reader".into(),
                description: String::new(),
                permissions: vec!["datasets:read".into()],
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    s.grant(&ws, user(&ann.user_id), &role.id, None).await;
    s.grant(&ws, user(&bob.user_id), "WORKSPACE_VIEWER", None)
        .await;
    warm(&s, &ann.user_id, &ws).await;
    warm(&s, &bob.user_id, &ws).await;
    assert!(!s.allowed(&ann.user_id, &ws, "datasets:delete", &[]).await);
    s.roles()
        .update_role(req(
            pb::UpdateRoleRequest {
                organization_id: String::new(),
                role_id: role.id.clone(),
                permissions: Some(pb::PermissionList {
                    permissions: vec!["datasets:read".into(), "datasets:delete".into()],
                }),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !cached(&s, &ann.user_id, &ws),
        "the holder's set is dropped"
    );
    assert!(
        cached(&s, &bob.user_id, &ws),
        "a set without the role stays"
    );
    assert!(s.allowed(&ann.user_id, &ws, "datasets:delete", &[]).await);
}

fn watcher(s: &TestServer) -> WatchServiceClient<tonic::transport::Channel> {
    WatchServiceClient::new(s.channel.clone())
}

async fn open(s: &TestServer, key: &str, org: &str, after: u64) -> Streaming<pb::WatchResponse> {
    watcher(s)
        .watch(req(
            pb::WatchRequest {
                organization_id: org.into(),
                after_revision: after,
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The next change of a watch, within 10 s.
async fn next(stream: &mut Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a change arrives within 10 s")
        .unwrap()
        .expect("the stream stays open")
}

/// A change of the bootstrap organization: a new team; its revision.
async fn new_team(s: &TestServer, key: &str, name: &str) -> u64 {
    s.identity()
        .create_team(req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: name.into(),
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
        .revision
}

async fn a_watch_streams_changes_in_order_and_resumes_after_a_revision(b: Backend) {
    let s = start(b).await;
    let before = new_team(&s, s.key(), "first").await;
    let mut stream = open(&s, s.key(), "", 0).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let granted = s
        .workspaces()
        .grant_access(req(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(user(&ann.user_id)),
                }),
                role: "WORKSPACE_VIEWER".into(),
                scope: None,
                expires_at: None,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    let grant_id = granted.grant.unwrap().id;
    // Adding the member, creating the workspace, then the grant.
    let mut seen = Vec::new();
    loop {
        let change = next(&mut stream).await;
        assert!(
            change.revision > before,
            "only changes after the watch began"
        );
        assert!(change.committed_at.is_some());
        seen.push(change.clone());
        if change.revision == granted.revision {
            let e = &change.events[0];
            assert_eq!(
                (
                    e.action.as_str(),
                    e.target_type.as_str(),
                    e.target_id.as_str()
                ),
                ("grant.create", "grant", grant_id.as_str())
            );
            break;
        }
    }
    assert!(seen.len() >= 3, "member, workspace and grant: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    assert!(
        seen.iter()
            .any(|c| c.events.iter().any(|e| e.action == "workspace.create"))
    );

    // Resuming after the first change gives the rest again, in order.
    let mut resumed = open(&s, s.key(), "", seen[0].revision).await;
    for want in &seen[1..] {
        assert_eq!(&next(&mut resumed).await, want);
    }
}

async fn a_watch_from_a_trimmed_revision_fails_naming_the_oldest_available(b: Backend) {
    let settings = Settings {
        change_log_max_entries: 2,
        revision_poll_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let s = start_with_settings(b, settings).await;
    let first = new_team(&s, s.key(), "t0").await;
    let mut last = first;
    for i in 1..6 {
        last = new_team(&s, s.key(), &format!("t{i}")).await;
    }
    // Trimming runs beside the log's reader, at most once a second.
    let err = harness::wait_until(
        "the log is trimmed",
        Duration::from_secs(10),
        || async {
            watcher(&s)
                .watch(req(
                    pb::WatchRequest {
                        organization_id: String::new(),
                        after_revision: first,
                    },
                    s.key(),
                ))
                .await
        },
        Result::is_err,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let oldest = last - 1;
    assert!(
        err.message()
            .contains(&format!("the oldest available revision is {oldest}")),
        "{}",
        err.message()
    );
    // From just before the oldest it still works.
    let mut stream = open(&s, s.key(), "", oldest - 1).await;
    assert_eq!(next(&mut stream).await.revision, oldest);
    assert_eq!(next(&mut stream).await.revision, last);
}

async fn a_watch_shows_one_organizations_changes_only(b: Backend) {
    let s = start(b).await;
    let globex = s.globex().await;
    let zed_key = s.pat_in(&globex.id, &globex.admin).await;
    let mut stream = open(&s, &zed_key, "", 0).await;
    // Acme changes first, then Globex.
    new_team(&s, s.key(), "acme-team").await;
    s.grant(
        &s.workspace("acme-ws").await,
        user(&s.boot.admin_user_id),
        "WORKSPACE_VIEWER",
        None,
    )
    .await;
    let created = s
        .identity()
        .create_team(as_user(
            &s,
            pb::CreateTeamRequest {
                organization_id: globex.id.clone(),
                name: "globex-team".into(),
            },
            &globex.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let change = next(&mut stream).await;
    assert_eq!(
        change.revision, created.revision,
        "Acme's changes are not shown"
    );
    assert_eq!(change.events[0].target_id, created.team.unwrap().id);

    // Asking for another organization's changes is refused.
    for (key, org) in [
        (zed_key.as_str(), s.boot.organization_id.as_str()),
        (s.key(), globex.id.as_str()),
    ] {
        let err = watcher(&s)
            .watch(req(
                pb::WatchRequest {
                    organization_id: org.into(),
                    after_revision: 0,
                },
                key,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::NotFound),
            "{err:?}"
        );
    }
}

async fn only_organization_admins_may_watch(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ann_key = s.pat(&ann.user_id).await;
    let ws = s.workspace("shared").await;
    let (_, limited) =
        harness::account_key(&s, "limited", pb::OrgRole::OrgAdmin, &[ws.as_str()]).await;
    let (_, whole) = harness::account_key(&s, "whole", pb::OrgRole::OrgAdmin, &[]).await;
    for key in [ann_key.as_str(), limited.as_str()] {
        let result = watcher(&s)
            .watch(req(
                pb::WatchRequest {
                    organization_id: String::new(),
                    after_revision: 0,
                },
                key,
            ))
            .await;
        assert_code(result, Code::PermissionDenied, "");
    }
    let mut stream = open(&s, &whole, "", 0).await;
    let revision = new_team(&s, s.key(), "seen").await;
    assert_eq!(next(&mut stream).await.revision, revision);
}

async fn a_watch_ahead_of_storage_is_refused(b: Backend) {
    let s = start(b).await;
    let result = watcher(&s)
        .watch(req(
            pb::WatchRequest {
                organization_id: String::new(),
                after_revision: 1 << 40,
            },
            s.key(),
        ))
        .await;
    assert_code(result, Code::FailedPrecondition, "ahead of storage");
}

async fn every_acknowledged_revision_is_watched_once_in_order(b: Backend) {
    let s = start(b).await;
    let mut stream = open(&s, s.key(), "", 0).await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let identity = s.identity();
        let key = s.key().to_owned();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..8 {
                let mut identity = identity.clone();
                let revision = identity
                    .create_team(req(
                        pb::CreateTeamRequest {
                            organization_id: String::new(),
                            name: format!("w{w}-{i}"),
                        },
                        &key,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .revision;
                acked.push(revision);
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for w in writers {
        for r in w.await.unwrap() {
            assert!(acked.insert(r), "revision {r} acknowledged twice");
        }
    }
    let mut watched = Vec::new();
    while watched.len() < acked.len() {
        watched.push(next(&mut stream).await.revision);
    }
    assert!(
        watched.windows(2).all(|w| w[0] < w[1]),
        "in order, each once: {watched:?}"
    );
    assert_eq!(watched.into_iter().collect::<BTreeSet<_>>(), acked);
}

fn grant_op(workspace: &str, subject: pb::subject::Kind, role: &str) -> pb::AccessOperation {
    pb::AccessOperation {
        operation: Some(pb::access_operation::Operation::Grant(
            pb::GrantAccessRequest {
                workspace_id: workspace.into(),
                subject: Some(pb::Subject {
                    kind: Some(subject),
                }),
                role: role.into(),
                scope: None,
                expires_at: None,
            },
        )),
    }
}

fn member_op(team_id: &str, user_id: &str) -> pb::AccessOperation {
    pb::AccessOperation {
        operation: Some(pb::access_operation::Operation::AddTeamMember(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: team_id.into(),
                user_id: user_id.into(),
                expires_at: None,
            },
        )),
    }
}

fn revoke_op(workspace: &str, grant_id: &str) -> pb::AccessOperation {
    pb::AccessOperation {
        operation: Some(pb::access_operation::Operation::Revoke(
            pb::RevokeAccessRequest {
                workspace_id: workspace.into(),
                grant_id: grant_id.into(),
            },
        )),
    }
}

async fn batch(
    s: &TestServer,
    key: &str,
    operations: Vec<pb::AccessOperation>,
) -> Result<pb::BatchWriteAccessResponse, tonic::Status> {
    s.workspaces()
        .batch_write_access(req(pb::BatchWriteAccessRequest { operations }, key))
        .await
        .map(tonic::Response::into_inner)
}

/// The grant ids of a workspace.
async fn grants_of(s: &TestServer, workspace: &str) -> BTreeSet<String> {
    s.workspaces()
        .list_access(req(
            pb::ListAccessRequest {
                workspace_id: workspace.into(),
                page_size: 1000,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| g.id)
        .collect()
}

async fn a_batch_applies_every_operation_under_one_revision(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let crew = s.team("crew", &[]).await;
    let old = s
        .grant(&ws, user(&bob.user_id), "WORKSPACE_EDITOR", None)
        .await;
    let mut stream = open(&s, s.key(), "", 0).await;
    let done = batch(
        &s,
        s.key(),
        vec![
            grant_op(&ws, user(&ann.user_id), "WORKSPACE_VIEWER"),
            grant_op(&ws, team(&crew), "WORKSPACE_EDITOR"),
            member_op(&crew, &bob.user_id),
            revoke_op(&ws, &old),
        ],
    )
    .await
    .unwrap();
    assert_eq!(done.results.len(), 4);
    let granted = done.results[0].grant.clone().unwrap();
    assert_eq!(granted.role, "WORKSPACE_VIEWER");
    assert!(done.results[2].grant.is_none());
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
    assert!(
        s.allowed(&bob.user_id, &ws, "datasets:update", &[]).await,
        "through the team"
    );
    assert!(!grants_of(&s, &ws).await.contains(&old));
    // One change, one revision, every event in it.
    let change = next(&mut stream).await;
    assert_eq!(change.revision, done.revision);
    let actions: Vec<_> = change.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "grant.create",
            "grant.create",
            "team.add_member",
            "grant.delete"
        ]
    );
}

async fn a_batch_with_one_refused_operation_writes_nothing(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let crew = s.team("crew", &[]).await;
    let before = grants_of(&s, &ws).await;
    let err = batch(
        &s,
        s.key(),
        vec![
            grant_op(&ws, user(&ann.user_id), "WORKSPACE_VIEWER"),
            member_op(&crew, &ann.user_id),
            grant_op(&ws, user(&ann.user_id), "NO_SUCH_ROLE"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("operations[2]: role: unknown role"),
        "{}",
        err.message()
    );
    assert_eq!(
        grants_of(&s, &ws).await,
        before,
        "the first grant was not kept"
    );
    assert!(!s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
    // The team membership was not kept either: adding it again works.
    batch(&s, s.key(), vec![member_op(&crew, &ann.user_id)])
        .await
        .unwrap();
    // Another tenant's workspace in a batch: refused, nothing written.
    let globex = s.globex().await;
    let err = batch(
        &s,
        s.key(),
        vec![
            grant_op(&ws, user(&ann.user_id), "WORKSPACE_VIEWER"),
            grant_op(&globex.home, user(&ann.user_id), "WORKSPACE_VIEWER"),
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.message().starts_with("operations[1]: "),
        "{}",
        err.message()
    );
    assert!(
        matches!(err.code(), Code::NotFound | Code::PermissionDenied),
        "{err:?}"
    );
    assert_eq!(grants_of(&s, &ws).await, before);
}

async fn a_batch_holds_one_to_a_thousand_operations(b: Backend) {
    let s = start(b).await;
    let err = batch(&s, s.key(), Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("operations: "),
        "{}",
        err.message()
    );
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let many = vec![grant_op(&ws, user(&ann.user_id), "WORKSPACE_VIEWER"); 1001];
    let err = batch(&s, s.key(), many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 1000"), "{}", err.message());
    let empty = pb::AccessOperation { operation: None };
    let err = batch(&s, s.key(), vec![empty]).await.unwrap_err();
    assert!(
        err.message().starts_with("operations[0]: operation: "),
        "{}",
        err.message()
    );
}

/// Resource ids a backend may register, chosen to break a statement that
/// wrote them into its text carelessly.
const AWKWARD_IDS: [&str; 3] = [
    r"O'Brien's \ report",
    r#"x'); UPDATE revision SET value = 0; COMMIT; --"#,
    r#"E'\'' \\' "quoted" $$ ; BEGIN"#,
];

async fn a_change_publishes_quotes_and_backslashes_as_written(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let mut revisions = Vec::new();
    for id in AWKWARD_IDS {
        let tagged = s
            .workspaces()
            .set_resource_tags(req(
                pb::SetResourceTagsRequest {
                    workspace_id: ws.clone(),
                    resource_type: "prompts".into(),
                    resource_id: id.into(),
                    tags: vec![pb::Tag {
                        key: "Environment".into(),
                        value: "it's \\ prod".into(),
                    }],
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner();
        revisions.push(tagged.revision);
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let expected: Vec<(u64, String)> = revisions
        .iter()
        .zip(AWKWARD_IDS)
        .map(|(r, id)| (*r, id.to_owned()))
        .collect();

    // The audit events: target and details as written.
    let events = s.audit_events("resource.set_tags").await;
    let mut audited: Vec<(u64, String)> = events
        .iter()
        .map(|e| {
            let details: serde_json::Value = serde_json::from_str(&e.details_json).unwrap();
            assert_eq!(details["tags"]["Environment"], "it's \\ prod");
            (e.revision, e.target_id.clone())
        })
        .collect();
    audited.sort();
    assert_eq!(audited, expected);

    // The log rows: the same targets under the same revisions.
    let mut stream = open(&s, s.key(), "", revisions[0] - 1).await;
    for (revision, id) in &expected {
        let change = next(&mut stream).await;
        assert_eq!(change.revision, *revision);
        assert_eq!(&change.events[0].target_id, id);
    }
    // Nothing else ran: the next change takes the next revision.
    let after = new_team(&s, s.key(), "after").await;
    assert_eq!(after, revisions[2] + 1);
}

both_backends!(
    a_user_grant_drops_only_that_users_set_in_that_workspace,
    a_team_grant_drops_only_its_members_sets,
    a_team_membership_drops_the_members_sets_where_the_team_holds_grants,
    a_custom_role_edit_drops_only_the_sets_holding_it,
    a_watch_streams_changes_in_order_and_resumes_after_a_revision,
    a_watch_from_a_trimmed_revision_fails_naming_the_oldest_available,
    a_watch_shows_one_organizations_changes_only,
    only_organization_admins_may_watch,
    a_watch_ahead_of_storage_is_refused,
    every_acknowledged_revision_is_watched_once_in_order,
    a_batch_applies_every_operation_under_one_revision,
    a_batch_with_one_refused_operation_writes_nothing,
    a_batch_holds_one_to_a_thousand_operations,
    a_change_publishes_quotes_and_backslashes_as_written,
);
