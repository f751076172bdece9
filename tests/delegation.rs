//! Delegation inside a workspace: service accounts confined to a workspace,
//! managed by its workspace admins, and workspace invites behind
//! `--workspace-invites`. Good and bad paths, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{
    Backend, Member, TestServer, as_user, assert_code, req, start_with_settings, user, with,
};
use portcullis::{config::Settings, proto::v1 as pb};
use tonic::Code;

/// A server (workspace invites on or off) with Ann, an ORG_USER who is
/// WORKSPACE_ADMIN of `w` (and of nothing else but her default workspace),
/// and a second workspace `other` she has no grant in.
struct Setup {
    s: TestServer,
    ann: Member,
    ann_pat: String,
    w: String,
    other: String,
}

async fn setup(b: Backend, workspace_invites: bool) -> Setup {
    let s = start_with_settings(
        b,
        Settings {
            workspace_invites,
            ..Settings::default()
        },
    )
    .await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let w = s.workspace("team-w").await;
    let other = s.workspace("other").await;
    s.grant(&w, user(&ann.user_id), "WORKSPACE_ADMIN", None)
        .await;
    let ann_pat = s.pat(&ann.user_id).await;
    Setup {
        s,
        ann,
        ann_pat,
        w,
        other,
    }
}

fn confined(name: &str, workspace: &str) -> pb::CreateServiceAccountRequest {
    pb::CreateServiceAccountRequest {
        name: name.into(),
        workspace_id: workspace.into(),
        ..Default::default()
    }
}

fn key_for(account: &str, scope: pb::ServiceKeyScope, ws: &[&str]) -> pb::CreateServiceKeyRequest {
    pb::CreateServiceKeyRequest {
        service_account_id: account.into(),
        scope: scope as i32,
        workspace_ids: ws.iter().map(|w| (*w).to_owned()).collect(),
        ..Default::default()
    }
}

fn grant_to_account(ws: &str, account: &str, role: &str) -> pb::GrantAccessRequest {
    pb::GrantAccessRequest {
        workspace_id: ws.into(),
        subject: Some(pb::Subject {
            kind: Some(pb::subject::Kind::ServiceAccountId(account.into())),
        }),
        role: role.into(),
        scope: None,
        expires_at: None,
    }
}

fn app(ws: &str, name: &str) -> pb::CreateApplicationRequest {
    pb::CreateApplicationRequest {
        workspace_id: ws.into(),
        name: name.into(),
    }
}

fn invite(ws: &str, email: &str, role: &str, org_role: pb::OrgRole) -> pb::CreateInviteRequest {
    pb::CreateInviteRequest {
        email: email.into(),
        role: org_role as i32,
        workspace_id: ws.into(),
        workspace_role: role.into(),
        ..Default::default()
    }
}

impl Setup {
    /// A service account confined to `ws`, created with `key`.
    async fn account(&self, key: &str, name: &str, ws: &str) -> pb::ServiceAccount {
        self.s
            .identity()
            .create_service_account(req(confined(name, ws), key))
            .await
            .unwrap()
            .into_inner()
            .service_account
            .unwrap()
    }

    /// A key (id, secret) of a confined account, created with `key`.
    async fn key(&self, key: &str, account: &str) -> (String, String) {
        let created = self
            .s
            .identity()
            .create_service_key(req(
                key_for(account, pb::ServiceKeyScope::Unspecified, &[]),
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        (created.api_key.unwrap().id, created.key)
    }

    /// Ann's confined account in `w`, granted `role` there by Ann, and its key.
    async fn ann_account(&self, name: &str, role: &str) -> (String, String, String) {
        let sa = self.account(&self.ann_pat, name, &self.w).await.id;
        self.s
            .workspaces()
            .grant_access(req(grant_to_account(&self.w, &sa, role), &self.ann_pat))
            .await
            .unwrap();
        let (key_id, secret) = self.key(&self.ann_pat, &sa).await;
        (sa, key_id, secret)
    }

    /// A member of the organization holding `role` in `w`, and their PAT.
    async fn member_with(&self, name: &str, role: &str) -> String {
        let m = self.s.member(name, pb::OrgRole::OrgUser).await;
        self.s.grant(&self.w, user(&m.user_id), role, None).await;
        self.s.pat(&m.user_id).await
    }
}

// ---------------------------------------------------------------------------
// Confined service accounts.

async fn workspace_admin_creates_confined_account_whose_key_acts_in_the_workspace(b: Backend) {
    let x = setup(b, false).await;
    let sa = x.account(&x.ann_pat, "ingest", &x.w).await;
    assert_eq!(sa.workspace_id, x.w);
    assert_eq!(sa.role, pb::OrgRole::OrgViewer as i32);
    x.s.workspaces()
        .grant_access(req(
            grant_to_account(&x.w, &sa.id, "WORKSPACE_EDITOR"),
            &x.ann_pat,
        ))
        .await
        .unwrap();
    let created =
        x.s.identity()
            .create_service_key(req(
                key_for(&sa.id, pb::ServiceKeyScope::Unspecified, &[]),
                &x.ann_pat,
            ))
            .await
            .unwrap()
            .into_inner();
    let key = created.api_key.unwrap();
    assert_eq!(key.workspace_ids, vec![x.w.clone()]);
    assert_eq!(key.scope, pb::ServiceKeyScope::Workspaces as i32);
    let who =
        x.s.identity()
            .who_am_i(req(pb::WhoAmIRequest::default(), &created.key))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(who.workspace_id, x.w);
    x.s.workspaces()
        .create_application(req(app(&x.w, "ingest-app"), &created.key))
        .await
        .unwrap();
    let listed =
        x.s.identity()
            .list_service_accounts(req(
                pb::ListServiceAccountsRequest {
                    workspace_id: x.w.clone(),
                    ..Default::default()
                },
                &x.ann_pat,
            ))
            .await
            .unwrap()
            .into_inner()
            .service_accounts;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sa.id);
    let keys =
        x.s.identity()
            .list_api_keys(req(
                pb::ListApiKeysRequest {
                    workspace_id: x.w.clone(),
                    ..Default::default()
                },
                &x.ann_pat,
            ))
            .await
            .unwrap()
            .into_inner()
            .api_keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key.id);
}

async fn confined_key_cannot_reach_another_workspace(b: Backend) {
    let x = setup(b, false).await;
    let (_, _, secret) = x.ann_account("ingest", "WORKSPACE_ADMIN").await;
    let r =
        x.s.workspaces()
            .create_application(req(app(&x.other, "x"), &secret))
            .await;
    assert_code(r, Code::PermissionDenied, "not scoped");
    let r =
        x.s.workspaces()
            .get_workspace(with(
                pb::GetWorkspaceRequest::default(),
                &secret,
                &[("x-tenant-id", &x.other)],
            ))
            .await;
    assert_code(r, Code::PermissionDenied, "not scoped");
    // Nor does it hold anything organization-wide.
    let r =
        x.s.identity()
            .list_members(req(pb::ListMembersRequest::default(), &secret))
            .await;
    assert_code(r, Code::PermissionDenied, "limited to workspaces");
}

async fn confined_account_cannot_be_granted_outside_its_workspace(b: Backend) {
    let x = setup(b, false).await;
    let sa = x.account(&x.ann_pat, "ingest", &x.w).await.id;
    // Not by Ann, even as admin of the other workspace too.
    x.s.grant(&x.other, user(&x.ann.user_id), "WORKSPACE_ADMIN", None)
        .await;
    let r =
        x.s.workspaces()
            .grant_access(req(
                grant_to_account(&x.other, &sa, "WORKSPACE_VIEWER"),
                &x.ann_pat,
            ))
            .await;
    assert_code(r, Code::FailedPrecondition, "confined");
    // Nor by an organization admin.
    let r =
        x.s.workspaces()
            .grant_access(req(
                grant_to_account(&x.other, &sa, "WORKSPACE_VIEWER"),
                x.s.key(),
            ))
            .await;
    assert_code(r, Code::FailedPrecondition, "confined");
}

async fn workspace_admin_cannot_give_confined_account_an_org_role(b: Backend) {
    let x = setup(b, false).await;
    for role in [pb::OrgRole::OrgAdmin, pb::OrgRole::OrgUser] {
        let r =
            x.s.identity()
                .create_service_account(req(
                    pb::CreateServiceAccountRequest {
                        role: role as i32,
                        ..confined("ingest", &x.w)
                    },
                    &x.ann_pat,
                ))
                .await;
        assert_code(r, Code::PermissionDenied, "role:");
    }
    // Not even an organization admin confines an account with a higher role.
    let r =
        x.s.identity()
            .create_service_account(req(
                pb::CreateServiceAccountRequest {
                    role: pb::OrgRole::OrgAdmin as i32,
                    ..confined("ingest", &x.w)
                },
                x.s.key(),
            ))
            .await;
    assert_code(r, Code::PermissionDenied, "role:");
    let r =
        x.s.identity()
            .create_service_account(req(
                pb::CreateServiceAccountRequest {
                    platform: true,
                    ..confined("ingest", &x.w)
                },
                x.s.key(),
            ))
            .await;
    assert_code(r, Code::InvalidArgument, "platform");
}

async fn workspace_admin_cannot_create_key_beyond_the_confinement(b: Backend) {
    let x = setup(b, false).await;
    let sa = x.account(&x.ann_pat, "ingest", &x.w).await.id;
    let wide = [
        key_for(&sa, pb::ServiceKeyScope::Organization, &[]),
        key_for(&sa, pb::ServiceKeyScope::Workspaces, &[&x.w, &x.other]),
        key_for(&sa, pb::ServiceKeyScope::Workspaces, &[&x.other]),
    ];
    for request in wide {
        for key in [x.ann_pat.as_str(), x.s.key()] {
            let r =
                x.s.identity()
                    .create_service_key(req(request.clone(), key))
                    .await;
            assert_code(r, Code::PermissionDenied, "confined");
        }
    }
    // Workspaces named without the scope that uses them are refused, not ignored.
    let unscoped =
        x.s.identity()
            .create_service_key(req(
                key_for(&sa, pb::ServiceKeyScope::Unspecified, &[&x.other]),
                &x.ann_pat,
            ))
            .await;
    assert_code(unscoped, Code::InvalidArgument, "workspace_ids");
    // Naming the workspace itself is what it gets anyway.
    x.s.identity()
        .create_service_key(req(
            key_for(&sa, pb::ServiceKeyScope::Workspaces, &[&x.w]),
            &x.ann_pat,
        ))
        .await
        .unwrap();
}

async fn workspace_admin_cannot_create_accounts_outside_their_workspace(b: Backend) {
    let x = setup(b, false).await;
    let r =
        x.s.identity()
            .create_service_account(req(confined("wide", ""), &x.ann_pat))
            .await;
    assert_code(r, Code::PermissionDenied, "service_accounts:manage");
    let r =
        x.s.identity()
            .create_service_account(req(confined("elsewhere", &x.other), &x.ann_pat))
            .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
}

async fn workspace_admin_cannot_manage_accounts_or_keys_beyond_their_workspace(b: Backend) {
    let x = setup(b, false).await;
    let boot = x.s.key().to_owned();
    let wide = x.s.service_account("wide").await;
    let wide_key =
        x.s.identity()
            .create_service_key(req(
                key_for(&wide, pb::ServiceKeyScope::Organization, &[]),
                &boot,
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap()
            .id;
    let elsewhere = x.account(&boot, "elsewhere", &x.other).await.id;
    let (elsewhere_key, _) = x.key(&boot, &elsewhere).await;
    let identity = || x.s.identity();
    let ann = x.ann_pat.as_str();

    let r = identity()
        .list_service_accounts(req(pb::ListServiceAccountsRequest::default(), ann))
        .await;
    assert_code(r, Code::PermissionDenied, "service_accounts:manage");
    let r = identity()
        .list_service_accounts(req(
            pb::ListServiceAccountsRequest {
                workspace_id: x.other.clone(),
                ..Default::default()
            },
            ann,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
    let r = identity()
        .list_api_keys(req(
            pb::ListApiKeysRequest {
                workspace_id: x.other.clone(),
                ..Default::default()
            },
            ann,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
    // Without a workspace she lists her own tokens only.
    let listed = identity()
        .list_api_keys(req(pb::ListApiKeysRequest::default(), ann))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(listed.iter().all(|k| k.user_id == x.ann.user_id));
    for account in [&wide, &elsewhere] {
        let r = identity()
            .delete_service_account(req(
                pb::DeleteServiceAccountRequest {
                    organization_id: String::new(),
                    service_account_id: account.clone(),
                },
                ann,
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "confined");
        let r = identity()
            .create_service_key(req(
                key_for(account, pb::ServiceKeyScope::Workspaces, &[&x.w]),
                ann,
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "confined");
    }
    for key in [&wide_key, &elsewhere_key] {
        let r = identity()
            .revoke_api_key(req(
                pb::RevokeApiKeyRequest {
                    organization_id: String::new(),
                    api_key_id: key.clone(),
                },
                ann,
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "api_keys:manage");
    }
    // Her own account's key and the account itself she may revoke and delete.
    let (sa, key_id, secret) = x.ann_account("mine", "WORKSPACE_VIEWER").await;
    identity()
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: key_id,
            },
            ann,
        ))
        .await
        .unwrap();
    let r = identity()
        .who_am_i(req(pb::WhoAmIRequest::default(), &secret))
        .await;
    assert_code(r, Code::Unauthenticated, "revoked");
    identity()
        .delete_service_account(req(
            pb::DeleteServiceAccountRequest {
                organization_id: String::new(),
                service_account_id: sa,
            },
            ann,
        ))
        .await
        .unwrap();
}

async fn workspace_editor_and_viewer_cannot_manage_confined_accounts(b: Backend) {
    let x = setup(b, false).await;
    let (sa, key_id, _) = x.ann_account("ingest", "WORKSPACE_VIEWER").await;
    for (name, role) in [("bob", "WORKSPACE_EDITOR"), ("carl", "WORKSPACE_VIEWER")] {
        let pat = x.member_with(name, role).await;
        let r =
            x.s.identity()
                .create_service_account(req(confined(&format!("{name}-sa"), &x.w), &pat))
                .await;
        assert_code(r, Code::PermissionDenied, "workspace admin");
        let r =
            x.s.identity()
                .list_service_accounts(req(
                    pb::ListServiceAccountsRequest {
                        workspace_id: x.w.clone(),
                        ..Default::default()
                    },
                    &pat,
                ))
                .await;
        assert_code(r, Code::PermissionDenied, "workspace admin");
        let r =
            x.s.identity()
                .create_service_key(req(
                    key_for(&sa, pb::ServiceKeyScope::Unspecified, &[]),
                    &pat,
                ))
                .await;
        assert_code(r, Code::PermissionDenied, "confined");
        let r =
            x.s.identity()
                .revoke_api_key(req(
                    pb::RevokeApiKeyRequest {
                        organization_id: String::new(),
                        api_key_id: key_id.clone(),
                    },
                    &pat,
                ))
                .await;
        assert_code(r, Code::PermissionDenied, "api_keys:manage");
    }
}

async fn confined_account_grants_are_bounded_by_the_granter_power(b: Backend) {
    let x = setup(b, false).await;
    let sa = x.account(x.s.key(), "ingest", &x.w).await.id;
    // Dave may manage roles in `w` but holds little else there.
    let role =
        x.s.roles()
            .create_role(req(
                pb::CreateRoleRequest {
                    name: "role-manager".into(),
                    permissions: vec!["roles:manage".into(), "projects:read".into()],
                    ..Default::default()
                },
                x.s.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .role
            .unwrap()
            .id;
    let dave = x.member_with("dave", &role).await;
    let r =
        x.s.workspaces()
            .grant_access(req(grant_to_account(&x.w, &sa, "WORKSPACE_ADMIN"), &dave))
            .await;
    assert_code(r, Code::PermissionDenied, "nothing delegates more");
    let r =
        x.s.identity()
            .create_service_account(req(confined("daves", &x.w), &dave))
            .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
}

async fn confined_account_keeps_only_its_grants_when_its_creator_loses_admin(b: Backend) {
    let x = setup(b, false).await;
    let (_, key_id, secret) = x.ann_account("ingest", "WORKSPACE_EDITOR").await;
    let grants =
        x.s.workspaces()
            .list_access(req(
                pb::ListAccessRequest {
                    workspace_id: x.w.clone(),
                    subject: Some(pb::Subject {
                        kind: Some(user(&x.ann.user_id)),
                    }),
                    ..Default::default()
                },
                x.s.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grants;
    for g in grants {
        x.s.workspaces()
            .revoke_access(req(
                pb::RevokeAccessRequest {
                    workspace_id: x.w.clone(),
                    grant_id: g.id,
                },
                x.s.key(),
            ))
            .await
            .unwrap();
    }
    // The account holds what it was granted in the workspace, no more.
    x.s.workspaces()
        .create_application(req(app(&x.w, "still"), &secret))
        .await
        .unwrap();
    let r =
        x.s.workspaces()
            .grant_access(req(
                grant_to_account(
                    &x.w,
                    "00000000-0000-0000-0000-000000000000",
                    "WORKSPACE_VIEWER",
                ),
                &secret,
            ))
            .await;
    assert_code(r, Code::PermissionDenied, "roles:manage");
    // Ann no longer manages it.
    let r =
        x.s.identity()
            .revoke_api_key(req(
                pb::RevokeApiKeyRequest {
                    organization_id: String::new(),
                    api_key_id: key_id,
                },
                &x.ann_pat,
            ))
            .await;
    assert_code(r, Code::PermissionDenied, "api_keys:manage");
}

async fn deleting_the_workspace_deletes_its_confined_accounts(b: Backend) {
    let x = setup(b, false).await;
    let (sa, _, secret) = x.ann_account("ingest", "WORKSPACE_EDITOR").await;
    x.s.delete_workspace(&x.w).await;
    let r =
        x.s.identity()
            .who_am_i(req(pb::WhoAmIRequest::default(), &secret))
            .await;
    assert_code(r, Code::Unauthenticated, "revoked");
    let listed =
        x.s.identity()
            .list_service_accounts(req(pb::ListServiceAccountsRequest::default(), x.s.key()))
            .await
            .unwrap()
            .into_inner()
            .service_accounts;
    assert!(listed.iter().all(|a| a.id != sa));
}

async fn foreign_workspace_is_answered_as_unknown(b: Backend) {
    let x = setup(b, true).await;
    let globex = x.s.globex().await;
    let zed = x.s.pat_in(&globex.id, &globex.admin).await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let identity = || x.s.identity();
    let normalize =
        |r: Result<tonic::Response<pb::CreateServiceAccountResponse>, tonic::Status>, id: &str| {
            let e = r.unwrap_err();
            (e.code(), e.message().replace(id, "ID"))
        };
    let foreign = normalize(
        identity()
            .create_service_account(req(confined("x", &x.w), &zed))
            .await,
        &x.w,
    );
    let none = normalize(
        identity()
            .create_service_account(req(confined("x", unknown), &zed))
            .await,
        unknown,
    );
    assert_eq!(foreign, none);
    assert_eq!(foreign.0, Code::PermissionDenied);
    let list = |ws: &str| {
        let mut c = identity();
        let r = req(
            pb::ListServiceAccountsRequest {
                workspace_id: ws.into(),
                ..Default::default()
            },
            &zed,
        );
        async move { c.list_service_accounts(r).await }
    };
    let (f, n) = (
        list(&x.w).await.unwrap_err(),
        list(unknown).await.unwrap_err(),
    );
    assert_eq!(
        (f.code(), f.message().replace(&x.w, "ID")),
        (n.code(), n.message().replace(unknown, "ID"))
    );
    let inv = |ws: &str| {
        let mut c = identity();
        let r = req(
            invite(
                ws,
                "x@globex.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::Unspecified,
            ),
            &zed,
        );
        async move { c.create_invite(r).await }
    };
    let (f, n) = (
        inv(&x.w).await.unwrap_err(),
        inv(unknown).await.unwrap_err(),
    );
    assert_eq!(
        (f.code(), f.message().replace(&x.w, "ID")),
        (n.code(), n.message().replace(unknown, "ID"))
    );
    // And an account of this organization is unknown to Globex's admin.
    let sa = x.account(&x.ann_pat, "ingest", &x.w).await.id;
    let r = identity()
        .create_service_key(req(
            key_for(&sa, pb::ServiceKeyScope::Unspecified, &[]),
            &zed,
        ))
        .await;
    assert_code(r, Code::NotFound, "not found");
}

// ---------------------------------------------------------------------------
// Workspace invites.

async fn workspace_invites_are_refused_when_the_flag_is_off(b: Backend) {
    let x = setup(b, false).await;
    for key in [x.ann_pat.as_str(), x.s.key()] {
        let r =
            x.s.identity()
                .create_invite(req(
                    invite(
                        &x.w,
                        "eve@acme.test",
                        "WORKSPACE_EDITOR",
                        pb::OrgRole::Unspecified,
                    ),
                    key,
                ))
                .await;
        assert_code(r, Code::FailedPrecondition, "--workspace-invites");
    }
}

async fn accepting_a_workspace_invite_grants_the_role_in_the_workspace(b: Backend) {
    let x = setup(b, true).await;
    for (name, org_role, expected) in [
        ("eve", pb::OrgRole::Unspecified, pb::OrgRole::OrgUser),
        ("fay", pb::OrgRole::OrgViewer, pb::OrgRole::OrgViewer),
    ] {
        let email = format!("{name}@acme.test");
        let created =
            x.s.identity()
                .create_invite(req(
                    invite(&x.w, &email, "Contributor", org_role),
                    &x.ann_pat,
                ))
                .await
                .unwrap()
                .into_inner()
                .invite
                .unwrap();
        assert_eq!(created.workspace_id, x.w);
        assert_eq!(created.workspace_role, "WORKSPACE_EDITOR");
        assert_eq!(created.role, expected as i32);
        let invitee = x.s.user(name).await;
        let member =
            x.s.identity()
                .accept_invite(as_user(
                    &x.s,
                    pb::AcceptInviteRequest {
                        invite_id: created.id,
                    },
                    &invitee,
                ))
                .await
                .unwrap()
                .into_inner()
                .member
                .unwrap();
        assert_eq!(member.role, expected as i32);
        assert!(x.s.allowed(&invitee, &x.w, "projects:create", &[]).await);
        assert!(!x.s.allowed(&invitee, &x.w, "roles:manage", &[]).await);
        assert!(!x.s.allowed(&invitee, &x.other, "projects:read", &[]).await);
    }
}

async fn workspace_admin_cannot_invite_beyond_own_power(b: Backend) {
    let x = setup(b, true).await;
    let identity = || x.s.identity();
    let r = identity()
        .create_invite(req(
            invite(
                &x.w,
                "eve@acme.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::OrgAdmin,
            ),
            &x.ann_pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "never ORG_ADMIN");
    let r = identity()
        .create_invite(req(
            invite(
                &x.other,
                "eve@acme.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::Unspecified,
            ),
            &x.ann_pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
    let r = identity()
        .create_invite(req(
            pb::CreateInviteRequest {
                email: "eve@acme.test".into(),
                role: pb::OrgRole::OrgViewer as i32,
                ..Default::default()
            },
            &x.ann_pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "invites:create");
    // An ORG_VIEWER admin of a workspace invites viewers only.
    let gus = x.s.member("gus", pb::OrgRole::OrgViewer).await;
    x.s.grant(&x.w, user(&gus.user_id), "WORKSPACE_ADMIN", None)
        .await;
    let r = identity()
        .create_invite(as_user(
            &x.s,
            invite(
                &x.w,
                "eve@acme.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::Unspecified,
            ),
            &gus.user_id,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "ORG_USER");
    // An editor or a confined account does not invite.
    let bob = x.member_with("bob", "WORKSPACE_EDITOR").await;
    let r = identity()
        .create_invite(req(
            invite(
                &x.w,
                "eve@acme.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::Unspecified,
            ),
            &bob,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
    let (_, _, confined_key) = x.ann_account("ingest", "WORKSPACE_ADMIN").await;
    let r = identity()
        .create_invite(req(
            invite(
                &x.w,
                "eve@acme.test",
                "WORKSPACE_VIEWER",
                pb::OrgRole::OrgViewer,
            ),
            &confined_key,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "whole organization");
}

async fn workspace_admin_lists_and_deletes_only_their_workspace_invites(b: Backend) {
    let x = setup(b, true).await;
    let identity = || x.s.identity();
    let create = |ws: &str, email: &str, key: &str| {
        let mut c = identity();
        let r = req(
            pb::CreateInviteRequest {
                role: pb::OrgRole::OrgViewer as i32,
                ..invite(
                    ws,
                    email,
                    if ws.is_empty() {
                        ""
                    } else {
                        "WORKSPACE_VIEWER"
                    },
                    pb::OrgRole::Unspecified,
                )
            },
            key,
        );
        async move {
            c.create_invite(r)
                .await
                .unwrap()
                .into_inner()
                .invite
                .unwrap()
                .id
        }
    };
    let org_invite = create("", "org@acme.test", x.s.key()).await;
    let other_invite = create(&x.other, "other@acme.test", x.s.key()).await;
    let own = create(&x.w, "own@acme.test", &x.ann_pat).await;
    let listed = identity()
        .list_invites(req(
            pb::ListInvitesRequest {
                workspace_id: x.w.clone(),
                ..Default::default()
            },
            &x.ann_pat,
        ))
        .await
        .unwrap()
        .into_inner()
        .invites;
    assert_eq!(
        listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![own.clone()]
    );
    let r = identity()
        .list_invites(req(pb::ListInvitesRequest::default(), &x.ann_pat))
        .await;
    assert_code(r, Code::PermissionDenied, "invites:create");
    let r = identity()
        .list_invites(req(
            pb::ListInvitesRequest {
                workspace_id: x.other.clone(),
                ..Default::default()
            },
            &x.ann_pat,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace admin");
    let delete = |id: &str| {
        let mut c = identity();
        let r = req(
            pb::DeleteInviteRequest {
                organization_id: String::new(),
                invite_id: id.into(),
            },
            &x.ann_pat,
        );
        async move { c.delete_invite(r).await }
    };
    assert_code(
        delete(&org_invite).await,
        Code::PermissionDenied,
        "invites:delete",
    );
    assert_code(
        delete(&other_invite).await,
        Code::PermissionDenied,
        "invites:delete",
    );
    delete(&own).await.unwrap();
    // The organization admin still sees the others.
    let all = identity()
        .list_invites(req(pb::ListInvitesRequest::default(), x.s.key()))
        .await
        .unwrap()
        .into_inner()
        .invites;
    assert_eq!(all.len(), 2);
}

both_backends!(
    workspace_admin_creates_confined_account_whose_key_acts_in_the_workspace,
    confined_key_cannot_reach_another_workspace,
    confined_account_cannot_be_granted_outside_its_workspace,
    workspace_admin_cannot_give_confined_account_an_org_role,
    workspace_admin_cannot_create_key_beyond_the_confinement,
    workspace_admin_cannot_create_accounts_outside_their_workspace,
    workspace_admin_cannot_manage_accounts_or_keys_beyond_their_workspace,
    workspace_editor_and_viewer_cannot_manage_confined_accounts,
    confined_account_grants_are_bounded_by_the_granter_power,
    confined_account_keeps_only_its_grants_when_its_creator_loses_admin,
    deleting_the_workspace_deletes_its_confined_accounts,
    foreign_workspace_is_answered_as_unknown,
    workspace_invites_are_refused_when_the_flag_is_off,
    accepting_a_workspace_invite_grants_the_role_in_the_workspace,
    workspace_admin_cannot_invite_beyond_own_power,
    workspace_admin_lists_and_deletes_only_their_workspace_invites
);
