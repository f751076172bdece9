//! No secret reaches a log line: a real `serve` process logging everything at
//! the most verbose level, in both formats, while keys are created, used,
//! mistyped, revoked and refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;

use harness::{Backend, TestDb};
use portcullis::proto::v1::{
    self as pb, check_service_client::CheckServiceClient,
    identity_service_client::IdentityServiceClient,
};
use processes::{Serve, authed};

/// Everything secret the run handled: whole keys and their random bodies.
fn secret_parts(key: &str) -> Vec<String> {
    // `pcv2_xx_` + 32 random characters + 6 checksum characters.
    vec![key.to_owned(), key[8..40].to_owned()]
}

async fn exercise(serve: &Serve, admin_key: &str) -> Vec<String> {
    let channel = serve.channel().await;
    let mut identity = IdentityServiceClient::new(channel.clone());
    let mut check = CheckServiceClient::new(channel);
    let mut secrets = secret_parts(admin_key);

    let sa = identity
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                organization_id: String::new(),
                name: "robot".into(),
                ..Default::default()
            },
            admin_key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    let created = identity
        .create_service_key(authed(
            pb::CreateServiceKeyRequest {
                service_account_id: sa.id.clone(),
                scope: pb::ServiceKeyScope::Organization as i32,
                ..Default::default()
            },
            admin_key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.clone();
    secrets.extend(secret_parts(&key));

    // Used, checked by key, mistyped, revoked and used again, legacy.
    identity
        .list_teams(authed(pb::ListTeamsRequest::default(), &key, &[]))
        .await
        .unwrap();
    let _ = check
        .check(authed(
            pb::CheckRequest {
                principal: Some(pb::CheckPrincipal {
                    kind: Some(pb::check_principal::Kind::ApiKey(key.clone())),
                }),
                workspace_id: "00000000-0000-0000-0000-000000000000".into(),
                permission: "datasets:read".into(),
                ..Default::default()
            },
            admin_key,
            &[],
        ))
        .await;
    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    secrets.extend(secret_parts(&typo));
    assert!(
        identity
            .list_teams(authed(pb::ListTeamsRequest::default(), &typo, &[]))
            .await
            .is_err()
    );
    identity
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest {
                organization_id: String::new(),
                api_key_id: created.api_key.unwrap().id,
            },
            admin_key,
            &[],
        ))
        .await
        .unwrap();
    assert!(
        identity
            .list_teams(authed(pb::ListTeamsRequest::default(), &key, &[]))
            .await
            .is_err()
    );
    let legacy = "pc__0123456789abcdefghijklmnopqrstuv";
    secrets.push(legacy.to_owned());
    assert!(
        identity
            .list_teams(authed(pb::ListTeamsRequest::default(), legacy, &[]))
            .await
            .is_err()
    );
    secrets
}

async fn no_secret_in_any_log_line(b: Backend, format: &str) {
    let db = TestDb::new(b).await;
    let boot = processes::bootstrap(&db, &[]);
    let admin_key = boot["key"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut serve = Serve::start_logging(
        &db,
        &[],
        &[
            ("PORTCULLIS_LOG", "trace"),
            ("PORTCULLIS_LOG_FORMAT", format),
        ],
        log,
    );
    let secrets = exercise(&serve, &admin_key).await;
    assert!(serve.terminate().success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    // The log is really there and verbose: the RPC spans, the refusals.
    assert!(text.lines().count() > 50, "{text}");
    assert!(text.contains("rpc finished"), "{text}");
    assert!(text.contains("service_account:"), "{text}");
    for secret in &secrets {
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains(secret.as_str()),
                "log line {n} holds a secret: {line}"
            );
        }
    }
}

async fn json_logs(b: Backend) {
    no_secret_in_any_log_line(b, "json").await;
}

async fn text_logs(b: Backend) {
    no_secret_in_any_log_line(b, "text").await;
}

both_backends!(json_logs, text_logs);
