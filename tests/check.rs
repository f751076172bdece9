//! CheckService: decisions, default deny, immediate revocation, scopes and
//! tags, read-your-writes, batches, explanations, listings. SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{
    Backend, app_scope, as_user, assert_code, check_request, req, start, team, user, with,
};
use portcullis::proto::v1 as pb;
use tonic::Code;

use std::time::Duration;

fn key_principal(key: &str, workspace: &str, permission: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::ApiKey(key.into())),
        }),
        ..check_request("", workspace, permission, &[])
    }
}

async fn default_deny_and_direct_grants(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    assert!(
        !s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await,
        "membership alone gives nothing"
    );
    s.grant(&ws, user(&ann.user_id), "WORKSPACE_VIEWER", None)
        .await;
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
    assert!(!s.allowed(&ann.user_id, &ws, "datasets:delete", &[]).await);
    assert!(
        s.allowed(&ann.user_id, &ann.home, "workspace:delete", &[])
            .await,
        "admin of their default workspace"
    );
}

async fn org_admin_may_do_everything_in_every_workspace(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let admin = s.boot.admin_user_id.clone();
    assert!(
        s.allowed(&admin, &ws, "roles:manage", &[("Application", "x")])
            .await
    );
}

async fn revocation_is_seen_by_the_next_check(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let g = s
        .grant(&ws, user(&ann.user_id), "WORKSPACE_EDITOR", None)
        .await;
    assert!(s.allowed(&ann.user_id, &ws, "prompts:update", &[]).await);
    assert!(
        s.allowed(&ann.user_id, &ws, "prompts:update", &[]).await,
        "from the cache"
    );
    s.workspaces()
        .revoke_access(req(
            pb::RevokeAccessRequest {
                workspace_id: ws.clone(),
                grant_id: g,
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(!s.allowed(&ann.user_id, &ws, "prompts:update", &[]).await);
}

async fn removed_members_are_denied_at_once(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let t = s.team("ops", &[&ann.user_id]).await;
    s.grant(&ws, team(&t), "WORKSPACE_VIEWER", None).await;
    assert!(
        s.allowed(&ann.user_id, &ann.home, "prompts:read", &[])
            .await
    );
    assert!(s.allowed(&ann.user_id, &ws, "prompts:read", &[]).await);
    s.identity()
        .remove_member(req(
            pb::RemoveMemberRequest {
                organization_id: String::new(),
                user_id: ann.user_id.clone(),
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !s.allowed(&ann.user_id, &ann.home, "prompts:read", &[])
            .await
    );
    assert!(!s.allowed(&ann.user_id, &ws, "prompts:read", &[]).await);
}

async fn deleted_service_accounts_are_denied(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let sa = s.service_account("bot").await;
    s.grant(
        &ws,
        pb::subject::Kind::ServiceAccountId(sa.clone()),
        "WORKSPACE_VIEWER",
        None,
    )
    .await;
    let ask = || {
        req(
            pb::CheckRequest {
                principal: Some(pb::CheckPrincipal {
                    kind: Some(pb::check_principal::Kind::ServiceAccountId(sa.clone())),
                }),
                ..check_request("", &ws, "models:read", &[])
            },
            s.key(),
        )
    };
    assert!(s.check().check(ask()).await.unwrap().into_inner().allowed);
    s.identity()
        .delete_service_account(req(
            pb::DeleteServiceAccountRequest {
                organization_id: String::new(),
                service_account_id: sa.clone(),
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(!s.check().check(ask()).await.unwrap().into_inner().allowed);
}

async fn api_key_principals_are_authenticated_and_limited(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let created = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest::default(),
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    let ask = |key: &str| req(key_principal(key, &ann.home, "prompts:read"), s.key());
    assert!(
        s.check()
            .check(ask(&created.key))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    assert!(
        !s.check()
            .check(ask("pc__legacy"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    s.identity()
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: created.api_key.unwrap().id,
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !s.check()
            .check(ask(&created.key))
            .await
            .unwrap()
            .into_inner()
            .allowed,
        "revoked keys always deny"
    );
}

async fn scoped_grants_use_inline_or_registered_tags(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.grant(
        &ws,
        user(&ann.user_id),
        "WORKSPACE_EDITOR",
        Some(pb::Scope {
            conditions: vec![pb::TagCondition {
                key: "Environment".into(),
                values: vec!["dev".into(), "staging".into()],
            }],
            application: String::new(),
        }),
    )
    .await;
    assert!(
        s.allowed(
            &ann.user_id,
            &ws,
            "prompts:update",
            &[("Environment", "dev")]
        )
        .await
    );
    assert!(
        !s.allowed(
            &ann.user_id,
            &ws,
            "prompts:update",
            &[("Environment", "prod")]
        )
        .await
    );
    s.workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws.clone(),
                resource_type: "prompts".into(),
                resource_id: "welcome".into(),
                tags: vec![pb::Tag {
                    key: "Environment".into(),
                    value: "staging".into(),
                }],
            },
            s.key(),
        ))
        .await
        .unwrap();
    let registered = |id: &str| {
        let mut r = check_request(&ann.user_id, &ws, "prompts:update", &[]);
        r.resource.as_mut().unwrap().id = id.into();
        req(r, s.key())
    };
    assert!(
        s.check()
            .check(registered("welcome"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    assert!(
        !s.check()
            .check(registered("unknown"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    s.workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws.clone(),
                resource_type: "prompts".into(),
                resource_id: "welcome".into(),
                tags: vec![pb::Tag {
                    key: "Environment".into(),
                    value: "prod".into(),
                }],
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !s.check()
            .check(registered("welcome"))
            .await
            .unwrap()
            .into_inner()
            .allowed,
        "re-tagging reaches decisions"
    );
}

async fn answers_carry_revisions_and_honour_at_least_revision(b: Backend) {
    let s = start(b).await;
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
                role: "Reader".into(),
                scope: None,
                expires_at: None,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut r = check_request(&ann.user_id, &ws, "datasets:read", &[]);
    r.at_least_revision = granted.revision;
    let answer = s
        .check()
        .check(req(r.clone(), s.key()))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed);
    assert!(answer.revision >= granted.revision);
    r.at_least_revision = granted.revision + 1000;
    assert_code(
        s.check().check(req(r, s.key())).await,
        Code::FailedPrecondition,
        "ahead of storage",
    );
}

async fn bad_check_requests_name_the_field(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let mut c = s.check();
    assert_code(
        c.check(req(
            check_request(&ann.user_id, &ann.home, "prompts:fly", &[]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "permission",
    );
    assert_code(
        c.check(req(
            check_request(&ann.user_id, &ann.home, "prompts", &[]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "permission",
    );
    assert_code(
        c.check(req(
            check_request(&ann.user_id, "", "prompts:read", &[]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "workspace_id",
    );
    let mut none = check_request(&ann.user_id, &ann.home, "prompts:read", &[]);
    none.principal = None;
    assert_code(
        c.check(req(none, s.key())).await,
        Code::InvalidArgument,
        "principal",
    );
    assert_code(
        c.check(req(
            check_request(
                &ann.user_id,
                "0c0c0c0c-0000-4000-8000-000000000000",
                "prompts:read",
                &[],
            ),
            s.key(),
        ))
        .await,
        Code::PermissionDenied,
        "not reachable",
    );
}

async fn who_may_ask(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let pat = s.pat(&ann.user_id).await;
    let own = s
        .check()
        .check(req(
            check_request(&ann.user_id, &ann.home, "prompts:read", &[]),
            &pat,
        ))
        .await
        .unwrap();
    assert!(own.into_inner().allowed, "a user may check themself");
    let other = s
        .check()
        .check(req(
            check_request(&bob.user_id, &bob.home, "prompts:read", &[]),
            &pat,
        ))
        .await;
    assert_code(other, Code::PermissionDenied, "only their own");
    let sa = s.service_account("backend").await;
    let scoped = s
        .identity()
        .create_service_key(req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa,
                scope: pb::ServiceKeyScope::Workspaces as i32,
                workspace_ids: vec![ann.home.clone()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    s.check()
        .check(req(
            check_request(&bob.user_id, &ann.home, "prompts:read", &[]),
            &scoped,
        ))
        .await
        .unwrap();
    let outside = s
        .check()
        .check(req(
            check_request(&bob.user_id, &bob.home, "prompts:read", &[]),
            &scoped,
        ))
        .await;
    assert_code(outside, Code::PermissionDenied, "not scoped");
}

async fn batch_check_answers_in_order_and_is_bounded(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let checks = vec![
        check_request(&ann.user_id, &ann.home, "prompts:read", &[]),
        check_request(&ann.user_id, &ws, "prompts:read", &[]),
        check_request(&ann.user_id, &ws, "prompts:fly", &[]),
        check_request(&ann.user_id, &ann.home, "roles:manage", &[]),
    ];
    let r = s
        .check()
        .batch_check(req(pb::BatchCheckRequest { checks }, s.key()))
        .await
        .unwrap()
        .into_inner();
    let allowed: Vec<bool> = r.results.iter().map(|x| x.allowed).collect();
    assert_eq!(allowed, vec![true, false, false, true]);
    assert!(r.results[2].error.contains("permission"));
    assert!(r.results[1].error.is_empty());
    let too_many = (0..1001)
        .map(|_| check_request(&ann.user_id, &ws, "prompts:read", &[]))
        .collect();
    assert_code(
        s.check()
            .batch_check(req(pb::BatchCheckRequest { checks: too_many }, s.key()))
            .await,
        Code::InvalidArgument,
        "checks",
    );
    assert_code(
        s.check()
            .batch_check(req(pb::BatchCheckRequest { checks: vec![] }, s.key()))
            .await,
        Code::InvalidArgument,
        "checks",
    );
}

async fn explain_names_the_team_grant_or_the_missing_scope(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.application(&ws, "chat").await;
    let t = s.team("ops", &[&ann.user_id]).await;
    let g = s
        .grant(&ws, team(&t), "Contributor", app_scope("chat"))
        .await;
    let why = s
        .check()
        .explain_check(req(
            check_request(
                &ann.user_id,
                &ws,
                "prompts:update",
                &[("Application", "chat")],
            ),
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(why.allowed);
    assert_eq!(why.matched.len(), 1);
    assert_eq!(why.matched[0].grant_id, g);
    assert_eq!(why.matched[0].via_team_id, t);
    assert_eq!(why.matched[0].role, "WORKSPACE_EDITOR");
    assert!(why.reason.contains(&t));
    let why_not = s
        .check()
        .explain_check(req(
            check_request(
                &ann.user_id,
                &ws,
                "prompts:update",
                &[("Application", "other")],
            ),
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!why_not.allowed);
    assert_eq!(why_not.scope_mismatched.len(), 1);
    assert!(why_not.reason.contains("scope"));
    let nothing = s
        .check()
        .explain_check(req(
            check_request(&ann.user_id, &ws, "roles:manage", &[]),
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.reason.contains("no grant"));
}

async fn principal_permissions_are_grouped_by_scope(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.application(&ws, "chat").await;
    s.grant(&ws, user(&ann.user_id), "Reader", None).await;
    s.grant(&ws, user(&ann.user_id), "Contributor", app_scope("chat"))
        .await;
    let list = s
        .check()
        .list_principal_permissions(req(
            pb::ListPrincipalPermissionsRequest {
                principal: Some(pb::CheckPrincipal {
                    kind: Some(pb::check_principal::Kind::UserId(ann.user_id.clone())),
                }),
                workspace_id: ws,
                at_least_revision: 0,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!list.org_admin);
    assert_eq!(list.entries.len(), 2);
    assert!(list.entries[0].scope.is_none());
    assert!(
        list.entries[0]
            .permissions
            .iter()
            .all(|p| p.ends_with(":read"))
    );
    assert_eq!(list.entries[1].scope.as_ref().unwrap().application, "chat");
    assert!(
        list.entries[1]
            .permissions
            .iter()
            .any(|p| p == "prompts:update")
    );
}

async fn lookup_subjects_finds_admins_grants_and_team_members(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let cy = s.member("cy", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.grant(&ws, user(&ann.user_id), "Contributor", None).await;
    let t = s.team("ops", &[&bob.user_id]).await;
    s.grant(&ws, team(&t), "Contributor", None).await;
    s.grant(&ws, user(&cy.user_id), "Reader", None).await;
    let found = s
        .check()
        .lookup_subjects(req(
            pb::LookupSubjectsRequest {
                workspace_id: ws,
                permission: "prompts:update".into(),
                resource: None,
                at_least_revision: 0,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .subjects;
    let via = |id: &str| {
        found
            .iter()
            .find(|m| {
                m.principal.as_ref().unwrap().kind == Some(pb::principal::Kind::UserId(id.into()))
            })
            .map(|m| m.via.clone())
    };
    assert_eq!(via(&s.boot.admin_user_id).as_deref(), Some("org_admin"));
    assert_eq!(via(&ann.user_id).as_deref(), Some("grant"));
    assert_eq!(via(&bob.user_id), Some(format!("team:{t}")));
    assert_eq!(via(&cy.user_id), None, "readers may not update");
}

/// Misses read in one statement each get their own principal's standing in
/// their own workspace: rows are never mixed up, a non-member and another
/// organization's account get none, and a custom role comes with its
/// permissions.
async fn misses_read_together_get_their_own_standing(b: Backend) {
    use portcullis::store::standing::{PrincipalTable, standings};
    let s = start(b).await;
    let org = s.boot.organization_id.clone();
    let ws = s.workspace("shared").await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgViewer).await;
    let cy = s.member("cy", pb::OrgRole::OrgUser).await;
    let globex = s.globex().await;
    let ops = s.team("ops", &[&ann.user_id]).await;
    s.grant(&ws, team(&ops), "WORKSPACE_EDITOR", None).await;
    s.roles()
        .create_role(req(
            pb::CreateRoleRequest {
                name: "prompt-reader".into(),
                permissions: vec!["prompts:read".into()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.grant(&ws, user(&ann.user_id), "prompt-reader", None)
        .await;
    s.grant(&ws, user(&bob.user_id), "WORKSPACE_VIEWER", None)
        .await;
    let bot = s.service_account("bot").await;
    s.grant(
        &ws,
        pb::subject::Kind::ServiceAccountId(bot.clone()),
        "WORKSPACE_VIEWER",
        None,
    )
    .await;

    let wanted = |principal: &str, workspace: &str| {
        (org.clone(), principal.to_owned(), workspace.to_owned())
    };
    let users = standings(
        s.store.db(),
        PrincipalTable::User,
        &[
            wanted(&ann.user_id, &ws),
            wanted(&globex.admin, &ws),
            wanted(&bob.user_id, &ws),
            wanted(&cy.user_id, &ws),
            wanted(&ann.user_id, &ann.home),
        ],
    )
    .await
    .unwrap();
    assert_eq!(users.len(), 5, "one answer per miss, padding dropped");

    let ann_here = users[0].as_ref().expect("ann is a member");
    assert_eq!(ann_here.role, "ORG_USER");
    let ids: Vec<&str> = ann_here.grants.iter().map(|g| g.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "grants in id order");
    let mut roles: Vec<(&str, &str, bool)> = ann_here
        .grants
        .iter()
        .map(|g| {
            (
                g.subject_type.as_str(),
                g.subject_id.as_str(),
                g.custom_permissions.is_some(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        vec![
            ("team", ops.as_str(), false),
            ("user", ann.user_id.as_str(), true)
        ],
        "her team's grant and her own custom-role grant, nobody else's"
    );
    let custom = ann_here
        .grants
        .iter()
        .find_map(|g| g.custom_permissions.as_deref())
        .unwrap();
    assert!(custom.contains("prompts:read"), "{custom}");

    assert!(
        users[1].is_none(),
        "another organization's admin is no member here"
    );
    let bob_here = users[2].as_ref().expect("bob is a member");
    assert_eq!(bob_here.role, "ORG_VIEWER");
    assert_eq!(bob_here.grants.len(), 1);
    assert_eq!(bob_here.grants[0].role, "WORKSPACE_VIEWER");
    assert_eq!(bob_here.grants[0].subject_id, bob.user_id);
    let cy_here = users[3].as_ref().expect("cy is a member");
    assert!(
        cy_here.grants.is_empty(),
        "a member without grants here holds none"
    );
    let ann_home = users[4].as_ref().expect("ann is a member");
    assert!(
        ann_home
            .grants
            .iter()
            .all(|g| g.subject_id == ann.user_id && g.role == "WORKSPACE_ADMIN"),
        "only her grants of her default workspace: {:?}",
        ann_home.grants
    );
    assert!(!ann_home.grants.is_empty());

    let accounts = standings(
        s.store.db(),
        PrincipalTable::ServiceAccount,
        &[
            wanted(&bot, &ws),
            (globex.id.clone(), bot.clone(), ws.clone()),
            wanted(&ann.user_id, &ws),
            wanted(&s.boot.service_account_id, &ws),
        ],
    )
    .await
    .unwrap();
    let bot_here = accounts[0]
        .as_ref()
        .expect("bot is an account of the organization");
    assert!(!bot_here.platform);
    assert_eq!(bot_here.grants.len(), 1);
    assert!(
        accounts[1].is_none(),
        "not an account of the other organization"
    );
    assert!(accounts[2].is_none(), "a user is no service account");
    let platform = accounts[3]
        .as_ref()
        .expect("the platform account is an account of its organization");
    assert!(platform.platform, "read as a platform account");
}

/// Checks that miss together — more than one statement's worth, some of
/// them abandoned by their callers — each answer for their own principal:
/// every member holds a grant scoped to a tag value of their own, so a set
/// handed to the wrong member would refuse its own value or allow a
/// neighbour's.
async fn concurrent_misses_answer_each_principal(b: Backend) {
    const MEMBERS: usize = 72;
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let m = s.member(&format!("m{i}"), pb::OrgRole::OrgUser).await;
        s.grant(
            &ws,
            user(&m.user_id),
            "WORKSPACE_VIEWER",
            Some(pb::Scope {
                conditions: vec![pb::TagCondition {
                    key: "Environment".into(),
                    values: vec![format!("e{i}")],
                }],
                application: String::new(),
            }),
        )
        .await;
        members.push(m.user_id);
    }
    // Callers that give up at once: their misses are dropped or read, never answered to anyone else.
    for id in &members[..8] {
        let mut client = s.check();
        let request = req(check_request(id, &ws, "prompts:read", &[]), s.key());
        let _ = tokio::time::timeout(Duration::from_micros(1), client.check(request)).await;
    }
    let mut calls = tokio::task::JoinSet::new();
    for (i, id) in members.iter().enumerate() {
        let neighbour = format!("e{}", (i + 1) % MEMBERS);
        for (value, holds) in [(format!("e{i}"), true), (neighbour, false)] {
            let mut client = s.check();
            let request = req(
                check_request(id, &ws, "prompts:read", &[("Environment", &value)]),
                s.key(),
            );
            let id = id.clone();
            calls.spawn(async move {
                let allowed = client.check(request).await.unwrap().into_inner().allowed;
                assert_eq!(allowed, holds, "{id} on Environment={value}");
            });
        }
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = calls.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("every miss is answered");
}

/// A grant naming a custom role of another organization (stored data no
/// RPC writes: grants resolve roles in their own organization) grants
/// nothing, on the check path and on the paths that list holders.
async fn a_grant_naming_another_organizations_role_grants_nothing(b: Backend) {
    use sea_orm::ConnectionTrait;
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let cy = s.member("cy", pb::OrgRole::OrgUser).await;
    let globex = s.globex().await;
    let role = uuid::Uuid::now_v7().to_string();
    let grant = uuid::Uuid::now_v7().to_string();
    let org = &s.boot.organization_id;
    s.store
        .db()
        .execute_unprepared(&format!(
            "INSERT INTO roles (id, organization_id, name, description, permissions, created_at, updated_at) \
             VALUES ('{role}', '{}', 'foreign', '', '[\"prompts:read\"]', 0, 0); \
             INSERT INTO grants (id, organization_id, workspace_id, subject_type, subject_id, role, scope, created_at) \
             VALUES ('{grant}', '{org}', '{ws}', 'user', '{}', '{role}', NULL, 0)",
            globex.id, cy.user_id
        ))
        .await
        .unwrap();
    assert!(
        !s.allowed(&cy.user_id, &ws, "prompts:read", &[]).await,
        "another organization's role gives nothing here"
    );
    let holders = s
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
        .into_inner();
    assert!(
        !format!("{holders:?}").contains(&cy.user_id),
        "nor does it make a holder: {holders:?}"
    );
}

/// A personal access token sent without `x-tenant-id` asks in its user's
/// default workspace, on every question-asking RPC; a key with no default
/// workspace is told to name one.
async fn pat_without_tenant_asks_in_the_default_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.grant(&ws, user(&ann.user_id), "WORKSPACE_VIEWER", None)
        .await;
    let pat = s.pat(&ann.user_id).await;
    let mut c = s.check();
    // In her default workspace ann is admin; in `shared` only a viewer.
    let home = check_request(&ann.user_id, "", "prompts:delete", &[]);
    let d = c.check(req(home.clone(), &pat)).await.unwrap().into_inner();
    assert!(d.allowed, "the default workspace is ann's own");
    let in_shared = c
        .check(with(home.clone(), &pat, &[("x-tenant-id", &ws)]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !in_shared.allowed,
        "x-tenant-id still wins over the default"
    );
    let batch = c
        .batch_check(req(
            pb::BatchCheckRequest {
                checks: vec![
                    home.clone(),
                    check_request(&ann.user_id, &ws, "prompts:delete", &[]),
                ],
            },
            &pat,
        ))
        .await
        .unwrap()
        .into_inner();
    let allowed: Vec<bool> = batch.results.iter().map(|r| r.allowed).collect();
    assert_eq!(allowed, [true, false]);
    assert!(batch.results.iter().all(|r| r.error.is_empty()));
    let e = c
        .explain_check(req(home.clone(), &pat))
        .await
        .unwrap()
        .into_inner();
    assert!(e.allowed, "{}", e.reason);
    let listed = c
        .list_principal_permissions(req(
            pb::ListPrincipalPermissionsRequest {
                principal: home.principal.clone(),
                workspace_id: String::new(),
                at_least_revision: 0,
            },
            &pat,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .entries
            .iter()
            .any(|e| e.permissions.iter().any(|p| p == "prompts:delete")),
        "the default workspace's permissions: {listed:?}"
    );
    // An organization-wide service key has no default workspace.
    assert_code(
        c.check(req(home.clone(), s.key())).await,
        Code::InvalidArgument,
        "workspace_id",
    );
    let batch = c
        .batch_check(req(pb::BatchCheckRequest { checks: vec![home] }, s.key()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        batch.results[0].error.contains("workspace_id"),
        "{:?}",
        batch.results[0]
    );
}

both_backends!(
    default_deny_and_direct_grants,
    org_admin_may_do_everything_in_every_workspace,
    revocation_is_seen_by_the_next_check,
    removed_members_are_denied_at_once,
    deleted_service_accounts_are_denied,
    api_key_principals_are_authenticated_and_limited,
    scoped_grants_use_inline_or_registered_tags,
    answers_carry_revisions_and_honour_at_least_revision,
    bad_check_requests_name_the_field,
    who_may_ask,
    batch_check_answers_in_order_and_is_bounded,
    explain_names_the_team_grant_or_the_missing_scope,
    principal_permissions_are_grouped_by_scope,
    lookup_subjects_finds_admins_grants_and_team_members,
    misses_read_together_get_their_own_standing,
    concurrent_misses_answer_each_principal,
    a_grant_naming_another_organizations_role_grants_nothing,
    pat_without_tenant_asks_in_the_default_workspace,
);
