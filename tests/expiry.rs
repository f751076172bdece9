//! Time-bound access: grants and team memberships with an expiry stop
//! applying at that instant exactly (no write, no poll: a cached set knows
//! its earliest expiry), are listed and explained as expired, and are removed
//! by an audited sweep; extending is granting again. The server's clock is
//! moved forward (`Clock::advance`) instead of waiting, except in one test
//! that waits for a real expiry. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use harness::{Backend, TestServer, as_user, assert_code, check_request, req, start, team, user};
use portcullis::{api::timestamp, domain::expiry, proto::v1 as pb};
use tonic::Code;

const HOUR_MS: i64 = 3_600_000;

/// The server's clock now.
fn now(s: &TestServer) -> i64 {
    s.state.settings.clock.now_ms()
}

/// Moves the server's clock forward.
fn advance(s: &TestServer, ms: i64) {
    s.state
        .settings
        .clock
        .advance(Duration::from_millis(ms as u64));
}

/// Grants `role` to a subject in a workspace until `expires_at` (ms).
async fn try_grant(
    s: &TestServer,
    workspace: &str,
    subject: pb::subject::Kind,
    role: &str,
    expires_at: Option<i64>,
) -> Result<tonic::Response<pb::GrantAccessResponse>, tonic::Status> {
    s.workspaces()
        .grant_access(req(
            pb::GrantAccessRequest {
                workspace_id: workspace.into(),
                subject: Some(pb::Subject {
                    kind: Some(subject),
                }),
                role: role.into(),
                scope: None,
                expires_at: expires_at.map(timestamp),
            },
            s.key(),
        ))
        .await
}

/// [`try_grant`], which must succeed: the grant.
async fn grant_until(
    s: &TestServer,
    workspace: &str,
    subject: pb::subject::Kind,
    role: &str,
    expires_at: Option<i64>,
) -> pb::Grant {
    try_grant(s, workspace, subject, role, expires_at)
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap()
}

async fn check(s: &TestServer, user: &str, ws: &str, permission: &str) -> pb::CheckResponse {
    s.check()
        .check(req(check_request(user, ws, permission, &[]), s.key()))
        .await
        .unwrap()
        .into_inner()
}

async fn listed(s: &TestServer, ws: &str) -> Vec<pb::Grant> {
    s.workspaces()
        .list_access(req(
            pb::ListAccessRequest {
                workspace_id: ws.into(),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
}

async fn explain(
    s: &TestServer,
    user: &str,
    ws: &str,
    permission: &str,
) -> pb::ExplainCheckResponse {
    s.check()
        .explain_check(req(check_request(user, ws, permission, &[]), s.key()))
        .await
        .unwrap()
        .into_inner()
}

async fn audit_actions(s: &TestServer) -> Vec<pb::AuditEvent> {
    s.audit()
        .list_audit_events(req(
            pb::ListAuditEventsRequest {
                page_size: 100,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn a_grant_stops_applying_at_its_expiry_without_a_write(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let until = now(&s) + HOUR_MS;
    let g = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_VIEWER", Some(until)).await;
    assert_eq!(g.expires_at, Some(timestamp(until)));
    assert!(!g.expired);
    let before = check(&s, &ann.user_id, &ws, "prompts:read").await;
    assert!(before.allowed);
    // To a second before the instant (real time passes too).
    advance(&s, until - now(&s) - 1_000);
    let hits = s.state.decisions.stats().hits;
    assert!(
        check(&s, &ann.user_id, &ws, "prompts:read").await.allowed,
        "a second before the expiry"
    );
    assert!(
        s.state.decisions.stats().hits > hits,
        "served from the cache until then"
    );
    advance(&s, until - now(&s));
    let after = check(&s, &ann.user_id, &ws, "prompts:read").await;
    assert!(!after.allowed, "denied at the instant itself");
    assert_eq!(
        after.revision, before.revision,
        "no change was written for the expiry to apply"
    );
    let grants = listed(&s, &ws).await;
    let listed = grants.iter().find(|l| l.id == g.id).unwrap();
    assert!(listed.expired, "listed as expired until swept");
    assert_eq!(listed.expires_at, Some(timestamp(until)));
    let e = explain(&s, &ann.user_id, &ws, "prompts:read").await;
    assert!(!e.allowed);
    assert!(
        e.reason.contains(&g.id) && e.reason.contains("expired at"),
        "{}",
        e.reason
    );
    assert_eq!(e.expired.len(), 1);
    assert_eq!(e.expired[0].grant_id, g.id);
    assert_eq!(e.expired[0].expires_at, Some(timestamp(until)));
    let subjects = s
        .check()
        .lookup_subjects(req(
            pb::LookupSubjectsRequest {
                workspace_id: ws.clone(),
                permission: "prompts:read".into(),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .subjects;
    assert!(
        !subjects.iter().any(|m| m.via == "grant"),
        "an expired grant names nobody: {subjects:?}"
    );
}

async fn an_expired_grant_gives_no_power_to_administer(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let until = now(&s) + HOUR_MS;
    grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_ADMIN", Some(until)).await;
    let pat = s.pat(&ann.user_id).await;
    let give = |key: String| {
        let mut c = s.workspaces();
        let ws = ws.clone();
        let bob = bob.user_id.clone();
        async move {
            c.grant_access(req(
                pb::GrantAccessRequest {
                    workspace_id: ws,
                    subject: Some(pb::Subject {
                        kind: Some(user(&bob)),
                    }),
                    role: "WORKSPACE_VIEWER".into(),
                    scope: None,
                    expires_at: None,
                },
                &key,
            ))
            .await
        }
    };
    give(pat.clone()).await.unwrap();
    advance(&s, HOUR_MS);
    assert_code(give(pat).await, Code::PermissionDenied, "roles:manage");
}

async fn extending_is_granting_again(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let first = now(&s) + HOUR_MS;
    let g = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_EDITOR", Some(first)).await;
    assert!(check(&s, &ann.user_id, &ws, "prompts:update").await.allowed);
    let later = first + 2 * HOUR_MS;
    let extended = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_EDITOR", Some(later)).await;
    assert_eq!(extended.id, g.id, "the same grant, extended");
    assert_eq!(extended.expires_at, Some(timestamp(later)));
    advance(&s, 2 * HOUR_MS);
    assert!(
        check(&s, &ann.user_id, &ws, "prompts:update").await.allowed,
        "past the first expiry, within the new one"
    );
    let permanent = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_EDITOR", None).await;
    assert_eq!(permanent.id, g.id);
    assert_eq!(
        permanent.expires_at, None,
        "granting without expiry makes it permanent"
    );
    advance(&s, 10 * HOUR_MS);
    assert!(check(&s, &ann.user_id, &ws, "prompts:update").await.allowed);
    assert_code(
        try_grant(&s, &ws, user(&ann.user_id), "WORKSPACE_EDITOR", None).await,
        Code::AlreadyExists,
        "already holds",
    );
    // An expired grant not yet swept is revived by granting it again.
    let short = now(&s) + 1_000;
    let viewer = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_VIEWER", Some(short)).await;
    advance(&s, 2_000);
    let revived = grant_until(
        &s,
        &ws,
        user(&ann.user_id),
        "WORKSPACE_VIEWER",
        Some(now(&s) + HOUR_MS),
    )
    .await;
    assert_eq!(revived.id, viewer.id);
    assert!(!revived.expired);
    let events = audit_actions(&s).await;
    let extension: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.action == "grant.set_expiry" && e.target_id == g.id)
        .map(|e| serde_json::from_str(&e.details_json).unwrap())
        .filter(|d: &serde_json::Value| d["previous_expires_at"] == first)
        .collect();
    assert_eq!(extension.len(), 1, "{events:?}");
    let details = &extension[0];
    assert_eq!(details["expires_at"], later);
    assert_eq!(details["workspace_id"], ws.as_str());
    assert_eq!(details["subject"], format!("user:{}", ann.user_id));
    assert_eq!(details["role"], "WORKSPACE_EDITOR");
}

async fn expiries_must_be_in_the_future(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    for at in [now(&s) - 1, now(&s) - HOUR_MS] {
        assert_code(
            try_grant(&s, &ws, user(&ann.user_id), "WORKSPACE_VIEWER", Some(at)).await,
            Code::InvalidArgument,
            "expires_at",
        );
    }
    let t = s.team("ops", &[]).await;
    let add = s
        .identity()
        .add_team_member(req(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: t,
                user_id: ann.user_id.clone(),
                expires_at: Some(timestamp(now(&s) - 1)),
            },
            s.key(),
        ))
        .await;
    assert_code(add, Code::InvalidArgument, "expires_at");
    // The owner's own access to their default workspace cannot be made to expire.
    assert_code(
        try_grant(
            &s,
            &ann.home,
            user(&ann.user_id),
            "WORKSPACE_ADMIN",
            Some(now(&s) + HOUR_MS),
        )
        .await,
        Code::FailedPrecondition,
        "cannot expire",
    );
    assert!(
        check(&s, &ann.user_id, &ann.home, "workspace:delete")
            .await
            .allowed
    );
}

/// Adds `user` to a team until `until` (ms; `None`: for good).
async fn add_member_until(s: &TestServer, team: &str, user: &str, until: Option<i64>) -> pb::Team {
    s.identity()
        .add_team_member(req(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: team.into(),
                user_id: user.into(),
                expires_at: until.map(timestamp),
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap()
}

async fn a_team_membership_stops_applying_at_its_expiry(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let ops = s.team("ops", &[]).await;
    let until = now(&s) + HOUR_MS;
    let t = add_member_until(&s, &ops, &ann.user_id, Some(until)).await;
    assert_eq!(t.members.len(), 1);
    assert_eq!(t.members[0].expires_at, Some(timestamp(until)));
    let g = s.grant(&ws, team(&ops), "WORKSPACE_EDITOR", None).await;
    assert!(check(&s, &ann.user_id, &ws, "prompts:update").await.allowed);
    advance(&s, HOUR_MS);
    assert!(
        !check(&s, &ann.user_id, &ws, "prompts:update").await.allowed,
        "the team's grant no longer reaches her"
    );
    let e = explain(&s, &ann.user_id, &ws, "prompts:update").await;
    assert!(
        e.reason.contains(&g) && e.reason.contains(&ops) && e.reason.contains("expired at"),
        "{}",
        e.reason
    );
    let teams = s
        .identity()
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let listed = teams.iter().find(|t| t.id == ops).unwrap();
    assert!(listed.members[0].expired);
    // Adding her again extends the membership.
    let t = add_member_until(&s, &ops, &ann.user_id, Some(now(&s) + HOUR_MS)).await;
    assert!(!t.members[0].expired);
    assert!(check(&s, &ann.user_id, &ws, "prompts:update").await.allowed);
    let permanent = add_member_until(&s, &ops, &ann.user_id, None).await;
    assert_eq!(
        permanent.members[0].expires_at, None,
        "adding without expiry: permanent"
    );
    let again = s
        .identity()
        .add_team_member(req(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: ops.clone(),
                user_id: ann.user_id.clone(),
                expires_at: None,
            },
            s.key(),
        ))
        .await;
    assert_code(again, Code::AlreadyExists, "already in team");
}

async fn the_sweep_removes_expired_access_and_audits_it(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let ops = s.team("ops", &[]).await;
    let soon = now(&s) + HOUR_MS;
    let expiring = grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_VIEWER", Some(soon)).await;
    let lasting = grant_until(
        &s,
        &ws,
        user(&bob.user_id),
        "WORKSPACE_VIEWER",
        Some(soon + 10 * HOUR_MS),
    )
    .await;
    add_member_until(&s, &ops, &ann.user_id, Some(soon)).await;
    add_member_until(&s, &ops, &bob.user_id, None).await;
    assert_eq!(
        expiry::sweep(&s.state).await.unwrap(),
        expiry::Swept::default(),
        "nothing has expired yet"
    );
    advance(&s, HOUR_MS);
    let swept = expiry::sweep(&s.state).await.unwrap();
    assert_eq!(
        swept,
        expiry::Swept {
            grants: 1,
            team_members: 1
        }
    );
    let ids: Vec<String> = listed(&s, &ws).await.into_iter().map(|g| g.id).collect();
    assert!(!ids.contains(&expiring.id), "removed");
    assert!(ids.contains(&lasting.id), "not expired yet: kept");
    let teams = s
        .identity()
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let members: Vec<&str> = teams
        .iter()
        .find(|t| t.id == ops)
        .unwrap()
        .member_user_ids
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(members, [bob.user_id.as_str()]);
    let events = audit_actions(&s).await;
    let expired = events
        .iter()
        .find(|e| e.action == "grant.expire")
        .expect("the removal is audited");
    assert_eq!(expired.target_id, expiring.id);
    assert!(expired.revision > 0);
    assert!(events.iter().any(|e| e.action == "team.member_expire"));
    assert!(!check(&s, &ann.user_id, &ws, "prompts:read").await.allowed);
    assert!(check(&s, &bob.user_id, &ws, "prompts:read").await.allowed);
    assert_eq!(
        expiry::sweep(&s.state).await.unwrap(),
        expiry::Swept::default(),
        "a second pass finds nothing"
    );
}

async fn batches_carry_expiries(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let until = now(&s) + HOUR_MS;
    let out = s
        .workspaces()
        .batch_write_access(req(
            pb::BatchWriteAccessRequest {
                operations: vec![pb::AccessOperation {
                    operation: Some(pb::access_operation::Operation::Grant(
                        pb::GrantAccessRequest {
                            workspace_id: ws.clone(),
                            subject: Some(pb::Subject {
                                kind: Some(user(&ann.user_id)),
                            }),
                            role: "WORKSPACE_VIEWER".into(),
                            scope: None,
                            expires_at: Some(timestamp(until)),
                        },
                    )),
                }],
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    let g = out.results[0].grant.as_ref().unwrap();
    assert_eq!(g.expires_at, Some(timestamp(until)));
    assert!(check(&s, &ann.user_id, &ws, "prompts:read").await.allowed);
    advance(&s, HOUR_MS);
    assert!(!check(&s, &ann.user_id, &ws, "prompts:read").await.allowed);
}

/// With the real clock: the first Check after the instant denies.
async fn the_first_check_after_a_real_expiry_denies(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let pat = s.pat(&ann.user_id).await;
    let until = now(&s) + 1_500;
    grant_until(&s, &ws, user(&ann.user_id), "WORKSPACE_VIEWER", Some(until)).await;
    let ask = || {
        let mut c = s.check();
        let q = check_request(&ann.user_id, &ws, "prompts:read", &[]);
        let pat = pat.clone();
        async move { c.check(req(q, &pat)).await.unwrap().into_inner().allowed }
    };
    assert!(ask().await, "before the expiry (and now cached)");
    assert!(ask().await);
    let wait = until - now(&s);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    assert!(!ask().await, "the first check after the instant");
    // Asked through the user's own key too (an acting-for-user key path).
    let own = s
        .check()
        .check(as_user(
            &s,
            check_request(&ann.user_id, &ws, "prompts:read", &[]),
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!own.allowed);
}

/// A grant reaching its own giver lasts no longer than the giver's own hold
/// on what it grants: a time-bound admin cannot make themself permanent,
/// directly or through a team; grants to others are not bounded.
async fn a_time_bound_admin_cannot_prolong_their_own_access(b: Backend) {
    let s = start(b).await;
    let dan = s.member("dan", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let until = now(&s) + HOUR_MS;
    let own = grant_until(&s, &ws, user(&dan.user_id), "WORKSPACE_ADMIN", Some(until)).await;
    let pat = s.pat(&dan.user_id).await;
    let give = |subject: pb::subject::Kind, role: &str, expires_at: Option<i64>| {
        let mut c = s.workspaces();
        let request = pb::GrantAccessRequest {
            workspace_id: ws.clone(),
            subject: Some(pb::Subject {
                kind: Some(subject),
            }),
            role: role.into(),
            scope: None,
            expires_at: expires_at.map(timestamp),
        };
        let pat = pat.clone();
        async move { c.grant_access(req(request, &pat)).await }
    };
    for (role, expires_at) in [
        ("WORKSPACE_ADMIN", None),
        ("WORKSPACE_ADMIN", Some(until + HOUR_MS)),
        ("WORKSPACE_EDITOR", None),
    ] {
        assert_code(
            give(user(&dan.user_id), role, expires_at).await,
            Code::PermissionDenied,
            "expires_at",
        );
    }
    let listed = listed(&s, &ws).await;
    let mine = listed.iter().find(|g| g.id == own.id).unwrap();
    assert_eq!(mine.expires_at, Some(timestamp(until)), "unchanged");
    give(user(&dan.user_id), "WORKSPACE_EDITOR", Some(until))
        .await
        .unwrap();
    give(user(&bob.user_id), "WORKSPACE_EDITOR", None)
        .await
        .unwrap();
    // Through a team: bob is in ops until `until`, ops administers the workspace.
    let ops = s.team("ops", &[]).await;
    add_member_until(&s, &ops, &bob.user_id, Some(until)).await;
    s.grant(&ws, team(&ops), "WORKSPACE_ADMIN", None).await;
    let bob_pat = s.pat(&bob.user_id).await;
    let self_grant = s
        .workspaces()
        .grant_access(req(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(user(&bob.user_id)),
                }),
                role: "WORKSPACE_ADMIN".into(),
                scope: None,
                expires_at: None,
            },
            &bob_pat,
        ))
        .await;
    assert_code(self_grant, Code::PermissionDenied, "expires_at");
}

both_backends!(
    a_grant_stops_applying_at_its_expiry_without_a_write,
    an_expired_grant_gives_no_power_to_administer,
    extending_is_granting_again,
    expiries_must_be_in_the_future,
    a_team_membership_stops_applying_at_its_expiry,
    the_sweep_removes_expired_access_and_audits_it,
    batches_carry_expiries,
    the_first_check_after_a_real_expiry_denies,
    a_time_bound_admin_cannot_prolong_their_own_access,
);
