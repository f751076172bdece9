//! API keys and caller authentication: formats, lifetimes, scopes,
//! `Authenticate`, `WhoAmI` and tenant resolution. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{Backend, as_user, assert_code, req, start, with};
use portcullis::{
    auth::key::{KeyKind, generate},
    proto::{Timestamp, v1 as pb},
};
use tonic::{Code, Request};

fn in_secs(secs: i64) -> Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Timestamp {
        seconds: now + secs,
        nanos: 0,
    }
}

fn who(key: &str) -> Request<pb::WhoAmIRequest> {
    req(pb::WhoAmIRequest {}, key)
}

async fn missing_or_malformed_credentials_are_unauthenticated(b: Backend) {
    let s = start(b).await;
    let mut id = s.identity();
    assert_code(
        id.who_am_i(Request::new(pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
        "missing",
    );
    let mut basic = Request::new(pb::WhoAmIRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_code(id.who_am_i(basic).await, Code::Unauthenticated, "Bearer");
    assert_code(
        id.who_am_i(who("ghp_abcdef")).await,
        Code::Unauthenticated,
        "malformed",
    );
    assert_code(
        id.who_am_i(who("pcv2_pt_short")).await,
        Code::Unauthenticated,
        "malformed",
    );
    let mut typo = s.key().to_owned().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_code(
        id.who_am_i(who(&typo)).await,
        Code::Unauthenticated,
        "checksum",
    );
}

async fn legacy_keys_are_refused_as_unsupported(b: Backend) {
    let s = start(b).await;
    let r = s
        .identity()
        .who_am_i(who("pc__0123456789abcdef0123456789abcdef"))
        .await;
    assert_code(r, Code::Unauthenticated, "no longer supported");
}

async fn well_formed_unknown_keys_are_refused(b: Backend) {
    let s = start(b).await;
    let key = generate(KeyKind::PersonalAccessToken).unwrap().secret;
    assert_code(
        s.identity().who_am_i(who(&key)).await,
        Code::Unauthenticated,
        "unknown",
    );
}

async fn bootstrap_key_is_an_organization_admin_service_key(b: Backend) {
    let s = start(b).await;
    let me = s
        .identity()
        .who_am_i(who(s.key()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.kind, pb::ApiKeyKind::ServiceKey as i32);
    assert_eq!(me.org_role, pb::OrgRole::OrgAdmin as i32);
    assert_eq!(me.organization_id, s.boot.organization_id);
    assert!(
        me.workspace_id.is_empty(),
        "organization-scoped keys have no default workspace"
    );
}

async fn act_as_user_is_only_for_identity_provider_accounts(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let me = s
        .identity()
        .who_am_i(as_user(&s, pb::WhoAmIRequest {}, &ann.user_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        me.principal.unwrap().kind,
        Some(pb::principal::Kind::UserId(ann.user_id.clone()))
    );
    assert_eq!(me.acting_service_account_id, s.boot.service_account_id);
    assert_eq!(me.workspace_id, ann.home);
    let pat = s.pat(&ann.user_id).await;
    let r = s
        .identity()
        .who_am_i(with(
            pb::WhoAmIRequest {},
            &pat,
            &[("x-act-as-user", &s.boot.admin_user_id)],
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "x-act-as-user");
}

async fn pat_acts_as_its_user_in_their_default_workspace(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let created = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                description: "laptop".into(),
                ..Default::default()
            },
            &ann.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.key.starts_with("pcv2_pt_"));
    let api_key = created.api_key.unwrap();
    assert_eq!(api_key.prefix, "pcv2_pt_");
    assert_eq!(api_key.last_chars, created.key[created.key.len() - 4..]);
    let me = s
        .identity()
        .who_am_i(who(&created.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        me.principal.unwrap().kind,
        Some(pb::principal::Kind::UserId(ann.user_id))
    );
    assert_eq!(me.workspace_id, ann.home);
    let listed = s
        .identity()
        .list_api_keys(req(pb::ListApiKeysRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !format!("{listed:?}").contains(&created.key),
        "listings never show the secret"
    );
}

async fn viewer_cannot_create_pat(b: Backend) {
    let s = start(b).await;
    let v = s.member("vic", pb::OrgRole::OrgViewer).await;
    let r = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest::default(),
            &v.user_id,
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "personal_access_tokens:create");
}

async fn pat_creation_can_be_disabled(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
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
    let r = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest::default(),
            &u.user_id,
        ))
        .await;
    assert_code(r, Code::FailedPrecondition, "disabled");
}

async fn service_keys_cannot_create_pats_for_themselves(b: Backend) {
    let s = start(b).await;
    let r = s
        .identity()
        .create_personal_access_token(req(
            pb::CreatePersonalAccessTokenRequest::default(),
            s.key(),
        ))
        .await;
    assert_code(r, Code::PermissionDenied, "only a user");
}

async fn expiry_in_the_past_is_invalid(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
    let r = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(in_secs(-60)),
                ..Default::default()
            },
            &u.user_id,
        ))
        .await;
    assert_code(r, Code::InvalidArgument, "expires_at");
}

async fn expired_key_is_refused_and_cannot_be_revived(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
    let created = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(in_secs(2)),
                ..Default::default()
            },
            &u.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    s.identity().who_am_i(who(&created.key)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_code(
        s.identity().who_am_i(who(&created.key)).await,
        Code::Unauthenticated,
        "expired",
    );
    let id = created.api_key.unwrap().id;
    for update in [
        pb::UpdateApiKeyRequest {
            api_key_id: id.clone(),
            expires_at: Some(in_secs(3600)),
            ..Default::default()
        },
        pb::UpdateApiKeyRequest {
            api_key_id: id.clone(),
            clear_expiry: true,
            ..Default::default()
        },
        pb::UpdateApiKeyRequest {
            api_key_id: id.clone(),
            description: Some("again".into()),
            ..Default::default()
        },
    ] {
        assert_code(
            s.identity().update_api_key(req(update, s.key())).await,
            Code::FailedPrecondition,
            "expired",
        );
    }
    let listed = s
        .identity()
        .list_api_keys(req(pb::ListApiKeysRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner();
    let k = listed.api_keys.iter().find(|k| k.id == id).unwrap();
    assert_eq!(k.state, pb::ApiKeyState::Expired as i32);
}

async fn revoked_key_is_refused_at_once_and_stays_revoked(b: Backend) {
    let s = start(b).await;
    let u = s.member("ann", pb::OrgRole::OrgUser).await;
    let other = s.member("bob", pb::OrgRole::OrgUser).await;
    let created = s
        .identity()
        .create_personal_access_token(as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest::default(),
            &u.user_id,
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.api_key.unwrap().id;
    s.identity().who_am_i(who(&created.key)).await.unwrap();
    let revoke = |by: &str| {
        as_user(
            &s,
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: id.clone(),
            },
            by,
        )
    };
    assert_code(
        s.identity().revoke_api_key(revoke(&other.user_id)).await,
        Code::PermissionDenied,
        "api_keys:manage",
    );
    let revoked = s
        .identity()
        .revoke_api_key(revoke(&u.user_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        revoked.api_key.unwrap().state,
        pb::ApiKeyState::Revoked as i32
    );
    assert_code(
        s.identity().who_am_i(who(&created.key)).await,
        Code::Unauthenticated,
        "revoked",
    );
    let twice = s
        .identity()
        .revoke_api_key(revoke(&u.user_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        twice.api_key.unwrap().state,
        pb::ApiKeyState::Revoked as i32
    );
    let update = s
        .identity()
        .update_api_key(req(
            pb::UpdateApiKeyRequest {
                api_key_id: id.clone(),
                description: Some("x".into()),
                ..Default::default()
            },
            s.key(),
        ))
        .await;
    assert_code(update, Code::FailedPrecondition, "revoked");
}

async fn non_admins_list_only_their_own_pats(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let bob = s.member("bob", pb::OrgRole::OrgUser).await;
    s.pat(&ann.user_id).await;
    s.pat(&bob.user_id).await;
    let mine = s
        .identity()
        .list_api_keys(as_user(&s, pb::ListApiKeysRequest::default(), &ann.user_id))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].user_id, ann.user_id);
    let all = s
        .identity()
        .list_api_keys(req(pb::ListApiKeysRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(all.len(), 3, "bootstrap key and two PATs");
}

async fn service_key_rules_are_enforced(b: Backend) {
    let s = start(b).await;
    let user = s.member("ann", pb::OrgRole::OrgUser).await;
    let sa = s.service_account("ingest").await;
    let create = |scope: pb::ServiceKeyScope, ws: Vec<String>| pb::CreateServiceKeyRequest {
        service_account_id: sa.clone(),
        scope: scope as i32,
        workspace_ids: ws,
        ..Default::default()
    };
    let mut id = s.identity();
    assert_code(
        id.create_service_key(as_user(
            &s,
            create(pb::ServiceKeyScope::Organization, vec![]),
            &user.user_id,
        ))
        .await,
        Code::PermissionDenied,
        "api_keys:manage",
    );
    assert_code(
        id.create_service_key(req(
            create(pb::ServiceKeyScope::Unspecified, vec![]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "scope",
    );
    assert_code(
        id.create_service_key(req(
            create(pb::ServiceKeyScope::Workspaces, vec![]),
            s.key(),
        ))
        .await,
        Code::InvalidArgument,
        "workspace_ids",
    );
    assert_code(
        id.create_service_key(req(
            create(
                pb::ServiceKeyScope::Workspaces,
                vec!["0f0f0f0f-0000-4000-8000-000000000000".into()],
            ),
            s.key(),
        ))
        .await,
        Code::NotFound,
        "workspace",
    );
    let ok = id
        .create_service_key(req(
            create(pb::ServiceKeyScope::Workspaces, vec![user.home.clone()]),
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.key.starts_with("pcv2_sk_"));
    let me = id.who_am_i(who(&ok.key)).await.unwrap().into_inner();
    assert_eq!(
        me.workspace_id, user.home,
        "a key scoped to one workspace acts there"
    );
}

async fn tenant_outside_a_key_scope_is_denied(b: Backend) {
    let s = start(b).await;
    let a = s.member("ann", pb::OrgRole::OrgUser).await;
    let bws = s.member("bob", pb::OrgRole::OrgUser).await.home;
    let sa = s.service_account("scoped").await;
    let key = s
        .identity()
        .create_service_key(req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa,
                scope: pb::ServiceKeyScope::Workspaces as i32,
                workspace_ids: vec![a.home.clone()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    let r = s
        .identity()
        .who_am_i(with(pb::WhoAmIRequest {}, &key, &[("x-tenant-id", &bws)]))
        .await;
    assert_code(r, Code::PermissionDenied, "not scoped");
    let auth = s
        .identity()
        .authenticate(req(
            pb::AuthenticateRequest {
                api_key: key.clone(),
                tenant_id: bws,
            },
            s.key(),
        ))
        .await;
    assert_code(auth, Code::PermissionDenied, "not scoped");
}

async fn org_scoped_key_without_tenant_is_denied_on_workspace_calls(b: Backend) {
    let s = start(b).await;
    let home = s.member("ann", pb::OrgRole::OrgUser).await.home;
    let r = s
        .workspaces()
        .get_workspace(req(pb::GetWorkspaceRequest::default(), s.key()))
        .await;
    assert_code(r, Code::PermissionDenied, "x-tenant-id");
    let ws = s
        .workspaces()
        .get_workspace(with(
            pb::GetWorkspaceRequest::default(),
            s.key(),
            &[("x-tenant-id", &home)],
        ))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap();
    assert_eq!(ws.id, home);
}

async fn authenticate_resolves_keys_and_tenants(b: Backend) {
    let s = start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let pat = s.pat(&ann.user_id).await;
    let auth = |key: &str, tenant: &str| {
        req(
            pb::AuthenticateRequest {
                api_key: key.into(),
                tenant_id: tenant.into(),
            },
            s.key(),
        )
    };
    let r = s
        .identity()
        .authenticate(auth(&pat, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.principal.unwrap().kind,
        Some(pb::principal::Kind::UserId(ann.user_id.clone()))
    );
    assert_eq!(r.workspace_id, ann.home);
    assert_eq!(r.kind, pb::ApiKeyKind::PersonalAccessToken as i32);
    let org_key = s
        .identity()
        .authenticate(auth(s.key(), ""))
        .await
        .unwrap()
        .into_inner();
    assert!(org_key.workspace_id.is_empty());
    assert_code(
        s.identity().authenticate(auth("pc__old", "")).await,
        Code::Unauthenticated,
        "no longer supported",
    );
    let globex = s.user("zed").await;
    let foreign_ws = s
        .identity()
        .create_organization(as_user(
            &s,
            pb::CreateOrganizationRequest {
                name: "Globex".into(),
                plan: 0,
            },
            &globex,
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap()
        .default_workspace_id;
    assert_code(
        s.identity().authenticate(auth(&pat, &foreign_ws)).await,
        Code::PermissionDenied,
        "not reachable",
    );
}

both_backends!(
    missing_or_malformed_credentials_are_unauthenticated,
    legacy_keys_are_refused_as_unsupported,
    well_formed_unknown_keys_are_refused,
    bootstrap_key_is_an_organization_admin_service_key,
    act_as_user_is_only_for_identity_provider_accounts,
    pat_acts_as_its_user_in_their_default_workspace,
    viewer_cannot_create_pat,
    pat_creation_can_be_disabled,
    service_keys_cannot_create_pats_for_themselves,
    expiry_in_the_past_is_invalid,
    expired_key_is_refused_and_cannot_be_revived,
    revoked_key_is_refused_at_once_and_stays_revoked,
    non_admins_list_only_their_own_pats,
    service_key_rules_are_enforced,
    tenant_outside_a_key_scope_is_denied,
    org_scoped_key_without_tenant_is_denied_on_workspace_calls,
    authenticate_resolves_keys_and_tenants,
);
