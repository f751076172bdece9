//! The security model, one rule per test, each named after the rule and
//! written as the attack it stops (README "Security model"):
//! platform powers and platform accounts belong to no organization; a key
//! limited to workspaces does no organization-wide work; ids have one
//! spelling and unauthorized callers leave nothing in the caches; text is
//! bounded; tenants read no other tenant's people; decisions a change depends
//! on are made inside it; members join by consent; plans are the platform's;
//! inline tags follow the registered-tag rules; foreign and unknown objects
//! get one answer; nothing delegates more than its caller holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use harness::{
    Backend, TestServer, account_key, as_user, assert_code, check_request, req, service_key, start,
    with,
};
use portcullis::{
    authz::cache::{PrincipalKind, SetKey, parse_id},
    config::DeploymentMode,
    proto::v1 as pb,
};
use tonic::Code;

/// An hour from now.
fn in_an_hour() -> portcullis::proto::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    portcullis::proto::Timestamp {
        seconds: i64::try_from(now).unwrap() + 3600,
        nanos: 0,
    }
}

fn tags(pairs: &[(&str, &str)]) -> Vec<pb::Tag> {
    pairs
        .iter()
        .map(|(k, v)| pb::Tag {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

fn user_subject(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        kind: Some(pb::subject::Kind::UserId(id.into())),
    })
}

/// Globex, a second tenant: (its id, its admin Zed, his default workspace).
async fn globex(s: &TestServer) -> (String, String, String) {
    let g = s.globex().await;
    (g.id, g.admin, g.home)
}

// ---------------------------------------------------------------------------
// Platform tier

async fn organization_admins_cannot_reach_the_platform_account(b: Backend) {
    let s = start(b).await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let platform_sa = s.boot.service_account_id.clone();
    let mut id = s.identity();
    // Not listed as the organization's, nor its key.
    let accounts = id
        .list_service_accounts(req(pb::ListServiceAccountsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .service_accounts;
    assert!(accounts.iter().all(|a| a.id != platform_sa));
    let keys = id
        .list_api_keys(req(pb::ListApiKeysRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(keys.iter().all(|k| k.service_account_id != platform_sa));
    // No key can be minted for it, and it cannot be deleted or given roles.
    assert_code(
        service_key(&s, &admin, &platform_sa, &[])
            .await
            .map(tonic::Response::new),
        Code::NotFound,
        "service account",
    );
    assert_code(
        id.delete_service_account(req(
            pb::DeleteServiceAccountRequest {
                organization_id: String::new(),
                service_account_id: platform_sa.clone(),
            },
            &admin,
        ))
        .await,
        Code::NotFound,
        "service account",
    );
    let ws = s.workspace("shared").await;
    assert_code(
        s.workspaces()
            .grant_access(req(
                pb::GrantAccessRequest {
                    workspace_id: ws,
                    subject: Some(pb::Subject {
                        kind: Some(pb::subject::Kind::ServiceAccountId(platform_sa.clone())),
                    }),
                    role: "WORKSPACE_ADMIN".into(),
                    scope: None,
                    expires_at: None,
                },
                &admin,
            ))
            .await,
        Code::NotFound,
        "service account",
    );
    // Its keys cannot be revoked or re-dated by the organization.
    let platform_keys = id
        .list_api_keys(req(pb::ListApiKeysRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    let boot_key = platform_keys
        .iter()
        .find(|k| k.service_account_id == platform_sa)
        .expect("the platform sees its own keys")
        .id
        .clone();
    assert_code(
        id.revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: boot_key.clone(),
            },
            &admin,
        ))
        .await,
        Code::NotFound,
        "api key",
    );
    assert_code(
        id.update_api_key(req(
            pb::UpdateApiKeyRequest {
                api_key_id: boot_key,
                description: Some("mine now".into()),
                ..Default::default()
            },
            &admin,
        ))
        .await,
        Code::NotFound,
        "api key",
    );
    // The bootstrap key still works: nothing above changed it.
    id.who_am_i(req(pb::WhoAmIRequest {}, s.key()))
        .await
        .unwrap();
}

async fn only_platform_accounts_create_platform_accounts(b: Backend) {
    let s = start(b).await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let create = |name: &str| pb::CreateServiceAccountRequest {
        name: name.into(),
        platform: true,
        ..Default::default()
    };
    assert_code(
        s.identity()
            .create_service_account(req(create("idp-2"), &admin))
            .await,
        Code::PermissionDenied,
        "platform power",
    );
    assert_code(
        s.identity()
            .create_service_account(as_user(&s, create("idp-3"), &s.boot.admin_user_id))
            .await,
        Code::PermissionDenied,
        "platform power",
    );
    let made = s
        .identity()
        .create_service_account(req(create("billing"), s.key()))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    assert!(made.platform);
    let listed = s
        .identity()
        .list_service_accounts(req(pb::ListServiceAccountsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .service_accounts;
    assert!(listed.iter().all(|a| a.id != made.id));
    // Its creation is in the platform log, not the organization's.
    let org_log = s
        .audit()
        .list_audit_events(req(
            pb::ListAuditEventsRequest {
                action: "service_account.create".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(org_log.iter().all(|e| e.target_id != made.id));
}

async fn acting_for_a_user_stays_in_their_organizations(b: Backend) {
    let s = start(b).await;
    let (globex_id, zed, zed_home) = globex(&s).await;
    let ann = s.member("ann", pb::OrgRole::OrgAdmin).await;
    // Acting for Zed (Globex only) reaches nothing of acme.
    assert_code(
        s.identity()
            .list_members(as_user(
                &s,
                pb::ListMembersRequest {
                    organization_id: s.boot.organization_id.clone(),
                    ..Default::default()
                },
                &zed,
            ))
            .await,
        Code::PermissionDenied,
        "not reachable",
    );
    assert_code(
        s.workspaces()
            .get_workspace(as_user(
                &s,
                pb::GetWorkspaceRequest {
                    workspace_id: ann.home.clone(),
                },
                &zed,
            ))
            .await,
        Code::PermissionDenied,
        "not reachable",
    );
    // Acting for Ann (acme's admin) reaches nothing of Globex.
    assert_code(
        s.identity()
            .list_members(as_user(
                &s,
                pb::ListMembersRequest {
                    organization_id: globex_id.clone(),
                    ..Default::default()
                },
                &ann.user_id,
            ))
            .await,
        Code::PermissionDenied,
        "not reachable",
    );
    assert_code(
        s.workspaces()
            .create_workspace(as_user(
                &s,
                pb::CreateWorkspaceRequest {
                    organization_id: globex_id,
                    key: "takeover".into(),
                    name: String::new(),
                },
                &ann.user_id,
            ))
            .await,
        Code::PermissionDenied,
        "not reachable",
    );
    // Zed acts in Globex as Globex's admin.
    s.workspaces()
        .get_workspace(as_user(
            &s,
            pb::GetWorkspaceRequest {
                workspace_id: zed_home,
            },
            &zed,
        ))
        .await
        .unwrap();
}

async fn acting_for_a_user_never_exceeds_the_keys_reach(b: Backend) {
    let s = start(b).await;
    let inside = s.workspace("inside").await;
    let outside = s.workspace("outside").await;
    let limited = service_key(&s, s.key(), &s.boot.service_account_id, &[&inside])
        .await
        .unwrap();
    let admin = s.boot.admin_user_id.clone();
    let act = |msg| with(msg, &limited, &[("x-act-as-user", admin.as_str())]);
    s.workspaces()
        .get_workspace(act(pb::GetWorkspaceRequest {
            workspace_id: inside.clone(),
        }))
        .await
        .unwrap();
    assert_code(
        s.workspaces()
            .get_workspace(with(
                pb::GetWorkspaceRequest {
                    workspace_id: outside,
                },
                &limited,
                &[("x-act-as-user", admin.as_str())],
            ))
            .await,
        Code::PermissionDenied,
        "not scoped",
    );
    assert_code(
        s.identity()
            .create_personal_access_token(with(
                pb::CreatePersonalAccessTokenRequest::default(),
                &limited,
                &[("x-act-as-user", admin.as_str())],
            ))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        s.identity()
            .list_members(with(
                pb::ListMembersRequest::default(),
                &limited,
                &[("x-act-as-user", admin.as_str())],
            ))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        s.identity()
            .create_organization(with(
                pb::CreateOrganizationRequest {
                    name: "Elsewhere".into(),
                    plan: 0,
                },
                &limited,
                &[("x-act-as-user", admin.as_str())],
            ))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
}

// ---------------------------------------------------------------------------
// Effective power = principal ∩ key

async fn workspace_limited_keys_do_no_organization_wide_work(b: Backend) {
    let s = start(b).await;
    let mine = s.workspace("mine").await;
    let other = s.workspace("other").await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let (sa, key) = account_key(&s, "scoped-admin", pb::OrgRole::OrgAdmin, &[&mine]).await;
    let mut id = s.identity();
    assert_code(
        service_key(&s, &key, &sa, &[])
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        service_key(&s, &key, &sa, &[&mine])
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        id.update_member_role(req(
            pb::UpdateMemberRoleRequest {
                organization_id: String::new(),
                user_id: ann.user_id.clone(),
                role: pb::OrgRole::OrgAdmin as i32,
            },
            &key,
        ))
        .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        id.create_team(req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "escape".into(),
            },
            &key,
        ))
        .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        s.workspaces()
            .create_workspace(req(
                pb::CreateWorkspaceRequest {
                    organization_id: String::new(),
                    key: "escape".into(),
                    name: String::new(),
                },
                &key,
            ))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        s.audit()
            .list_audit_events(req(pb::ListAuditEventsRequest::default(), &key))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    assert_code(
        id.list_members(req(pb::ListMembersRequest::default(), &key))
            .await,
        Code::PermissionDenied,
        "limited to workspaces",
    );
    // Inside its workspace it is an admin; outside it reaches nothing.
    let settings = |ws: &str| pb::UpdateSettingsRequest {
        workspace_id: ws.into(),
        data_retention_days: Some(30),
        monthly_trace_limit: None,
        clear: vec![],
    };
    s.workspaces()
        .update_settings(req(settings(&mine), &key))
        .await
        .unwrap();
    assert_code(
        s.workspaces()
            .update_settings(req(settings(&other), &key))
            .await,
        Code::PermissionDenied,
        "not scoped",
    );
    s.workspaces()
        .grant_access(req(
            pb::GrantAccessRequest {
                workspace_id: mine,
                subject: user_subject(&ann.user_id),
                role: "WORKSPACE_VIEWER".into(),
                scope: None,
                expires_at: None,
            },
            &key,
        ))
        .await
        .unwrap();
    let listed = s
        .workspaces()
        .list_workspaces(req(pb::ListWorkspacesRequest::default(), &key))
        .await
        .unwrap()
        .into_inner()
        .workspaces;
    assert_eq!(listed.len(), 1);
}

async fn nothing_delegates_more_than_its_caller_holds(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    s.roles()
        .create_role(req(
            pb::CreateRoleRequest {
                name: "grant-manager".into(),
                permissions: vec!["roles:manage".into(), "prompts:read".into()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.grant(&ws, harness::user(&ann.user_id), "grant-manager", None)
        .await;
    s.grant(
        &ws,
        harness::user(&ann.user_id),
        "WORKSPACE_EDITOR",
        Some(pb::Scope {
            conditions: vec![pb::TagCondition {
                key: "Environment".into(),
                values: vec!["prod".into()],
            }],
            application: String::new(),
        }),
    )
    .await;
    let grant = |role: &str, scope: Option<pb::Scope>| {
        as_user(
            &s,
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: user_subject(&bob.user_id),
                role: role.into(),
                scope,
                expires_at: None,
            },
            &ann.user_id,
        )
    };
    let prod = || {
        Some(pb::Scope {
            conditions: vec![pb::TagCondition {
                key: "Environment".into(),
                values: vec!["prod".into()],
            }],
            application: String::new(),
        })
    };
    let mut w = s.workspaces();
    assert_code(
        w.grant_access(grant("WORKSPACE_ADMIN", None)).await,
        Code::PermissionDenied,
        "nothing delegates more",
    );
    assert_code(
        w.grant_access(grant("WORKSPACE_EDITOR", None)).await,
        Code::PermissionDenied,
        "nothing delegates more",
    );
    w.grant_access(grant("WORKSPACE_EDITOR", prod()))
        .await
        .unwrap();
    w.grant_access(grant("grant-manager", None)).await.unwrap();

    // A key lives no longer than the key that made it.
    let soon = in_an_hour();
    let short = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(soon),
                ..Default::default()
            },
            &s.boot.admin_user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    let sa = s.service_account("ingest").await;
    assert_code(
        service_key(&s, &short, &sa, &[])
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "expires_at",
    );
    let mut later = soon;
    later.seconds += 60;
    let mut sooner = soon;
    sooner.seconds -= 60;
    let mint = |expires_at| {
        req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa.clone(),
                scope: pb::ServiceKeyScope::Organization as i32,
                expires_at: Some(expires_at),
                ..Default::default()
            },
            &short,
        )
    };
    assert_code(
        s.identity().create_service_key(mint(later)).await,
        Code::PermissionDenied,
        "expires_at",
    );
    s.identity().create_service_key(mint(sooner)).await.unwrap();
}

// ---------------------------------------------------------------------------
// Canonical ids, authorization before caching

async fn ids_have_one_spelling(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgAdmin).await;
    let mut c = s.check();
    for spelling in [
        ann.user_id.to_uppercase(),
        format!("{{{}}}", ann.user_id),
        format!("urn:uuid:{}", ann.user_id),
        ann.user_id.replace('-', ""),
    ] {
        assert_code(
            c.check(req(
                check_request(&spelling, &ann.home, "prompts:read", &[]),
                s.key(),
            ))
            .await,
            Code::InvalidArgument,
            "principal.user_id: must be an id in canonical form",
        );
        assert_code(
            c.check(req(
                check_request(&ann.user_id, &spelling, "prompts:read", &[]),
                s.key(),
            ))
            .await,
            Code::InvalidArgument,
            "workspace_id",
        );
    }
    let mut no_ws = check_request(&ann.user_id, "", "prompts:read", &[]);
    no_ws.workspace_id = String::new();
    assert_code(
        c.check(with(
            no_ws,
            s.key(),
            &[("x-tenant-id", &ann.home.to_uppercase())],
        ))
        .await,
        Code::InvalidArgument,
        "x-tenant-id",
    );
    assert!(
        s.allowed(&ann.user_id, &ann.home, "prompts:read", &[])
            .await
    );
}

async fn unauthorized_checks_leave_nothing_in_the_cache(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgAdmin).await;
    let (globex_id, zed, _) = globex(&s).await;
    let outsider = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                organization_id: globex_id,
                ..Default::default()
            },
            &zed,
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    let key = SetKey {
        kind: PrincipalKind::User,
        principal: parse_id(&ann.user_id).unwrap(),
        workspace: parse_id(&ann.home).unwrap(),
    };
    let question = check_request(&ann.user_id, &ann.home, "prompts:read", &[]);
    assert_code(
        s.check().check(req(question.clone(), &outsider)).await,
        Code::PermissionDenied,
        "not reachable",
    );
    let batch = pb::BatchCheckRequest {
        checks: vec![question.clone(); 10],
    };
    let answered = s
        .check()
        .batch_check(req(batch, &outsider))
        .await
        .unwrap()
        .into_inner();
    assert!(answered.results.iter().all(|r| !r.allowed));
    assert!(
        s.state.decisions.get(&key, 0).is_none(),
        "an unauthorized question cached the set it asked about"
    );
    // The organization's own question caches it and is answered right.
    assert!(
        s.allowed(&ann.user_id, &ann.home, "prompts:read", &[])
            .await
    );
    assert!(s.state.decisions.get(&key, 0).is_some());
}

async fn foreign_and_unknown_workspaces_get_one_answer(b: Backend) {
    let s = start(b).await;
    let (_, _, zed_home) = globex(&s).await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let unknown = "0191c1d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d".to_owned();
    let mut answers = Vec::new();
    for ws in [&zed_home, &unknown] {
        let got = s
            .workspaces()
            .get_workspace(req(
                pb::GetWorkspaceRequest {
                    workspace_id: ws.clone(),
                },
                &admin,
            ))
            .await
            .unwrap_err();
        let checked = s
            .check()
            .check(req(
                check_request(&s.boot.admin_user_id, ws, "prompts:read", &[]),
                &admin,
            ))
            .await
            .unwrap_err();
        // A change reads the key, its principal's standing and the workspace
        // in one statement; a personal key and a service key alike.
        let mut changed = Vec::new();
        for key in [admin.as_str(), s.key()] {
            let refused = s
                .workspaces()
                .set_resource_tags(req(
                    pb::SetResourceTagsRequest {
                        workspace_id: ws.clone(),
                        resource_type: "prompts".into(),
                        resource_id: "probe".into(),
                        tags: Vec::new(),
                    },
                    key,
                ))
                .await
                .unwrap_err();
            changed.push((
                refused.code(),
                refused.message().replace(ws.as_str(), "<id>"),
            ));
        }
        answers.push((
            got.code(),
            got.message().replace(ws.as_str(), "<id>"),
            checked.code(),
            checked.message().replace(ws.as_str(), "<id>"),
            changed,
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, Code::PermissionDenied);
    assert_eq!(answers[0].4[0].0, Code::PermissionDenied);
    assert_eq!(answers[0].4[1].0, Code::PermissionDenied);
    // The same keys change their own organization's workspace.
    let own = s.workspace("probe-home").await;
    for key in [admin.as_str(), s.key()] {
        s.workspaces()
            .set_resource_tags(req(
                pb::SetResourceTagsRequest {
                    workspace_id: own.clone(),
                    resource_type: "prompts".into(),
                    resource_id: "probe".into(),
                    tags: Vec::new(),
                },
                key,
            ))
            .await
            .expect("a change in the key's own organization");
    }
}

// ---------------------------------------------------------------------------
// Bounded text, privacy

async fn every_string_is_bounded(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let pat = |description: String| {
        as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                description,
                ..Default::default()
            },
            &ann.user_id,
        )
    };
    assert_code(
        s.identity()
            .create_personal_access_token(pat("x".repeat(257)))
            .await,
        Code::InvalidArgument,
        "description: must be at most 256 characters",
    );
    assert_code(
        s.identity()
            .create_personal_access_token(pat("x".repeat(3_000_000)))
            .await,
        Code::InvalidArgument,
        "description: must be at most 1024 bytes",
    );
    s.identity()
        .create_personal_access_token(pat("x".repeat(256)))
        .await
        .unwrap();
    // Audit details stay readable whatever a change carried.
    let ws = s.workspace("tagged").await;
    let many: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i:02}{}", "k".repeat(60)), "v".repeat(256)))
        .collect();
    s.workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws,
                resource_type: "prompts".into(),
                resource_id: "big".into(),
                tags: many
                    .iter()
                    .map(|(k, v)| pb::Tag {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            },
            s.key(),
        ))
        .await
        .unwrap();
    let events = s
        .audit()
        .list_audit_events(req(
            pb::ListAuditEventsRequest {
                page_size: 1,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].action, "resource.set_tags");
    assert!(events[0].details_json.len() <= 8192);
    assert!(events[0].details_json.contains("truncated"));
}

async fn users_are_registered_in_the_platform_log(b: Backend) {
    let s = start(b).await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let ann = s.user("ann").await;
    let registered = |log: &[pb::AuditEvent]| {
        log.iter()
            .any(|e| e.action == "user.create" && e.target_id == ann)
    };
    let org_log = s
        .audit()
        .list_audit_events(req(pb::ListAuditEventsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(!registered(&org_log));
    assert!(
        org_log
            .iter()
            .all(|e| !e.details_json.contains("ann@acme.test"))
    );
    let platform = pb::ListAuditEventsRequest {
        platform: true,
        ..Default::default()
    };
    let platform_log = s
        .audit()
        .list_audit_events(req(platform.clone(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(registered(&platform_log));
    assert!(platform_log.iter().all(|e| e.organization_id.is_empty()));
    assert_code(
        s.audit().list_audit_events(req(platform, &admin)).await,
        Code::PermissionDenied,
        "platform",
    );
}

async fn members_read_no_other_members_identity_provider_subject(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let ann_pat = s.pat(&ann.user_id).await;
    let get = |id: &str| {
        req(
            pb::GetUserRequest {
                user_id: id.to_owned(),
            },
            &ann_pat,
        )
    };
    let other = s
        .identity()
        .get_user(get(&bob.user_id))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(other.email, "bob@acme.test");
    assert_eq!(other.external_subject, "");
    let me = s
        .identity()
        .get_user(get(&ann.user_id))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.external_subject, "idp|ann");
    // Nobody outside the organization is found, known or not.
    let (_, zed, _) = globex(&s).await;
    assert_code(
        s.identity().get_user(get(&zed)).await,
        Code::NotFound,
        "not a member",
    );
}

// ---------------------------------------------------------------------------
// Decisions inside the change

/// Changes waiting on a lock, as PostgreSQL sees them: for the revision
/// row (to commit), or for a row another change holds (a membership its
/// authorization reads `FOR SHARE`).
async fn waiting_writers(db: &sea_orm::DatabaseConnection) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn a_pat_made_while_its_user_is_removed_never_works(b: Backend) {
    let s = start(b).await;
    let rounds = if b == Backend::Postgres { 1 } else { 6 };
    for round in 0..rounds {
        let ann = s.member(&format!("ann{round}"), pb::OrgRole::OrgUser).await;
        let block = harness::WriteBlock::hold(&s.db_url).await;
        let probe = sea_orm::Database::connect(&s.db_url).await.unwrap();
        let remove = {
            let mut id = s.identity();
            let r = req(
                pb::RemoveMemberRequest {
                    organization_id: String::new(),
                    user_id: ann.user_id.clone(),
                },
                s.key(),
            );
            tokio::spawn(async move { id.remove_member(r).await })
        };
        if b == Backend::Postgres {
            // The removal queues first, then the token: the removal commits first.
            harness::wait_until(
                "removal waiting",
                Duration::from_secs(10),
                || waiting_writers(&probe),
                |n| *n == 1,
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let create = {
            let mut id = s.identity();
            let r = as_user(
                &s,
                pb::CreatePersonalAccessTokenRequest::default(),
                &ann.user_id,
            );
            tokio::spawn(async move { id.create_personal_access_token(r).await })
        };
        if b == Backend::Postgres {
            harness::wait_until(
                "token waiting",
                Duration::from_secs(10),
                || waiting_writers(&probe),
                |n| *n == 2,
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        block.release().await;
        remove.await.unwrap().unwrap();
        let created = create.await.unwrap();
        // Back in the organization, the user must not find a token made in the race working.
        s.identity()
            .add_member(req(
                pb::AddMemberRequest {
                    organization_id: String::new(),
                    user_id: ann.user_id.clone(),
                    role: pb::OrgRole::OrgUser as i32,
                },
                s.key(),
            ))
            .await
            .unwrap();
        match created {
            Ok(made) => assert_code(
                s.identity()
                    .who_am_i(req(pb::WhoAmIRequest {}, &made.into_inner().key))
                    .await,
                Code::Unauthenticated,
                "revoked",
            ),
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                if b == Backend::Postgres {
                    assert!(status.message().contains("not reachable"), "{status:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Consent, plans

async fn organizations_invite_and_only_the_platform_adds_members(b: Backend) {
    let s = start(b).await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let (_, zed, _) = globex(&s).await;
    let add = |user: &str| {
        req(
            pb::AddMemberRequest {
                organization_id: String::new(),
                user_id: user.into(),
                role: pb::OrgRole::OrgViewer as i32,
            },
            &admin,
        )
    };
    // Known and unknown users get the same refusal: no oracle, no email.
    let known = s.identity().add_member(add(&zed)).await.unwrap_err();
    let unknown = s
        .identity()
        .add_member(add("0191c1d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"))
        .await
        .unwrap_err();
    assert_eq!(known.code(), Code::PermissionDenied);
    assert_eq!(
        (known.code(), known.message()),
        (unknown.code(), unknown.message())
    );
    assert!(known.message().contains("invite"), "{known:?}");
    // The invite is how a person joins: they accept it themself.
    let invite = s
        .identity()
        .create_invite(req(
            pb::CreateInviteRequest {
                organization_id: String::new(),
                email: "zed@acme.test".into(),
                role: pb::OrgRole::OrgViewer as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap();
    s.identity()
        .accept_invite(as_user(
            &s,
            pb::AcceptInviteRequest {
                invite_id: invite.id,
            },
            &zed,
        ))
        .await
        .unwrap();
}

async fn plans_are_the_platforms_to_set_in_saas(b: Backend) {
    let s = harness::start_with(b, DeploymentMode::Saas).await;
    let ann = s.user("ann").await;
    assert_code(
        s.identity()
            .create_organization(as_user(
                &s,
                pb::CreateOrganizationRequest {
                    name: "Initech".into(),
                    plan: pb::Plan::Enterprise as i32,
                },
                &ann,
            ))
            .await,
        Code::PermissionDenied,
        "plan",
    );
    let org = s.organization(&ann, "Initech", 0).await;
    assert_eq!(org.plan, pb::Plan::Personal as i32);
    let upgrade = pb::UpdateOrganizationRequest {
        organization_id: org.id.clone(),
        plan: Some(pb::Plan::Enterprise as i32),
        ..Default::default()
    };
    assert_code(
        s.identity()
            .update_organization(as_user(&s, upgrade.clone(), &ann))
            .await,
        Code::PermissionDenied,
        "platform power",
    );
    let upgraded = s
        .identity()
        .update_organization(req(upgrade, s.key()))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(upgraded.plan, pb::Plan::Enterprise as i32);
}

// ---------------------------------------------------------------------------
// Inline tags

async fn inline_tags_follow_the_registered_tag_rules(b: Backend) {
    let s = start(b).await;
    let (ann, ws) = s.viewer_of_shared().await;
    s.grant(
        &ws,
        harness::user(&ann),
        "WORKSPACE_EDITOR",
        Some(pb::Scope {
            conditions: vec![pb::TagCondition {
                key: "Environment".into(),
                values: vec!["prod".into()],
            }],
            application: String::new(),
        }),
    )
    .await;
    let ask = |id: &str, inline: &[(&str, &str)]| {
        let mut q = check_request(&ann, &ws, "prompts:update", &[]);
        let resource = q.resource.as_mut().unwrap();
        resource.id = id.into();
        resource.tags = tags(inline);
        req(q, s.key())
    };
    let mut c = s.check();
    assert_code(
        c.check(ask("", &[("Environment", "dev"), ("Environment", "prod")]))
            .await,
        Code::InvalidArgument,
        "resource.tags: key `Environment` appears twice",
    );
    assert_code(
        c.check(ask("", &[("not a key", "prod")])).await,
        Code::InvalidArgument,
        "resource.tags",
    );
    // Unregistered: the inline tags decide.
    assert!(
        c.check(ask("draft", &[("Environment", "prod")]))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    // Registered: the registered tags decide, whatever is sent inline.
    s.workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws.clone(),
                resource_type: "prompts".into(),
                resource_id: "welcome".into(),
                tags: tags(&[("Environment", "dev")]),
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !c.check(ask("welcome", &[("Environment", "prod")]))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    // Nor under another name: no type means the permission's, any other is refused.
    let mut untyped = ask("welcome", &[("Environment", "prod")]);
    untyped.get_mut().resource.as_mut().unwrap().r#type = String::new();
    assert!(!c.check(untyped).await.unwrap().into_inner().allowed);
    for other in ["PROMPTS", "datasets", "nosuchtype"] {
        let mut typed = ask("welcome", &[("Environment", "prod")]);
        typed.get_mut().resource.as_mut().unwrap().r#type = other.into();
        assert_code(
            c.check(typed).await,
            Code::InvalidArgument,
            "resource.type: must be the permission's resource type `prompts`",
        );
    }
    let mut untyped = ask("welcome", &[("Environment", "prod")]);
    untyped.get_mut().resource.as_mut().unwrap().r#type = String::new();
    let found = s
        .check()
        .lookup_subjects(req(
            pb::LookupSubjectsRequest {
                workspace_id: ws.clone(),
                permission: "prompts:update".into(),
                resource: untyped.into_inner().resource,
                at_least_revision: 0,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .subjects;
    assert!(
        found.iter().all(|m| m.principal
            != Some(pb::Principal {
                kind: Some(pb::principal::Kind::UserId(ann.clone()))
            })),
        "{found:?}"
    );
    let explained = c
        .explain_check(ask("welcome", &[("Environment", "prod")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!explained.allowed);
    assert!(
        explained.reason.contains("registered"),
        "{}",
        explained.reason
    );
}

// ---------------------------------------------------------------------------
// Small holes of the key rules

async fn viewers_cannot_extend_their_tokens(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let soon = in_an_hour();
    let made = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(soon),
                ..Default::default()
            },
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    s.identity()
        .update_member_role(req(
            pb::UpdateMemberRoleRequest {
                organization_id: String::new(),
                user_id: ann.user_id.clone(),
                role: pb::OrgRole::OrgViewer as i32,
            },
            s.key(),
        ))
        .await
        .unwrap();
    let key_id = made.api_key.unwrap().id;
    assert_code(
        s.identity()
            .update_api_key(req(
                pb::UpdateApiKeyRequest {
                    api_key_id: key_id.clone(),
                    clear_expiry: true,
                    ..Default::default()
                },
                &made.key,
            ))
            .await,
        Code::PermissionDenied,
        "personal_access_tokens:create",
    );
    // Giving power up is always allowed.
    s.identity()
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: key_id,
            },
            &made.key,
        ))
        .await
        .unwrap();
}

async fn disabled_token_creation_disables_extension_too(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let in_an_hour = in_an_hour();
    let made = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(in_an_hour),
                ..Default::default()
            },
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    s.identity()
        .update_organization(req(
            pb::UpdateOrganizationRequest {
                pat_creation_disabled: Some(true),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    let key_id = made.api_key.unwrap().id;
    // Ann signed in (a key of her own cannot outlive itself anyway).
    let update = |clear_expiry: bool, expires_at: Option<portcullis::proto::Timestamp>| {
        as_user(
            &s,
            pb::UpdateApiKeyRequest {
                api_key_id: key_id.clone(),
                clear_expiry,
                expires_at,
                ..Default::default()
            },
            &ann.user_id,
        )
    };
    let mut later = in_an_hour;
    later.seconds += 3600;
    for extension in [update(true, None), update(false, Some(later))] {
        assert_code(
            s.identity().update_api_key(extension).await,
            Code::FailedPrecondition,
            "disabled",
        );
    }
    // Shortening stays possible.
    let mut sooner = in_an_hour;
    sooner.seconds -= 600;
    s.identity()
        .update_api_key(update(false, Some(sooner)))
        .await
        .unwrap();
}

async fn nothing_takes_away_what_its_caller_could_not_give(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    s.roles()
        .create_role(req(
            pb::CreateRoleRequest {
                name: "grant-manager".into(),
                permissions: vec!["roles:manage".into(), "prompts:read".into()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.grant(&ws, harness::user(&ann.user_id), "grant-manager", None)
        .await;
    let owner = s
        .grant(&ws, harness::user(&bob.user_id), "WORKSPACE_ADMIN", None)
        .await;
    let reader = s
        .grant(&ws, harness::user(&bob.user_id), "grant-manager", None)
        .await;
    let revoke = |grant_id: &str| {
        as_user(
            &s,
            pb::RevokeAccessRequest {
                workspace_id: ws.clone(),
                grant_id: grant_id.into(),
            },
            &ann.user_id,
        )
    };
    assert_code(
        s.workspaces().revoke_access(revoke(&owner)).await,
        Code::PermissionDenied,
        "nothing takes away what its caller could not give",
    );
    assert!(s.allowed(&bob.user_id, &ws, "members:manage", &[]).await);
    s.workspaces().revoke_access(revoke(&reader)).await.unwrap();
}

async fn platform_accounts_are_invisible_to_organizations(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("shared").await;
    let platform_sa = s.boot.service_account_id.clone();
    let grant = s
        .grant(
            &ws,
            pb::subject::Kind::ServiceAccountId(platform_sa.clone()),
            "WORKSPACE_VIEWER",
            None,
        )
        .await;
    let admin = s.pat(&s.boot.admin_user_id).await;
    let list = |key: &str| {
        let mut w = s.workspaces();
        let r = req(
            pb::ListAccessRequest {
                workspace_id: ws.clone(),
                ..Default::default()
            },
            key,
        );
        async move { w.list_access(r).await.unwrap().into_inner().grants }
    };
    assert!(list(s.key()).await.iter().any(|g| g.id == grant));
    assert!(list(&admin).await.iter().all(|g| g.id != grant));
    let subjects = s
        .check()
        .lookup_subjects(req(
            pb::LookupSubjectsRequest {
                workspace_id: ws.clone(),
                permission: "prompts:read".into(),
                resource: None,
                at_least_revision: 0,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .subjects;
    let platform = Some(pb::Principal {
        kind: Some(pb::principal::Kind::ServiceAccountId(platform_sa.clone())),
    });
    assert!(
        subjects.iter().all(|m| m.principal != platform),
        "{subjects:?}"
    );
    // Asked about by the organization, it is answered as no account at all.
    let mut about = check_request("", &ws, "prompts:read", &[]);
    about.principal = Some(pb::CheckPrincipal {
        kind: Some(pb::check_principal::Kind::ServiceAccountId(platform_sa)),
    });
    assert!(
        !s.check()
            .check(req(about.clone(), &admin))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    let explained = s
        .check()
        .explain_check(req(about.clone(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.org_role, pb::OrgRole::Unspecified as i32);
    assert!(explained.matched.is_empty());
    assert!(
        explained.reason.contains("not a member"),
        "{}",
        explained.reason
    );
    assert!(
        s.check()
            .check(req(about, s.key()))
            .await
            .unwrap()
            .into_inner()
            .allowed,
        "the platform sees itself"
    );
    assert_code(
        s.workspaces()
            .revoke_access(req(
                pb::RevokeAccessRequest {
                    workspace_id: ws,
                    grant_id: grant,
                },
                &admin,
            ))
            .await,
        Code::NotFound,
        "grant",
    );
}

async fn metadata_timestamps_and_keys_mean_one_thing(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    // A second tenant or credential is refused, not silently dropped.
    let mut twice = req(pb::WhoAmIRequest {}, s.key());
    for ws in [&ann.home, &ann.home] {
        twice
            .metadata_mut()
            .append("x-tenant-id", ws.parse().unwrap());
    }
    assert_code(
        s.identity().who_am_i(twice).await,
        Code::InvalidArgument,
        "x-tenant-id: must be sent once",
    );
    let mut two_keys = req(pb::WhoAmIRequest {}, s.key());
    two_keys.metadata_mut().append(
        "authorization",
        format!("Bearer {}", s.key()).parse().unwrap(),
    );
    assert_code(
        s.identity().who_am_i(two_keys).await,
        Code::Unauthenticated,
        "sent once",
    );
    // Timestamps a strict client could not read back are refused.
    for (seconds, nanos) in [
        (253_402_300_800, 0),
        (4_102_444_800, -1),
        (4_102_444_800, 2_000_000_000),
    ] {
        assert_code(
            s.identity()
                .create_personal_access_token(as_user(
                    &s,
                    pb::CreatePersonalAccessTokenRequest {
                        expires_at: Some(portcullis::proto::Timestamp { seconds, nanos }),
                        ..Default::default()
                    },
                    &ann.user_id,
                ))
                .await,
            Code::InvalidArgument,
            "expires_at: must be a valid timestamp",
        );
    }
    // Default workspaces' keys are nobody else's to take.
    let prefix = format!("personal-{}", &ann.user_id.replace('-', "")[..12]);
    assert_code(
        s.workspaces()
            .update_workspace(as_user(
                &s,
                pb::UpdateWorkspaceRequest {
                    workspace_id: ann.home.clone(),
                    key: Some(prefix),
                    name: None,
                },
                &ann.user_id,
            ))
            .await,
        Code::InvalidArgument,
        "default workspaces",
    );
    assert_code(
        s.workspaces()
            .create_workspace(req(
                pb::CreateWorkspaceRequest {
                    key: "personal-squat".into(),
                    ..Default::default()
                },
                s.key(),
            ))
            .await,
        Code::InvalidArgument,
        "default workspaces",
    );
}

async fn a_user_belongs_to_a_bounded_number_of_organizations(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let create = |i: usize| {
        as_user(
            &s,
            pb::CreateOrganizationRequest {
                name: format!("org {i}"),
                plan: 0,
            },
            &ann,
        )
    };
    for i in 0..100 {
        s.identity().create_organization(create(i)).await.unwrap();
    }
    assert_code(
        s.identity().create_organization(create(100)).await,
        Code::FailedPrecondition,
        "at most 100 organizations",
    );
}

async fn grants_and_accounts_stay_within_their_bounds(b: Backend) {
    let s = harness::start_with(b, DeploymentMode::Saas).await;
    let shared = s.workspace("shared").await;
    let ann = s.member("ann", pb::OrgRole::OrgAdmin).await;
    let wide = pb::Scope {
        conditions: (0..16)
            .map(|k| pb::TagCondition {
                key: format!("Key{k}"),
                values: (0..32).map(|v| format!("value-{v:04}")).collect(),
            })
            .collect(),
        application: String::new(),
    };
    assert_code(
        s.workspaces()
            .grant_access(req(
                pb::GrantAccessRequest {
                    workspace_id: shared,
                    subject: user_subject(&ann.user_id),
                    role: "WORKSPACE_VIEWER".into(),
                    scope: Some(wide),
                    expires_at: None,
                },
                s.key(),
            ))
            .await,
        Code::InvalidArgument,
        "scope: at most 4096 bytes",
    );
    let ws = s.workspace("crowded").await;
    let grant = |i: usize| {
        req(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: user_subject(&ann.user_id),
                role: "WORKSPACE_VIEWER".into(),
                scope: Some(pb::Scope {
                    conditions: vec![pb::TagCondition {
                        key: "Environment".into(),
                        values: vec![format!("e{i}")],
                    }],
                    application: String::new(),
                }),
                expires_at: None,
            },
            s.key(),
        )
    };
    for i in 0..100 {
        s.workspaces().grant_access(grant(i)).await.unwrap();
    }
    assert_code(
        s.workspaces().grant_access(grant(100)).await,
        Code::FailedPrecondition,
        "the most one subject may",
    );
    // In saas mode the plan gates service accounts' roles as members'.
    let zed = s.user("zed").await;
    let org = s.organization(&zed, "Initech", 0).await;
    let account = |role: pb::OrgRole| {
        as_user(
            &s,
            pb::CreateServiceAccountRequest {
                organization_id: org.id.clone(),
                name: format!("{role:?}"),
                role: role as i32,
                ..Default::default()
            },
            &zed,
        )
    };
    assert_code(
        s.identity()
            .create_service_account(account(pb::OrgRole::OrgViewer))
            .await,
        Code::FailedPrecondition,
        "plus plan",
    );
    s.identity()
        .create_service_account(account(pb::OrgRole::OrgAdmin))
        .await
        .unwrap();
}

both_backends!(
    grants_and_accounts_stay_within_their_bounds,
    a_user_belongs_to_a_bounded_number_of_organizations,
    metadata_timestamps_and_keys_mean_one_thing,
    nothing_takes_away_what_its_caller_could_not_give,
    platform_accounts_are_invisible_to_organizations,
    disabled_token_creation_disables_extension_too,
    organization_admins_cannot_reach_the_platform_account,
    only_platform_accounts_create_platform_accounts,
    acting_for_a_user_stays_in_their_organizations,
    acting_for_a_user_never_exceeds_the_keys_reach,
    workspace_limited_keys_do_no_organization_wide_work,
    nothing_delegates_more_than_its_caller_holds,
    ids_have_one_spelling,
    unauthorized_checks_leave_nothing_in_the_cache,
    foreign_and_unknown_workspaces_get_one_answer,
    every_string_is_bounded,
    users_are_registered_in_the_platform_log,
    members_read_no_other_members_identity_provider_subject,
    a_pat_made_while_its_user_is_removed_never_works,
    organizations_invite_and_only_the_platform_adds_members,
    plans_are_the_platforms_to_set_in_saas,
    inline_tags_follow_the_registered_tag_rules,
    viewers_cannot_extend_their_tokens,
);
