//! WorkspaceService and RolesService: workspaces, grants, custom roles,
//! applications, tags and settings. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Backend, app_scope, as_user, assert_code, req, start, start_with, team, user, with};
use portcullis::{config::DeploymentMode, proto::v1 as pb};
use tonic::Code;

fn create_ws(key: &str) -> pb::CreateWorkspaceRequest {
    pb::CreateWorkspaceRequest {
        organization_id: String::new(),
        key: key.into(),
        name: String::new(),
    }
}

async fn workspace_keys_are_validated_and_unique(b: Backend) {
    let s = start(b).await;
    for bad in ["bad slug", "-x", "X", ""] {
        let r = s
            .workspaces()
            .create_workspace(req(create_ws(bad), s.key()))
            .await;
        assert_code(r, Code::InvalidArgument, "key");
    }
    s.workspace("ml-research").await;
    let dup = s
        .workspaces()
        .create_workspace(req(create_ws("ml-research"), s.key()))
        .await;
    assert_code(dup, Code::AlreadyExists, "ml-research");
}

async fn org_user_cannot_create_workspaces(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
    let r = s
        .workspaces()
        .create_workspace(as_user(&s, create_ws("x"), &u.user_id))
        .await;
    assert_code(r, Code::PermissionDenied, "workspaces:create");
}

async fn creator_becomes_workspace_admin(b: Backend) {
    let s = start(b).await;
    let admin = s.boot.admin_user_id.clone();
    let ws = s
        .workspaces()
        .create_workspace(as_user(&s, create_ws("ml"), &admin))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap()
        .id;
    let grants_of = |ws: String| {
        let mut w = s.workspaces();
        let r = req(
            pb::ListAccessRequest {
                workspace_id: ws,
                ..Default::default()
            },
            s.key(),
        );
        async move { w.list_access(r).await.unwrap().into_inner().grants }
    };
    let grants = grants_of(ws).await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].role, "WORKSPACE_ADMIN");
    assert_eq!(
        grants[0].subject.as_ref().unwrap().kind,
        Some(pb::subject::Kind::UserId(admin))
    );
    // A platform account is admin of every workspace already, and holds no
    // grant an organization would see.
    let by_platform = s.workspace("platform-made").await;
    assert!(grants_of(by_platform).await.is_empty());
}

async fn saas_workspace_creation_needs_plus(b: Backend) {
    let s = start_with(b, DeploymentMode::Saas).await;
    let ann = s.user("ann").await;
    let org = s.organization(&ann, "Globex", 0).await;
    let mut req_ws = create_ws("team-a");
    req_ws.organization_id = org.id.clone();
    let r = s
        .workspaces()
        .create_workspace(as_user(&s, req_ws.clone(), &ann))
        .await;
    assert_code(r, Code::FailedPrecondition, "plus plan");
    // In saas mode the plan is the platform's (billing) to set.
    s.identity()
        .update_organization(req(
            pb::UpdateOrganizationRequest {
                organization_id: org.id,
                plan: Some(pb::Plan::Plus as i32),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.workspaces()
        .create_workspace(as_user(&s, req_ws, &ann))
        .await
        .unwrap();
}

async fn personal_organization_holds_one_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.user("ann").await;
    let org = s.personal_organization(&ann).await;
    let mut r = create_ws("second");
    r.organization_id = org.id;
    let res = s.workspaces().create_workspace(as_user(&s, r, &ann)).await;
    assert_code(res, Code::FailedPrecondition, "at most one workspace");
}

async fn default_workspace_cannot_be_deleted_even_by_owner(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let del = pb::DeleteWorkspaceRequest {
        workspace_id: ann.home.clone(),
    };
    let by_owner = s
        .workspaces()
        .delete_workspace(as_user(&s, del.clone(), &ann.user_id))
        .await;
    assert_code(by_owner, Code::FailedPrecondition, "default workspace");
    let by_admin = s.workspaces().delete_workspace(req(del, s.key())).await;
    assert_code(by_admin, Code::FailedPrecondition, "default workspace");
}

async fn deleting_a_workspace_removes_it_and_narrows_keys(b: Backend) {
    let s = start(b).await;
    let doomed = s.workspace("doomed").await;
    let kept = s.workspace("kept").await;
    let sa = s.service_account("svc").await;
    let key_for = |ws: Vec<String>| pb::CreateServiceKeyRequest {
        service_account_id: sa.clone(),
        scope: pb::ServiceKeyScope::Workspaces as i32,
        workspace_ids: ws,
        ..Default::default()
    };
    let only = s
        .identity()
        .create_service_key(req(key_for(vec![doomed.clone()]), s.key()))
        .await
        .unwrap()
        .into_inner()
        .key;
    let both = s
        .identity()
        .create_service_key(req(key_for(vec![doomed.clone(), kept.clone()]), s.key()))
        .await
        .unwrap()
        .into_inner()
        .key;
    s.delete_workspace(&doomed).await;
    let get = s
        .workspaces()
        .get_workspace(req(
            pb::GetWorkspaceRequest {
                workspace_id: doomed,
            },
            s.key(),
        ))
        .await;
    assert_code(get, Code::PermissionDenied, "not reachable");
    assert_code(
        s.identity()
            .who_am_i(req(pb::WhoAmIRequest {}, &only))
            .await,
        Code::Unauthenticated,
        "revoked",
    );
    let me = s
        .identity()
        .who_am_i(req(pb::WhoAmIRequest {}, &both))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.workspace_id, kept);
}

/// A deleted workspace is unreachable for every Check, including those
/// about principals whose sets were never cached while where the workspace
/// lived was (a miss authorizes the caller on it before loading).
async fn checks_in_a_deleted_workspace_find_nothing_even_after_caching(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    let doomed = s.workspace("doomed").await;
    s.grant(
        &doomed,
        pb::subject::Kind::UserId(ann.user_id.clone()),
        "WORKSPACE_VIEWER",
        None,
    )
    .await;
    // Ann's set and the workspace's place are cached; Bob's set is not.
    assert!(s.allowed(&ann.user_id, &doomed, "datasets:read", &[]).await);
    assert!(s.allowed(&ann.user_id, &doomed, "datasets:read", &[]).await);
    s.delete_workspace(&doomed).await;
    for who in [&ann.user_id, &bob.user_id] {
        let after = s
            .check()
            .check(req(
                harness::check_request(who, &doomed, "datasets:read", &[]),
                s.key(),
            ))
            .await;
        assert_code(after, Code::PermissionDenied, "not reachable");
    }
}

async fn editor_cannot_grant_roles_or_update_the_workspace(b: Backend) {
    let s = start(b).await;
    let ed = s.member("ed", pb::OrgRole::OrgUser).await;
    let other = s.member("other", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.grant(&ws, user(&ed.user_id), "Contributor", None).await;
    let grant = s
        .workspaces()
        .grant_access(as_user(
            &s,
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(user(&other.user_id)),
                }),
                role: "WORKSPACE_VIEWER".into(),
                scope: None,
                expires_at: None,
            },
            &ed.user_id,
        ))
        .await;
    assert_code(grant, Code::PermissionDenied, "roles:manage");
    let update = s
        .workspaces()
        .update_workspace(as_user(
            &s,
            pb::UpdateWorkspaceRequest {
                workspace_id: ws,
                name: Some("x".into()),
                key: None,
            },
            &ed.user_id,
        ))
        .await;
    assert_code(update, Code::PermissionDenied, "workspace:update");
}

async fn grant_requests_are_validated(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let outsider = s.user("outsider").await;
    let ws = s.workspace("shared").await;
    let grant = |subject: Option<pb::subject::Kind>, role: &str, scope: Option<pb::Scope>| {
        req(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: subject.map(|k| pb::Subject { kind: Some(k) }),
                role: role.into(),
                scope,
                expires_at: None,
            },
            s.key(),
        )
    };
    let mut w = s.workspaces();
    assert_code(
        w.grant_access(grant(None, "Reader", None)).await,
        Code::InvalidArgument,
        "subject",
    );
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "", None))
            .await,
        Code::InvalidArgument,
        "role",
    );
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "superuser", None))
            .await,
        Code::InvalidArgument,
        "role",
    );
    assert_code(
        w.grant_access(grant(Some(user(&outsider)), "Reader", None))
            .await,
        Code::FailedPrecondition,
        "not a member",
    );
    assert_code(
        w.grant_access(grant(
            Some(team("0e0e0e0e-0000-4000-8000-000000000000")),
            "Reader",
            None,
        ))
        .await,
        Code::NotFound,
        "team",
    );
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "Reader", app_scope("nope")))
            .await,
        Code::NotFound,
        "application",
    );
    let bad_key = Some(pb::Scope {
        conditions: vec![pb::TagCondition {
            key: "1env".into(),
            values: vec!["prod".into()],
        }],
        application: String::new(),
    });
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "Reader", bad_key))
            .await,
        Code::InvalidArgument,
        "1env",
    );
    let no_values = Some(pb::Scope {
        conditions: vec![pb::TagCondition {
            key: "Environment".into(),
            values: vec![],
        }],
        application: String::new(),
    });
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "Reader", no_values))
            .await,
        Code::InvalidArgument,
        "values",
    );
    let g = w
        .grant_access(grant(Some(user(&ann.user_id)), "Reader", None))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(
        g.role, "WORKSPACE_VIEWER",
        "aliases are stored as the canonical role"
    );
    assert_code(
        w.grant_access(grant(Some(user(&ann.user_id)), "reader", None))
            .await,
        Code::AlreadyExists,
        "already holds",
    );
}

async fn owner_keeps_access_to_their_default_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let grants = s
        .workspaces()
        .list_access(req(
            pb::ListAccessRequest {
                workspace_id: ann.home.clone(),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let r = s
        .workspaces()
        .revoke_access(req(
            pb::RevokeAccessRequest {
                workspace_id: ann.home,
                grant_id: grants[0].id.clone(),
            },
            s.key(),
        ))
        .await;
    assert_code(r, Code::FailedPrecondition, "default workspace");
}

async fn team_grant_is_inherited_then_lost_on_team_removal(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let t = s.team("platform", &[&ann.user_id]).await;
    s.grant(&ws, team(&t), "WORKSPACE_VIEWER", None).await;
    let get = || {
        as_user(
            &s,
            pb::GetWorkspaceRequest {
                workspace_id: ws.clone(),
            },
            &ann.user_id,
        )
    };
    s.workspaces().get_workspace(get()).await.unwrap();
    let listed = s
        .workspaces()
        .list_workspaces(as_user(
            &s,
            pb::ListWorkspacesRequest::default(),
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .workspaces;
    assert!(listed.iter().any(|w| w.id == ws));
    assert!(s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);

    s.identity()
        .remove_team_member(req(
            pb::RemoveTeamMemberRequest {
                organization_id: String::new(),
                team_id: t,
                user_id: ann.user_id.clone(),
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert_code(
        s.workspaces().get_workspace(get()).await,
        Code::PermissionDenied,
        "workspace:read",
    );
    let listed = s
        .workspaces()
        .list_workspaces(as_user(
            &s,
            pb::ListWorkspacesRequest::default(),
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .workspaces;
    assert!(listed.iter().all(|w| w.id != ws));
    assert_eq!(listed.len(), 1, "only the default workspace is left");
    assert!(!s.allowed(&ann.user_id, &ws, "datasets:read", &[]).await);
}

async fn organization_membership_alone_gives_no_workspace_access(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let r = s
        .workspaces()
        .get_workspace(as_user(
            &s,
            pb::GetWorkspaceRequest {
                workspace_id: ws.clone(),
            },
            &ann.user_id,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "workspace:read");
    let admin = s.boot.admin_user_id.clone();
    s.workspaces()
        .get_workspace(as_user(
            &s,
            pb::GetWorkspaceRequest { workspace_id: ws },
            &admin,
        ))
        .await
        .unwrap();
}

async fn application_scoped_grant_applies_only_to_the_application(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.application(&ws, "checkout").await;
    s.grant(
        &ws,
        user(&ann.user_id),
        "WORKSPACE_ADMIN",
        app_scope("checkout"),
    )
    .await;
    let listed = s
        .workspaces()
        .list_access(req(
            pb::ListAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(user(&ann.user_id)),
                }),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(listed[0].scope.as_ref().unwrap().application, "checkout");
    assert!(
        s.allowed(
            &ann.user_id,
            &ws,
            "prompts:delete",
            &[("Application", "checkout")]
        )
        .await
    );
    assert!(
        !s.allowed(
            &ann.user_id,
            &ws,
            "prompts:delete",
            &[("Application", "billing")]
        )
        .await
    );
    assert!(
        !s.allowed(&ann.user_id, &ws, "prompts:delete", &[]).await,
        "untagged resources are outside app scopes"
    );
    let manage = s
        .workspaces()
        .grant_access(as_user(
            &s,
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(user(&s.boot.admin_user_id)),
                }),
                role: "Reader".into(),
                scope: None,
                expires_at: None,
            },
            &ann.user_id,
        ))
        .await;
    assert_code(manage, Code::PermissionDenied, "roles:manage");
    let del = s
        .workspaces()
        .delete_application(req(
            pb::DeleteApplicationRequest {
                workspace_id: ws,
                name: "checkout".into(),
            },
            s.key(),
        ))
        .await;
    assert_code(del, Code::FailedPrecondition, "scopes 1 grant");
}

async fn custom_role_needs_enterprise_in_saas(b: Backend) {
    let s = start_with(b, DeploymentMode::Saas).await;
    let ann = s.user("ann").await;
    let org = s.organization(&ann, "Globex", pb::Plan::Plus as i32).await;
    let role = pb::CreateRoleRequest {
        organization_id: org.id.clone(),
        name: "prompt-engineer".into(),
        description: String::new(),
        permissions: vec!["prompts:read".into()],
    };
    let r = s.roles().create_role(as_user(&s, role.clone(), &ann)).await;
    assert_code(r, Code::FailedPrecondition, "enterprise");
    s.identity()
        .update_organization(req(
            pb::UpdateOrganizationRequest {
                organization_id: org.id,
                plan: Some(pb::Plan::Enterprise as i32),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    s.roles()
        .create_role(as_user(&s, role, &ann))
        .await
        .unwrap();
}

async fn custom_role_rules_and_deletion_in_use(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let create = |name: &str, perms: &[&str]| {
        req(
            pb::CreateRoleRequest {
                organization_id: String::new(),
                name: name.into(),
                description: String::new(),
                permissions: perms.iter().map(|p| (*p).into()).collect(),
            },
            s.key(),
        )
    };
    let mut roles = s.roles();
    assert_code(
        roles.create_role(create("x", &["prompts:fly"])).await,
        Code::InvalidArgument,
        "prompts:fly",
    );
    assert_code(
        roles.create_role(create("x", &[])).await,
        Code::InvalidArgument,
        "permissions",
    );
    assert_code(
        roles.create_role(create("Owner", &["prompts:read"])).await,
        Code::InvalidArgument,
        "reserved",
    );
    let by_user = roles
        .create_role(as_user(
            &s,
            pb::CreateRoleRequest {
                name: "y".into(),
                permissions: vec!["prompts:read".into()],
                ..Default::default()
            },
            &ann.user_id,
        ))
        .await;
    assert_code(by_user, Code::PermissionDenied, "organization_roles:manage");
    let role = roles
        .create_role(create(
            "prompt-engineer",
            &["prompts:read", "prompts:update"],
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_code(
        roles
            .create_role(create("prompt-engineer", &["prompts:read"]))
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    s.grant(&ws, user(&ann.user_id), "prompt-engineer", None)
        .await;
    assert!(s.allowed(&ann.user_id, &ws, "prompts:update", &[]).await);
    assert!(!s.allowed(&ann.user_id, &ws, "prompts:delete", &[]).await);

    roles
        .update_role(req(
            pb::UpdateRoleRequest {
                role_id: role.id.clone(),
                permissions: Some(pb::PermissionList {
                    permissions: vec!["prompts:read".into()],
                }),
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap();
    assert!(
        !s.allowed(&ann.user_id, &ws, "prompts:update", &[]).await,
        "the role change reaches decisions"
    );

    let delete = |revoke: bool| {
        req(
            pb::DeleteRoleRequest {
                organization_id: String::new(),
                role_id: role.id.clone(),
                revoke_grants: revoke,
            },
            s.key(),
        )
    };
    assert_code(
        roles.delete_role(delete(false)).await,
        Code::FailedPrecondition,
        "revoke_grants",
    );
    let deleted = roles.delete_role(delete(true)).await.unwrap().into_inner();
    assert_eq!(deleted.revoked_grants, 1);
    assert!(!s.allowed(&ann.user_id, &ws, "prompts:read", &[]).await);
    let sys = roles
        .delete_role(req(
            pb::DeleteRoleRequest {
                role_id: "WORKSPACE_VIEWER".into(),
                ..Default::default()
            },
            s.key(),
        ))
        .await;
    assert_code(sys, Code::FailedPrecondition, "cannot be deleted");
}

async fn system_roles_are_described_by_the_catalogue(b: Backend) {
    let s = start(b).await;
    let get = |id: &str| {
        req(
            pb::GetRoleRequest {
                organization_id: String::new(),
                role_id: id.into(),
            },
            s.key(),
        )
    };
    let reader = s
        .roles()
        .get_role(get("Reader"))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_eq!(reader.id, "WORKSPACE_VIEWER");
    assert!(reader.system);
    assert_eq!(reader.aliases, vec!["Reader".to_owned()]);
    assert!(reader.permissions.iter().all(|p| p.ends_with(":read")));
    let editor = s
        .roles()
        .get_role(get("WORKSPACE_EDITOR"))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    for management in [
        "members:manage",
        "roles:manage",
        "api_keys:create",
        "workspace:delete",
    ] {
        assert!(
            !editor.permissions.iter().any(|p| p == management),
            "{management}"
        );
    }
    assert!(editor.permissions.iter().any(|p| p == "prompts:delete"));
    let update = s
        .roles()
        .update_role(req(
            pb::UpdateRoleRequest {
                role_id: "WORKSPACE_EDITOR".into(),
                description: Some("x".into()),
                ..Default::default()
            },
            s.key(),
        ))
        .await;
    assert_code(update, Code::FailedPrecondition, "cannot be changed");
    let listed = s
        .roles()
        .list_roles(req(pb::ListRolesRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert_eq!(listed.iter().filter(|r| r.system).count(), 3);
    let missing = s
        .roles()
        .get_role(get("0a0a0a0a-0000-4000-8000-000000000000"))
        .await;
    assert_code(missing, Code::NotFound, "not found");
}

async fn organizations_register_their_own_resource_types(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgViewer).await;
    let register = |name: &str, actions: &[&str]| {
        req(
            pb::RegisterResourceTypeRequest {
                organization_id: String::new(),
                resource_type: name.into(),
                actions: actions.iter().map(|a| (*a).into()).collect(),
            },
            s.key(),
        )
    };
    let mut roles = s.roles();
    for bad in ["Pipelines", "a-b", ""] {
        assert_code(
            roles.register_resource_type(register(bad, &["read"])).await,
            Code::InvalidArgument,
            "resource_type",
        );
    }
    assert_code(
        roles
            .register_resource_type(register("prompts", &["read"]))
            .await,
        Code::AlreadyExists,
        "built-in",
    );
    assert_code(
        roles
            .register_resource_type(register("pipelines", &[]))
            .await,
        Code::InvalidArgument,
        "actions",
    );
    roles
        .register_resource_type(register("pipelines", &["read", "run"]))
        .await
        .unwrap();
    let perms = roles
        .list_permissions(as_user(
            &s,
            pb::ListPermissionsRequest::default(),
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .permissions;
    assert!(perms.iter().any(|p| p.name == "prompts:read" && p.builtin));
    assert!(
        perms
            .iter()
            .any(|p| p.name == "pipelines:run" && !p.builtin)
    );
    let ws = s.workspace("shared").await;
    let editor = s.member("ed", pb::OrgRole::OrgUser).await;
    s.grant(&ws, user(&editor.user_id), "WORKSPACE_EDITOR", None)
        .await;
    assert!(
        s.allowed(&editor.user_id, &ws, "pipelines:run", &[]).await,
        "system roles cover registered types"
    );
}

async fn resource_tags_and_applications(b: Backend) {
    let s = start(b).await;
    let viewer = s.member("vic", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    s.grant(&ws, user(&viewer.user_id), "WORKSPACE_VIEWER", None)
        .await;
    let mut w = s.workspaces();
    let app = |name: &str| pb::CreateApplicationRequest {
        workspace_id: ws.clone(),
        name: name.into(),
    };
    assert_code(
        w.create_application(as_user(&s, app("x"), &viewer.user_id))
            .await,
        Code::PermissionDenied,
        "applications:create",
    );
    assert_code(
        w.create_application(req(app(""), s.key())).await,
        Code::InvalidArgument,
        "name",
    );
    w.create_application(req(app("checkout"), s.key()))
        .await
        .unwrap();
    assert_code(
        w.create_application(req(app("checkout"), s.key())).await,
        Code::AlreadyExists,
        "already exists",
    );
    let apps = w
        .list_applications(as_user(
            &s,
            pb::ListApplicationsRequest {
                workspace_id: ws.clone(),
                ..Default::default()
            },
            &viewer.user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .applications;
    assert_eq!(apps.len(), 1);

    let set = |ty: &str, tags: &[(&str, &str)]| pb::SetResourceTagsRequest {
        workspace_id: ws.clone(),
        resource_type: ty.into(),
        resource_id: "p1".into(),
        tags: tags
            .iter()
            .map(|(k, v)| pb::Tag {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    };
    assert_code(
        w.set_resource_tags(as_user(&s, set("prompts", &[]), &viewer.user_id))
            .await,
        Code::PermissionDenied,
        "resource_tags:update",
    );
    assert_code(
        w.set_resource_tags(req(set("spaceships", &[]), s.key()))
            .await,
        Code::InvalidArgument,
        "resource_type",
    );
    assert_code(
        w.set_resource_tags(req(set("prompts", &[("1env", "x")]), s.key()))
            .await,
        Code::InvalidArgument,
        "1env",
    );
    assert_code(
        w.set_resource_tags(req(
            set("prompts", &[("Environment", "a"), ("Environment", "b")]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "twice",
    );
    assert_code(
        w.set_resource_tags(req(set("prompts", &[("Application", "nope")]), s.key()))
            .await,
        Code::FailedPrecondition,
        "create it first",
    );
    w.set_resource_tags(req(set("prompts", &[("Environment", "dev")]), s.key()))
        .await
        .unwrap();
    w.set_resource_tags(req(
        set(
            "prompts",
            &[("Environment", "prod"), ("Application", "checkout")],
        ),
        s.key(),
    ))
    .await
    .unwrap();
    let get = || {
        req(
            pb::GetResourceTagsRequest {
                workspace_id: ws.clone(),
                resource_type: "prompts".into(),
                resource_id: "p1".into(),
            },
            s.key(),
        )
    };
    let tags = w.get_resource_tags(get()).await.unwrap().into_inner().tags;
    let pairs: Vec<(String, String)> = tags.into_iter().map(|t| (t.key, t.value)).collect();
    assert_eq!(
        pairs,
        vec![
            ("Application".to_owned(), "checkout".to_owned()),
            ("Environment".to_owned(), "prod".to_owned())
        ]
    );
    let del = || {
        req(
            pb::DeleteResourceRequest {
                workspace_id: ws.clone(),
                resource_type: "prompts".into(),
                resource_id: "p1".into(),
            },
            s.key(),
        )
    };
    w.delete_resource(del()).await.unwrap();
    assert_code(
        w.get_resource_tags(get()).await,
        Code::NotFound,
        "not registered",
    );
    assert_code(
        w.delete_resource(del()).await,
        Code::NotFound,
        "not registered",
    );
}

async fn settings_are_read_by_members_and_written_by_admins(b: Backend) {
    let s = start(b).await;
    let viewer = s.member("vic", pb::OrgRole::OrgViewer).await;
    let user_m = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let read = s
        .workspaces()
        .get_settings(as_user(
            &s,
            pb::GetSettingsRequest {
                workspace_id: ws.clone(),
            },
            &viewer.user_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!((read.data_retention_days, read.monthly_trace_limit), (0, 0));
    let update = |days: u32| pb::UpdateSettingsRequest {
        workspace_id: ws.clone(),
        data_retention_days: Some(days),
        monthly_trace_limit: Some(1000),
        clear: vec![],
    };
    assert_code(
        s.workspaces()
            .update_settings(as_user(&s, update(30), &user_m.user_id))
            .await,
        Code::PermissionDenied,
        "data_retention:update",
    );
    assert_code(
        s.workspaces()
            .update_settings(req(update(3651), s.key()))
            .await,
        Code::InvalidArgument,
        "data_retention_days",
    );
    let r = s
        .workspaces()
        .update_settings(req(update(30), s.key()))
        .await
        .unwrap()
        .into_inner();
    assert!(r.revision > 0);
    let read = s
        .workspaces()
        .get_settings(with(
            pb::GetSettingsRequest::default(),
            s.key(),
            &[("x-tenant-id", &ws)],
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (read.data_retention_days, read.monthly_trace_limit),
        (30, 1000)
    );
}

both_backends!(
    workspace_keys_are_validated_and_unique,
    org_user_cannot_create_workspaces,
    creator_becomes_workspace_admin,
    saas_workspace_creation_needs_plus,
    personal_organization_holds_one_workspace,
    default_workspace_cannot_be_deleted_even_by_owner,
    deleting_a_workspace_removes_it_and_narrows_keys,
    checks_in_a_deleted_workspace_find_nothing_even_after_caching,
    editor_cannot_grant_roles_or_update_the_workspace,
    grant_requests_are_validated,
    owner_keeps_access_to_their_default_workspace,
    team_grant_is_inherited_then_lost_on_team_removal,
    organization_membership_alone_gives_no_workspace_access,
    application_scoped_grant_applies_only_to_the_application,
    custom_role_needs_enterprise_in_saas,
    custom_role_rules_and_deletion_in_use,
    system_roles_are_described_by_the_catalogue,
    organizations_register_their_own_resource_types,
    resource_tags_and_applications,
    settings_are_read_by_members_and_written_by_admins,
);
