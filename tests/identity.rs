//! IdentityService: organizations, users, members, invites, teams, service
//! accounts and the audit trail of identity changes. Every test runs on
//! SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Backend, as_user, assert_code, req, start, start_with};
use portcullis::{config::DeploymentMode, proto::v1 as pb};
use tonic::Code;

async fn organization_names_tell_nothing_about_other_tenants(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    // "acme" is the bootstrap organization's name: another tenant may use it
    // too, and learns nothing of it.
    let org = s
        .identity()
        .create_organization(as_user(
            &s,
            pb::CreateOrganizationRequest {
                name: "ACME".into(),
                plan: 0,
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org.name, "ACME");
    assert_ne!(org.id, s.boot.organization_id);
}

async fn creator_becomes_admin_with_a_default_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let r = s
        .identity()
        .create_organization(as_user(
            &s,
            pb::CreateOrganizationRequest {
                name: "Globex".into(),
                plan: 0,
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner();
    let member = r.member.unwrap();
    assert_eq!(member.role, pb::OrgRole::OrgAdmin as i32);
    assert!(!member.default_workspace_id.is_empty());
    assert_eq!(r.organization.unwrap().plan, pb::Plan::Personal as i32);
    assert!(r.revision > 0);
}

async fn organization_name_is_required(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let r = s
        .identity()
        .create_organization(as_user(
            &s,
            pb::CreateOrganizationRequest {
                name: "  ".into(),
                plan: 0,
            },
            &ann,
        ))
        .await;
    assert_code(r, Code::InvalidArgument, "name");
}

async fn organizations_are_created_for_signed_in_users_only(b: Backend) {
    let s = start(b).await;
    let create = |key: &str| {
        req(
            pb::CreateOrganizationRequest {
                name: "Initech".into(),
                plan: 0,
            },
            key,
        )
    };
    // A service key has no user; a personal access token acts only inside
    // its own organization. The platform creates one for a signed-in user.
    let r = s.identity().create_organization(create(s.key())).await;
    assert_code(r, Code::PermissionDenied, "signed-in user");
    let pat = s.pat(&s.boot.admin_user_id).await;
    let r = s.identity().create_organization(create(&pat)).await;
    assert_code(r, Code::PermissionDenied, "signed-in user");
    s.organization(&s.boot.admin_user_id, "Initech", 0).await;
}

async fn only_platform_accounts_register_users(b: Backend) {
    let s = start(b).await;
    let admin_pat = s.pat(&s.boot.admin_user_id).await;
    let r = s
        .identity()
        .create_user(req(
            pb::CreateUserRequest {
                external_subject: "idp|x".into(),
                email: "x@acme.test".into(),
            },
            &admin_pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "platform power");
}

async fn users_are_validated_and_unique(b: Backend) {
    let s = start(b).await;
    let mut id = s.identity();
    let create = |subject: &str, email: &str| {
        req(
            pb::CreateUserRequest {
                external_subject: subject.into(),
                email: email.into(),
            },
            s.key(),
        )
    };
    assert_code(
        id.create_user(create("idp|a", "not-an-email")).await,
        Code::InvalidArgument,
        "email",
    );
    assert_code(
        id.create_user(create("", "a@acme.test")).await,
        Code::InvalidArgument,
        "external_subject",
    );
    let user = id
        .create_user(create("idp|a", "A@Acme.TEST"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "a@acme.test");
    assert_code(
        id.create_user(create("idp|a", "b@acme.test")).await,
        Code::AlreadyExists,
        "external_subject",
    );
    assert_code(
        id.create_user(create("idp|b", "a@acme.test")).await,
        Code::AlreadyExists,
        "email",
    );
}

async fn personal_organization_is_created_once(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let mut id = s.identity();
    let first = id
        .ensure_personal_organization(as_user(
            &s,
            pb::EnsurePersonalOrganizationRequest::default(),
            &ann,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let org = first.organization.unwrap();
    assert!(org.personal);
    assert_eq!(org.plan, pb::Plan::Personal as i32);
    let second = id
        .ensure_personal_organization(req(
            pb::EnsurePersonalOrganizationRequest {
                user_id: ann.clone(),
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!second.created);
    assert_eq!(second.organization.unwrap().id, org.id);
}

async fn concurrent_first_logins_share_one_personal_organization(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let mut id = s.identity();
            let r = as_user(&s, pb::EnsurePersonalOrganizationRequest::default(), &ann);
            tokio::spawn(async move { id.ensure_personal_organization(r).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(
            t.await
                .unwrap()
                .unwrap()
                .into_inner()
                .organization
                .unwrap()
                .id,
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

async fn personal_organization_cannot_invite(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let org = s.personal_organization(&ann).await;
    let invite = s
        .identity()
        .create_invite(as_user(
            &s,
            pb::CreateInviteRequest {
                organization_id: org.id.clone(),
                email: "bob@acme.test".into(),
                role: pb::OrgRole::OrgAdmin as i32,
                ..Default::default()
            },
            &ann,
        ))
        .await;
    assert_code(invite, Code::FailedPrecondition, "personal organization");
    let add = s
        .identity()
        .add_member(req(
            pb::AddMemberRequest {
                organization_id: org.id,
                user_id: bob,
                role: pb::OrgRole::OrgAdmin as i32,
            },
            s.key(),
        ))
        .await;
    assert_code(add, Code::FailedPrecondition, "personal organization");
}

async fn personal_organization_keeps_its_plan(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let org = s.personal_organization(&ann).await;
    let r = s
        .identity()
        .update_organization(as_user(
            &s,
            pb::UpdateOrganizationRequest {
                organization_id: org.id,
                plan: Some(pb::Plan::Plus as i32),
                ..Default::default()
            },
            &ann,
        ))
        .await;
    assert_code(r, Code::FailedPrecondition, "personal plan");
}

async fn org_user_cannot_update_organization(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
    let r = s
        .identity()
        .update_organization(as_user(
            &s,
            pb::UpdateOrganizationRequest {
                pat_creation_disabled: Some(true),
                ..Default::default()
            },
            &u.user_id,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "organization_security:manage");
}

async fn pat_of_another_organization_cannot_read_this_one(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let other = s.organization(&ann, "Globex", 0).await;
    let pat = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                organization_id: other.id,
                ..Default::default()
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    let r = s
        .identity()
        .get_organization(req(
            pb::GetOrganizationRequest {
                organization_id: s.boot.organization_id.clone(),
            },
            &pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "not reachable");
}

async fn member_rules_are_enforced(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let mut id = s.identity();
    let add = |user: &str, role: pb::OrgRole| {
        req(
            pb::AddMemberRequest {
                organization_id: String::new(),
                user_id: user.into(),
                role: role as i32,
            },
            s.key(),
        )
    };
    assert_code(
        id.add_member(add(&ann, pb::OrgRole::Unspecified)).await,
        Code::InvalidArgument,
        "role",
    );
    assert_code(
        id.add_member(add(
            "5b7c1c1e-0000-4000-8000-000000000000",
            pb::OrgRole::OrgUser,
        ))
        .await,
        Code::NotFound,
        "not found",
    );
    id.add_member(add(&ann, pb::OrgRole::OrgUser))
        .await
        .unwrap();
    assert_code(
        id.add_member(add(&ann, pb::OrgRole::OrgUser)).await,
        Code::AlreadyExists,
        "already a member",
    );
}

async fn saas_personal_plan_allows_only_admins(b: Backend) {
    let s = start_with(b, DeploymentMode::Saas).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let org = s.organization(&ann, "Globex", 0).await;
    let invite = |role: pb::OrgRole| {
        as_user(
            &s,
            pb::CreateInviteRequest {
                organization_id: org.id.clone(),
                email: "bob@acme.test".into(),
                role: role as i32,
                ..Default::default()
            },
            &ann,
        )
    };
    assert_code(
        s.identity()
            .create_invite(invite(pb::OrgRole::OrgViewer))
            .await,
        Code::FailedPrecondition,
        "plus plan",
    );
    // Plans are the platform's (billing) to set in saas mode.
    s.identity()
        .update_organization(req(
            pb::UpdateOrganizationRequest {
                organization_id: org.id.clone(),
                plan: Some(pb::Plan::Plus as i32),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.identity()
        .create_invite(invite(pb::OrgRole::OrgViewer))
        .await
        .unwrap();
    let _ = bob;
}

async fn self_hosted_bypasses_plan_checks(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let org = s.organization(&ann, "Globex", 0).await;
    let invite = s
        .identity()
        .create_invite(as_user(
            &s,
            pb::CreateInviteRequest {
                organization_id: org.id,
                email: "bob@acme.test".into(),
                role: pb::OrgRole::OrgViewer as i32,
                ..Default::default()
            },
            &ann,
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
            &bob,
        ))
        .await
        .unwrap();
}

async fn last_admin_cannot_be_demoted_or_removed(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let org = s.organization(&ann, "Globex", 3).await;
    let demote = s
        .identity()
        .update_member_role(as_user(
            &s,
            pb::UpdateMemberRoleRequest {
                organization_id: org.id.clone(),
                user_id: ann.clone(),
                role: pb::OrgRole::OrgUser as i32,
            },
            &ann,
        ))
        .await;
    assert_code(demote, Code::FailedPrecondition, "last ORG_ADMIN");
    let remove = s
        .identity()
        .remove_member(as_user(
            &s,
            pb::RemoveMemberRequest {
                organization_id: org.id,
                user_id: ann.clone(),
            },
            &ann,
        ))
        .await;
    assert_code(remove, Code::FailedPrecondition, "last ORG_ADMIN");
}

async fn removed_member_loses_pat_teams_and_listing(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let pat = s.pat(&ann.user_id).await;
    let team = s.team("platform", &[&ann.user_id]).await;
    s.identity()
        .who_am_i(req(pb::WhoAmIRequest {}, &pat))
        .await
        .unwrap();
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
    assert_code(
        s.identity().who_am_i(req(pb::WhoAmIRequest {}, &pat)).await,
        Code::Unauthenticated,
        "revoked",
    );
    let members = s
        .identity()
        .list_members(req(pb::ListMembersRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(members.iter().all(|m| m.user_id != ann.user_id));
    let teams = s
        .identity()
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let t = teams.iter().find(|t| t.id == team).unwrap();
    assert!(t.member_user_ids.is_empty());
    let again = s
        .identity()
        .remove_member(req(
            pb::RemoveMemberRequest {
                organization_id: String::new(),
                user_id: ann.user_id,
            },
            s.key(),
        ))
        .await;
    assert_code(again, Code::NotFound, "not a member");
}

async fn members_are_paged_without_duplicates(b: Backend) {
    let s = start(b).await;
    for name in ["a1", "a2", "a3", "a4"] {
        s.member(name, pb::OrgRole::OrgViewer).await;
    }
    let viewer = s.member("viewer", pb::OrgRole::OrgViewer).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .identity()
            .list_members(as_user(
                &s,
                pb::ListMembersRequest {
                    organization_id: String::new(),
                    page_size: 2,
                    page_token: token.clone(),
                },
                &viewer.user_id,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= 2);
        seen.extend(page.members.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(seen.len(), 6, "admin + five members");
}

async fn invites_flow_and_rules(b: Backend) {
    let s = start(b).await;
    let user = s.member("user", pb::OrgRole::OrgUser).await;
    let mut id = s.identity();
    let invite = |email: &str| {
        req(
            pb::CreateInviteRequest {
                organization_id: String::new(),
                email: email.into(),
                role: pb::OrgRole::OrgViewer as i32,
                ..Default::default()
            },
            s.key(),
        )
    };
    let by_user = id
        .create_invite(as_user(
            &s,
            pb::CreateInviteRequest {
                organization_id: String::new(),
                email: "x@acme.test".into(),
                role: pb::OrgRole::OrgViewer as i32,
                ..Default::default()
            },
            &user.user_id,
        ))
        .await;
    assert_code(by_user, Code::PermissionDenied, "invites:create");
    assert_code(
        id.create_invite(invite("bad")).await,
        Code::InvalidArgument,
        "email",
    );
    assert_code(
        id.create_invite(invite("user@acme.test")).await,
        Code::AlreadyExists,
        "already a member",
    );
    let inv = id
        .create_invite(invite("bea@acme.test"))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap();
    assert_code(
        id.create_invite(invite("bea@acme.test")).await,
        Code::AlreadyExists,
        "pending invite",
    );
    let listed = id
        .list_invites(req(pb::ListInvitesRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.invites.len(), 1);

    let bea = s.user("bea").await;
    let wrong = id
        .accept_invite(as_user(
            &s,
            pb::AcceptInviteRequest {
                invite_id: inv.id.clone(),
            },
            &user.user_id,
        ))
        .await;
    assert_code(wrong, Code::NotFound, "addressed to");
    let member = id
        .accept_invite(as_user(
            &s,
            pb::AcceptInviteRequest {
                invite_id: inv.id.clone(),
            },
            &bea,
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.role, pb::OrgRole::OrgViewer as i32);
    assert!(!member.default_workspace_id.is_empty());
    let gone = id
        .accept_invite(as_user(
            &s,
            pb::AcceptInviteRequest { invite_id: inv.id },
            &bea,
        ))
        .await;
    assert_code(gone, Code::NotFound, "not found");

    let other = id
        .create_invite(invite("cy@acme.test"))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap();
    id.delete_invite(req(
        pb::DeleteInviteRequest {
            organization_id: String::new(),
            invite_id: other.id.clone(),
        },
        s.key(),
    ))
    .await
    .unwrap();
    let again = id
        .delete_invite(req(
            pb::DeleteInviteRequest {
                organization_id: String::new(),
                invite_id: other.id,
            },
            s.key(),
        ))
        .await;
    assert_code(again, Code::NotFound, "not found");
}

async fn team_rules_are_enforced(b: Backend) {
    let s = start(b).await;
    let user = s.member("user", pb::OrgRole::OrgUser).await;
    let outsider = s.user("outsider").await;
    let mut id = s.identity();
    let by_user = id
        .create_team(as_user(
            &s,
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "x".into(),
            },
            &user.user_id,
        ))
        .await;
    assert_code(by_user, Code::PermissionDenied, "teams:manage");
    let empty = id
        .create_team(req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "".into(),
            },
            s.key(),
        ))
        .await;
    assert_code(empty, Code::InvalidArgument, "name");
    let team = s.team("platform", &[]).await;
    let dup = id
        .create_team(req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "platform".into(),
            },
            s.key(),
        ))
        .await;
    assert_code(dup, Code::AlreadyExists, "already exists");
    let add = |u: &str| {
        req(
            pb::AddTeamMemberRequest {
                organization_id: String::new(),
                team_id: team.clone(),
                user_id: u.into(),
                expires_at: None,
            },
            s.key(),
        )
    };
    assert_code(
        id.add_team_member(add(&outsider)).await,
        Code::FailedPrecondition,
        "not a member",
    );
    let t = id
        .add_team_member(add(&user.user_id))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(t.member_user_ids, vec![user.user_id.clone()]);
    assert_code(
        id.add_team_member(add(&user.user_id)).await,
        Code::AlreadyExists,
        "already in team",
    );
    let remove = |u: &str| {
        req(
            pb::RemoveTeamMemberRequest {
                organization_id: String::new(),
                team_id: team.clone(),
                user_id: u.into(),
            },
            s.key(),
        )
    };
    id.remove_team_member(remove(&user.user_id)).await.unwrap();
    assert_code(
        id.remove_team_member(remove(&user.user_id)).await,
        Code::NotFound,
        "not in team",
    );
    id.delete_team(req(
        pb::DeleteTeamRequest {
            organization_id: String::new(),
            team_id: team.clone(),
        },
        s.key(),
    ))
    .await
    .unwrap();
    let teams = id
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    assert!(teams.iter().all(|t| t.id != team));
}

async fn service_account_rules_are_enforced(b: Backend) {
    let s = start(b).await;
    let admin = s.boot.admin_user_id.clone();
    let mut id = s.identity();
    let create = |name: &str, act: bool| pb::CreateServiceAccountRequest {
        organization_id: String::new(),
        name: name.into(),
        role: 0,
        platform: act,
        ..Default::default()
    };
    let sa = id
        .create_service_account(req(create("ingest", false), s.key()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sa.service_account.as_ref().unwrap().role,
        pb::OrgRole::OrgViewer as i32
    );
    assert_code(
        id.create_service_account(req(create("ingest", false), s.key()))
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    let escalate = id
        .create_service_account(as_user(&s, create("idp", true), &admin))
        .await;
    assert_code(escalate, Code::PermissionDenied, "platform power");
    let sa_id = sa.service_account.unwrap().id;
    let key = id
        .create_service_key(req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa_id.clone(),
                scope: pb::ServiceKeyScope::Organization as i32,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    id.who_am_i(req(pb::WhoAmIRequest {}, &key)).await.unwrap();
    id.delete_service_account(req(
        pb::DeleteServiceAccountRequest {
            organization_id: String::new(),
            service_account_id: sa_id,
        },
        s.key(),
    ))
    .await
    .unwrap();
    assert_code(
        id.who_am_i(req(pb::WhoAmIRequest {}, &key)).await,
        Code::Unauthenticated,
        "revoked",
    );
}

async fn changes_are_audited_with_both_actors(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let first = s
        .identity()
        .create_team(as_user(
            &s,
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "ops".into(),
            },
            &s.boot.admin_user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    let events = s.audit_events("team.create").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.target_id, first.team.unwrap().id);
    assert_eq!(e.acting_for_user_id, s.boot.admin_user_id);
    assert_eq!(
        e.actor.as_ref().unwrap().kind,
        Some(pb::principal::Kind::ServiceAccountId(
            s.boot.service_account_id.clone()
        ))
    );
    assert_eq!(e.revision, first.revision);
    let by_user = s
        .audit()
        .list_audit_events(as_user(
            &s,
            pb::ListAuditEventsRequest::default(),
            &ann.user_id,
        ))
        .await;
    assert_code(by_user, Code::PermissionDenied, "audit_log:read");

    let count = |filter: pb::ListAuditEventsRequest| {
        let mut audit = s.audit();
        let key = s.key().to_owned();
        async move {
            audit
                .list_audit_events(req(filter, &key))
                .await
                .unwrap()
                .into_inner()
                .events
                .len()
        }
    };
    let by_sa = count(pb::ListAuditEventsRequest {
        actor_id: s.boot.service_account_id.clone(),
        ..Default::default()
    })
    .await;
    assert!(by_sa >= 2, "member add and team creation: {by_sa}");
    let nobody = count(pb::ListAuditEventsRequest {
        actor_id: "00000000-0000-4000-8000-000000000000".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(nobody, 0);
    let future = count(pb::ListAuditEventsRequest {
        start_time: Some(portcullis::proto::Timestamp {
            seconds: 4_102_444_800,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(future, 0, "nothing happened after 2100-01-01");
    let past = count(pb::ListAuditEventsRequest {
        end_time: Some(portcullis::proto::Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(past, 0);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .audit()
            .list_audit_events(req(
                pb::ListAuditEventsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(
        seen.len(),
        count(pb::ListAuditEventsRequest::default()).await
    );
}

async fn revisions_increase_with_every_change(b: Backend) {
    let s = start(b).await;
    let mut last = 0;
    for name in ["t1", "t2", "t3"] {
        let r = s
            .identity()
            .create_team(req(
                pb::CreateTeamRequest {
                    organization_id: String::new(),
                    name: name.into(),
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .revision;
        assert!(r > last, "{r} > {last}");
        last = r;
    }
}

both_backends!(
    organization_names_tell_nothing_about_other_tenants,
    creator_becomes_admin_with_a_default_workspace,
    organization_name_is_required,
    organizations_are_created_for_signed_in_users_only,
    only_platform_accounts_register_users,
    users_are_validated_and_unique,
    personal_organization_is_created_once,
    concurrent_first_logins_share_one_personal_organization,
    personal_organization_cannot_invite,
    personal_organization_keeps_its_plan,
    org_user_cannot_update_organization,
    pat_of_another_organization_cannot_read_this_one,
    member_rules_are_enforced,
    saas_personal_plan_allows_only_admins,
    self_hosted_bypasses_plan_checks,
    last_admin_cannot_be_demoted_or_removed,
    removed_member_loses_pat_teams_and_listing,
    members_are_paged_without_duplicates,
    invites_flow_and_rules,
    team_rules_are_enforced,
    service_account_rules_are_enforced,
    changes_are_audited_with_both_actors,
    revisions_increase_with_every_change,
);
