//! Faults: PostgreSQL going away and coming back (through a proxy the test
//! cuts, and by terminating the server's backends), and SIGTERM with calls in
//! flight. Health follows storage, Check answers from the cache within its
//! bounds and fails closed otherwise, nothing acknowledged is lost, and the
//! service recovers by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/proxy.rs"]
mod proxy;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use harness::{
    Backend, TestDb, TestServer, WriteBlock, check_request, req, sample, stored_team_names, user,
};
use portcullis::{
    config::Settings,
    proto::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use proxy::Proxy;
use sea_orm::ConnectionTrait;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn health(s: &TestServer) -> ServingStatus {
    health_of(s, "").await
}

async fn health_of(s: &TestServer, service: &str) -> ServingStatus {
    harness::health_of(&s.channel, service).await
}

async fn wait_for_health(s: &TestServer, want: ServingStatus) {
    harness::wait_until(
        "health",
        Duration::from_secs(30),
        || health(s),
        |h| *h == want,
    )
    .await;
}

/// How long the servers behind the proxy serve cached decisions without storage.
const UNAVAILABLE_GRACE: Duration = Duration::from_secs(3);

/// A server on PostgreSQL reached through a proxy the test can cut.
async fn behind_proxy() -> (TestServer, Proxy) {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = Proxy::start(proxy::upstream_of(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let settings = Settings {
        health_probe_interval: Duration::from_millis(100),
        revision_poll_interval: Duration::from_millis(100),
        unavailable_grace: UNAVAILABLE_GRACE,
        ..Settings::default()
    };
    let s = harness::launch(db, Backend::Postgres, settings, Some(url)).await;
    (s, proxy)
}

async fn check(s: &TestServer, user: &str, ws: &str) -> Result<bool, tonic::Status> {
    s.check()
        .check(req(check_request(user, ws, "datasets:read", &[]), s.key()))
        .await
        .map(|r| r.into_inner().allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_storage_is_away_health_is_not_serving_and_checks_fail_closed() {
    let (s, proxy) = behind_proxy().await;
    let ann = s.member("ann", pb::OrgRole::OrgUser).await;
    let cached = s.workspace("cached").await;
    let cold = s.workspace("cold").await;
    s.grant(&cached, user(&ann.user_id), "WORKSPACE_VIEWER", None)
        .await;
    s.grant(&cold, user(&ann.user_id), "WORKSPACE_VIEWER", None)
        .await;
    let unused_pat = s.pat(&ann.user_id).await;
    // Listening (re)starts with dropping the caches: let it start first.
    harness::wait_until(
        "the change listener",
        Duration::from_secs(60),
        || async { sample(&s.scrape().await, "portcullis_change_listener_up") },
        |up| *up == 1.0,
    )
    .await;
    assert!(check(&s, &ann.user_id, &cached).await.unwrap());
    assert_eq!(health(&s).await, ServingStatus::Serving);
    let errors_before = sample(
        &s.scrape().await,
        "portcullis_storage_errors_total{kind=\"unavailable\"}",
    );

    let cut_at = Instant::now();
    proxy.cut();
    wait_for_health(&s, ServingStatus::NotServing).await;
    assert_eq!(
        health_of(&s, "portcullis.v1.CheckService").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_of(&s, "liveness").await,
        ServingStatus::Serving,
        "liveness does not follow storage: a restart would not bring it back"
    );

    // A decision cached before the outage is still answered, within the grace.
    assert!(check(&s, &ann.user_id, &cached).await.unwrap());
    // Anything that needs storage fails closed: UNAVAILABLE, never an answer.
    let status = check(&s, &ann.user_id, &cold).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = s
        .identity()
        .create_team(req(
            pb::CreateTeamRequest {
                organization_id: String::new(),
                name: "during".into(),
            },
            s.key(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // A key that was never resolved cannot be checked: unavailable, not unauthenticated.
    let status = s
        .identity()
        .list_teams(req(pb::ListTeamsRequest::default(), &unused_pat))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let scrape = s.scrape().await;
    assert_eq!(sample(&scrape, "portcullis_storage_up"), 0.0);
    assert!(
        sample(
            &scrape,
            "portcullis_storage_errors_total{kind=\"unavailable\"}"
        ) > errors_before
    );

    // Past the grace the cache is dropped: the cached decision fails closed too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check(&s, &ann.user_id, &cached).await {
            Ok(allowed) => assert!(allowed),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "cached decisions outlived the grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The grace runs from the last successful poll, at most one poll
    // interval (100 ms) before the cut.
    assert!(
        cut_at.elapsed() >= UNAVAILABLE_GRACE - Duration::from_millis(200),
        "served from the cache for the whole grace: {:?}",
        cut_at.elapsed()
    );

    proxy.restore();
    wait_for_health(&s, ServingStatus::Serving).await;
    assert!(check(&s, &ann.user_id, &cold).await.unwrap());
    assert!(check(&s, &ann.user_id, &cached).await.unwrap());
    s.identity()
        .list_teams(req(pb::ListTeamsRequest::default(), &unused_pat))
        .await
        .expect("the key resolves once storage is back");
    s.team("after", &[]).await;
    assert_eq!(sample(&s.scrape().await, "portcullis_storage_up"), 1.0);
}

/// Kills every server-side connection to `db` (what a PostgreSQL restart does to clients).
async fn terminate_backends(db_url: &str) {
    let name = db_url.rsplit('/').next().unwrap();
    let admin_url = db_url.replace(&format!("/{name}"), "/postgres");
    let admin = sea_orm::Database::connect(admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_under_load_loses_no_acknowledged_write() {
    let (s, proxy) = behind_proxy().await;
    under_load(&s, async || {
        // The database goes away for a second and comes back.
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.restore();
        let before = acked_so_far(&s).await;
        wait_for_acked(&s, |n| *n >= before + 10.0).await;
        // Then every connection is terminated by the server, as in a restart.
        terminate_backends(&s.db_url).await;
    })
    .await;
}

/// The same against a real restart of the machine's PostgreSQL cluster. Not
/// part of the suite: it would break every other test using that server. Run
/// alone: `cargo test --test faults -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the machine's PostgreSQL; run alone with --ignored"]
async fn postgres_restart_under_load_loses_no_acknowledged_write() {
    let s = harness::start_with_settings(
        Backend::Postgres,
        Settings {
            health_probe_interval: Duration::from_millis(100),
            ..Settings::default()
        },
    )
    .await;
    under_load(&s, async || {
        let version = std::fs::read_dir("/etc/postgresql")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .unwrap();
        let restarted = tokio::task::spawn_blocking(move || {
            std::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, "main", "restart"])
                .status()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(restarted.success(), "pg_ctlcluster restart");
    })
    .await;
}

/// Writes and checks flow while `disrupt` runs; afterwards every acknowledged
/// write is in the database, every refusal was UNAVAILABLE, no check was ever
/// denied, and the service is healthy again.
async fn under_load(s: &TestServer, disrupt: impl AsyncFnOnce()) {
    let (ann, ws) = s.viewer_of_shared().await;
    assert!(check(s, &ann, &ws).await.unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut client = s.identity();
        let key = s.key().to_owned();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), Vec::new());
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("team-{i}");
                let request = req(
                    pb::CreateTeamRequest {
                        organization_id: String::new(),
                        name: name.clone(),
                    },
                    &key,
                );
                match client.create_team(request).await {
                    Ok(_) => acked.push(name),
                    Err(status) => refused.push(status),
                }
            }
            (acked, refused)
        })
    };
    let checker = {
        let mut client = s.check();
        let request = check_request(&ann, &ws, "datasets:read", &[]);
        let key = s.key().to_owned();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let outcome = client.check(req(request.clone(), &key)).await;
                outcomes.push(
                    outcome
                        .map(|r| r.into_inner().allowed)
                        .map_err(|e| e.code()),
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes
        })
    };

    wait_for_acked(s, |n| *n >= 10.0).await;
    disrupt().await;
    let before = acked_so_far(s).await;
    wait_for_acked(s, |n| *n >= before + 10.0).await;
    stop.store(true, Ordering::SeqCst);

    let (acked, refused) = writer.await.unwrap();
    let outcomes = checker.await.unwrap();
    for status in &refused {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "only UNAVAILABLE while storage is away: {status:?}"
        );
    }
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Ok(true) | Err(Code::Unavailable)),
            "a check is allowed or unavailable, never denied or failed otherwise: {outcome:?}"
        );
    }
    // Everything acknowledged is there, read straight from the database.
    let db = sea_orm::Database::connect(&s.db_url).await.unwrap();
    let stored = stored_team_names(&db).await;
    let missing: Vec<_> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(acked.len() >= 30, "{} writes acknowledged", acked.len());
    wait_for_health(s, ServingStatus::Serving).await;
    assert!(check(s, &ann, &ws).await.unwrap());
    eprintln!(
        "{} writes acknowledged, {} refused as unavailable, {} checks",
        acked.len(),
        refused.len(),
        outcomes.len()
    );
}

/// CreateTeam calls acknowledged so far, from the server's metrics.
async fn acked_so_far(s: &TestServer) -> f64 {
    sample(
        &s.scrape().await,
        "portcullis_rpc_requests_total{method=\"portcullis.v1.IdentityService/CreateTeam\",code=\"OK\"}",
    )
}

/// Waits (at most a minute) until the CreateTeam acknowledgements satisfy `done`.
async fn wait_for_acked(s: &TestServer, done: impl Fn(&f64) -> bool) {
    harness::wait_until(
        "acknowledged writes",
        Duration::from_secs(60),
        || acked_so_far(s),
        done,
    )
    .await;
}

async fn wait_in_flight(serve: &processes::Serve, n: f64) {
    let addr = serve.metrics_addr.parse().unwrap();
    harness::wait_until(
        "RPCs in flight",
        Duration::from_secs(20),
        || async {
            sample(
                &harness::http_get(addr, "/metrics").await.1,
                "portcullis_rpc_in_flight",
            )
        },
        |v| *v == n,
    )
    .await;
}

fn create_team_call(
    channel: tonic::transport::Channel,
    key: &str,
    name: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::CreateTeamResponse>, tonic::Status>> {
    let request = processes::authed(
        pb::CreateTeamRequest {
            organization_id: String::new(),
            name: name.into(),
        },
        key,
        &[],
    );
    tokio::spawn(async move {
        IdentityServiceClient::new(channel)
            .create_team(request)
            .await
    })
}

async fn sigterm(b: Backend) {
    let db = TestDb::new(b).await;
    let boot = processes::bootstrap(&db, &[]);
    let key = boot["key"].as_str().unwrap().to_owned();
    let mut serve = processes::Serve::start(&db, &["--shutdown-grace", "20s"]);
    let channel = serve.channel().await;

    // The health subcommand, as a container health check runs it.
    let probe = |service: &str| {
        std::process::Command::new(processes::BIN)
            .args(["health", "--addr", &serve.addr, "--service", service])
            .output()
            .unwrap()
    };
    let ready = probe("");
    assert!(ready.status.success(), "{ready:?}");
    assert_eq!(String::from_utf8_lossy(&ready.stdout).trim(), "SERVING");
    assert!(probe("liveness").status.success());
    let unknown = probe("no.such.Service");
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");

    // A write in flight (waiting for storage) when SIGTERM arrives completes.
    let block = WriteBlock::hold(&db.url).await;
    let call = create_team_call(channel.clone(), &key, "in-flight");
    wait_in_flight(&serve, 1.0).await;
    processes::signal(&serve, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(serve.child.try_wait().unwrap().is_none(), "still draining");
    assert!(!call.is_finished());
    let conn = block.release().await;
    call.await
        .unwrap()
        .expect("the in-flight call completes during the drain");
    let status = tokio::task::spawn_blocking(move || serve.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        stored_team_names(&conn).await,
        BTreeSet::from(["in-flight".to_owned()])
    );

    // With a grace period shorter than the call, the process exits anyway and
    // the unfinished call changes nothing.
    let mut serve = processes::Serve::start(&db, &["--shutdown-grace", "300ms", "--no-migrate"]);
    let channel = serve.channel().await;
    let block = WriteBlock::hold(&db.url).await;
    let call = create_team_call(channel, &key, "cut-short");
    wait_in_flight(&serve, 1.0).await;
    processes::signal(&serve, "TERM");
    let status = tokio::task::spawn_blocking(move || serve.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        call.await.unwrap().is_err(),
        "the call was not acknowledged"
    );
    block.release().await;
    assert_eq!(
        stored_team_names(&conn).await,
        BTreeSet::from(["in-flight".to_owned()]),
        "an unacknowledged call left nothing behind"
    );
}

both_backends!(sigterm);
