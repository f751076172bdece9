//! Real `portcullis` processes for end-to-end tests: `bootstrap`, and `serve`
//! on a free loopback port, against a database from the harness.

#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use portcullis::proto::v1::{
    self as pb, check_service_client::CheckServiceClient,
    identity_service_client::IdentityServiceClient,
    workspace_service_client::WorkspaceServiceClient,
};
use tonic::transport::Channel;

use super::harness::TestDb;

/// The `portcullis` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Runs `portcullis bootstrap` and returns its JSON output.
pub fn bootstrap(db: &TestDb, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bootstrap")
        .args(args)
        .env("PORTCULLIS_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bootstrap prints one JSON object")
}

/// A free loopback port for a child process to listen on, chosen below the
/// kernel's ephemeral range (32768 and up on Linux): a port from `bind(0)`
/// could be handed to another socket of the test run (an outgoing connection,
/// another server) between this check and the child's own bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let spread = std::process::id().wrapping_mul(2_654_435_761);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (spread.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `portcullis serve`, killed on drop.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
    /// Where the log goes when the caller did not take it.
    log: Option<tempfile::NamedTempFile>,
}

impl Serve {
    /// Starts `serve` on free ports (gRPC and metrics) with extra flags.
    pub fn start(db: &TestDb, extra: &[&str]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut serve = Self::start_logging(db, extra, &[], log.reopen().unwrap());
        serve.log = Some(log);
        serve
    }

    /// Starts `serve` with extra flags and environment, its log (stderr) going to `log`.
    pub fn start_logging(
        db: &TestDb,
        extra: &[&str],
        env: &[(&str, &str)],
        log: impl Into<Stdio>,
    ) -> Self {
        Self::launch(&db.url, extra, env, log)
    }

    /// Starts `serve` on free ports against the database at `url` (a pooler
    /// in front of a test database, say) with extra flags, its log (stderr)
    /// going to `log`.
    pub fn start_url(url: &str, extra: &[&str], log: impl Into<Stdio>) -> Self {
        Self::launch(url, extra, &[], log)
    }

    fn launch(url: &str, extra: &[&str], env: &[(&str, &str)], log: impl Into<Stdio>) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .args(["serve", "--listen", &addr, "--database-url", url])
            .args(["--metrics-listen", &metrics_addr])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            metrics_addr,
            log: None,
        }
    }

    /// Connects a channel, retrying until the server accepts.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr)).unwrap();
            match endpoint.connect().await {
                Ok(channel) => return channel,
                Err(e) => {
                    if Instant::now() >= deadline {
                        let log = self
                            .log
                            .as_ref()
                            .and_then(|f| std::fs::read_to_string(f.path()).ok())
                            .unwrap_or_default();
                        panic!(
                            "server at {} did not come up ({e}); its log:\n{log}",
                            self.addr
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self, "TERM");
        self.wait_exit()
    }

    /// Waits (at most 15 s) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `SIG<name>` to the server process.
pub fn signal(serve: &Serve, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name}");
}

/// A request with `authorization: Bearer <key>` and optional extra metadata.
pub fn authed<T>(msg: T, key: &str, extra: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    for (k, v) in extra {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

// Calls the multi-process tests share.

/// Registers a user (`name@processes.test`) and adds them to the key's
/// organization as ORG_USER; returns their id and default workspace.
pub async fn new_member(
    identity: &mut IdentityServiceClient<Channel>,
    key: &str,
    name: &str,
) -> (String, String) {
    let user = identity
        .create_user(authed(
            pb::CreateUserRequest {
                external_subject: format!("idp|{name}"),
                email: format!("{name}@processes.test"),
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let member = identity
        .add_member(authed(
            pb::AddMemberRequest {
                user_id: user.id.clone(),
                role: pb::OrgRole::OrgUser as i32,
                ..Default::default()
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    (user.id, member.default_workspace_id)
}

/// Creates a workspace with this key.
pub async fn create_workspace(
    workspaces: &mut WorkspaceServiceClient<Channel>,
    key: &str,
    slug: &str,
) -> pb::Workspace {
    workspaces
        .create_workspace(authed(
            pb::CreateWorkspaceRequest {
                key: slug.into(),
                ..Default::default()
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap()
}

/// Grants `role` in `workspace` to a user.
pub async fn grant(
    workspaces: &mut WorkspaceServiceClient<Channel>,
    key: &str,
    workspace: &str,
    user: &str,
    role: &str,
) -> pb::GrantAccessResponse {
    workspaces
        .grant_access(authed(
            pb::GrantAccessRequest {
                workspace_id: workspace.to_owned(),
                subject: Some(pb::Subject {
                    kind: Some(pb::subject::Kind::UserId(user.to_owned())),
                }),
                role: role.into(),
                scope: None,
                expires_at: None,
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Revokes the grant `granted` in `workspace`.
pub async fn revoke(
    workspaces: &mut WorkspaceServiceClient<Channel>,
    key: &str,
    workspace: &str,
    granted: pb::GrantAccessResponse,
) -> pb::RevokeAccessResponse {
    workspaces
        .revoke_access(authed(
            pb::RevokeAccessRequest {
                workspace_id: workspace.to_owned(),
                grant_id: granted.grant.unwrap().id,
            },
            key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
}

/// A Check of a user's permission in a workspace.
pub fn check_request(user: &str, workspace: &str, permission: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user.to_owned())),
        }),
        workspace_id: workspace.to_owned(),
        permission: permission.to_owned(),
        ..Default::default()
    }
}

/// Answers a Check.
pub async fn check(
    client: &mut CheckServiceClient<Channel>,
    key: &str,
    req: pb::CheckRequest,
) -> pb::CheckResponse {
    client
        .check(authed(req, key, &[]))
        .await
        .unwrap()
        .into_inner()
}
