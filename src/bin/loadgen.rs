//! Load generator for the gRPC path.
//!
//! Seeds a realistic data set (users, workspaces, teams, grants) into a fresh
//! database, starts `portcullis serve` as a separate process on loopback, and
//! drives it with a tonic client at a fixed concurrency for a fixed duration:
//!
//! * `noop`  — `NoopService/Noop`, the ceiling of a unary tonic handler;
//! * `hit`   — `Check` on a working set that fits the cache;
//! * `miss`  — `Check` on random (user, workspace) pairs against a server
//!   whose cache holds 16 sets, so nearly every call resolves from storage;
//! * `batch` — `BatchCheck` of 100 cache hits;
//! * `revocation` (PostgreSQL) — two replicas; grant on A, warm B, revoke on
//!   A, poll B until it denies: the cross-replica revocation latency.
//!
//! ```text
//! cargo run --release --bin loadgen -- --concurrency 64 --duration 10s
//! cargo run --release --bin loadgen -- --postgres postgres://postgres@127.0.0.1:5432
//! ```

// A benchmark tool: failing loudly is its error handling.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use portcullis::{
    config::parse_duration,
    proto::v1::{
        self as pb, check_service_client::CheckServiceClient,
        noop_service_client::NoopServiceClient, workspace_service_client::WorkspaceServiceClient,
    },
    seed::{self, Rng, SeedSize, Seeded},
    store::Store,
};
use sea_orm::ConnectionTrait;
use tonic::transport::{Channel, Endpoint};

/// Drives a Portcullis server and prints a latency and throughput table.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Use a fresh database on this PostgreSQL server (dropped afterwards)
    /// instead of a temporary SQLite file.
    #[arg(long)]
    postgres: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 1_000)]
    workspaces: usize,
    #[arg(long, default_value_t = 100)]
    teams: usize,
    /// Total grants, including each user's grant on their default workspace.
    #[arg(long, default_value_t = 1_000_000)]
    grants: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured time per scenario.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Scenarios to run, comma separated (`overload`: a server limited to 8
    /// concurrent requests, driven with cache misses at 4x the concurrency).
    #[arg(long, default_value = "noop,hit,batch,miss,overload,revocation")]
    scenarios: String,
    /// Trials of the revocation scenario.
    #[arg(long, default_value_t = 200)]
    revocation_trials: usize,
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(50555)
}

fn start_server(url: &str, extra: &[&str]) -> Server {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.with_file_name("portcullis");
    let addr = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .args([
            "serve",
            "--no-migrate",
            "--bench-noop",
            "--listen",
            &addr,
            "--metrics-listen",
            &metrics,
            "--database-url",
            url,
        ])
        .args(extra)
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start portcullis serve (build it with `cargo build --release` first)");
    Server { child, addr }
}

async fn channels(addr: &str, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ep = Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .tcp_nodelay(true);
            match ep.connect().await {
                Ok(c) => {
                    out.push(c);
                    break;
                }
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    out
}

fn authed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {key}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn check_req(user: &str, ws: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user.to_owned())),
        }),
        workspace_id: ws.to_owned(),
        permission: "datasets:read".into(),
        resource: Some(pb::Resource {
            r#type: "datasets".into(),
            id: "d1".into(),
            tags: vec![pb::Tag {
                key: "Application".into(),
                value: "app".into(),
            }],
        }),
        at_least_revision: 0,
    }
}

/// One scenario's results.
struct Report {
    name: String,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// Latencies of the successful requests.
    latencies_us: Vec<u32>,
    /// Latencies of the refused ones (shed, in the overload scenario).
    error_latencies_us: Vec<u32>,
    checks_per_request: u64,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

/// How long a worker waits after a failed call before its next one.
const REFUSED_BACKOFF: Duration = Duration::from_millis(10);

/// Runs `make` concurrently for warm-up then the measured duration; a failed
/// call is followed by a [`REFUSED_BACKOFF`] pause (not measured).
async fn drive<F, Fut>(
    name: &str,
    args: &Args,
    concurrency: usize,
    checks_per_request: u64,
    make: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let warm_until = Instant::now() + args.warmup;
    let stop_at = warm_until + args.duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut err_lat) = (Vec::new(), Vec::new());
            let (mut ok, mut err) = (0u64, 0u64);
            let mut i = 0u64;
            loop {
                let started = Instant::now();
                if started >= stop_at {
                    break;
                }
                let success = make(worker, i).await;
                i += 1;
                if started >= warm_until {
                    let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                    if success {
                        lat.push(us);
                        ok += 1;
                    } else {
                        err_lat.push(us);
                        err += 1;
                    }
                }
                if !success {
                    // A well-behaved client backs off before retrying a refused call.
                    tokio::time::sleep(REFUSED_BACKOFF).await;
                }
            }
            (lat, err_lat, ok, err)
        }));
    }
    let (mut latencies_us, mut error_latencies_us) = (Vec::new(), Vec::new());
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((lat, err_lat, ok, err)) = t.await {
            latencies_us.extend(lat);
            error_latencies_us.extend(err_lat);
            requests += ok;
            errors += err;
        }
    }
    latencies_us.sort_unstable();
    error_latencies_us.sort_unstable();
    Report {
        name: format!("{name} @{concurrency}"),
        requests,
        errors,
        elapsed: args.duration,
        latencies_us,
        error_latencies_us,
        checks_per_request,
    }
}

fn print_table(backend: &str, args: &Args, reports: &[Report]) {
    println!();
    println!(
        "backend: {backend}; data: {} users, {} workspaces, {} teams, {} grants; concurrency {}; {} connections; {:?} per scenario",
        args.users,
        args.workspaces,
        args.teams,
        args.grants,
        args.concurrency,
        args.connections,
        args.duration
    );
    println!(
        "| scenario @in flight | requests/s | checks/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            r.name,
            r.rps(),
            r.rps() * r.checks_per_request as f64,
            r.pct(0.50),
            r.pct(0.90),
            r.pct(0.99),
            r.pct(0.999),
            r.errors
        );
        if r.errors > 0 {
            let e = &r.error_latencies_us;
            println!(
                "| {}: refused | {:.0} | – | {:.3} | {:.3} | {:.3} | {:.3} | – |",
                r.name,
                r.errors as f64 / r.elapsed.as_secs_f64(),
                percentile(e, 0.50),
                percentile(e, 0.90),
                percentile(e, 0.99),
                percentile(e, 0.999),
            );
        }
    }
    let sum = |prefix: &str| -> f64 {
        reports
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .map(Report::rps)
            .sum()
    };
    let (noop, hit) = (sum("noop"), sum("check (cache hit)"));
    if noop > 0.0 && hit > 0.0 {
        println!();
        println!(
            "Check (cache hit) throughput = {:.1} % of the no-op handler's at the same concurrency (alternating runs, summed)",
            100.0 * hit / noop
        );
    }
}

async fn revocation(args: &Args, url: &str, seeded: &Seeded) -> Option<Report> {
    let a = start_server(url, &[]);
    let b = start_server(url, &[]);
    let ca = channels(&a.addr, 1).await.remove(0);
    let cb = channels(&b.addr, 1).await.remove(0);
    let mut admin = WorkspaceServiceClient::new(ca);
    let mut check_b = CheckServiceClient::new(cb);
    let key = &seeded.key;
    let mut rng = Rng::new(99);
    let mut lat = Vec::new();
    for _ in 0..args.revocation_trials {
        let user = &seeded.users[rng.below(seeded.users.len())];
        let ws = &seeded.workspaces[rng.below(seeded.workspaces.len())];
        let mut probe = check_req(user, ws);
        probe.permission = "roles:manage".into();
        if check_b
            .check(authed(probe, key))
            .await
            .ok()?
            .into_inner()
            .allowed
        {
            // Already an admin there through seeded grants: revoking ours would change nothing.
            continue;
        }
        let granted = admin
            .grant_access(authed(
                pb::GrantAccessRequest {
                    workspace_id: ws.clone(),
                    subject: Some(pb::Subject {
                        kind: Some(pb::subject::Kind::UserId(user.clone())),
                    }),
                    role: "WORKSPACE_ADMIN".into(),
                    scope: Some(pb::Scope {
                        conditions: vec![pb::TagCondition {
                            key: "Environment".into(),
                            values: vec![format!("bench-{}", rng.next_u64())],
                        }],
                        application: String::new(),
                    }),
                },
                key,
            ))
            .await
            .ok()?
            .into_inner();
        let mut req = check_req(user, ws);
        req.permission = "roles:manage".into();
        req.resource = Some(pb::Resource {
            r#type: "roles".into(),
            id: String::new(),
            tags: vec![pb::Tag {
                key: "Environment".into(),
                value: granted
                    .grant
                    .as_ref()?
                    .scope
                    .as_ref()?
                    .conditions
                    .first()?
                    .values
                    .first()?
                    .clone(),
            }],
        });
        req.at_least_revision = granted.revision;
        let warm = check_b
            .check(authed(req.clone(), key))
            .await
            .ok()?
            .into_inner();
        if !warm.allowed {
            eprintln!("warm-up check was denied; skipping trial");
            continue;
        }
        req.at_least_revision = 0;
        admin
            .revoke_access(authed(
                pb::RevokeAccessRequest {
                    workspace_id: ws.clone(),
                    grant_id: granted.grant?.id,
                },
                key,
            ))
            .await
            .ok()?;
        let t0 = Instant::now();
        loop {
            let d = check_b
                .check(authed(req.clone(), key))
                .await
                .ok()?
                .into_inner();
            if !d.allowed {
                break;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                eprintln!("revocation not seen within 5 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    lat.sort_unstable();
    Some(Report {
        name: format!("revocation seen on other replica ({} trials)", lat.len()),
        requests: lat.len() as u64,
        errors: 0,
        elapsed: Duration::from_secs(1),
        latencies_us: lat,
        error_latencies_us: Vec::new(),
        checks_per_request: 0,
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (url, pg_admin, dir) = match &args.postgres {
        Some(base) => {
            let name = format!("portcullis_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(format!("{base}/postgres"))
                .await
                .expect("PostgreSQL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            (format!("{base}/{name}"), Some((admin, name)), None)
        }
        None => {
            let dir = tempfile_dir();
            (
                format!("sqlite://{}/bench.db?mode=rwc", dir.display()),
                None,
                Some(dir),
            )
        }
    };
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let store = Store::connect(&url).await.expect("open database");
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    let size = SeedSize {
        users: args.users,
        workspaces: args.workspaces,
        teams: args.teams,
        grants: args.grants,
    };
    let seeded = seed::seed(&store, size, 7).await.expect("seed");
    eprintln!("seeded {size:?} in {:?}", started.elapsed());
    // Settle storage before measuring: fresh statistics for the planner, and
    // no autovacuum or checkpoint after the bulk load running during a scenario.
    let settle: &[&str] = if args.postgres.is_some() {
        &["VACUUM ANALYZE", "CHECKPOINT"]
    } else {
        &["ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"]
    };
    for sql in settle {
        store
            .db()
            .execute_unprepared(sql)
            .await
            .expect("settle storage");
    }
    drop(store);

    let wanted: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let mut reports = Vec::new();
    {
        let server = start_server(&url, &[]);
        let chans = channels(&server.addr, args.connections).await;
        let key = Arc::new(seeded.key.clone());
        // A working set that fits the cache: 1000 granted pairs.
        let hot: Arc<Vec<(String, String)>> =
            Arc::new(seeded.granted.iter().take(1000).cloned().collect());
        // The ceiling and Check alternate (A B A B) so that drift in the
        // machine's load affects both alike; the ratio uses the sums.
        for _ in 0..2 {
            if wanted.contains(&"noop") {
                let chans = chans.clone();
                reports.push(
                    drive("noop", &args, args.concurrency, 0, move |w, _| {
                        let mut c = NoopServiceClient::new(chans[w % chans.len()].clone());
                        async move {
                            c.noop(pb::NoopRequest {
                                payload: String::new(),
                            })
                            .await
                            .is_ok()
                        }
                    })
                    .await,
                );
            }
            if wanted.contains(&"hit") {
                let (chans, key, hot) = (chans.clone(), key.clone(), hot.clone());
                reports.push(
                    drive(
                        "check (cache hit)",
                        &args,
                        args.concurrency,
                        1,
                        move |w, i| {
                            let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                            let (u, ws) = &hot[(w * 7919 + i as usize) % hot.len()];
                            let req = authed(check_req(u, ws), &key);
                            async move { c.check(req).await.is_ok() }
                        },
                    )
                    .await,
                );
            }
        }
        if wanted.contains(&"batch") {
            let (chans, key, hot) = (chans.clone(), key.clone(), hot.clone());
            reports.push(
                drive(
                    "batch check (100 hits)",
                    &args,
                    args.concurrency,
                    100,
                    move |w, i| {
                        let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                        let checks = (0..100)
                            .map(|j| {
                                let (u, ws) = &hot[(w * 7919 + i as usize * 100 + j) % hot.len()];
                                check_req(u, ws)
                            })
                            .collect();
                        let req = authed(pb::BatchCheckRequest { checks }, &key);
                        async move { c.batch_check(req).await.is_ok() }
                    },
                )
                .await,
            );
        }
    }
    if wanted.contains(&"miss") {
        let server = start_server(&url, &["--cache-capacity", "16"]);
        let chans = channels(&server.addr, args.connections).await;
        let key = Arc::new(seeded.key.clone());
        let pairs: Arc<Vec<(String, String)>> = Arc::new(seeded.granted.clone());
        for concurrency in [1, args.concurrency] {
            let (chans, key, pairs) = (chans.clone(), key.clone(), pairs.clone());
            reports.push(
                drive("check (cache miss)", &args, concurrency, 1, move |w, i| {
                    let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                    let mut rng = Rng::new((w as u64) << 32 | i);
                    let (u, ws) = &pairs[rng.below(pairs.len())];
                    let req = authed(check_req(u, ws), &key);
                    async move { c.check(req).await.is_ok() }
                })
                .await,
            );
        }
    }
    if wanted.contains(&"overload") {
        // Eight slots, each held by a cache miss; four times the usual
        // concurrency asks. The excess must be refused at once, not queued;
        // refused workers back off 10 ms, as a well-behaved client would.
        let server = start_server(
            &url,
            &["--cache-capacity", "16", "--max-concurrent-requests", "8"],
        );
        let chans = channels(&server.addr, args.connections).await;
        let key = Arc::new(seeded.key.clone());
        let pairs: Arc<Vec<(String, String)>> = Arc::new(seeded.granted.clone());
        let concurrency = args.concurrency * 4;
        reports.push(
            drive(
                "overload: check (cache miss), limit 8",
                &args,
                concurrency,
                1,
                move |w, i| {
                    let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                    let mut rng = Rng::new((w as u64) << 32 | i);
                    let (u, ws) = &pairs[rng.below(pairs.len())];
                    let req = authed(check_req(u, ws), &key);
                    async move {
                        match c.check(req).await {
                            Ok(_) => true,
                            Err(status) if status.code() == tonic::Code::ResourceExhausted => false,
                            Err(status) => panic!("overload: unexpected {status:?}"),
                        }
                    }
                },
            )
            .await,
        );
    }
    if wanted.contains(&"revocation")
        && args.postgres.is_some()
        && let Some(r) = revocation(&args, &url, &seeded).await
    {
        reports.push(r);
    }
    print_table(backend, &args, &reports);
    if let Some((admin, name)) = pg_admin {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
