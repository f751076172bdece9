//! Two server processes behind PgBouncer in transaction pooling mode: no
//! `LISTEN` (a pooled connection cannot keep one), no migrations through the
//! pooler (their session advisory lock needs a session). sqlx's named
//! prepared statements and their cache stay as they are: PgBouncer (1.21 and
//! later) carries them with `max_prepared_statements`. Changes still reach
//! the other replica through the change log within the revision poll,
//! without flushing the caches, and both replicas read and write through the
//! pooler.
//!
//! PostgreSQL only. The test starts its own `pgbouncer` (from
//! `PORTCULLIS_PGBOUNCER`, else the one on `PATH`; `.ci/run` builds 1.24.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use harness::{Backend, TestDb, http_get, sample};
use portcullis::proto::v1::{
    self as pb, check_service_client::CheckServiceClient,
    identity_service_client::IdentityServiceClient,
    workspace_service_client::WorkspaceServiceClient,
};
use processes::{
    Serve, authed, bootstrap, check, check_request, create_workspace, free_port, grant, new_member,
    revoke,
};

/// The revision poll of both replicas: the only way a change made on one
/// reaches the other, as they do not listen for notifications.
const POLL: Duration = Duration::from_millis(200);

/// The pgbouncer binary: `PORTCULLIS_PGBOUNCER`, else the one on `PATH`.
fn pgbouncer_binary() -> PathBuf {
    let path = std::env::var_os("PORTCULLIS_PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pgbouncer"));
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): set PORTCULLIS_PGBOUNCER, or run .ci/run, which builds \
                 PgBouncer 1.24.1",
                path.display()
            )
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        supports_prepared_statements(&version),
        "{} is {}; transaction pooling with prepared statements needs PgBouncer 1.21 or later",
        path.display(),
        version.lines().next().unwrap_or("of an unknown version")
    );
    path
}

/// Whether `pgbouncer --version` names 1.21 or later.
fn supports_prepared_statements(version: &str) -> bool {
    let number = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0))
        .collect::<Vec<_>>();
    matches!(number.as_slice(), [major, minor, ..] if (*major, *minor) >= (1, 21))
}

/// `host` and `port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap()),
        None => (host_port.to_owned(), 5432),
    }
}

/// A `pgbouncer` child process in transaction pooling mode in front of the
/// test's PostgreSQL, with a directory of its own; killed on drop.
struct PgBouncer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(db: &TestDb) -> Self {
        let binary = pgbouncer_binary();
        let dir = tempfile::tempdir().unwrap();
        let (pg_host, pg_port) = host_port(&db.url);
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        // `extra_float_digits`: sqlx sends it in every startup packet and
        // PgBouncer refuses startup parameters it does not track.
        let ini = format!(
            "[databases]\n\
             * = host={pg_host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             pool_mode = transaction\n\
             max_client_conn = 500\n\
             default_pool_size = 20\n\
             max_prepared_statements = 200\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            auth = path("userlist.txt"),
            log = path("pgbouncer.log"),
            pid = path("pgbouncer.pid"),
        );
        std::fs::write(path("pgbouncer.ini"), ini).unwrap();

        let mut command = Command::new(&binary);
        command.arg(path("pgbouncer.ini"));
        if running_as_root() {
            // PgBouncer refuses to run as root: it drops to `nobody`, who
            // must read the configuration and write the log and pid file.
            use std::os::unix::fs::PermissionsExt;
            let open = std::fs::Permissions::from_mode(0o777);
            std::fs::set_permissions(dir.path(), open).unwrap();
            command.args(["-u", "nobody"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut bouncer = Self { child, port, dir };
        bouncer.wait_listening();
        bouncer
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pgbouncer exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `db` through the pooler.
    fn url(&self, db: &TestDb) -> String {
        let name = db.url.rsplit('/').next().unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Its log file, else (when it stopped before opening it) its stderr.
    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let log = read("pgbouncer.log");
        if log.is_empty() {
            read("stderr.log")
        } else {
            log
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pgbouncer log ---\n{}", tail(&self.log(), 60));
        }
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `portcullis serve` through the pooler; its log is printed when the
/// test fails.
struct Replica {
    name: &'static str,
    serve: Serve,
    log: tempfile::NamedTempFile,
}

impl Replica {
    fn start(name: &'static str, url: &str) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let poll = format!("{}ms", POLL.as_millis());
        let serve = Serve::start_url(
            url,
            &[
                "--no-migrate",
                "--listen-for-changes",
                "false",
                "--revision-poll",
                &poll,
                "--cache-ttl",
                "10m",
            ],
            log.reopen().unwrap(),
        );
        Self { name, serve, log }
    }

    async fn scrape(&self) -> String {
        let addr: SocketAddr = self.serve.metrics_addr.parse().unwrap();
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (at most 10 s) until the replica applied `revision`.
    async fn wait_applied(&self, revision: u64) {
        let started = Instant::now();
        loop {
            let applied = sample(&self.scrape().await, APPLIED);
            if applied >= revision as f64 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {} stuck at revision {applied}, below {revision}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- replica {} log ---\n{}",
                self.name,
                tail(&self.log(), 60)
            );
        }
    }
}

/// The change log's rows, read directly: what each change invalidated.
async fn change_log(db: &TestDb) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT revision::text || ' ' || invalidations || ' ' || events::text AS line \
             FROM change_log ORDER BY revision",
        ))
        .await
        .unwrap();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "line").unwrap())
        .collect();
    conn.close().await.ok();
    lines.join("\n")
}

const HITS: &str = "portcullis_cache_hits_total{cache=\"decision\"}";
const MISSES: &str = "portcullis_cache_misses_total{cache=\"decision\"}";
const ENTRIES: &str = "portcullis_cache_entries{cache=\"decision\"}";
const TRIMMED: &str = "portcullis_cache_flushes_total{reason=\"trimmed\"}";
const UNREACHABLE: &str = "portcullis_cache_flushes_total{reason=\"unreachable\"}";
const APPLIED: &str = "portcullis_revision_applied";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_a_transaction_pooler_follow_the_change_log() {
    let started = Instant::now();
    let db = TestDb::new(Backend::Postgres).await;
    // Migrations take a session advisory lock: directly, not through the pooler.
    let boot = bootstrap(&db, &["--organization-name", "pooled"]);
    let key = boot["key"].as_str().unwrap().to_owned();
    let bouncer = PgBouncer::start(&db);
    let url = bouncer.url(&db);
    let a = Replica::start("A", &url);
    let b = Replica::start("B", &url);
    let (ca, cb) = (a.serve.channel().await, b.serve.channel().await);
    let mut identity_a = IdentityServiceClient::new(ca.clone());
    let mut workspaces_a = WorkspaceServiceClient::new(ca.clone());
    let mut check_a = CheckServiceClient::new(ca.clone());
    let mut identity_b = IdentityServiceClient::new(cb.clone());
    let mut workspaces_b = WorkspaceServiceClient::new(cb.clone());
    let mut check_b = CheckServiceClient::new(cb.clone());

    // Written through A.
    let (ann, _) = new_member(&mut identity_a, &key, "ann").await;
    let (bob, bob_home) = new_member(&mut identity_a, &key, "bob").await;
    let shared = create_workspace(&mut workspaces_a, &key, "shared").await;
    let granted = grant(
        &mut workspaces_a,
        &key,
        &shared.id,
        &ann,
        "WORKSPACE_VIEWER",
    )
    .await;

    // B's log reader first applies every change up to the grant (within a
    // poll): a set loaded straight from storage before the reader applied
    // an older change naming its principal is dropped when that change is
    // applied, which would empty the cache this test watches.
    b.wait_applied(granted.revision).await;

    // Read through B: both sets are loaded once, then served from the cache.
    let ann_reads = check_request(&ann, &shared.id, "datasets:read");
    let bob_deletes = check_request(&bob, &bob_home, "prompts:delete");
    let first = check(
        &mut check_b,
        &key,
        pb::CheckRequest {
            at_least_revision: granted.revision,
            ..ann_reads.clone()
        },
    )
    .await;
    assert!(first.allowed, "ann reads datasets in shared, on B");
    assert!(first.revision >= granted.revision);
    assert!(
        check(&mut check_b, &key, bob_deletes.clone()).await.allowed,
        "bob is admin of his default workspace, on B"
    );
    assert!(check(&mut check_b, &key, ann_reads.clone()).await.allowed);
    assert!(check(&mut check_b, &key, bob_deletes.clone()).await.allowed);
    let scrape = b.scrape().await;
    assert!(
        sample(&scrape, ENTRIES) >= 2.0,
        "B caches ann's and bob's sets:\n{scrape}"
    );
    assert!(sample(&scrape, HITS) >= 2.0, "{scrape}");

    // Revoked through A; B reads the change log every POLL.
    revoke(&mut workspaces_a, &key, &shared.id, granted).await;
    let revoked = Instant::now();
    loop {
        if !check(&mut check_b, &key, ann_reads.clone()).await.allowed {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "B never saw the revocation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = revoked.elapsed();
    eprintln!("revocation seen on B after {took:?} (poll {POLL:?})");
    // At most one poll interval passes before B's next read of the log, a
    // second covers a read that started just before the commit; the margin
    // covers the reads' round trips through the pooler, the 5 ms probe
    // spacing and scheduling on a loaded two-core CI machine.
    assert!(
        took < 2 * POLL + Duration::from_millis(600),
        "B took {took:?} to deny ann (poll {POLL:?})"
    );

    // The change was applied entry by entry: nothing flushed, bob's set
    // is still cached.
    let before = b.scrape().await;
    assert_eq!(sample(&before, TRIMMED), 0.0, "{before}");
    assert_eq!(sample(&before, UNREACHABLE), 0.0, "{before}");
    assert!(check(&mut check_b, &key, bob_deletes.clone()).await.allowed);
    let after = b.scrape().await;
    let caches = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("portcullis_cache_") || l.starts_with("portcullis_change"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let both = format!("before:\n{}\nafter:\n{}", caches(&before), caches(&after));
    let hit = sample(&after, HITS) - sample(&before, HITS);
    let loaded = sample(&after, MISSES) - sample(&before, MISSES);
    if hit != 1.0 || loaded != 0.0 {
        panic!(
            "bob's check on B after ann's revocation: {hit} hits, {loaded} misses (want 1 and \
             0: bob's set stays cached)\n{both}\nthe change log:\n{}",
            change_log(&db).await
        );
    }

    // Written through B, read through A.
    let (cat, _) = new_member(&mut identity_b, &key, "cat").await;
    let from_b = create_workspace(&mut workspaces_b, &key, "from-b").await;
    let cat_grant = grant(
        &mut workspaces_b,
        &key,
        &from_b.id,
        &cat,
        "WORKSPACE_EDITOR",
    )
    .await;
    let on_a = check(
        &mut check_a,
        &key,
        pb::CheckRequest {
            at_least_revision: cat_grant.revision,
            ..check_request(&cat, &from_b.id, "datasets:read")
        },
    )
    .await;
    assert!(on_a.allowed, "cat's grant made on B is seen on A");
    let got = workspaces_a
        .get_workspace(authed(
            pb::GetWorkspaceRequest {
                workspace_id: from_b.id.clone(),
            },
            &key,
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap();
    assert_eq!(got.key, "from-b");
    let listed = workspaces_a
        .list_workspaces(authed(pb::ListWorkspacesRequest::default(), &key, &[]))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&str> = listed.workspaces.iter().map(|w| w.key.as_str()).collect();
    assert!(
        keys.contains(&"shared") && keys.contains(&"from-b"),
        "{keys:?}"
    );
    // A's log reader follows B's writes too (the check above read storage).
    a.wait_applied(cat_grant.revision).await;

    for r in [&a, &b] {
        let s = r.scrape().await;
        assert_eq!(sample(&s, TRIMMED), 0.0, "replica {}:\n{s}", r.name);
        assert_eq!(sample(&s, UNREACHABLE), 0.0, "replica {}:\n{s}", r.name);
    }

    // Anything the replicas complained about, for the record.
    for r in [&a, &b] {
        for line in r.log().lines() {
            if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("replica {}: {line}", r.name);
            }
        }
    }

    drop((a, b));
    drop(bouncer);
    drop(db);
    eprintln!("whole test: {:?}", started.elapsed());
}
