//! Temporary storage credentials: JWTs signed with Ed25519, checked here by
//! an independent implementation (Python's PyJWT on `cryptography`, which
//! `.ci/run` installs) that knows nothing but the key set served at
//! `GET /.well-known/jwks.json`. Who may have which credential, lifetimes,
//! rotation, the key file, and the attacks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use harness::{Backend, TestServer, account_key, app_scope, assert_code, req, user, with};
use portcullis::{
    auth::jwt::KeyPair,
    config::{CredentialSettings, Settings},
    proto::v1 as pb,
};
use serde_json::Value;
use tonic::Code;

/// Verifies a token with PyJWT, fetching the key set from `jwks_url` itself:
/// the claims, or the name of the exception PyJWT raised.
const VERIFIER: &str = r#"
import json, sys, jwt
url, token, issuer = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    key = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=False).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], issuer=issuer,
                        options={"require": ["exp", "iat", "nbf", "iss", "sub", "jti"]})
    print(json.dumps({"ok": claims}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"#;

/// The claims of `token` if PyJWT verifies it against the server's key set,
/// else the exception's name.
async fn verify(s: &TestServer, token: &str) -> Result<Value, String> {
    let url = format!("http://{}/.well-known/jwks.json", s.metrics_addr);
    let issuer = s.state.settings.credentials.issuer.clone();
    let token = token.to_owned();
    let python = std::env::var("PORTCULLIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", VERIFIER, &url, &token, &issuer])
            .output()
            .expect("python3 runs (.ci/run installs PyJWT[crypto])")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the verifier failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match answer.get("ok") {
        Some(claims) => Ok(claims.clone()),
        None => Err(format!("{}: {}", answer["error"], answer["message"])),
    }
}

/// The key set served over HTTP.
async fn served_jwks(s: &TestServer) -> Value {
    let (status, body) = harness::http_get(s.metrics_addr, "/.well-known/jwks.json").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn header(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn credential_request(
    workspace: &str,
    permissions: &[&str],
    scope: Option<pb::Scope>,
    ttl_seconds: Option<u32>,
) -> pb::CreateTemporaryCredentialsRequest {
    pb::CreateTemporaryCredentialsRequest {
        workspace_id: workspace.into(),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        scope,
        ttl_seconds,
    }
}

/// Asks for a credential with `key`.
async fn issue(
    s: &TestServer,
    key: &str,
    request: pb::CreateTemporaryCredentialsRequest,
) -> Result<pb::CreateTemporaryCredentialsResponse, tonic::Status> {
    s.workspaces()
        .create_temporary_credentials(req(request, key))
        .await
        .map(|r| r.into_inner())
}

/// Ann, an ORG_USER who is WORKSPACE_VIEWER of `shared`: her id, her PAT
/// and the workspace.
async fn viewer(s: &TestServer) -> (String, String, String) {
    let (ann, ws) = s.viewer_of_shared().await;
    let pat = s.pat(&ann).await;
    (ann, pat, ws)
}

async fn issued_credential_verifies_with_the_published_key_set_and_carries_the_claims(b: Backend) {
    let s = harness::start(b).await;
    let (ann, pat, ws) = viewer(&s).await;
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read", "datasets:read"], None, None),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    assert_eq!(claims["iss"], "portcullis");
    assert_eq!(claims["sub"], format!("user:{ann}"));
    assert_eq!(claims["org"], s.boot.organization_id);
    assert_eq!(claims["workspace"], ws);
    assert_eq!(
        claims["permissions"],
        serde_json::json!(["datasets:read", "prompts:read"])
    );
    assert_eq!(claims["scope"], Value::Null);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - iat,
        15 * 60,
        "default ttl"
    );
    assert_eq!(claims["jti"], issued.credential_id);
    assert_eq!(claims["rev"].as_u64().unwrap(), issued.revision);
    assert_eq!(
        issued.expires_at.unwrap().seconds,
        claims["exp"].as_i64().unwrap()
    );
    let head = header(&issued.token);
    assert_eq!(head["alg"], "EdDSA");
    assert_eq!(head["typ"], "JWT");
    assert_eq!(head["kid"], issued.key_id);

    // The same key set by RPC, for any key (here the viewer's).
    let rpc = s
        .workspaces()
        .get_credential_keys(req(pb::GetCredentialKeysRequest {}, &pat))
        .await
        .unwrap()
        .into_inner();
    let rpc_jwks: Value = serde_json::from_str(&rpc.jwks).unwrap();
    assert_eq!(rpc_jwks, served_jwks(&s).await);
    assert_eq!(kids(&rpc_jwks), std::slice::from_ref(&issued.key_id));
    assert!(rpc.keys[0].current);

    // Audited, without the token.
    let events = s.audit_events("credential.issue").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target_id, ws);
    assert!(events[0].details_json.contains(&issued.credential_id));
    let signature = issued.token.rsplit('.').next().unwrap();
    assert!(!events[0].details_json.contains(signature));
}

async fn credential_fails_verification_after_it_expires(b: Backend) {
    let s = harness::start(b).await;
    let (_, pat, ws) = viewer(&s).await;
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, Some(5)),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), 5);
    // Until just past `exp` (PyJWT allows no leeway by default).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let exp = Duration::from_secs(u64::try_from(exp).unwrap());
    tokio::time::sleep(exp.saturating_sub(now) + Duration::from_millis(1100)).await;
    let err = verify(&s, &issued.token).await.unwrap_err();
    assert!(err.contains("ExpiredSignatureError"), "{err}");
}

async fn tampered_credential_fails_verification(b: Backend) {
    let s = harness::start(b).await;
    let (_, pat, ws) = viewer(&s).await;
    let token = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap()
    .token;
    let parts: Vec<&str> = token.split('.').collect();
    // More permissions in the payload, the signature kept.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["permissions"] = serde_json::json!(["prompts:read", "prompts:delete"]);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = format!("{}.{payload}.{}", parts[0], parts[2]);
    let err = verify(&s, &forged).await.unwrap_err();
    assert!(err.contains("InvalidSignatureError"), "{err}");
    // The signature changed.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    let err = verify(&s, &forged).await.unwrap_err();
    assert!(err.contains("InvalidSignatureError"), "{err}");
    // The untouched token verifies.
    verify(&s, &token).await.unwrap();
}

async fn caller_cannot_get_a_credential_for_a_permission_it_lacks(b: Backend) {
    let s = harness::start(b).await;
    let (_, pat, ws) = viewer(&s).await;
    assert_code(
        s.workspaces()
            .create_temporary_credentials(req(
                credential_request(&ws, &["prompts:read", "prompts:update"], None, None),
                &pat,
            ))
            .await,
        Code::PermissionDenied,
        "`prompts:update`",
    );
    assert_code(
        s.workspaces()
            .create_temporary_credentials(req(
                credential_request(&ws, &["prompts:fly"], None, None),
                &pat,
            ))
            .await,
        Code::InvalidArgument,
        "permissions: unknown permission `prompts:fly`",
    );
    assert_code(
        s.workspaces()
            .create_temporary_credentials(req(credential_request(&ws, &[], None, None), &pat))
            .await,
        Code::InvalidArgument,
        "permissions: ",
    );
}

async fn ttl_above_the_maximum_is_refused(b: Backend) {
    let s = harness::start(b).await;
    let (_, pat, ws) = viewer(&s).await;
    for ttl in [0, 3601] {
        assert_code(
            s.workspaces()
                .create_temporary_credentials(req(
                    credential_request(&ws, &["prompts:read"], None, Some(ttl)),
                    &pat,
                ))
                .await,
            Code::InvalidArgument,
            "ttl_seconds: must be between 1 and 3600 seconds",
        );
    }
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, Some(3600)),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

async fn scoped_grant_passes_only_to_a_credential_within_its_scope(b: Backend) {
    let s = harness::start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shop").await;
    s.application(&ws, "checkout").await;
    s.grant(
        &ws,
        user(&ann.user_id),
        "WORKSPACE_EDITOR",
        app_scope("checkout"),
    )
    .await;
    let pat = s.pat(&ann.user_id).await;
    assert_code(
        s.workspaces()
            .create_temporary_credentials(req(
                credential_request(&ws, &["prompts:update"], None, None),
                &pat,
            ))
            .await,
        Code::PermissionDenied,
        "`prompts:update`",
    );
    let prod_only = Some(pb::Scope {
        conditions: vec![pb::TagCondition {
            key: "Environment".into(),
            values: vec!["prod".into()],
        }],
        application: String::new(),
    });
    assert_code(
        s.workspaces()
            .create_temporary_credentials(req(
                credential_request(&ws, &["prompts:update"], prod_only, None),
                &pat,
            ))
            .await,
        Code::PermissionDenied,
        "`prompts:update`",
    );
    let narrower = Some(pb::Scope {
        conditions: vec![pb::TagCondition {
            key: "Environment".into(),
            values: vec!["prod".into()],
        }],
        application: "checkout".into(),
    });
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:update"], narrower, None),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    assert_eq!(
        claims["scope"],
        serde_json::json!({"conditions": [
            {"key": "Application", "values": ["checkout"]},
            {"key": "Environment", "values": ["prod"]},
        ]})
    );
}

async fn key_limited_to_another_workspace_gets_no_credential(b: Backend) {
    let s = harness::start(b).await;
    let a = s.workspace("alpha").await;
    let other = s.workspace("beta").await;
    let (sa, limited) = account_key(&s, "ingest", pb::OrgRole::OrgUser, &[&other]).await;
    s.grant(
        &a,
        pb::subject::Kind::ServiceAccountId(sa.clone()),
        "WORKSPACE_EDITOR",
        None,
    )
    .await;
    s.grant(
        &other,
        pb::subject::Kind::ServiceAccountId(sa.clone()),
        "WORKSPACE_VIEWER",
        None,
    )
    .await;
    // The account holds datasets:update in alpha, but the key reaches only beta.
    assert_code(
        issue(
            &s,
            &limited,
            credential_request(&a, &["datasets:update"], None, None),
        )
        .await
        .map(tonic::Response::new),
        Code::PermissionDenied,
        "not scoped to workspace",
    );
    // Nor through `x-tenant-id`.
    assert_code(
        s.workspaces()
            .create_temporary_credentials(with(
                credential_request("", &["datasets:update"], None, None),
                &limited,
                &[("x-tenant-id", &a)],
            ))
            .await,
        Code::PermissionDenied,
        "not scoped to workspace",
    );
    // In beta it holds only what it holds there; its default workspace is beta.
    assert_code(
        issue(
            &s,
            &limited,
            credential_request("", &["datasets:update"], None, None),
        )
        .await
        .map(tonic::Response::new),
        Code::PermissionDenied,
        "`datasets:update`",
    );
    let issued = issue(
        &s,
        &limited,
        credential_request("", &["datasets:read"], None, None),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    assert_eq!(claims["sub"], format!("service_account:{sa}"));
    assert_eq!(claims["workspace"], other);
}

async fn foreign_workspace_is_answered_as_an_unknown_one(b: Backend) {
    let s = harness::start(b).await;
    let globex = s.globex().await;
    let ask = |ws: String| {
        let mut client = s.workspaces();
        let request = req(
            credential_request(&ws, &["prompts:read"], None, None),
            s.key(),
        );
        async move { client.create_temporary_credentials(request).await }
    };
    let foreign = ask(globex.home.clone()).await.unwrap_err();
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let unknown = ask(unknown_id.clone()).await.unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    assert_eq!(foreign.code(), unknown.code());
    assert_eq!(
        foreign.message().replace(&globex.home, "ID"),
        unknown.message().replace(&unknown_id, "ID")
    );
}

async fn rotation_rpc_is_refused_to_non_platform_keys(b: Backend) {
    let s = harness::start(b).await;
    let before = kids(&served_jwks(&s).await);
    let admin_pat = s.pat(&s.boot.admin_user_id).await;
    let (_, admin_key) = account_key(&s, "ops", pb::OrgRole::OrgAdmin, &[]).await;
    for key in [&admin_pat, &admin_key] {
        assert_code(
            s.workspaces()
                .rotate_signing_key(req(pb::RotateSigningKeyRequest {}, key))
                .await,
            Code::PermissionDenied,
            "platform power",
        );
    }
    // Nor a platform key acting for a user.
    assert_code(
        s.workspaces()
            .rotate_signing_key(harness::as_user(
                &s,
                pb::RotateSigningKeyRequest {},
                &s.boot.admin_user_id,
            ))
            .await,
        Code::PermissionDenied,
        "platform power",
    );
    assert_eq!(kids(&served_jwks(&s).await), before);
}

async fn rotation_signs_with_a_new_key_and_keeps_the_old_one_published_until_its_credentials_expired(
    b: Backend,
) {
    let max_ttl = Duration::from_secs(3);
    let s = harness::start_with_settings(
        b,
        Settings {
            credentials: CredentialSettings {
                max_ttl,
                default_ttl: max_ttl,
                ..CredentialSettings::default()
            },
            ..Settings::default()
        },
    )
    .await;
    let (_, pat, ws) = viewer(&s).await;
    let old = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap();
    let rotated = s
        .workspaces()
        .rotate_signing_key(req(pb::RotateSigningKeyRequest {}, s.key()))
        .await
        .unwrap()
        .into_inner();
    let rotated_at = std::time::Instant::now();
    assert_eq!(rotated.retired_key_id, old.key_id);
    assert_ne!(rotated.key_id, old.key_id);
    let new = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap();
    assert_eq!(new.key_id, rotated.key_id);
    assert_eq!(header(&new.token)["kid"], rotated.key_id);
    let published = kids(&served_jwks(&s).await);
    assert!(published.contains(&old.key_id) && published.contains(&new.key_id));
    // Both verify with the one key set.
    verify(&s, &old.token).await.unwrap();
    verify(&s, &new.token).await.unwrap();
    // The old key stays published while its credentials may live...
    tokio::time::sleep(max_ttl.saturating_sub(rotated_at.elapsed())).await;
    assert!(kids(&served_jwks(&s).await).contains(&old.key_id));
    // ...and leaves the key set after.
    harness::wait_until(
        "the retired key leaves the key set",
        Duration::from_secs(15),
        || async { kids(&served_jwks(&s).await) },
        |k| !k.contains(&old.key_id),
    )
    .await;
    assert!(rotated_at.elapsed() >= max_ttl);
    assert_eq!(
        kids(&served_jwks(&s).await),
        std::slice::from_ref(&new.key_id)
    );
    let err = verify(&s, &old.token).await.unwrap_err();
    assert!(
        err.contains("PyJWKClientError") || err.contains("ExpiredSignatureError"),
        "{err}"
    );
}

async fn command_line_rotation_reaches_the_running_server(b: Backend) {
    let s = harness::start(b).await;
    let (_, pat, ws) = viewer(&s).await;
    let before = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap();
    let url = s.db_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["rotate-signing-key", "--database-url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["retired_key_id"], before.key_id);
    let after = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap();
    assert_eq!(after.key_id, printed["key_id"].as_str().unwrap());
    verify(&s, &after.token).await.unwrap();
    verify(&s, &before.token).await.unwrap();
}

async fn replicas_starting_at_once_make_one_signing_key(b: Backend) {
    let db = harness::TestDb::new(b).await;
    let first = portcullis::store::Store::connect(&db.url).await.unwrap();
    first.migrate().await.unwrap();
    let second = portcullis::store::Store::connect(&db.url).await.unwrap();
    let (a, c) = tokio::join!(
        portcullis::domain::credentials::ensure_signing_key(&first),
        portcullis::domain::credentials::ensure_signing_key(&second),
    );
    a.unwrap();
    c.unwrap();
    use sea_orm::ConnectionTrait;
    let rows = first
        .db()
        .query_all_raw(sea_orm::Statement::from_string(
            first.backend(),
            "SELECT id FROM signing_keys",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

async fn signing_key_file_replaces_the_database_keys(b: Backend) {
    let key = Arc::new(KeyPair::generate().unwrap());
    let kid = key.kid().to_owned();
    let s = harness::start_with_settings(
        b,
        Settings {
            credentials: CredentialSettings {
                key_file: Some(key),
                ..CredentialSettings::default()
            },
            ..Settings::default()
        },
    )
    .await;
    assert_eq!(kids(&served_jwks(&s).await), std::slice::from_ref(&kid));
    let (_, pat, ws) = viewer(&s).await;
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, None),
    )
    .await
    .unwrap();
    assert_eq!(issued.key_id, kid);
    verify(&s, &issued.token).await.unwrap();
    assert_code(
        s.workspaces()
            .rotate_signing_key(req(pb::RotateSigningKeyRequest {}, s.key()))
            .await,
        Code::FailedPrecondition,
        "--signing-key-file",
    );
}

/// A credential drawn from an expiring grant expires no later than the grant.
async fn credential_does_not_outlive_the_grants_it_is_drawn_from(b: Backend) {
    let s = harness::start(b).await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let ws = s.workspace("shared").await;
    let grant_until = s.state.settings.clock.now_ms() + 10 * 60 * 1000;
    s.workspaces()
        .grant_access(req(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: Some(pb::Subject {
                    kind: Some(harness::user(&ann.user_id)),
                }),
                role: "WORKSPACE_VIEWER".into(),
                scope: None,
                expires_at: Some(portcullis::api::timestamp(grant_until)),
            },
            s.key(),
        ))
        .await
        .unwrap();
    let pat = s.pat(&ann.user_id).await;
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, Some(3600)),
    )
    .await
    .unwrap();
    let claims = verify(&s, &issued.token).await.unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        exp * 1000 <= grant_until && exp * 1000 > grant_until - 2_000,
        "exp {exp} is capped at the grant's expiry {grant_until}"
    );
    assert_eq!(issued.expires_at.unwrap().seconds, exp);
}

/// A credential expires no later than the key that asked for it.
async fn credential_does_not_outlive_the_calling_key(b: Backend) {
    let s = harness::start(b).await;
    let (ann, ws) = s.viewer_of_shared().await;
    let key_until = s.state.settings.clock.now_ms() + 10 * 60 * 1000;
    let pat = s
        .identity()
        .create_personal_access_token(harness::as_user(
            &s,
            pb::CreatePersonalAccessTokenRequest {
                expires_at: Some(portcullis::api::timestamp(key_until)),
                ..Default::default()
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner()
        .key;
    let issued = issue(
        &s,
        &pat,
        credential_request(&ws, &["prompts:read"], None, Some(3600)),
    )
    .await
    .unwrap();
    let exp = issued.expires_at.unwrap().seconds;
    assert!(
        exp * 1000 <= key_until && exp * 1000 > key_until - 2_000,
        "exp {exp} is capped at the key's expiry {key_until}"
    );
    let claims = verify(&s, &issued.token).await.unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap(), exp);
}

both_backends!(
    issued_credential_verifies_with_the_published_key_set_and_carries_the_claims,
    credential_fails_verification_after_it_expires,
    tampered_credential_fails_verification,
    caller_cannot_get_a_credential_for_a_permission_it_lacks,
    ttl_above_the_maximum_is_refused,
    scoped_grant_passes_only_to_a_credential_within_its_scope,
    key_limited_to_another_workspace_gets_no_credential,
    foreign_workspace_is_answered_as_an_unknown_one,
    rotation_rpc_is_refused_to_non_platform_keys,
    rotation_signs_with_a_new_key_and_keeps_the_old_one_published_until_its_credentials_expired,
    command_line_rotation_reaches_the_running_server,
    replicas_starting_at_once_make_one_signing_key,
    signing_key_file_replaces_the_database_keys,
    credential_does_not_outlive_the_grants_it_is_drawn_from,
    credential_does_not_outlive_the_calling_key,
);
