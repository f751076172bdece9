//! The shared harness of the integration tests: a real server on an
//! ephemeral port against a fresh database (a SQLite file, or a PostgreSQL
//! database created for the test and dropped after it), the generated tonic
//! clients, and small helpers for the flows most tests need.

#![allow(dead_code)]

pub mod attack;
pub mod raw;

use portcullis::{
    bootstrap::{self, BootstrapInput, BootstrapOutput},
    config::{DeploymentMode, Settings},
    proto::v1::{
        self as pb, audit_service_client::AuditServiceClient,
        check_service_client::CheckServiceClient, identity_service_client::IdentityServiceClient,
        roles_service_client::RolesServiceClient, workspace_service_client::WorkspaceServiceClient,
    },
    server,
    state::AppState,
    store::Store,
};
use sea_orm::ConnectionTrait;
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status, transport::Channel};

/// The storage backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates `async fn name(b: Backend)` tests for both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}

fn pg_base() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn pg_admin(sql: &str) {
    let db = sea_orm::Database::connect(format!("{}/postgres", pg_base()))
        .await
        .expect("PostgreSQL is reachable (.ci/run starts it)");
    db.execute_unprepared(sql).await.expect("admin statement");
    db.close().await.ok();
}

/// A fresh database, removed when dropped.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// Creates an empty database on `backend`.
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}/test.db?mode=rwc", dir.path().display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
                pg_admin(&format!("CREATE DATABASE {name}")).await;
                Self {
                    url: format!("{}/{name}", pg_base()),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs inside the test's runtime: clean up from a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(pg_admin(&format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )));
            })
            .join();
        }
    }
}

/// A running server and what bootstrap made.
pub struct TestServer {
    pub channel: Channel,
    pub boot: BootstrapOutput,
    pub backend: Backend,
    pub store: Store,
    /// The server's own state: its caches, settings and metrics.
    pub state: AppState,
    /// The gRPC address.
    pub addr: std::net::SocketAddr,
    /// The Prometheus endpoint's address.
    pub metrics_addr: std::net::SocketAddr,
    /// The database the test owns (the server may reach it another way).
    pub db_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    metrics_task: tokio::task::JoinHandle<()>,
    _db: TestDb,
}

/// Starts a self-hosted server.
pub async fn start(backend: Backend) -> TestServer {
    start_with(backend, DeploymentMode::SelfHosted).await
}

/// Starts a server in a deployment mode.
pub async fn start_with(backend: Backend, mode: DeploymentMode) -> TestServer {
    let settings = Settings {
        deployment_mode: mode,
        ..Settings::default()
    };
    start_with_settings(backend, settings).await
}

/// Starts a server with `settings`.
pub async fn start_with_settings(backend: Backend, settings: Settings) -> TestServer {
    let db = TestDb::new(backend).await;
    launch(db, backend, settings, None).await
}

/// Starts a server on `db` (migrated and bootstrapped here, directly); the
/// server itself connects to `server_url` when given (a proxy, say), else to `db`.
pub async fn launch(
    db: TestDb,
    backend: Backend,
    settings: Settings,
    server_url: Option<String>,
) -> TestServer {
    let direct = Store::connect(&db.url).await.unwrap();
    direct.migrate().await.unwrap();
    let boot = bootstrap::run(
        &direct,
        &BootstrapInput {
            organization_name: "acme".into(),
            admin_email: "admin@acme.test".into(),
            admin_subject: "idp|admin".into(),
        },
    )
    .await
    .unwrap();
    let store = match server_url {
        Some(url) => Store::connect(&url).await.unwrap(),
        None => direct,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let state = AppState::new(store.clone(), settings);
    let metrics_listener = portcullis::metrics::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let metrics_task = tokio::spawn(portcullis::metrics::serve(metrics_listener, state.clone()));
    let server_state = state.clone();
    let task = tokio::spawn(async move {
        server::run(listener, server_state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    if backend == Backend::Postgres {
        wait_for_change_listener(&state).await;
    }
    // Lazy: a server with TLS is reached through a channel of the test's own.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    TestServer {
        channel,
        boot,
        backend,
        store,
        state,
        addr,
        metrics_addr,
        db_url: db.url.clone(),
        shutdown: Some(tx),
        task: Some(task),
        metrics_task,
        _db: db,
    }
}

/// Waits until a PostgreSQL server's change listener listens, so that a
/// test's changes wake the other replicas' log readers at once.
pub async fn wait_for_change_listener(state: &AppState) {
    let started = std::time::Instant::now();
    while !state
        .metrics
        .render(state)
        .lines()
        .any(|l| l == "portcullis_change_listener_up 1")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the change listener did not start within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl TestServer {
    /// The body of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics_addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A service account of the bootstrap organization with `role`, and a key
/// of it made by the bootstrap key, limited to `workspaces` (none: the
/// whole organization).
pub async fn account_key(
    s: &TestServer,
    name: &str,
    role: pb::OrgRole,
    workspaces: &[&str],
) -> (String, String) {
    let sa = s.service_account_with_role(name, role).await;
    let key = service_key(s, s.key(), &sa, workspaces).await.unwrap();
    (sa, key)
}

/// A service key of `sa` made with `with_key`, limited to `workspaces`
/// (none: the whole organization).
pub async fn service_key(
    s: &TestServer,
    with_key: &str,
    sa: &str,
    workspaces: &[&str],
) -> Result<String, tonic::Status> {
    let scope = if workspaces.is_empty() {
        pb::ServiceKeyScope::Organization
    } else {
        pb::ServiceKeyScope::Workspaces
    };
    s.identity()
        .create_service_key(req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa.into(),
                scope: scope as i32,
                workspace_ids: workspaces.iter().map(|w| (*w).to_owned()).collect(),
                ..Default::default()
            },
            with_key,
        ))
        .await
        .map(|r| r.into_inner().key)
}

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as exported) in
/// a scrape; 0 when absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or(0.0)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.metrics_task.abort();
    }
}

/// A request carrying `authorization: Bearer <key>`.
pub fn req<T>(msg: T, key: &str) -> Request<T> {
    with(msg, key, &[])
}

/// A request with a key and more metadata (`x-tenant-id`, `x-act-as-user`).
pub fn with<T>(msg: T, key: &str, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    for (k, v) in metadata {
        r.metadata_mut().insert(*k, v.parse().unwrap());
    }
    r
}

/// A request made by the bootstrap key acting for `user`.
pub fn as_user<T>(s: &TestServer, msg: T, user: &str) -> Request<T> {
    with(msg, &s.boot.key, &[("x-act-as-user", user)])
}

/// Asserts a gRPC failure with `code` whose message contains `needle`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Ok(r) => panic!(
            "expected {code:?} ({needle}), got success: {:?}",
            r.into_inner()
        ),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            assert!(
                s.message().contains(needle),
                "message {:?} should contain {needle:?}",
                s.message()
            );
        }
    }
}

/// A second organization and its admin.
#[derive(Clone, Debug)]
pub struct Globex {
    pub id: String,
    /// The admin's user id.
    pub admin: String,
    /// The admin's default workspace.
    pub home: String,
}

/// A member of the bootstrap organization.
#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: String,
    pub home: String,
}

impl TestServer {
    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel.clone())
    }
    pub fn workspaces(&self) -> WorkspaceServiceClient<Channel> {
        WorkspaceServiceClient::new(self.channel.clone())
    }
    pub fn roles(&self) -> RolesServiceClient<Channel> {
        RolesServiceClient::new(self.channel.clone())
    }
    pub fn check(&self) -> CheckServiceClient<Channel> {
        CheckServiceClient::new(self.channel.clone())
    }
    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    /// The bootstrap organization's audit events of one action, newest
    /// first, read with the bootstrap key.
    pub async fn audit_events(&self, action: &str) -> Vec<pb::AuditEvent> {
        self.audit()
            .list_audit_events(req(
                pb::ListAuditEventsRequest {
                    action: action.into(),
                    ..Default::default()
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// The bootstrap key.
    pub fn key(&self) -> &str {
        &self.boot.key
    }

    /// Registers a user (`name@acme.test`).
    pub async fn user(&self, name: &str) -> String {
        self.identity()
            .create_user(req(
                pb::CreateUserRequest {
                    external_subject: format!("idp|{name}"),
                    email: format!("{name}@acme.test"),
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .id
    }

    /// Registers a user and adds them to the bootstrap organization with `role`.
    pub async fn member(&self, name: &str, role: pb::OrgRole) -> Member {
        let user_id = self.user(name).await;
        let m = self
            .identity()
            .add_member(req(
                pb::AddMemberRequest {
                    organization_id: String::new(),
                    user_id: user_id.clone(),
                    role: role as i32,
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .member
            .unwrap();
        Member {
            user_id,
            home: m.default_workspace_id,
        }
    }

    /// A personal access token of `user` in the bootstrap organization.
    pub async fn pat(&self, user: &str) -> String {
        self.identity()
            .create_personal_access_token(as_user(
                self,
                pb::CreatePersonalAccessTokenRequest::default(),
                user,
            ))
            .await
            .unwrap()
            .into_inner()
            .key
    }

    /// A shared workspace created by the bootstrap key.
    pub async fn workspace(&self, key: &str) -> String {
        self.workspaces()
            .create_workspace(req(
                pb::CreateWorkspaceRequest {
                    organization_id: String::new(),
                    key: key.into(),
                    name: String::new(),
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .workspace
            .unwrap()
            .id
    }

    /// Ann, an ORG_USER who is WORKSPACE_VIEWER of a new workspace `shared`:
    /// her user id and the workspace id.
    pub async fn viewer_of_shared(&self) -> (String, String) {
        let ann = self.member("ann", pb::OrgRole::OrgUser).await;
        let ws = self.workspace("shared").await;
        self.grant(&ws, user(&ann.user_id), "WORKSPACE_VIEWER", None)
            .await;
        (ann.user_id, ws)
    }

    /// Grants `role` to a subject in a workspace; returns the grant id.
    pub async fn grant(
        &self,
        workspace: &str,
        subject: pb::subject::Kind,
        role: &str,
        scope: Option<pb::Scope>,
    ) -> String {
        self.workspaces()
            .grant_access(req(
                pb::GrantAccessRequest {
                    workspace_id: workspace.into(),
                    subject: Some(pb::Subject {
                        kind: Some(subject),
                    }),
                    role: role.into(),
                    scope,
                    expires_at: None,
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap()
            .id
    }

    /// A team of the bootstrap organization with these members.
    pub async fn team(&self, name: &str, members: &[&str]) -> String {
        let team = self
            .identity()
            .create_team(req(
                pb::CreateTeamRequest {
                    organization_id: String::new(),
                    name: name.into(),
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap()
            .id;
        for m in members {
            self.identity()
                .add_team_member(req(
                    pb::AddTeamMemberRequest {
                        organization_id: String::new(),
                        team_id: team.clone(),
                        user_id: (*m).into(),
                        expires_at: None,
                    },
                    self.key(),
                ))
                .await
                .unwrap();
        }
        team
    }

    /// Whether `user` may use `permission` in `workspace` on a resource with `tags`.
    pub async fn allowed(
        &self,
        user: &str,
        workspace: &str,
        permission: &str,
        tags: &[(&str, &str)],
    ) -> bool {
        self.check()
            .check(req(
                check_request(user, workspace, permission, tags),
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .allowed
    }
}

/// A Check request about a user.
pub fn check_request(
    user: &str,
    workspace: &str,
    permission: &str,
    tags: &[(&str, &str)],
) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user.into())),
        }),
        workspace_id: workspace.into(),
        permission: permission.into(),
        resource: Some(pb::Resource {
            r#type: permission.split(':').next().unwrap_or_default().into(),
            id: String::new(),
            tags: tags
                .iter()
                .map(|(k, v)| pb::Tag {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
        }),
        at_least_revision: 0,
    }
}

/// A user subject.
pub fn user(id: &str) -> pb::subject::Kind {
    pb::subject::Kind::UserId(id.into())
}

/// A team subject.
pub fn team(id: &str) -> pb::subject::Kind {
    pb::subject::Kind::TeamId(id.into())
}

/// An application scope.
pub fn app_scope(name: &str) -> Option<pb::Scope> {
    Some(pb::Scope {
        conditions: Vec::new(),
        application: name.into(),
    })
}

impl TestServer {
    /// A shared organization created by `user` (who becomes its admin), on
    /// `plan`: chosen at creation when self-hosted; in saas mode it starts on
    /// the personal plan and the platform (billing) sets the plan.
    pub async fn organization(&self, user: &str, name: &str, plan: i32) -> pb::Organization {
        let saas = self.state.settings.deployment_mode == DeploymentMode::Saas;
        let org = self
            .identity()
            .create_organization(as_user(
                self,
                pb::CreateOrganizationRequest {
                    name: name.into(),
                    plan: if saas { 0 } else { plan },
                },
                user,
            ))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap();
        if !saas || plan == 0 || plan == pb::Plan::Personal as i32 {
            return org;
        }
        self.identity()
            .update_organization(req(
                pb::UpdateOrganizationRequest {
                    organization_id: org.id,
                    plan: Some(plan),
                    ..Default::default()
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap()
    }

    /// A second organization, Globex, created for its admin Zed (a new user).
    pub async fn globex(&self) -> Globex {
        let admin = self.user("zed").await;
        let created = self
            .identity()
            .create_organization(as_user(
                self,
                pb::CreateOrganizationRequest {
                    name: "Globex".into(),
                    plan: pb::Plan::Enterprise as i32,
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        Globex {
            id: created.organization.unwrap().id,
            admin,
            home: created.member.unwrap().default_workspace_id,
        }
    }

    /// A personal access token of `user` in organization `org`.
    pub async fn pat_in(&self, org: &str, user: &str) -> String {
        self.identity()
            .create_personal_access_token(as_user(
                self,
                pb::CreatePersonalAccessTokenRequest {
                    organization_id: org.into(),
                    ..Default::default()
                },
                user,
            ))
            .await
            .unwrap()
            .into_inner()
            .key
    }

    /// A CreateTeam call of `key` in its organization, as a future of its
    /// own (to spawn, or to hold while storage is blocked).
    pub fn create_team_as(
        &self,
        key: &str,
        name: &str,
    ) -> impl Future<Output = Result<Response<pb::CreateTeamResponse>, Status>> + use<> {
        let mut client = self.identity();
        let request = req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: name.into(),
            },
            key,
        );
        async move { client.create_team(request).await }
    }

    /// The personal organization of `user`.
    pub async fn personal_organization(&self, user: &str) -> pb::Organization {
        self.identity()
            .ensure_personal_organization(as_user(
                self,
                pb::EnsurePersonalOrganizationRequest::default(),
                user,
            ))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap()
    }

    /// A service account of the bootstrap organization (role ORG_VIEWER).
    pub async fn service_account(&self, name: &str) -> String {
        self.service_account_with_role(name, pb::OrgRole::Unspecified)
            .await
    }

    /// A service account of the bootstrap organization with `role`
    /// (unspecified: the default, ORG_VIEWER).
    pub async fn service_account_with_role(&self, name: &str, role: pb::OrgRole) -> String {
        self.identity()
            .create_service_account(req(
                pb::CreateServiceAccountRequest {
                    name: name.into(),
                    role: role as i32,
                    ..Default::default()
                },
                self.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .service_account
            .unwrap()
            .id
    }

    /// Deletes a workspace with the bootstrap key.
    pub async fn delete_workspace(&self, workspace: &str) {
        self.workspaces()
            .delete_workspace(req(
                pb::DeleteWorkspaceRequest {
                    workspace_id: workspace.into(),
                },
                self.key(),
            ))
            .await
            .unwrap();
    }

    /// An application in a workspace.
    pub async fn application(&self, workspace: &str, name: &str) {
        self.workspaces()
            .create_application(req(
                pb::CreateApplicationRequest {
                    workspace_id: workspace.into(),
                    name: name.into(),
                },
                self.key(),
            ))
            .await
            .unwrap();
    }
}

/// Blocks every write: a transaction of the test's own holds the revision row,
/// which every change takes to commit (first, on SQLite). Reads go on.
pub struct WriteBlock {
    txn: sea_orm::DatabaseTransaction,
    db: sea_orm::DatabaseConnection,
}

impl WriteBlock {
    /// Takes the revision row of the database at `url`.
    pub async fn hold(url: &str) -> Self {
        use sea_orm::TransactionTrait;
        let db = sea_orm::Database::connect(url).await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("UPDATE revision SET value = value WHERE id = 1")
            .await
            .unwrap();
        Self { txn, db }
    }

    /// Lets writes go on; returns the connection for reading afterwards.
    pub async fn release(self) -> sea_orm::DatabaseConnection {
        self.txn.rollback().await.unwrap();
        self.db
    }
}

/// The names of the stored teams, read straight from the database.
pub async fn stored_team_names(
    db: &sea_orm::DatabaseConnection,
) -> std::collections::BTreeSet<String> {
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT name FROM teams",
    ))
    .await
    .unwrap()
    .into_iter()
    .map(|row| row.try_get::<String>("", "name").unwrap())
    .collect()
}

/// The `grpc.health.v1` status of `service` (`""` for the whole server).
pub async fn health_of(
    channel: &Channel,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Polls `probe` every 20 ms until `done` holds of its value, which it
/// returns; fails the test naming `what` if that takes longer than `within`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {value:?} after {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
